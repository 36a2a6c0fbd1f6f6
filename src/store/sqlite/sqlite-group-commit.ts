import Database from 'better-sqlite3';
import { StoreError } from '../../common/errors.js';
import { classifyStoreError, errorCode, isTransientStoreErrorClass } from '../errors.js';
import type { SqliteHistoryLog } from './sqlite-history-log.js';
import type { SqliteStatements } from './sqlite-statements.js';
import { SqliteTx } from './sqlite-tx.js';
import type { RunKeyCache } from './sqlite-tx-base.js';

/** Limits of one group (see `SqliteGroupCommit`). */
export interface GroupCommitLimits {
  /** Most callbacks one physical transaction runs. */
  readonly maxGroupSize: number;
  /** A group stops taking queued callbacks once it has been open this long, in ms. */
  readonly maxGroupMs: number;
  /** How long, in ms, a group keeps retrying transient faults before failing with STORE_BUSY. */
  readonly busyRetryBudgetMs: number;
}

/** Counters of one store's write path, for diagnostics and tests (see `SqliteStore.stats`). */
export interface GroupCommitStats {
  /** Callbacks settled (resolved or rejected), each once however often it ran. */
  transactions: number;
  /** Physical `COMMIT`s that succeeded. */
  commits: number;
  /** Physical transactions rolled back as a whole (transient faults, failed commits). */
  rollbacks: number;
  /** Callbacks that threw and were rolled back to their savepoint alone. */
  callbackFailures: number;
  /** Groups whose COMMIT failed for a non-transient reason and whose callbacks were re-run one by one. */
  isolations: number;
  /** The largest number of callbacks committed by one COMMIT. */
  largestGroup: number;
}

interface WriteJob {
  readonly kind: 'write';
  readonly fn: (tx: SqliteTx) => Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

/** Runs alone on the connection, outside any write group (reads of an in-memory store, checkpoints). */
interface ExclusiveJob {
  readonly kind: 'exclusive';
  readonly run: () => Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

type Job = WriteJob | ExclusiveJob;

/** How long, in ms, the queue is drained before it lets the event loop run timers and I/O. */
const YIELD_AFTER_MS = 50;

type Outcome =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: unknown };

type Attempt =
  | { readonly kind: 'committed'; readonly outcomes: readonly Outcome[] }
  /** Roll back happened; every callback of the group may be re-run as it is. */
  | { readonly kind: 'transient'; readonly error: unknown }
  /**
   * The physical transaction failed for a reason that is not transient; nothing was committed. `own`: the
   * error is the one a callback threw (SQLite then rolled everything back on its own).
   */
  | { readonly kind: 'failed'; readonly error: unknown; readonly own?: boolean };

/**
 * Group commit on one SQLite connection: `Store.transaction` callbacks that are queued together share one
 * `BEGIN IMMEDIATE ... COMMIT`, so one fsync acknowledges many of them.
 *
 * States: idle (queue empty) -> draining. Draining takes the oldest queued job. A write job opens a
 * group: `BEGIN IMMEDIATE`, then each callback in call order inside its own `SAVEPOINT`; after each one,
 * the group takes the next queued write job while it has fewer than `maxGroupSize` callbacks and has
 * been open less than `maxGroupMs`; then `COMMIT`. Nothing waits for company: a lone callback commits as
 * soon as it returns. Callbacks queued while a group runs (the group awaits each callback) join it.
 * After `YIELD_AFTER_MS` of draining without a break, the next group waits for one event-loop turn, so a
 * queue kept full by callers never starves timers and I/O (the history compactor, wake-ups).
 *
 * Guarantees:
 * - Effects apply in call order; a callback sees the writes of the callbacks before it in its group, as
 *   if they had run one after another.
 * - A callback that throws is rolled back to its savepoint (`ROLLBACK TO` + `RELEASE`), so it leaves no
 *   write behind, and its promise rejects with the same error; the others are unaffected.
 * - No promise settles before the group's `COMMIT` succeeded: neither a value nor a callback's own
 *   error is reported from state that might not become durable (a failure may depend on an earlier
 *   member's writes).
 * - A transient fault (SQLITE_BUSY at `BEGIN`, inside a statement, or at `COMMIT`) rolls the whole
 *   physical transaction back and re-runs every callback of the group after a jittered backoff, until
 *   `busyRetryBudgetMs` has passed (then all of them reject with STORE_BUSY). Callbacks may therefore run
 *   more than once and must have no effects outside the transaction.
 * - A `COMMIT` that fails for another reason (an I/O error, a deferred constraint) commits nothing; the
 *   group's callbacks are re-run one per physical transaction, so the failure reaches only the callbacks
 *   whose own transaction fails. The same happens when SQLite rolls back the whole transaction on its own
 *   (disk full).
 */
export class SqliteGroupCommit {
  readonly stats: GroupCommitStats = {
    transactions: 0,
    commits: 0,
    rollbacks: 0,
    callbackFailures: 0,
    isolations: 0,
    largestGroup: 0,
  };
  private readonly queue: Job[] = [];
  private draining = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly db: Database.Database,
    readonly statements: SqliteStatements,
    private readonly limits: GroupCommitLimits,
    private readonly where: string,
    /** Run keys known to be committed; handles publish what they learned after their COMMIT. */
    private readonly keys: RunKeyCache,
    private readonly history: SqliteHistoryLog,
  ) {}

  write<T>(fn: (tx: SqliteTx) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.enqueue({ kind: 'write', fn, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /** Runs `run` alone on the connection, after every job queued before it. */
  exclusive<T>(run: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.enqueue({ kind: 'exclusive', run, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  /** Resolves once the queue is empty and no group is open. */
  idle(): Promise<void> {
    if (!this.draining) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private enqueue(job: Job): void {
    this.queue.push(job);
    if (this.draining) return;
    this.draining = true;
    // Start on a microtask, like a mutex would: the caller's synchronous code finishes first, and calls
    // it makes in the same turn join the first group.
    queueMicrotask(() => void this.drain());
  }

  private async drain(): Promise<void> {
    let slice = performance.now();
    while (this.queue.length > 0) {
      if (performance.now() - slice >= YIELD_AFTER_MS) {
        // Jobs chained by microtasks would otherwise keep the event loop from timers and I/O for as long
        // as callers keep the queue full.
        await new Promise<void>((resolve) => setImmediate(resolve));
        slice = performance.now();
      }
      const job = this.queue.shift()!;
      if (job.kind === 'exclusive') {
        try {
          job.resolve(await job.run());
        } catch (err) {
          job.reject(err);
        }
        continue;
      }
      const members = [job];
      try {
        await this.runGroup(members, true);
      } catch (err) {
        // A bug in the group logic itself: fail what is left rather than hang it.
        this.rollbackIfOpen();
        for (const m of members) m.reject(err);
      }
    }
    this.draining = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Runs `members` (growing it from the queue when `fill`) until they are settled. */
  private async runGroup(members: WriteJob[], fill: boolean): Promise<void> {
    const started = performance.now();
    for (let attempt = 0; ; attempt++) {
      const result = await this.attempt(members, fill && attempt === 0);
      if (result.kind === 'committed') {
        this.stats.commits++;
        this.stats.transactions += members.length;
        this.stats.largestGroup = Math.max(this.stats.largestGroup, members.length);
        members.forEach((m, i) => {
          const outcome = result.outcomes[i]!;
          if (outcome.ok) m.resolve(outcome.value);
          else m.reject(outcome.error);
        });
        return;
      }
      if (result.kind === 'transient') {
        if (performance.now() - started >= this.limits.busyRetryBudgetMs) {
          this.stats.transactions += members.length;
          const err = busyError(this.where, this.limits.busyRetryBudgetMs, result.error);
          for (const m of members) m.reject(err);
          return;
        }
        await sleep(backoffMs(attempt));
        continue;
      }
      if (members.length > 1) {
        this.stats.isolations++;
        for (const m of members) await this.runGroup([m], false);
        return;
      }
      this.stats.transactions++;
      members[0]!.reject(result.own ? result.error : storeFailure(this.where, result.error));
      return;
    }
  }

  /** One physical transaction over `members` (appending queued write jobs when `fill`). */
  private async attempt(members: WriteJob[], fill: boolean): Promise<Attempt> {
    const stmts = this.statements;
    try {
      stmts.beginImmediate.run();
    } catch (err) {
      return this.abandon(err);
    }
    const opened = performance.now();
    const outcomes: Outcome[] = [];
    const handles: SqliteTx[] = [];
    try {
      for (let i = 0; ; i++) {
        if (i === members.length && !(fill && this.takeNext(members, opened))) break;
        const job = members[i]!;
        stmts.savepoint.run();
        const tx = new SqliteTx(stmts, true, this.keys, this.history);
        let value: unknown;
        let error: unknown;
        let threw = false;
        try {
          value = await job.fn(tx);
        } catch (err) {
          threw = true;
          error = err;
        } finally {
          tx.end();
        }
        // A transient fault seen by any statement forces a re-run, even if the callback swallowed it.
        const transient =
          tx.transientFault ??
          (threw && isTransientStoreErrorClass(classifyStoreError(error)) ? error : undefined);
        if (transient !== undefined) return this.abandon(transient, true);
        if (!this.db.inTransaction) {
          // SQLite rolled the whole transaction back on its own (e.g. SQLITE_FULL): every member is undone.
          if (threw) return { kind: 'failed', error: memberError(this.where, error), own: true };
          return { kind: 'failed', error: new Error('SQLite rolled the transaction back on its own') };
        }
        if (threw) {
          stmts.rollbackToSavepoint.run();
          stmts.releaseSavepoint.run();
          this.stats.callbackFailures++;
          outcomes.push({ ok: false, error: memberError(this.where, error) });
        } else {
          stmts.releaseSavepoint.run();
          outcomes.push({ ok: true, value });
          handles.push(tx);
        }
      }
      stmts.commit.run();
    } catch (err) {
      return this.abandon(err);
    }
    for (const tx of handles) this.keys.publish(tx.learnedKeys);
    return { kind: 'committed', outcomes };
  }

  /** Takes the next queued write job into the group if the group's limits allow. */
  private takeNext(members: WriteJob[], opened: number): boolean {
    const next = this.queue[0];
    if (next?.kind !== 'write') return false;
    if (members.length >= this.limits.maxGroupSize) return false;
    if (performance.now() - opened >= this.limits.maxGroupMs) return false;
    this.queue.shift();
    members.push(next);
    return true;
  }

  /** Rolls back whatever is open and classifies `err` for `runGroup`. */
  private abandon(err: unknown, transient = false): Attempt {
    this.rollbackIfOpen();
    if (transient || isTransientStoreErrorClass(classifyStoreError(err)))
      return { kind: 'transient', error: err };
    return { kind: 'failed', error: err };
  }

  private rollbackIfOpen(): void {
    if (!this.db.open || !this.db.inTransaction) return;
    this.stats.rollbacks++;
    try {
      this.statements.rollback.run();
    } catch {
      // The connection already rolled back (SQLite does on some errors); nothing is left to undo.
    }
  }
}

/** What a callback's promise rejects with: its own error, driver errors wrapped as STORE_FAILURE. */
function memberError(where: string, err: unknown): unknown {
  return err instanceof Database.SqliteError ? storeFailure(where, err) : err;
}

/** Jittered exponential backoff: 2 ms doubling to 100 ms, each delay drawn from [half, full]. */
export function backoffMs(attempt: number): number {
  const ceiling = Math.min(100, 2 * 2 ** Math.min(attempt, 10));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function busyError(where: string, budgetMs: number, cause: unknown): StoreError {
  return new StoreError(
    'STORE_BUSY',
    `${where} stayed locked by another connection for ${budgetMs} ms; another process may hold a long ` +
      'write transaction, or the file is on a network filesystem (use a local disk). The transaction was ' +
      'not committed; retry it, or raise busyRetryBudgetMs.',
    { cause },
  );
}

export function storeFailure(where: string, err: unknown): StoreError {
  if (err instanceof StoreError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new StoreError('STORE_FAILURE', `${where}: ${message} (${errorCode(err) ?? 'no code'})`, {
    cause: err,
  });
}
