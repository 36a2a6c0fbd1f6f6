import pg from 'pg';
import { StoreError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { silentLogger } from '../../common/logger.js';
import { classifyStoreError, errorCode, isTransientStoreErrorClass } from '../errors.js';
import type { ReadOptions, Store, StoreCapabilities, StoreReader, StoreTx } from '../store.js';
import { BatchStatements } from './postgres-batch.js';
import { asError, closedError, failure, retriesExhausted, unavailable } from './postgres-errors.js';
import { checkPostgresSchemaForClient, migratePostgresSchema } from './postgres-migrations.js';
import {
  type PostgresListenClient,
  type PostgresNotificationStats,
  PostgresNotifications,
} from './postgres-notifications.js';
import {
  createPool,
  DEFAULT_CONNECT_TIMEOUT_MS,
  type PostgresPool,
  type PostgresPoolClient,
} from './postgres-pool.js';
import { checkNoOpenRunSql, checkRememberedSql, RowMemory } from './postgres-row-memory.js';
import { quoteIdent } from './postgres-rows.js';
import { buildStatements, deferredForms, PatchStatements } from './postgres-statements.js';
import { PostgresTx } from './postgres-tx.js';
import type { PgResult, PostgresSql } from './postgres-tx-base.js';

/** Options of one PostgreSQL store, as compiled from a connection string by `openStore`. */
export interface PostgresStoreOptions {
  /** A `pg` connection string without longhaul's options. May hold a password: never logged or shown. */
  readonly connectionString: string;
  /** The PostgreSQL schema holding the store's tables (a validated identifier). */
  readonly schema: string;
  /** The connection string without its password, for logs and errors. */
  readonly description: string;
  /** A node creates and migrates the schema; a client only connects to one that exists and is current. */
  readonly mode: 'node' | 'client';
  /** Most connections this store holds (default 10). */
  readonly poolSize?: number;
  /** How long, in ms, opening a connection may take before it counts as failed (default 10 000). */
  readonly connectTimeoutMs?: number;
  /** How long, in ms, a transaction keeps re-running after transient faults (default 30 000). */
  readonly retryBudgetMs?: number;
  readonly logger?: Logger;
}

const DEFAULT_RETRY_BUDGET_MS = 30_000;

/** Counters of one store, for diagnostics and tests (`PostgresStore.stats`). */
export interface PostgresStoreStats {
  /** Transactions and reads that committed. */
  readonly commits: number;
  /** Attempts re-run after a transient fault (deadlock, serialization failure, lost connection, ...). */
  readonly retries: number;
  /**
   * Attempts re-run with immediate writes because a batch of deferred writes was rejected (a write
   * that reports an error: a duplicate, a missing row, a conflicting append).
   */
  readonly replays: number;
  /**
   * Reads answered without a round trip in transactions that committed (postgres-row-memory.ts): from
   * remembered rows, or a start's `findOpenRun` assumed to find none; each checked by the next batch.
   */
  readonly remembered: number;
  /** Attempts re-run reading every row because a batch with such a read was rejected. */
  readonly stale: number;
  /** Wake-ups sent and received over LISTEN/NOTIFY. */
  readonly notifications: PostgresNotificationStats;
}

/**
 * The PostgreSQL store: any number of nodes on any number of hosts share one schema of one database.
 *
 * Isolation: READ COMMITTED plus row locks, not SERIALIZABLE. Why that is enough: the runtime's writes are
 * read-check-write on a few known rows (a run, an activity, a query, a request id), and inside
 * `transaction` every read of such a row locks it (`SELECT ... FOR UPDATE`: `getRun`, `findRun`,
 * `findOpenRun`, `getActivity`, `listActivities`, `getQuery`), so two transactions on one row run one after the other and
 * the second reads the first's committed result (PostgreSQL re-reads a row's newest version once its
 * lock is granted). That is the compare-and-set of the hot path (the run's next event id, the fencing
 * tokens). Rows that do not exist yet are guarded by unique indexes (run id, one running run per
 * workflow id, event ids, timer and activity keys) and, for request ids, by an advisory lock on the id
 * (`PostgresTx.getRequest`). Claim and sweep queries use `FOR UPDATE SKIP LOCKED`, so pollers never wait
 * for each other and never take the same row. SERIALIZABLE would add predicate locks and spurious
 * serialization failures on exactly these hot, contended queries, for no anomaly the runtime can hit.
 *
 * Guarantees:
 * - `transaction` runs its callback between `BEGIN ISOLATION LEVEL READ COMMITTED` and `COMMIT` on one
 *   pooled connection. A throw rolls back and rejects with the same error. A transient fault (deadlock
 *   40P01, serialization failure 40001, lost connection class 08 / 57P01-57P03 / socket errors, a full
 *   server 53300; see `store/errors.ts`) rolls back, waits a jittered backoff (5 ms doubling to 500 ms)
 *   and re-runs the callback on a fresh attempt, for up to `retryBudgetMs` (then StoreError
 *   'STORE_UNAVAILABLE'). A callback may therefore run more than once and must have no effects outside
 *   the transaction. A connection lost during `COMMIT` is re-run too, as `store/errors.ts` prescribes:
 *   that transaction may have committed, and the callbacks' own guards (request ids, fencing tokens, the
 *   next event id) turn a second run into a no-op or a rejection.
 * - `read` runs in a `REPEATABLE READ READ ONLY` transaction: one consistent snapshot of committed data.
 *   With `{ snapshot: false }` it opens no transaction: each statement runs on its own (two round trips
 *   fewer for a single read); the handle still refuses writes.
 * - Inside `transaction`, writes whose result the callback does not read are held back and sent as one
 *   statement (data-modifying CTEs) before the next other statement or with COMMIT: a hot-path step
 *   writes in one round trip, not four (postgres-batch.ts). If such a batch does not succeed exactly as
 *   the writes one by one would have (a duplicate, a missing row, a conflicting append, any database
 *   error), the attempt is rolled back and the callback re-run with each write sent at its call, so every
 *   error is reported by the call that caused it, as the contract says (`stats().replays` counts these).
 * - Round trips: connections pipeline (`pg` >= 8.23). BEGIN goes out with the callback's first statement
 *   and COMMIT right behind its last batch of writes, each pair in one socket write; a batch checks its
 *   own row counts and fails if one is off, so the COMMIT behind it finds the transaction aborted and
 *   rolls back. A transaction whose only statement is one batch of writes sends it alone, without BEGIN
 *   and COMMIT (one statement commits by itself), where the server's default isolation is READ
 *   COMMITTED (checked at open). A hot-path step (read the run, write the step) is two round trips, or
 *   one statement when the store remembers the run's rows from its own last transaction on it (below);
 *   a callback that sends
 *   nothing sends no BEGIN and no COMMIT either. (BEGIN cannot fail on a live connection, so no statement
 *   ever runs outside the transaction it was meant for.)
 * - Remembered rows (postgres-row-memory.ts): `getRunWithActivities` inside `transaction` answers from
 *   the rows this store's last transaction on the run left, without a round trip, and a check that joins
 *   the next batch of writes locks the rows and passes only if their xmins are still the remembered ones.
 *   A failed check rolls back and re-runs the callback reading every row (`stats().stale` counts these),
 *   so a stale memory costs a round trip and never changes a result.
 * - No statement text ever contains a value; statements are named, so each connection parses and plans
 *   each one once (batches by their sequence of write shapes).
 * - Do not call `transaction` of the same Store from inside a transaction callback: with every pooled
 *   connection busy it would wait for itself.
 */
export class PostgresStore implements Store {
  readonly capabilities: StoreCapabilities = { sharedAcrossProcesses: true };
  readonly description: string;
  private readonly sql: PostgresSql;
  private readonly logger: Logger;
  private readonly retryBudgetMs: number;
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly counters = { commits: 0, retries: 0, replays: 0, remembered: 0, stale: 0 };
  /** Rows of runs as this store's transactions last left them (postgres-row-memory.ts). */
  private readonly memory = new RowMemory();
  /** Wake-ups between processes: NOTIFY after commit (coalesced), one LISTEN connection per store. */
  readonly notifications: PostgresNotifications;
  private closed = false;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly pool: PostgresPool,
    private readonly options: PostgresStoreOptions,
    /** Whether a transaction that is one batch of writes may go without BEGIN and COMMIT (see `open`). */
    private readonly autocommit: boolean,
  ) {
    this.description = options.description;
    this.sql = {
      st: buildStatements(options.schema),
      patches: new PatchStatements(options.schema),
      batches: new BatchStatements(),
      deferred: deferredForms(options.schema),
      checkRemembered: checkRememberedSql(quoteIdent(options.schema)),
      checkNoOpenRun: checkNoOpenRunSql(quoteIdent(options.schema)),
    };
    this.logger = options.logger ?? silentLogger;
    this.retryBudgetMs = options.retryBudgetMs ?? DEFAULT_RETRY_BUDGET_MS;
    this.notifications = new PostgresNotifications({
      pool,
      newListenClient: (): PostgresListenClient =>
        new pg.Client({
          connectionString: options.connectionString,
          connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
          // A dead peer is noticed by the health check too; keepalive also covers idle NAT timeouts.
          keepAlive: true,
          keepAliveInitialDelayMillis: 10_000,
        }),
      schema: options.schema,
      description: options.description,
      logger: this.logger,
    });
  }

  /**
   * Connects and, for a node, creates and migrates the schema; for a client, checks that it exists and
   * is current (creating nothing). Fails with a StoreError saying what to do: STORE_UNAVAILABLE when the
   * server cannot be reached (not retried: the caller decides whether to wait), STORE_NOT_FOUND,
   * SCHEMA_TOO_OLD, SCHEMA_TOO_NEW, NOT_A_LONGHAUL_STORE.
   */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const logger = options.logger ?? silentLogger;
    const pool = createPool(options);
    // An idle pooled connection that dies (server restart, pg_terminate_backend) is dropped by the pool;
    // without a listener the error would crash the process.
    pool.on('error', (err) => {
      logger.warn('an idle PostgreSQL connection failed; the pool replaces it', {
        store: options.description,
        error: err.message,
        code: errorCode(err),
      });
    });
    let autocommit = false;
    try {
      let client: PostgresPoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw unavailable(options.description, err);
      }
      try {
        // A single statement outside BEGIN runs at the default isolation: only READ COMMITTED, the
        // level every write transaction asks for, lets one batch of writes commit by itself.
        const { rows } = await client.query<{ default_transaction_isolation: string }>(
          'SHOW default_transaction_isolation',
        );
        autocommit = rows[0]?.default_transaction_isolation === 'read committed';
        if (options.mode === 'client') {
          await checkPostgresSchemaForClient(client, options.schema, options.description);
        } else {
          const { from, to } = await migratePostgresSchema(client, options.schema, options.description);
          if (from !== to) {
            logger.info('migrated the PostgreSQL store schema', { store: options.description, from, to });
          }
        }
        client.release();
      } catch (err) {
        client.release(true);
        throw err;
      }
    } catch (err) {
      await pool.end().catch(() => undefined);
      if (err instanceof StoreError) throw err;
      const transient = isTransientStoreErrorClass(classifyStoreError(err));
      throw transient ? unavailable(options.description, err) : failure(options.description, err);
    }
    logger.info('opened PostgreSQL store', { store: options.description, mode: options.mode });
    return new PostgresStore(pool, options, autocommit);
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.track(() => this.run(fn, 'write'));
  }

  read<T>(fn: (tx: StoreReader) => Promise<T>, options: ReadOptions = {}): Promise<T> {
    return this.track(() => this.run(fn, options.snapshot === false ? 'latest' : 'snapshot'));
  }

  /** Waits for running transactions and reads, then closes every connection. Idempotent. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.closing = (async () => {
        while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
        // Sends the wake-ups of the last commits, and ends the listening connection.
        await this.notifications.close();
        await this.pool.end();
      })();
    }
    return this.closing;
  }

  /** Commit, retry and notification counters, for diagnostics and tests. */
  stats(): PostgresStoreStats {
    return { ...this.counters, notifications: this.notifications.stats() };
  }

  /**
   * The database clock, `clock_timestamp()`, in ms since the epoch (fractional): the one clock every
   * node shares, by which the runtime judges due times and leases. Not retried: a failure rejects with
   * StoreError STORE_UNAVAILABLE (connection lost, server unreachable) or STORE_FAILURE.
   */
  currentTime(): Promise<number> {
    return this.track(async () => {
      let client: PostgresPoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw unavailable(this.description, err);
      }
      let lost: Error | undefined;
      const onError = (err: Error) => {
        lost ??= err;
      };
      client.on('error', onError);
      try {
        const { rows } = await client.query<{ now: number }>(CURRENT_TIME);
        return rows[0]!.now;
      } catch (err) {
        lost ??= asError(err);
        throw isTransientStoreErrorClass(classifyStoreError(err))
          ? unavailable(this.description, err)
          : failure(this.description, err);
      } finally {
        client.off('error', onError);
        client.release(lost);
      }
    });
  }

  private track<T>(op: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(closedError(this.description));
    const p = op();
    this.inFlight.add(p);
    const done = () => this.inFlight.delete(p);
    p.then(done, done);
    return p;
  }

  /** Attempts until one commits, throws for good, or the retry budget is spent. */
  private async run<T>(fn: (tx: PostgresTx) => Promise<T>, mode: Mode): Promise<T> {
    const started = performance.now();
    let deferWrites = true;
    let recall = true;
    for (let attempt = 0; ; attempt++) {
      const outcome = await this.attempt(fn, mode, deferWrites, recall);
      if (outcome.kind === 'committed') return outcome.value;
      if (outcome.kind === 'failed') throw outcome.error;
      if (outcome.kind === 'replay' && outcome.remembered) {
        // Probably a remembered read that no longer held (another transaction changed the run): once
        // more reading every row (the rows read are remembered again). A batch that fails again for
        // another reason then goes immediate.
        this.counters.stale++;
        recall = false;
        continue;
      }
      if (outcome.kind === 'replay') {
        // Deferred writes did not go as the immediate ones would have: once more, each write at its call.
        this.counters.replays++;
        this.logger.debug('re-running a PostgreSQL transaction with immediate writes', {
          store: this.description,
          reason: asError(outcome.error).message,
        });
        deferWrites = false;
        continue;
      }
      const cls = classifyStoreError(outcome.error);
      if (this.closed) throw closedError(this.description);
      const elapsed = performance.now() - started;
      if (elapsed >= this.retryBudgetMs)
        throw retriesExhausted(this.description, this.retryBudgetMs, cls, outcome.error);
      this.counters.retries++;
      (cls === 'connectionLost' ? this.logger.warn : this.logger.debug)(
        're-running a PostgreSQL transaction',
        {
          store: this.description,
          reason: cls,
          code: errorCode(outcome.error),
          attempt: attempt + 1,
        },
      );
      await sleep(backoffMs(attempt));
    }
  }

  /**
   * One attempt on one pooled connection: inside `BEGIN ... COMMIT`, except in mode 'latest', where
   * each statement runs on its own (autocommit) and there is nothing to commit or roll back.
   */
  private async attempt<T>(
    fn: (tx: PostgresTx) => Promise<T>,
    mode: Mode,
    deferWrites: boolean,
    recall: boolean,
  ): Promise<Attempt<T>> {
    const writable = mode === 'write';
    const inTransaction = mode !== 'latest';
    let client: PostgresPoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      if (isTransientStoreErrorClass(classifyStoreError(err))) return { kind: 'transient', error: err };
      return { kind: 'failed', error: unavailable(this.description, err) };
    }
    // A checked-out connection that dies between queries reports it here, not to a query.
    let lost: unknown;
    const onError = (err: Error) => {
      lost ??= err;
    };
    client.on('error', onError);
    const tx = new PostgresTx(client, this.sql, {
      writable,
      // BEGIN goes out with the callback's first statement, COMMIT with its last batch of writes (the
      // connection pipelines them): neither costs a round trip of its own.
      begin: inTransaction ? (writable ? BEGIN_WRITE : BEGIN_READ) : undefined,
      autocommit: writable && this.autocommit,
      deferWrites,
      where: this.description,
      schema: this.options.schema,
      ...(writable ? { memory: this.memory, recall } : {}),
    });
    let committed = false;
    let broken: Error | undefined;
    let committing: Promise<PgResult> | undefined;
    const sendCommit = (): void => {
      committing = client.query(COMMIT);
      committing.catch(() => undefined); // awaited below
    };
    try {
      let value: T | undefined;
      let thrown: { error: unknown } | undefined;
      try {
        value = await fn(tx);
        // The writes still held back, then COMMIT (only for a write transaction that is not doomed).
        await tx.flush(writable && !tx.doomed ? sendCommit : undefined);
      } catch (error) {
        thrown = { error };
      } finally {
        tx.end();
      }
      // An error thrown from remembered rows counts only if they were current (else: re-run reading).
      if (thrown) await tx.verifyRemembered().catch(() => undefined);
      // Undefined if the callback sent nothing: then there is no transaction to end either.
      const opened = tx.begun !== undefined;
      await tx.begun; // answered before any later statement
      const transient =
        tx.transientFault ??
        lost ??
        (thrown && isTransientStoreErrorClass(classifyStoreError(thrown.error)) ? thrown.error : undefined);
      const replay = tx.replayNeeded;
      if (transient !== undefined || replay !== undefined || thrown || tx.abortedBy !== undefined) {
        // A COMMIT sent behind a failed batch found the transaction aborted: the server rolled it back.
        // ROLLBACK once more all the same (outside a transaction it only warns).
        await committing?.catch(() => undefined);
        if (opened) {
          await this.rollback(client).catch((err: unknown) => {
            broken = asError(err);
          });
        }
        if (transient !== undefined) {
          broken ??= classifyStoreError(transient) === 'connectionLost' ? asError(transient) : undefined;
          return { kind: 'transient', error: transient };
        }
        if (replay !== undefined) return { kind: 'replay', error: replay, remembered: tx.remembered > 0 };
        if (thrown) return { kind: 'failed', error: thrown.error };
        return { kind: 'failed', error: failure(this.description, tx.abortedBy) };
      }
      // The server may have aborted the transaction without this handle seeing an error (never expected).
      if (opened && (await (committing ?? client.query(COMMIT))).command === 'ROLLBACK') {
        return { kind: 'failed', error: failure(this.description, new Error('COMMIT was rolled back')) };
      }
      this.counters.commits++;
      this.counters.remembered += tx.remembered;
      committed = true;
      return { kind: 'committed', value: value as T };
    } catch (err) {
      // BEGIN or COMMIT failed.
      broken = asError(err);
      if (isTransientStoreErrorClass(classifyStoreError(err)) || lost !== undefined) {
        return { kind: 'transient', error: err };
      }
      await this.rollback(client).catch(() => undefined);
      return { kind: 'failed', error: failure(this.description, err) };
    } finally {
      tx.settleMemory(committed);
      client.off('error', onError);
      client.release(broken ?? (lost !== undefined ? asError(lost) : undefined));
    }
  }

  private async rollback(client: PostgresPoolClient): Promise<void> {
    await client.query(ROLLBACK);
  }
}

// Parameterless and unnamed: sent with the simple query protocol.
const BEGIN_WRITE = { name: '', text: 'BEGIN ISOLATION LEVEL READ COMMITTED' };
const BEGIN_READ = { name: '', text: 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY' };
const COMMIT = { text: 'COMMIT' };
const ROLLBACK = { text: 'ROLLBACK' };
const CURRENT_TIME = 'SELECT (extract(epoch from clock_timestamp()) * 1000)::float8 AS now';

/** A read-write transaction, a read-only snapshot, or read-only statements each on its own. */
type Mode = 'write' | 'snapshot' | 'latest';

type Attempt<T> =
  | { readonly kind: 'committed'; readonly value: T }
  | { readonly kind: 'transient'; readonly error: unknown }
  /**
   * A batch of deferred writes was rejected: run again with immediate writes, or first without memory
   * when the attempt answered reads from remembered rows (`remembered`).
   */
  | { readonly kind: 'replay'; readonly error: unknown; readonly remembered: boolean }
  | { readonly kind: 'failed'; readonly error: unknown };

/** Jittered exponential backoff: 5 ms doubling to 500 ms, each delay drawn from [half, full]. */
function backoffMs(attempt: number): number {
  const ceiling = Math.min(500, 5 * 2 ** Math.min(attempt, 10));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
