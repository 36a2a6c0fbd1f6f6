/**
 * Per-test environment for crash tests: a temporary directory with the SQLite file and the activity
 * log, a process group, a worker that can be killed and restarted, and a client in the test process on
 * the same file. `dispose()` kills every child, closes the client and deletes the directory.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import { type ActivityLogEntry, readActivityLog } from '../fixtures/crash/activity-log.js';
import { CrashWorker, makeTempDir, ProcessGroup, removeTempDirs } from './harness.js';
import type { CrashWorkerConfig } from './worker-process.js';

export const CRASH_WORKFLOWS = fileURLToPath(new URL('../fixtures/crash/workflows.ts', import.meta.url));
export const CRASH_ACTIVITIES = fileURLToPath(new URL('../fixtures/crash/activities.ts', import.meta.url));

/** Worker options of the crash tests (ms): short sweeps and polls keep the suite fast. */
export const SWEEP_INTERVAL_MS = 200;
export const POLL_INTERVAL_MS = 50;

export interface CrashEnv {
  readonly dir: string;
  readonly url: string;
  readonly logPath: string;
  readonly taskQueue: string;
  readonly worker: CrashWorker;
  /** Connected after the first worker start (a client never creates a store). */
  client(): Promise<Client>;
  readLog(): ActivityLogEntry[];
  dispose(): Promise<void>;
}

export function createCrashEnv(options: CrashWorkerConfig['options'] = {}): CrashEnv {
  const dir = makeTempDir();
  const url = `sqlite:${path.join(dir, 'crash.db')}`;
  const logPath = path.join(dir, 'activities.log');
  const taskQueue = 'crash';
  const group = new ProcessGroup();
  const worker = new CrashWorker(group, {
    connection: url,
    taskQueue,
    workflowsPath: CRASH_WORKFLOWS,
    activitiesPath: CRASH_ACTIVITIES,
    options: { sweepInterval: SWEEP_INTERVAL_MS, pollInterval: POLL_INTERVAL_MS, ...options },
  });
  let client: Client | null = null;
  return {
    dir,
    url,
    logPath,
    taskQueue,
    worker,
    async client() {
      client ??= await Client.connect(url);
      return client;
    },
    readLog: () => readActivityLog(logPath),
    async dispose() {
      try {
        await group.killAll();
      } finally {
        await client?.close();
        removeTempDirs();
      }
    },
  };
}
