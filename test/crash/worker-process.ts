/**
 * A worker in its own process, for crash tests: `node --conditions=source --import tsx worker-process.ts
 * '<json config>'`. It prints `ready` on stdout once it polls, runs until killed, and shuts down
 * cleanly on SIGTERM. Worker warnings and errors go to stderr as JSON lines.
 */
import { pathToFileURL } from 'node:url';
import { type ActivityFunction, jsonLogger, Worker } from 'longhaul/worker';

export interface CrashWorkerConfig {
  /** Store connection string, e.g. `sqlite:/tmp/x/crash.db`. */
  readonly connection: string;
  readonly taskQueue: string;
  /** Absolute path of the workflows module. */
  readonly workflowsPath: string;
  /** Absolute path of a module whose exported functions are the activities. */
  readonly activitiesPath: string;
  /** Worker options that are plain data (durations in ms). */
  readonly options?: {
    readonly identity?: string;
    readonly sweepInterval?: number;
    readonly pollInterval?: number;
    readonly deadlockTimeout?: number;
    readonly shutdownGraceTime?: number;
    readonly workflowTaskRetry?: { readonly initialInterval?: number; readonly maximumInterval?: number };
  };
}

const raw = process.argv[2];
if (!raw) {
  process.stderr.write('usage: worker-process.ts <json config>\n');
  process.exit(2);
}
const config = JSON.parse(raw) as CrashWorkerConfig;
const activities = (await import(pathToFileURL(config.activitiesPath).href)) as Record<
  string,
  ActivityFunction
>;

const worker = await Worker.create({
  connection: config.connection,
  taskQueue: config.taskQueue,
  workflowsPath: config.workflowsPath,
  activities,
  logger: jsonLogger((line) => process.stderr.write(`${line}\n`), 'warn', { pid: process.pid }),
  ...config.options,
});
const running = worker.run();
process.stdout.write(`ready ${process.pid}\n`);

process.once('SIGTERM', () => {
  void worker.shutdown();
});
await running;
process.stdout.write('stopped\n');
