/**
 * `npm run bench -- --store postgres://USER@HOST/DB`: W1 and W2 on PostgreSQL, each with one worker in
 * this process (client and worker share a runtime, as in the SQLite runs) and with four worker processes
 * driven by a client here (contention between nodes; no eager start, and wake-ups cross processes only
 * through the store's notifications, where it has them, else by polling).
 *
 * Every figure is printed next to this server's raw single-row commit rate, measured in the same run on
 * one connection with the server's synchronous_commit, and with the store transactions per workflow:
 * counted by the runtime in this process, and for worker processes summed from the counters each
 * reports when it stops.
 *
 * Each run gets a schema of its own, `lh_bench_<pid>_<n>` (any `schema=` in the URL is overridden),
 * dropped when the run ends, on error, and on SIGINT/SIGTERM; worker processes are stopped likewise.
 */
import { availableParallelism, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Client } from '../src/client/index.js';
import { Runtime } from '../src/runtime/runtime.js';
import {
  phasesOf,
  printW1,
  printW1Breakdown,
  printW2,
  type RunResult,
  type ServerBaseline,
} from './postgres-report.js';
import { ServerCpu } from './server-cpu.js';
import { addCounters, readCounters, subtractCounters, WorkerProcesses } from './spawn-workers.js';
import { probeStore } from './store-probe.js';
import {
  driveW1,
  driveW2,
  fmt,
  startInProcess,
  TASK_QUEUE,
  W2_IN_FLIGHT,
  W2_WORKER_OPTIONS,
} from './workloads.js';

export interface PostgresBenchOptions {
  /** `postgres://` connection string; its `schema` is replaced by one per run. */
  readonly url: string;
  readonly only: ReadonlySet<string>;
  /** Scales a workload's workflow count. */
  readonly count: (full: number) => number;
  /** Poll interval of the worker processes, ms (undefined: the worker's default). */
  readonly pollIntervalMs: number | undefined;
}

/** Worker processes of the multi-process runs (the machine this was written for has 2 cores). */
const PROCESSES = 4;
/** How long the worker processes sit idle before a run, to measure what their polling costs (ms). */
const IDLE_MS = 1000;
/** longhaul's own connection-string options: not understood by the `pg` driver. */
const LONGHAUL_OPTIONS = ['schema', 'poolSize', 'connectTimeoutMs'];
export async function benchPostgres(options: PostgresBenchOptions): Promise<void> {
  if (!/^postgres(ql)?:\/\//.test(options.url)) {
    throw new Error(`--store takes a postgres:// connection string, got '${options.url.split('@').pop()}'`);
  }
  const bench = new PostgresBench(options.url);
  const poll = options.pollIntervalMs;
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupted = true;
    console.error(`${signal}: stopping worker processes and dropping the benchmark schemas`);
    void bench.abort().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const base = await bench.baseline();
    const commitRate = 1000 / base.commitMs;
    console.log(
      `raw PostgreSQL ${base.version} single-row commits (one connection, synchronous_commit=${base.synchronousCommit}): ` +
        `${fmt(commitRate, 0)}/s (${fmt(base.commitMs, 3)} ms each); one round trip (SELECT 1) ${fmt(base.roundTripMs, 3)} ms, ` +
        `of which ${fmt(base.roundTripCpuMs * 1000, 0)} µs CPU here`,
    );
    console.log(
      `    store ${bench.describe()}, a fresh schema per run (lh_bench_${process.pid}_*, dropped after); ` +
        `load average ${fmt(loadavg()[0]!)} on ${availableParallelism()} cores before the runs; ` +
        (bench.measuresServerCpu
          ? "the server runs on this host: its CPU time is read from /proc (every client's, so keep it otherwise idle)"
          : 'the server is elsewhere: its CPU time is not measured'),
    );
    if (options.only.has('W1')) {
      const one = await bench.inProcess('W1', options.count(200));
      printW1(one, base);
      printW1Breakdown(one, base);
      printW1(await bench.multiProcess('W1', options.count(200), poll), base, one);
    }
    if (options.only.has('W2')) {
      const one = await bench.inProcess('W2', options.count(2000));
      printW2(one, commitRate);
      printW2(await bench.multiProcess('W2', options.count(2000), poll), commitRate, one);
    }
    if (options.only.has('W3') || options.only.has('W4')) {
      console.log('W3, W4: SQLite only (run without --store)');
    }
  } catch (err) {
    // Interrupted: the run failed because its workers went away; the signal handler exits once clean.
    if (!interrupted) throw err;
  } finally {
    await bench.abort();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * The benchmark's schemas and worker processes, so that `abort()` can remove whatever is left of them.
 * Schemas are created by the store (a worker opening it as a node), dropped here.
 */
class PostgresBench {
  readonly #base: URL;
  readonly #live = new Set<string>();
  #next = 0;
  #workers: WorkerProcesses | null = null;
  /** The server's CPU time, where it runs on this host. */
  readonly #serverCpu: ServerCpu | null;
  #aborting: Promise<void> | null = null;

  constructor(url: string) {
    this.#base = new URL(url);
    this.#serverCpu = ServerCpu.forUrl(url);
  }

  /** Whether runs report the server's CPU time (it runs on this host). */
  get measuresServerCpu(): boolean {
    return this.#serverCpu !== null;
  }

  describe(): string {
    const u = new URL(this.#base.href);
    u.password = u.password ? '***' : '';
    for (const k of LONGHAUL_OPTIONS) u.searchParams.delete(k);
    return u.href;
  }

  /** Measures the server: `SELECT 1` round trips, then single-row INSERTs, each its own transaction. */
  async baseline(): Promise<ServerBaseline> {
    return this.#admin(async (db) => {
      const schema = this.#newSchema('raw');
      const version = (await db.query<{ v: string }>("SELECT current_setting('server_version') AS v"))
        .rows[0]!.v;
      const sync = (await db.query<{ v: string }>("SELECT current_setting('synchronous_commit') AS v"))
        .rows[0]!.v;
      await db.query(`CREATE SCHEMA ${schema}`);
      await db.query(`CREATE TABLE ${schema}.t (id bigserial PRIMARY KEY, v text NOT NULL)`);
      const cpu = process.cpuUsage();
      const roundTripMs = await timeEach(1000, () => db.query({ name: 'rt', text: 'SELECT 1' }));
      const used = process.cpuUsage(cpu);
      const roundTripCpuMs = (used.user + used.system) / 1000 / 1001;
      const insert = { name: 'ins', text: `INSERT INTO ${schema}.t (v) VALUES ($1)`, values: ['x'] };
      const commitMs = await timeEach(2000, () => db.query(insert));
      await this.#drop(db, schema);
      return { version, synchronousCommit: sync, commitMs, roundTripMs, roundTripCpuMs };
    });
  }

  /** A client and one worker in this process, as the SQLite runs. */
  async inProcess(workload: 'W1' | 'W2', count: number): Promise<RunResult> {
    const schema = this.#newSchema(workload.toLowerCase());
    try {
      const env = await startInProcess(this.#url(schema), workload === 'W2' ? W2_WORKER_OPTIONS : {});
      const probe = workload === 'W1' ? probeStore(env.runtime.ctx.store) : null;
      try {
        const before = readCounters(env.runtime);
        const server = this.#serverCpu?.ms();
        const cpu = process.cpuUsage();
        const run =
          workload === 'W1'
            ? { w1: await driveW1(env.client, count), seconds: 0 }
            : { w1: null, seconds: await driveW2(env.client, count) };
        const used = process.cpuUsage(cpu);
        const serverCpuMs = serverCpuSince(this.#serverCpu, server);
        const probed = probe?.stop();
        return {
          processes: 1,
          count,
          latencies: run.w1?.latencies ?? [],
          inOrder: run.w1?.inOrder ?? [],
          seconds: run.seconds,
          counters: subtractCounters(readCounters(env.runtime), before),
          perProcess: [],
          notifications: env.runtime.ctx.store.notifications !== undefined,
          cpuMs: (used.user + used.system) / 1000,
          ...(serverCpuMs === undefined ? {} : { serverCpuMs }),
          ...(probed ? { probe: probed } : {}),
          ...(run.w1 ? { phases: await phasesOf(env.client, run.w1.spans) } : {}),
        };
      } finally {
        probe?.stop();
        await env.close();
      }
    } finally {
      await this.#admin((db) => this.#drop(db, schema));
    }
  }

  /** `PROCESSES` worker processes, driven by a client in this process. */
  async multiProcess(
    workload: 'W1' | 'W2',
    count: number,
    pollIntervalMs: number | undefined,
  ): Promise<RunResult> {
    const schema = this.#newSchema(`${workload.toLowerCase()}_${PROCESSES}p`);
    const url = this.#url(schema);
    try {
      const workers = await WorkerProcesses.spawn(PROCESSES, {
        url,
        taskQueue: TASK_QUEUE,
        pollIntervalMs,
        maxConcurrent: workload === 'W2' ? W2_IN_FLIGHT : 0,
      });
      this.#workers = workers;
      const client = await Client.connect(url);
      const runtime = await Runtime.acquire(url, { mode: 'client' });
      try {
        // Idle for a moment first: what the workers' polling costs when there is nothing to do.
        await workers.mark();
        await sleep(IDLE_MS);
        const idle = addCounters(await workers.mark());
        const before = readCounters(runtime);
        const server = this.#serverCpu?.ms();
        const started = performance.now();
        const run =
          workload === 'W1'
            ? { w1: await workers.guard(driveW1(client, count)), seconds: 0 }
            : { w1: null, seconds: await workers.guard(driveW2(client, count)) };
        const own = subtractCounters(readCounters(runtime), before);
        const elapsedMs = performance.now() - started;
        const serverCpuMs = serverCpuSince(this.#serverCpu, server);
        const perProcess = await workers.stop();
        return {
          processes: PROCESSES,
          count,
          latencies: run.w1?.latencies ?? [],
          inOrder: run.w1?.inOrder ?? [],
          seconds: run.seconds,
          counters: addCounters([own, ...perProcess]),
          clientTransactions: own.transactions,
          perProcess: perProcess.map((c) => c.transactions),
          notifications: runtime.ctx.store.notifications !== undefined,
          pollIntervalMs: workers.pollIntervalMs,
          idlePolls: (idle.transactions / IDLE_MS) * elapsedMs,
          ...(serverCpuMs === undefined ? {} : { serverCpuMs }),
          ...(run.w1 ? { phases: await phasesOf(client, run.w1.spans) } : {}),
        };
      } finally {
        await runtime.release();
        await client.close();
      }
    } finally {
      await this.#workers?.kill();
      this.#workers = null;
      await this.#admin((db) => this.#drop(db, schema));
    }
  }

  /** Stops any worker processes and drops every schema this benchmark made. Safe to call again. */
  abort(): Promise<void> {
    this.#aborting ??= this.#abort().finally(() => {
      this.#aborting = null;
    });
    return this.#aborting;
  }

  async #abort(): Promise<void> {
    await this.#workers?.kill();
    this.#workers = null;
    if (this.#live.size === 0) return;
    await this.#admin(async (db) => {
      for (const schema of [...this.#live]) await this.#drop(db, schema);
    }).catch((err: unknown) => {
      console.error(`could not drop ${[...this.#live].join(', ')}: ${String(err)}; drop them by hand`);
    });
  }

  #newSchema(suffix: string): string {
    const name = `lh_bench_${process.pid}_${suffix}_${this.#next++}`;
    this.#live.add(name);
    return name;
  }

  #url(schema: string): string {
    const u = new URL(this.#base.href);
    u.searchParams.set('schema', schema);
    return u.href;
  }

  /**
   * Drops a schema; retried when it deadlocks or times out against connections still using it (after an
   * interrupt, the client here may still be running while the schema goes).
   */
  async #drop(db: pg.Client, schema: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        this.#live.delete(schema);
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt >= 5 || (code !== '40P01' && code !== '55P03')) throw err;
        await sleep(200 * attempt);
      }
    }
  }

  /** Runs `fn` on a connection of its own (not the store's), closed afterwards. */
  async #admin<T>(fn: (db: pg.Client) => Promise<T>): Promise<T> {
    const u = new URL(this.#base.href);
    for (const k of LONGHAUL_OPTIONS) u.searchParams.delete(k);
    const db = new pg.Client({ connectionString: u.href });
    await db.connect();
    try {
      // A worker still holding a lock must not hang the cleanup.
      await db.query("SET lock_timeout = '5s'");
      return await fn(db);
    } finally {
      await db.end();
    }
  }
}

/** Mean wall time of `op` over `times` sequential calls (ms). */
async function timeEach(times: number, op: () => Promise<unknown>): Promise<number> {
  await op(); // prepares a named statement
  const start = performance.now();
  for (let i = 0; i < times; i++) await op();
  return (performance.now() - start) / times;
}

/** CPU ms the server used since `before` (a `ServerCpu.ms()` reading), if it can be read. */
function serverCpuSince(reader: ServerCpu | null, before: number | undefined): number | undefined {
  const now = reader?.ms();
  return now === undefined || before === undefined ? undefined : now - before;
}
