/**
 * A worker in its own process, for chaos tests: `node --conditions=source --import tsx worker-process.ts
 * '<json config>'`. Its identity is `<identityPrefix>:<pid>`, so history events (`workerId`) name the
 * process that wrote them. It prints `ready <pid> <identity>` on stdout once it polls, runs until killed,
 * and shuts down cleanly on SIGTERM.
 *
 * Every rejected report (an activity result, heartbeat or workflow-task result whose fencing token is no
 * longer current) is printed on stdout as `rejected <json log line>`, so a test can see a zombie's late
 * reports being refused. Warnings and errors go to stderr as JSON lines.
 */
import { pathToFileURL } from 'node:url';
import { type ActivityFunction, jsonLogger, type Logger, Worker } from 'longhaul/worker';

export interface ChaosWorkerConfig {
  /** Store connection string, e.g. `postgres://postgres@127.0.0.1:5432/test?schema=x`. */
  readonly connection: string;
  readonly taskQueue: string;
  /** Absolute path of the workflows module. */
  readonly workflowsPath: string;
  /** Absolute path of a module whose exported functions are the activities. */
  readonly activitiesPath: string;
  readonly identityPrefix: string;
  /** Worker options that are plain data (durations in ms). */
  readonly options: {
    readonly sweepInterval: number;
    readonly pollInterval: number;
    readonly stickyFallback: number;
    readonly shutdownGraceTime: number;
    readonly deadlockTimeout: number;
    readonly maxConcurrentActivityTaskExecutions: number;
    readonly maxConcurrentWorkflowTaskExecutions: number;
    readonly workflowTaskRetry: { readonly initialInterval: number; readonly maximumInterval: number };
  };
}

/** Info-level messages of the worker that mean "a stale report was rejected" (src/worker). */
const REJECTION = /no longer current|rejected/;

const raw = process.argv[2];
if (!raw) {
  process.stderr.write('usage: worker-process.ts <json config>\n');
  process.exit(2);
}
const config = JSON.parse(raw) as ChaosWorkerConfig;
const identity = `${config.identityPrefix}:${process.pid}`;
const activities = (await import(pathToFileURL(config.activitiesPath).href)) as Record<
  string,
  ActivityFunction
>;

const stderrLog = jsonLogger((line) => process.stderr.write(`${line}\n`), 'warn', { pid: process.pid });
const logger: Logger = {
  debug: () => undefined,
  info: (message, fields) => {
    if (REJECTION.test(message)) process.stdout.write(`rejected ${JSON.stringify({ message, ...fields })}\n`);
  },
  warn: stderrLog.warn,
  error: stderrLog.error,
};

const worker = await Worker.create({
  connection: config.connection,
  taskQueue: config.taskQueue,
  workflowsPath: config.workflowsPath,
  activities,
  identity,
  logger,
  ...config.options,
});
const running = worker.run();
process.stdout.write(`ready ${process.pid} ${identity}\n`);

process.once('SIGTERM', () => {
  void worker.shutdown();
});
await running;
process.stdout.write('stopped\n');
