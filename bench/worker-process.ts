/**
 * One benchmark worker in a process of its own, spawned by spawn-workers.ts with an IPC channel:
 * `node worker-process.js URL TASK_QUEUE POLL_MS MAX_CONCURRENT` (0 for either: the worker's default).
 *
 * Protocol (`ParentMessage` and `ChildMessage` of spawn-workers.ts):
 *   child  → `ready`    once the worker polls (with its poll interval);
 *   parent → `mark`     the child answers `marked` with its counters since the previous mark, and
 *                       counts from zero again;
 *   parent → `stop`     the child answers `stopped` with its counters since the mark, shuts the worker
 *                       down and exits 0.
 * It also shuts down and exits when the parent goes away (the IPC channel closes) and on SIGINT/SIGTERM,
 * so a benchmark that dies leaves no worker behind.
 */
import { Runtime } from '../src/runtime/runtime.js';
import { Worker } from '../src/worker/index.js';
import * as activities from './activities.js';
import { type ChildMessage, type ParentMessage, readCounters, subtractCounters } from './spawn-workers.js';
import { workflowsPath } from './workloads.js';

async function main(): Promise<void> {
  const [url, taskQueue, pollMs, maxConcurrent] = process.argv.slice(2);
  if (!url || !taskQueue || !process.send) {
    throw new Error(
      'usage: node worker-process.js URL TASK_QUEUE POLL_MS MAX_CONCURRENT (with an IPC channel)',
    );
  }
  const concurrency = Number(maxConcurrent ?? '0');
  const poll = Number(pollMs ?? '0');
  const worker = await Worker.create({
    connection: url,
    taskQueue,
    workflowsPath,
    activities,
    ...(poll > 0 ? { pollInterval: poll } : {}),
    ...(concurrency > 0
      ? { maxConcurrentWorkflowTaskExecutions: concurrency, maxConcurrentActivityTaskExecutions: concurrency }
      : {}),
  });
  const running = worker.run();
  // Joins the worker's runtime (same store, same clock): its counters are the worker's.
  const runtime = await Runtime.acquire(url, { mode: 'node' });
  let mark = readCounters(runtime);
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await worker.shutdown();
      await running;
      await runtime.release();
      process.disconnect?.();
    })();
    return stopping;
  };
  const send = (message: ChildMessage): void => {
    if (process.connected) process.send?.(message);
  };
  process.on('message', (message: ParentMessage) => {
    if (message.type === 'mark') {
      const now = readCounters(runtime);
      send({ type: 'marked', counters: subtractCounters(now, mark) });
      mark = now;
    } else if (message.type === 'stop') {
      send({ type: 'stopped', counters: subtractCounters(readCounters(runtime), mark) });
      void stop();
    }
  });
  process.on('disconnect', () => void stop());
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  send({ type: 'ready', pollIntervalMs: worker.options.pollIntervalMs });
  await running;
  await stop();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error('bench worker process failed:', err);
    process.exit(1);
  },
);
