/**
 * Shared set-up for the end-to-end tests: a real SQLite file in a fresh temp directory, workers running
 * in this process, and a client. Every wait is bounded (`eventually`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { Client, type WorkflowHandle } from 'longhaul/client';
import { Worker, type WorkerOptions } from 'longhaul/worker';
import pg from 'pg';
import { expect } from 'vitest';
import { Runtime } from '../../src/runtime/runtime.js';
import * as baseActivities from '../fixtures/e2e/activities.js';
import * as engineActivities from '../fixtures/e2e/engine-activities.js';

/** Absolute path of a module under test/fixtures/e2e/. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/e2e/${name}`, import.meta.url));
}

/** The workflows module most tests run (it re-exports the smoke test's workflows too). */
export const workflowsPath = fixture('engine-workflows.ts');

/** Every fixture activity. */
export const activities = { ...baseActivities, ...engineActivities };

/** Worker options that keep the suite fast: short polls, sweeps and workflow-task backoff. */
export const fastWorkerOptions = {
  pollInterval: '20ms',
  sweepInterval: '50ms',
  shutdownGraceTime: '2s',
  workflowTaskRetry: { initialInterval: '50ms', maximumInterval: '200ms' },
} satisfies Partial<WorkerOptions>;

export interface EnvOptions {
  /** Task queue of the default worker (default 'e2e'). */
  readonly taskQueue?: string;
  /** Options of the worker started with the environment, or `false` to start none. */
  readonly worker?: Partial<WorkerOptions> | false;
}

interface RunningWorker {
  readonly worker: Worker;
  readonly running: Promise<void>;
}

let counter = 0;

/** Which store the end-to-end suite runs on. */
const testStore = process.env.LONGHAUL_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';
const POSTGRES = 'postgres://postgres@127.0.0.1:5432/test';
let schemas = 0;

function nextSchema(): string {
  schemas++;
  return `lh_e2e_${process.pid}_${schemas}_${Date.now().toString(36)}`;
}

function postgresUrl(schema: string): string {
  return `${POSTGRES}?schema=${schema}`;
}

async function withPostgres<T>(fn: (pg: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A unique workflow id for one test. */
export function uniqueId(prefix: string): string {
  counter++;
  return `${prefix}-${counter}-${Date.now().toString(36)}`;
}

export class TestEnv {
  readonly #workers: RunningWorker[] = [];
  #client: Client | undefined;

  private constructor(
    readonly dir: string,
    readonly dbPath: string,
    readonly url: string,
    readonly taskQueue: string,
  ) {}

  /**
   * Creates the temp dir and store, starts a worker (unless `worker: false`) and connects a client. The
   * store is a SQLite file, or a fresh schema on the test PostgreSQL server when LONGHAUL_TEST_STORE is
   * 'postgres' (the suite runs on both).
   */
  static async create(options: EnvOptions = {}): Promise<TestEnv> {
    const dir = await mkdtemp(path.join(tmpdir(), 'longhaul-e2e-'));
    const dbPath = path.join(dir, 'db.sqlite');
    const url = testStore === 'postgres' ? postgresUrl(nextSchema()) : `sqlite:${dbPath}`;
    const env = new TestEnv(dir, dbPath, url, options.taskQueue ?? 'e2e');
    try {
      if (options.worker === false) {
        // A worker (a node) creates the store; a client never does.
        const bootstrap = await Worker.create({ connection: env.url, taskQueue: env.taskQueue, activities });
        await bootstrap.shutdown();
      } else {
        await env.startWorker(options.worker ?? {});
      }
      env.#client = await Client.connect(env.url);
    } catch (err) {
      await env.close();
      throw err;
    }
    return env;
  }

  get client(): Client {
    if (!this.#client) throw new Error('the environment has no client (closed?)');
    return this.#client;
  }

  /** The most recently started worker that is still running. */
  get worker(): Worker {
    const last = this.#workers[this.#workers.length - 1];
    if (!last) throw new Error('no worker is running');
    return last.worker;
  }

  /** Creates and runs a worker on this store; options override the fast defaults. */
  async startWorker(overrides: Partial<WorkerOptions> = {}): Promise<Worker> {
    const worker = await Worker.create({
      connection: this.url,
      taskQueue: this.taskQueue,
      workflowsPath,
      activities,
      ...fastWorkerOptions,
      ...overrides,
    });
    this.#workers.push({ worker, running: worker.run() });
    return worker;
  }

  /** Shuts a worker down (default: every running worker) and waits until it has stopped. */
  async stopWorker(worker?: Worker): Promise<void> {
    const targets = worker ? this.#workers.filter((w) => w.worker === worker) : [...this.#workers];
    for (const t of targets) {
      await t.worker.shutdown();
      await t.running;
      this.#workers.splice(this.#workers.indexOf(t), 1);
    }
  }

  /** Number of runs stored for `workflowId` (every run when omitted), read straight from the database. */
  async countRuns(workflowId?: string): Promise<number> {
    if (testStore === 'postgres') {
      const schema = new URL(this.url).searchParams.get('schema')!;
      const sql = `SELECT count(*)::int AS n FROM "${schema}".runs${workflowId === undefined ? '' : ' WHERE workflow_id = $1'}`;
      return withPostgres(
        async (pg) => (await pg.query(sql, workflowId === undefined ? [] : [workflowId])).rows[0].n,
      );
    }
    const db = new Database(this.dbPath, { readonly: true, fileMustExist: true });
    try {
      const row = (
        workflowId === undefined
          ? db.prepare('SELECT count(*) AS n FROM runs').get()
          : db.prepare('SELECT count(*) AS n FROM runs WHERE workflow_id = ?').get(workflowId)
      ) as { n: number };
      return row.n;
    } finally {
      db.close();
    }
  }

  /** Stops every worker, closes the client and removes the temp dir. */
  async close(): Promise<void> {
    await this.stopWorker();
    await this.#client?.close();
    this.#client = undefined;
    await rm(this.dir, { recursive: true, force: true });
    if (testStore === 'postgres') {
      const schema = new URL(this.url).searchParams.get('schema')!;
      await withPostgres((pg) => pg.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
    }
  }
}

/** Retries `fn` until it returns without throwing; fails with its last error after `timeoutMs`. */
export async function eventually<T>(fn: () => T | Promise<T>, timeoutMs = 5000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() >= deadline) throw err;
    }
    await delay(intervalMs);
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Awaits a promise that must reject with an instance of `cls` (within `timeoutMs`), and returns the error. */
export async function rejectsWith<E>(
  p: Promise<unknown>,
  // biome-ignore lint/suspicious/noExplicitAny: any error class, whatever its constructor takes.
  cls: abstract new (...args: any[]) => E,
  timeoutMs = 10_000,
): Promise<E> {
  const TIMEOUT = Symbol('timeout');
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    p.then(
      () => ({ resolved: true as const }),
      (error: unknown) => ({ resolved: false as const, error }),
    ),
    new Promise<typeof TIMEOUT>((resolve) => {
      timer = setTimeout(() => resolve(TIMEOUT), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (outcome === TIMEOUT)
    throw new Error(`expected a rejection with ${cls.name} within ${timeoutMs} ms; none came`);
  if (outcome.resolved) throw new Error(`expected a rejection with ${cls.name}, but the promise resolved`);
  expect(outcome.error).toBeInstanceOf(cls);
  return outcome.error as E;
}

/** Calls `fn`, which must throw synchronously or reject with `cls`; returns the error. */
export async function throwsWith<E>(
  fn: () => unknown,
  // biome-ignore lint/suspicious/noExplicitAny: any error class, whatever its constructor takes.
  cls: abstract new (...args: any[]) => E,
): Promise<E> {
  let p: Promise<unknown>;
  try {
    p = Promise.resolve(fn());
  } catch (err) {
    expect(err).toBeInstanceOf(cls);
    return err as E;
  }
  return rejectsWith(p, cls);
}

/** Waits (bounded) for a run's result. */
export async function resultWithin<T>(handle: WorkflowHandle<T>, timeoutMs = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      handle.result(),
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(
          () => reject(new Error(`workflow ${handle.workflowId} did not close within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Event types of a run's history, in order. */
export async function historyTypes(handle: WorkflowHandle<unknown>): Promise<string[]> {
  return (await handle.fetchHistory()).events.map((e) => e.type);
}

/** Events of one type in a run's history. */
export async function eventsOf(
  handle: WorkflowHandle<unknown>,
  type: string,
): Promise<{ eventId: number; type: string; time: string; attributes: Record<string, unknown> }[]> {
  const { events } = await handle.fetchHistory();
  return events
    .filter((e) => e.type === type)
    .map((e) => ({ ...e, attributes: e.attributes as Record<string, unknown> }));
}

/** What each `read` of a store asked, call by call (`method arg arg`, string arguments only). */
export interface StoreReadLog {
  readonly reads: string[][];
  /** Ends the recording and releases the runtime. */
  stop(): Promise<void>;
}

/**
 * Records the reads of the runtime this process shares for `url` (its client and its workers use one
 * store): each read's calls, in order.
 */
export async function recordStoreReads(url: string): Promise<StoreReadLog> {
  const runtime = await Runtime.acquire(url, { mode: 'client' });
  const store = runtime.ctx.store;
  const reads: string[][] = [];
  const read = store.read;
  const original = read.bind(store);
  store.read = (fn, options) =>
    original((tx) => {
      const asked: string[] = [];
      reads.push(asked);
      return fn(
        watchCalls(tx, (name, args) => {
          asked.push(`${name} ${args.filter((a) => typeof a === 'string').join(' ')}`);
        }),
      );
    }, options);
  return {
    reads,
    async stop() {
      store.read = read;
      await runtime.release();
    },
  };
}

/** `tx`, telling `onCall` of each method called on it (name and arguments) before the call runs. */
function watchCalls<T extends object>(tx: T, onCall: (name: string, args: readonly unknown[]) => void): T {
  return new Proxy(tx, {
    get(target, name) {
      const member = Reflect.get(target, name, target);
      if (typeof member !== 'function') return member;
      return (...args: unknown[]) => {
        onCall(String(name), args);
        return member.apply(target, args);
      };
    },
  });
}

/** What `holdBackTimerStarts` saw. */
export interface HeldBackCommits {
  /** Commits that started a timer and whose callers were held back. */
  readonly heldBack: number;
  /** Commits that fired a timer while some caller was being held back. */
  readonly firedMeanwhile: number;
  stop(): Promise<void>;
}

/**
 * Holds back, for `ms`, the caller of each committed transaction (of the runtime this process shares for
 * `url`) that started a timer: its commit is done, but its code after the commit runs late, as on a
 * loaded machine. A timer due sooner can then be fired and handed over before that code has run.
 */
export async function holdBackTimerStarts(url: string, ms: number): Promise<HeldBackCommits> {
  const runtime = await Runtime.acquire(url, { mode: 'client' });
  const store = runtime.ctx.store;
  const transaction = store.transaction;
  const original = transaction.bind(store);
  let heldBack = 0;
  let firedMeanwhile = 0;
  let holding = 0;
  store.transaction = async (fn) => {
    let startsTimer = false;
    let firesTimer = false;
    const value = await original((tx) => {
      startsTimer = false; // a re-run transaction starts afresh
      firesTimer = false;
      return fn(
        watchCalls(tx, (name, args) => {
          if (name !== 'appendEvents') return;
          const types = (args[2] as readonly { type: string }[]).map((e) => e.type);
          startsTimer ||= types.includes('TimerStarted');
          firesTimer ||= types.includes('TimerFired');
        }),
      );
    });
    if (firesTimer && holding > 0) firedMeanwhile++;
    if (startsTimer) {
      heldBack++;
      holding++;
      await new Promise((r) => setTimeout(r, ms));
      holding--;
    }
    return value;
  };
  return {
    get heldBack() {
      return heldBack;
    },
    get firedMeanwhile() {
      return firedMeanwhile;
    },
    async stop() {
      store.transaction = transaction;
      await runtime.release();
    },
  };
}
