/**
 * What the SQLite and PostgreSQL benchmarks share: the W1 and W2 drivers (so both stores run exactly the
 * same workload), a client and a worker in this process, and the formatting of figures.
 */
import { fileURLToPath } from 'node:url';
// Relative imports (not 'longhaul/...'): the benchmark and the runtime it inspects must share one copy.
import { Client } from '../src/client/index.js';
import { Runtime } from '../src/runtime/runtime.js';
import { Worker, type WorkerOptions } from '../src/worker/index.js';
import * as activities from './activities.js';

/** Compiled (`npm run bench`) the workflows module is workflows.js; run from source it is workflows.ts. */
export const workflowsPath = fileURLToPath(
  new URL(`./workflows.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url),
);

export const TASK_QUEUE = 'bench';
/** W2 keeps this many workflows in flight, and its workers run as many tasks of each kind at once. */
export const W2_IN_FLIGHT = 64;
export const W2_WORKER_OPTIONS = {
  maxConcurrentWorkflowTaskExecutions: W2_IN_FLIGHT,
  maxConcurrentActivityTaskExecutions: W2_IN_FLIGHT,
} as const;

export type BenchWorkerOptions = Partial<Omit<WorkerOptions, 'connection' | 'taskQueue'>>;

export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function fmt(x: number, digits = 2): string {
  return x.toFixed(digits);
}

/** A worker polling `TASK_QUEUE`, a client, and the runtime they share (for its counters), in this process. */
export interface InProcess {
  readonly worker: Worker;
  readonly client: Client;
  readonly runtime: Runtime;
  close(): Promise<void>;
}

export async function startInProcess(
  url: string,
  workerOptions: BenchWorkerOptions = {},
): Promise<InProcess> {
  const worker = await Worker.create({
    connection: url,
    taskQueue: TASK_QUEUE,
    workflowsPath,
    activities,
    ...workerOptions,
  });
  const running = worker.run();
  const client = await Client.connect(url);
  const runtime = await Runtime.acquire(url, { mode: 'client' });
  return {
    worker,
    client,
    runtime,
    async close() {
      await runtime.release();
      await client.close();
      await worker.shutdown();
      await running;
    },
  };
}

/** One W1 workflow as the client saw it: wall-clock ms since the epoch (comparable with history times). */
export interface W1Span {
  readonly workflowId: string;
  readonly calledAt: number;
  readonly returnedAt: number;
}

export interface W1Result {
  /** Latency of each workflow (ms), sorted. */
  readonly latencies: number[];
  /** The same, in the order the workflows ran. */
  readonly inOrder: readonly number[];
  readonly spans: W1Span[];
}

/** W1: `count` workflows of 10 sequential no-op activities, one after another. */
export async function driveW1(client: Client, count: number): Promise<W1Result> {
  const latencies: number[] = [];
  const inOrder: number[] = [];
  const spans: W1Span[] = [];
  for (let i = 0; i < count; i++) {
    const workflowId = `w1-${i}`;
    const calledAt = Date.now();
    const start = performance.now();
    await client.workflow.execute('steps', { workflowId, taskQueue: TASK_QUEUE, args: [10] });
    latencies.push(performance.now() - start);
    inOrder.push(latencies[latencies.length - 1]!);
    spans.push({ workflowId, calledAt, returnedAt: Date.now() });
  }
  return { latencies: latencies.sort((a, b) => a - b), inOrder, spans };
}

/** W2: `count` workflows of 3 activities, `W2_IN_FLIGHT` at a time. Returns the elapsed seconds. */
export async function driveW2(client: Client, count: number): Promise<number> {
  let next = 0;
  const start = performance.now();
  const lane = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      await client.workflow.execute('steps', { workflowId: `w2-${i}`, taskQueue: TASK_QUEUE, args: [3] });
    }
  };
  await Promise.all(Array.from({ length: W2_IN_FLIGHT }, lane));
  return (performance.now() - start) / 1000;
}

/** How many of W1's first workflows count as warm-up (V8 compiling the engine's code paths). */
export const W1_WARM_UP = 10;

/** The p99 of W1 leaving out the warm-up workflows (ms). */
export function p99AfterWarmUp(inOrder: readonly number[]): number {
  const rest = inOrder.slice(W1_WARM_UP).sort((a, b) => a - b);
  return rest.length === 0 ? Number.NaN : percentile(rest, 99);
}
