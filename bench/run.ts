/**
 * `npm run bench`: workloads W1–W4 of the hot-path issue on the embedded SQLite store, each figure
 * printed next to the raw single-row SQLite commit rate (synchronous=FULL) measured in the same run, and
 * the number of store transactions per workflow, counted by the runtime. W3 runs in processes of its own:
 * once with Node's default heap sizing and once with V8's heap capped (W3_CAPPED_HEAP_FLAGS).
 *
 * Flags: --only W1,W3   run a subset;  --scale 0.1   shrink workflow counts;  --full   W3 with 100,000.
 * --store postgres://USER@HOST/DB   W1 and W2 on PostgreSQL instead, with one and with four worker
 * processes (see postgres.ts);  --poll-ms 10   their poll interval (default: the worker's).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { Client } from '../src/client/index.js';
import { Runtime } from '../src/runtime/runtime.js';
import {
  type BenchWorkerOptions,
  driveW1,
  driveW2,
  fmt,
  type InProcess,
  p99AfterWarmUp,
  percentile,
  startInProcess,
  W1_WARM_UP,
  W2_IN_FLIGHT,
  W2_WORKER_OPTIONS,
} from './workloads.js';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const only = new Set((flag('--only') ?? 'W1,W2,W3,W4').split(','));
const scale = Number(flag('--scale') ?? '1');
const full = args.includes('--full');
const store = flag('--store');
const pollMs = flag('--poll-ms');
const n = (count: number): number => Math.max(1, Math.round(count * scale));

/** Raw single-row commits per second with WAL + synchronous=FULL on this disk. */
function rawCommitRate(dir: string): number {
  const db = new Database(join(dir, 'raw.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const count = 2000;
  const start = performance.now();
  for (let i = 0; i < count; i++) insert.run('x');
  const ms = performance.now() - start;
  db.close();
  return (count / ms) * 1000;
}

interface Env extends InProcess {
  readonly url: string;
  readonly dir: string;
  close(options?: { keepFiles?: boolean }): Promise<void>;
}

async function openEnv(name: string, workerOptions: BenchWorkerOptions = {}): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), `longhaul-bench-${name}-`));
  const url = `sqlite:${join(dir, 'bench.sqlite')}`;
  const env = await startInProcess(url, workerOptions);
  return {
    ...env,
    url,
    dir,
    async close(options = {}) {
      await env.close();
      if (!options.keepFiles) rmSync(dir, { recursive: true, force: true });
    },
  };
}

function txCount(env: Env): number {
  return env.runtime.ctx.stats.transactions;
}

async function w1(commitRate: number): Promise<void> {
  const env = await openEnv('w1');
  const count = n(200);
  const tx0 = txCount(env);
  const { latencies, inOrder } = await driveW1(env.client, count);
  const txPerWorkflow = (txCount(env) - tx0) / count;
  await env.close();
  const commitMs = 1000 / commitRate;
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  console.log(
    `W1  ${count} workflows × 10 sequential activities: p50 ${fmt(p50)} ms (${fmt(p50 / commitMs, 1)}× one commit), ` +
      `p99 ${fmt(p99)} ms (${fmt(p99AfterWarmUp(inOrder))} ms without the first ${W1_WARM_UP}, the warm-up); ` +
      `${fmt(txPerWorkflow, 1)} store transactions per workflow (target p50 ≤ 2 ms, p99 ≤ 4 ms)`,
  );
}

async function w2(commitRate: number): Promise<void> {
  const env = await openEnv('w2', W2_WORKER_OPTIONS);
  const count = n(2000);
  const inFlight = W2_IN_FLIGHT;
  const tx0 = txCount(env);
  const seconds = await driveW2(env.client, count);
  const txPerWorkflow = (txCount(env) - tx0) / count;
  await env.close();
  const stepsPerSecond = (count * 3) / seconds;
  console.log(
    `W2  ${count} workflows × 3 activities, ${inFlight} in flight: ${fmt(stepsPerSecond, 0)} steps/s ` +
      `(${fmt(stepsPerSecond / commitRate, 2)}× the raw commit rate); ${fmt(txPerWorkflow, 1)} transactions per workflow (target ≥ 10,000 steps/s)`,
  );
}

async function w3(count: number): Promise<void> {
  const env = await openEnv('w3', W2_WORKER_OPTIONS);
  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 50);
  const start = performance.now();
  await startSleepers(env.client, count);
  const startedMs = performance.now() - start;
  const heapFlags = process.execArgv.filter((f) => /^--max-(semi|old)-space-size=/.test(f));
  // Wait until every workflow has run its activity and is asleep (its timer is the only pending row).
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    const sleeping = countTimers(env);
    if (sleeping >= count || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const allAsleepMs = performance.now() - start;
  clearInterval(sampler);
  const dbPath = env.url.slice('sqlite:'.length);
  const running = sizeOf(dbPath) + sizeOf(`${dbPath}-wal`);
  // At rest means compacted: the background compactor falls behind while the sleepers start, and
  // close() compacts only within its budget (2 s), so wait for it to catch up (bounded) and say how long.
  const tailsWhenAsleep = countTails(env);
  const restDeadline = Date.now() + 10 * 60_000;
  while (countTails(env) > 0 && Date.now() < restDeadline) {
    await new Promise((r) => setTimeout(r, 200));
  }
  const compactedMs = performance.now() - start - allAsleepMs;
  // At rest: closing the last connection checkpoints the WAL into the database file and removes it.
  await env.close({ keepFiles: true });
  const bytes = sizeOf(dbPath) + sizeOf(`${dbPath}-wal`);
  rmSync(env.dir, { recursive: true, force: true });
  console.log(
    `W3  ${count} sleepers: all started in ${fmt(startedMs / 1000)} s, all asleep after ${fmt(allAsleepMs / 1000)} s, ` +
      `peak RSS ${fmt(peakRss / 2 ** 20, 0)} MB, ${fmt(bytes / count, 0)} bytes on disk per sleeper at rest ` +
      `(${fmt(running / count, 0)} with the WAL while running; ${tailsWhenAsleep} histories awaited compaction ` +
      `then, done ${fmt(compactedMs / 1000, 1)} s later) ` +
      `(targets: started ≤ 1 s, RSS ≤ 150 MB, ≤ 600 B)${heapFlags.length > 0 ? `; node ${heapFlags.join(' ')}` : ''}`,
  );
}

/** Starts `count` sleepers, 64 at a time (each batch awaited before the next). */
async function startSleepers(client: Client, count: number): Promise<void> {
  const batch = 64;
  for (let i = 0; i < count; i += batch) {
    const starts: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(count, i + batch); j++) {
      starts.push(client.workflow.start('sleeper', { workflowId: `w3-${j}`, taskQueue: 'bench' }));
    }
    await Promise.all(starts);
  }
}

/**
 * W3's starts with no worker in the process: what the start path costs by itself. In W3 proper the
 * worker runs each new workflow's first task, its activity and its sleep in the same process meanwhile.
 */
async function w3StartsAlone(count: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'longhaul-bench-w3-starts-'));
  const url = `sqlite:${join(dir, 'bench.sqlite')}`;
  const runtime = await Runtime.acquire(url, { mode: 'node' }); // creates the store
  const client = await Client.connect(url);
  try {
    const cpu = process.cpuUsage();
    const start = performance.now();
    await startSleepers(client, count);
    const seconds = (performance.now() - start) / 1000;
    const used = process.cpuUsage(cpu);
    console.log(
      `W3  the same ${count} starts with no worker in the process: ${fmt(seconds)} s (${fmt(count / seconds, 0)} starts/s, ` +
        `${fmt((used.user + used.system) / count, 0)} µs of CPU each)`,
    );
  } finally {
    await client.close();
    await runtime.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Node flags of the second W3 run: small young generation, old generation capped at 96 MB. */
const W3_CAPPED_HEAP_FLAGS = ['--max-semi-space-size=2', '--max-old-space-size=96'];

function countTimers(env: Env): number {
  return countRows(env, "SELECT count(*) AS c FROM timers WHERE kind = 'user'");
}

/** Raw history tails not yet compressed by the store's background compactor. */
function countTails(env: Env): number {
  return countRows(env, 'SELECT count(*) AS c FROM history_tail');
}

function countRows(env: Env, sql: string): number {
  const db = new Database(env.url.slice('sqlite:'.length), { readonly: true });
  try {
    return (db.prepare(sql).get() as { c: number }).c;
  } finally {
    db.close();
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

async function w4(): Promise<void> {
  const env = await openEnv('w4', { maxConcurrentWorkflowTaskExecutions: 64, sweepInterval: '1s' });
  const count = n(500);
  const handles = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      env.client.workflow.start('napper', { workflowId: `w4-${i}`, taskQueue: 'bench', args: [2000] }),
    ),
  );
  await Promise.all(handles.map((h) => h.result()));
  const lateness: number[] = [];
  for (const h of handles) {
    const { events } = await h.fetchHistory();
    const started = events.find((e) => e.type === 'TimerStarted')!;
    const fired = events.findIndex((e) => e.type === 'TimerFired');
    const woke = events.slice(fired).find((e) => e.type === 'WorkflowTaskStarted')!;
    const due = Date.parse(started.time) + (started.attributes as { durationMs: number }).durationMs;
    lateness.push(Date.parse(woke.time) - due);
  }
  await env.close();
  lateness.sort((a, b) => a - b);
  console.log(
    `W4  ${count} workflows sleeping 2 s, started together: wake-up lateness p50 ${percentile(lateness, 50)} ms, ` +
      `p99 ${percentile(lateness, 99)} ms, max ${lateness[lateness.length - 1]} ms (target p50 ≤ 5 ms, p99 ≤ 20 ms)`,
  );
}

function runChild(childArgs: readonly string[], nodeFlags: readonly string[] = []): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [...process.execArgv, ...nodeFlags, fileURLToPath(import.meta.url), ...childArgs],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    // Only the workload's own line: the child prints the commit rate too.
    child.stdout.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line.startsWith('W')) console.log(line);
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`W3 exited with ${code}`))));
  });
}

async function main(): Promise<void> {
  if (store !== undefined) {
    // Loaded only here: W3 measures memory, and a SQLite process never loads the PostgreSQL driver.
    const { benchPostgres } = await import('./postgres.js');
    await benchPostgres({
      url: store,
      only,
      count: n,
      pollIntervalMs: pollMs === undefined ? undefined : Number(pollMs),
    });
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'longhaul-bench-raw-'));
  const commitRate = rawCommitRate(dir);
  rmSync(dir, { recursive: true, force: true });
  console.log(
    `raw SQLite single-row commits (WAL, synchronous=FULL): ${fmt(commitRate, 0)}/s (${fmt(1000 / commitRate, 3)} ms each)`,
  );
  if (only.has('W1')) await w1(commitRate);
  if (only.has('W2')) await w2(commitRate);
  if (only.has('W3')) {
    if (only.size > 1) {
      // In a process of its own, so its peak RSS is not the heap left behind by the other workloads.
      const w3Args = ['--only', 'W3', '--scale', String(scale), ...(full ? ['--full'] : [])];
      await runChild(w3Args);
      // Again with V8's heap capped: on a large machine V8 lets garbage pile up before it collects (the
      // live heap of 10,000 sleepers is about 16 MB after a full GC), and that, not live state, sets RSS.
      await runChild(w3Args, W3_CAPPED_HEAP_FLAGS);
    } else {
      await w3(n(10_000));
      if (full) await w3(100_000);
      if (process.execArgv.every((f) => !W3_CAPPED_HEAP_FLAGS.includes(f))) await w3StartsAlone(n(10_000));
    }
  }
  if (only.has('W4')) await w4();
}

await main();
