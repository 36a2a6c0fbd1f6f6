/**
 * Worker processes for the multi-process benchmark runs: spawns worker-process.js children, waits until
 * each polls, and collects their counters when they stop. Every wait is bounded; `kill()` ends whatever
 * is still running and is safe to call at any time (call it in a `finally`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Runtime } from '../src/runtime/runtime.js';

/** Work done by one process's runtime: its store transactions, and its store's commits and re-runs. */
export interface WorkerCounters {
  /** Store transactions the runtime issued (`ctx.stats.transactions`; reads are not counted). */
  readonly transactions: number;
  /** Transactions and reads that committed, where the store counts them (else null). */
  readonly commits: number | null;
  /** Attempts re-run after a transient fault (deadlock, serialization failure, ...), or null. */
  readonly retries: number | null;
  /** Reads answered from remembered rows, or null (PostgreSQL: postgres-row-memory.ts). */
  readonly remembered: number | null;
  /** Attempts re-run because a remembered row had changed (another process wrote the run), or null. */
  readonly stale: number | null;
}

export type ParentMessage = { readonly type: 'mark' } | { readonly type: 'stop' };
export type ChildMessage =
  /** The worker polls, at most `pollIntervalMs` apart. */
  | { readonly type: 'ready'; readonly pollIntervalMs: number }
  /** Counters since the previous mark (or since ready). */
  | { readonly type: 'marked'; readonly counters: WorkerCounters }
  /** Counters since the last mark. */
  | { readonly type: 'stopped'; readonly counters: WorkerCounters };

/** Counters of a runtime; `commits` and `retries` from stores that keep them (PostgresStore.stats()). */
export function readCounters(runtime: Runtime): WorkerCounters {
  type Stats = { commits?: number; retries?: number; remembered?: number; stale?: number };
  const store = runtime.ctx.store as { stats?: () => Stats };
  const stats = typeof store.stats === 'function' ? store.stats() : {};
  return {
    transactions: runtime.ctx.stats.transactions,
    commits: stats.commits ?? null,
    retries: stats.retries ?? null,
    remembered: stats.remembered ?? null,
    stale: stats.stale ?? null,
  };
}

export function subtractCounters(a: WorkerCounters, b: WorkerCounters): WorkerCounters {
  const minus = (x: number | null, y: number | null): number | null =>
    x === null || y === null ? null : x - y;
  return {
    transactions: a.transactions - b.transactions,
    commits: minus(a.commits, b.commits),
    retries: minus(a.retries, b.retries),
    remembered: minus(a.remembered, b.remembered),
    stale: minus(a.stale, b.stale),
  };
}

export function addCounters(counters: readonly WorkerCounters[]): WorkerCounters {
  const sum = (pick: (c: WorkerCounters) => number | null): number | null =>
    counters.reduce<number | null>((acc, c) => {
      const v = pick(c);
      return acc === null || v === null ? null : acc + v;
    }, 0);
  return {
    transactions: sum((c) => c.transactions) ?? 0,
    commits: sum((c) => c.commits),
    retries: sum((c) => c.retries),
    remembered: sum((c) => c.remembered),
    stale: sum((c) => c.stale),
  };
}

export interface WorkerProcessOptions {
  readonly url: string;
  readonly taskQueue: string;
  /** Poll interval of each worker, ms (undefined: the worker's default). */
  readonly pollIntervalMs: number | undefined;
  /** Workflow and activity tasks each worker runs at once (0: the worker's defaults). */
  readonly maxConcurrent: number;
}

/** How long a child may take to open the store and start polling, and to stop, in ms. */
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

const scriptPath = fileURLToPath(
  new URL(`./worker-process.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url),
);

/** One child and the messages it sent that nobody has taken yet. */
class WorkerChild {
  readonly #inbox: ChildMessage[] = [];
  readonly #waiters = new Set<() => void>();
  #exit: string | null = null;

  constructor(readonly process: ChildProcess) {
    process.on('message', (m: ChildMessage) => {
      this.#inbox.push(m);
      this.#wake();
    });
    process.on('exit', (code, signal) => {
      this.#exit = signal ? `signal ${signal}` : `code ${code}`;
      this.#wake();
    });
    process.on('error', (err) => {
      this.#exit ??= `error ${err.message}`;
      this.#wake();
    });
  }

  get exited(): string | null {
    return this.#exit;
  }

  send(message: ParentMessage): void {
    if (this.process.connected) this.process.send(message);
  }

  /** The next message of `type`; rejects if the child exits first or after `timeoutMs`. */
  async receive<T extends ChildMessage['type']>(
    type: T,
    timeoutMs: number,
  ): Promise<Extract<ChildMessage, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#inbox.findIndex((m) => m.type === type);
      if (i >= 0) return this.#inbox.splice(i, 1)[0] as Extract<ChildMessage, { type: T }>;
      if (this.#exit !== null) {
        throw new Error(`worker process ${this.process.pid} exited (${this.#exit}) before '${type}'`);
      }
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`worker process ${this.process.pid} sent no '${type}' within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.#waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.#waiters.add(done);
      });
    }
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}

export class WorkerProcesses {
  /** The workers' poll interval (ms), as they reported it when ready. */
  pollIntervalMs = 0;

  private constructor(readonly children: readonly WorkerChild[]) {}

  /** Spawns `count` workers and waits until each polls; on failure, kills them all and rethrows. */
  static async spawn(count: number, options: WorkerProcessOptions): Promise<WorkerProcesses> {
    const args = [
      ...process.execArgv,
      scriptPath,
      options.url,
      options.taskQueue,
      String(options.pollIntervalMs ?? 0),
      String(options.maxConcurrent),
    ];
    const children: WorkerChild[] = [];
    const workers = new WorkerProcesses(children);
    try {
      for (let i = 0; i < count; i++) {
        children.push(
          new WorkerChild(spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })),
        );
      }
      const ready = await Promise.all(children.map((c) => c.receive('ready', READY_TIMEOUT_MS)));
      workers.pollIntervalMs = ready[0]!.pollIntervalMs;
      return workers;
    } catch (err) {
      await workers.kill();
      throw err;
    }
  }

  /** Each child's counters since its previous mark (or since it was ready), which then start again. */
  async mark(): Promise<WorkerCounters[]> {
    for (const c of this.children) c.send({ type: 'mark' });
    const marked = await Promise.all(this.children.map((c) => c.receive('marked', STOP_TIMEOUT_MS)));
    return marked.map((m) => m.counters);
  }

  /**
   * Waits for `work`, but rejects as soon as a child exits: a workload waiting for its workers would
   * otherwise wait forever.
   */
  async guard<T>(work: Promise<T>): Promise<T> {
    work.catch(() => undefined); // if a child's exit wins, `work`'s later failure is not unhandled
    const offs: (() => void)[] = [];
    const failed = new Promise<never>((_, reject) => {
      for (const c of this.children) {
        const onExit = (): void => reject(new Error(`worker process ${c.process.pid} exited (${c.exited})`));
        if (c.exited !== null) onExit();
        c.process.once('exit', onExit);
        offs.push(() => c.process.off('exit', onExit));
      }
    });
    try {
      return await Promise.race([work, failed]);
    } finally {
      for (const off of offs) off();
    }
  }

  /** Stops every child gracefully; returns the counters each reported since `mark()`. */
  async stop(): Promise<WorkerCounters[]> {
    for (const c of this.children) c.send({ type: 'stop' });
    const stopped = await Promise.all(this.children.map((c) => c.receive('stopped', STOP_TIMEOUT_MS)));
    await Promise.all(this.children.map((c) => exited(c, STOP_TIMEOUT_MS)));
    return stopped.map((m) => m.counters);
  }

  /** Ends every child still running: SIGTERM (the child shuts its worker down), SIGKILL after 5 s. */
  async kill(): Promise<void> {
    const running = this.children.filter((c) => c.exited === null);
    for (const c of running) c.process.kill('SIGTERM');
    const graceful = await Promise.all(running.map((c) => exited(c, 5000)));
    running.forEach((c, i) => {
      if (!graceful[i]) c.process.kill('SIGKILL');
    });
  }
}

/** Resolves true once the child has exited, false after `timeoutMs`. */
function exited(child: WorkerChild, timeoutMs: number): Promise<boolean> {
  if (child.exited !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.process.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
