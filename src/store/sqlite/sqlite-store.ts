import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { StoreError, ValidationError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { silentLogger } from '../../common/logger.js';
import { classifyStoreError, errorCode, isTransientStoreErrorClass } from '../errors.js';
import type { Store, StoreCapabilities, StoreReader, StoreTx } from '../store.js';
import {
  backoffMs,
  busyError,
  type GroupCommitStats,
  SqliteGroupCommit,
  sleep,
  storeFailure,
} from './sqlite-group-commit.js';
import { DEFAULT_COMPACTOR_LIMITS, SqliteHistoryCompactor } from './sqlite-history-compactor.js';
import { type HistoryStats, SqliteHistoryLog } from './sqlite-history-log.js';
import { checkSchemaForClient, migrateSchema } from './sqlite-migrations.js';
import { prepareStatements, type SqliteStatements } from './sqlite-statements.js';
import { SqliteTx } from './sqlite-tx.js';
import { RunKeyCache } from './sqlite-tx-base.js';

/** Options of one SQLite store, as compiled from a connection string by `openStore`. */
export interface SqliteStoreOptions {
  /** Absolute file path, or `':memory:'` (a private database that lives as long as this Store). */
  readonly path: string;
  /** A node creates and migrates the store; a client only connects to one that exists and is current. */
  readonly mode: 'node' | 'client';
  /** `full` (default) survives power loss; `normal` in WAL mode may lose the last commits on power loss. */
  readonly synchronous?: 'full' | 'normal';
  /** How long, in ms, SQLite itself waits for a lock before failing with SQLITE_BUSY (default 50). */
  readonly busyTimeoutMs?: number;
  /** How long, in ms, a transaction keeps retrying busy locks before failing with STORE_BUSY (default 30 000). */
  readonly busyRetryBudgetMs?: number;
  /** When raw history is compressed (see `SqliteHistoryCompactor`); the defaults suit production. */
  readonly historyCompaction?: HistoryCompactionOptions;
  readonly logger?: Logger;
}

/** When a store compresses the raw tails of run histories. Every duration is in ms. */
export interface HistoryCompactionOptions {
  /**
   * A run's raw tail is compressed once nothing was appended to it for this long (default 1000); 300
   * times as long while the run waits for a worker to take a workflow task.
   */
  readonly idleMs?: number;
  /** How often the compactor looks for such tails (default 500); 0 turns the timer off. */
  readonly intervalMs?: number;
  /** How long `close()` may spend compressing the tails left, due or not (default 2000). */
  readonly closeBudgetMs?: number;
}

/** The durability settings in force on one open connection (see `SqliteStore.connectionSettings`). */
export interface SqliteConnectionSettings {
  readonly journalMode: string;
  /** 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA. */
  readonly synchronous: number;
  readonly busyTimeoutMs: number;
  readonly fullfsync: number;
}

const DEFAULT_BUSY_TIMEOUT_MS = 50;
const DEFAULT_BUSY_RETRY_BUDGET_MS = 30_000;
const MEMORY = ':memory:';
/** Most callbacks one physical transaction commits, and how long, in ms, a group keeps taking more. */
const MAX_GROUP_SIZE = 64;
const MAX_GROUP_MS = 20;
const DEFAULT_COMPACTION_IDLE_MS = 1000;
const DEFAULT_CLOSE_COMPACTION_BUDGET_MS = 2000;

/**
 * Counters of one store, for diagnostics and tests (`SqliteStore.stats`): the write path, reads, and
 * history work (`deflates`/`inflates`: zlib calls, `tailsCompacted`: raw tails compressed).
 */
export interface SqliteStoreStats extends GroupCommitStats, HistoryStats {
  /** `read` callbacks run. */
  readonly reads: number;
}

/**
 * The SQLite store: one file, any number of processes on one host (never a network filesystem).
 *
 * Guarantees:
 * - Every connection runs in WAL mode with `synchronous=FULL` (unless the caller chose `normal`), and
 *   `fullfsync` on macOS, so a committed transaction survives a process crash and a power loss.
 * - Transactions use group commit (`SqliteGroupCommit`): callbacks queued together run one after another,
 *   in call order, inside one `BEGIN IMMEDIATE ... COMMIT`, each in its own savepoint, so one fsync
 *   acknowledges many. A throw inside a callback rolls back that callback's writes only and rejects its
 *   promise with the same error; no promise settles before the COMMIT that made it durable succeeded.
 * - `read` runs in a deferred transaction and sees one committed snapshot, including every transaction
 *   whose promise resolved before `read` was called. A file store reads on a second connection, so reads
 *   never wait for a write group; an in-memory store (one connection) runs reads between groups.
 * - Lock waits never freeze the event loop for long: SQLite waits at most `busyTimeoutMs`, then the
 *   transaction is rolled back and its callbacks re-run after an asynchronous, jittered backoff (2 ms
 *   doubling to 100 ms), until `busyRetryBudgetMs` has passed (then StoreError 'STORE_BUSY'). A callback
 *   may therefore run more than once and must have no effects outside the transaction.
 * - Do not call `transaction` of the same Store from inside a transaction callback: it would wait for
 *   itself.
 * - History is appended uncompressed; a background compactor (`SqliteHistoryCompactor`, one `unref`'d
 *   timer) compresses a run's new events once it has been idle for `historyCompaction.idleMs`, in small
 *   batches that share group commits with foreground transactions, and gives the pages the raw events
 *   used back to the filesystem once the file holds none (in a file created with `auto_vacuum =
 *   INCREMENTAL`, as nodes of this version create them). `close()` compresses the tails it appended to
 *   and every due one, and releases free pages (within `closeBudgetMs`), so a store at rest is compact.
 */
export class SqliteStore implements Store {
  readonly capabilities: StoreCapabilities;
  readonly description: string;
  private readonly writer: SqliteGroupCommit;
  private readonly reader: SqliteReader | undefined;
  private readonly keys = new RunKeyCache();
  private readonly history: SqliteHistoryLog;
  private readonly compactor: SqliteHistoryCompactor;
  private readonly logger: Logger;
  private reads = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly db: Database.Database,
    readerDb: Database.Database | undefined,
    private readonly options: SqliteStoreOptions,
    description: string,
  ) {
    this.description = description;
    this.capabilities = { sharedAcrossProcesses: options.path !== MEMORY };
    this.logger = options.logger ?? silentLogger;
    const compaction = options.historyCompaction ?? {};
    this.history = new SqliteHistoryLog(compaction.idleMs ?? DEFAULT_COMPACTION_IDLE_MS);
    this.writer = new SqliteGroupCommit(
      db,
      prepareStatements(db),
      {
        maxGroupSize: MAX_GROUP_SIZE,
        maxGroupMs: MAX_GROUP_MS,
        busyRetryBudgetMs: options.busyRetryBudgetMs ?? DEFAULT_BUSY_RETRY_BUDGET_MS,
      },
      description,
      this.keys,
      this.history,
    );
    this.reader = readerDb && { db: readerDb, stmts: prepareStatements(readerDb), mutex: new AsyncMutex() };
    this.compactor = new SqliteHistoryCompactor(
      this.writer,
      this.history,
      db,
      () => this.nextDueTail(),
      this.logger,
      description,
      {
        ...DEFAULT_COMPACTOR_LIMITS,
        intervalMs: compaction.intervalMs ?? DEFAULT_COMPACTOR_LIMITS.intervalMs,
      },
    );
    this.compactor.start();
  }

  /** Opens (and for a node, creates and migrates) the store. Fails with a StoreError saying what to do. */
  static async open(options: SqliteStoreOptions): Promise<SqliteStore> {
    const logger = options.logger ?? silentLogger;
    const memory = options.path === MEMORY;
    const where = memory ? 'sqlite::memory:' : `sqlite:${options.path}`;
    const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    const budgetMs = options.busyRetryBudgetMs ?? DEFAULT_BUSY_RETRY_BUDGET_MS;
    validateCompaction(options.historyCompaction);
    if (options.mode === 'client') {
      if (memory) {
        throw new StoreError(
          'STORE_NOT_FOUND',
          'sqlite::memory: is private to the process and connection that created it, so a client cannot ' +
            'connect to it; use a file (sqlite:./longhaul.db) or pass the worker its in-memory Store.',
        );
      }
      if (!existsSync(options.path)) {
        throw new StoreError(
          'STORE_NOT_FOUND',
          `no store at ${options.path}: the file does not exist. A worker (a node) creates the store when it ` +
            'starts; start one against the same connection string first, or fix the path.',
        );
      }
    }
    const connect = (): Database.Database => {
      let db: Database.Database | undefined;
      try {
        db = new Database(options.path, { fileMustExist: options.mode === 'client', timeout: busyTimeoutMs });
        db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
        return db;
      } catch (err) {
        db?.close();
        throw openFailed(where, err);
      }
    };
    const db = connect();
    let readerDb: Database.Database | undefined;
    try {
      if (options.mode === 'client') {
        // Check before any pragma that could write, so a client never initialises a file.
        await retryWhileBusy(() => checkSchemaForClient(db, where), budgetMs, where);
      }
      await retryWhileBusy(() => configureConnection(db, options), budgetMs, where);
      if (options.mode === 'node') {
        const { from, to } = await retryWhileBusy(() => migrateSchema(db, where), budgetMs, where);
        if (from !== to) logger.info('migrated the SQLite store schema', { path: options.path, from, to });
      }
      if (!memory) {
        readerDb = connect();
        const reader = readerDb;
        await retryWhileBusy(() => configureConnection(reader, options), budgetMs, where);
        reader.pragma('query_only = ON');
      }
    } catch (err) {
      readerDb?.close();
      db.close();
      throw err instanceof StoreError ? err : openFailed(where, err);
    }
    logger.info('opened SQLite store', { path: options.path, mode: options.mode });
    return new SqliteStore(db, readerDb, options, where);
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(closedError(this.description));
    return this.writer.write(fn);
  }

  /**
   * SQLite's `PRAGMA data_version` on the writer's connection: it changes when any other connection
   * commits (this store's reader never writes). NaN once closed, so a caller reads and learns it.
   */
  externalChanges(): number {
    if (this.closed) return Number.NaN;
    return this.db.pragma('data_version', { simple: true }) as number;
  }

  /** Always one snapshot (`ReadOptions.snapshot` is ignored: a deferred BEGIN costs no round trip here). */
  read<T>(fn: (tx: StoreReader) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(closedError(this.description));
    const reader = this.reader;
    if (reader) return reader.mutex.lock(() => this.readOn(reader.db, reader.stmts, fn));
    return this.writer.exclusive(() => this.readOn(this.db, this.writer.statements, fn));
  }

  /**
   * Moves every committed page from the WAL into the database file and truncates the WAL
   * (`PRAGMA wal_checkpoint(TRUNCATE)`), after the transactions queued before it. Readers of other
   * processes can make it partial; the result says how many WAL frames were left over (0: complete).
   */
  checkpoint(): Promise<{ readonly busy: boolean; readonly remainingFrames: number }> {
    if (this.closed) return Promise.reject(closedError(this.description));
    return this.writer.exclusive(async () => {
      const row = this.db.pragma('wal_checkpoint(TRUNCATE)') as {
        busy: number;
        log: number;
        checkpointed: number;
      }[];
      const r = row[0] ?? { busy: 0, log: 0, checkpointed: 0 };
      return { busy: r.busy !== 0, remainingFrames: Math.max(0, r.log - r.checkpointed) };
    });
  }

  /**
   * Compresses the raw history tails of the file now: those due (idle for `historyCompaction.idleMs`),
   * or with `all` every one. The compactor does this on its own; this is for tools and tests.
   */
  compactHistory(options: { readonly all?: boolean } = {}): Promise<void> {
    if (this.closed) return Promise.reject(closedError(this.description));
    const scope = options.all ? 'all' : 'due';
    return this.compactor.compact(scope, Number.POSITIVE_INFINITY).then(() => {});
  }

  /**
   * Stops the compactor; compresses the raw history tails this store appended to (due or not) and every
   * due tail, then releases free pages, all within `historyCompaction.closeBudgetMs` (a failure there is
   * logged, not thrown: nothing is lost, the file is only larger); waits for queued transactions and
   * reads, then closes. Tails that other open stores are appending to are left to them. Idempotent; never
   * call it from a callback.
   */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.closing = (async () => {
        await this.compactor.stop();
        if (this.options.path !== MEMORY) await this.compactAtRest();
        await this.writer.idle();
        if (this.reader) await this.reader.mutex.lock(async () => this.reader?.db.close());
        this.db.close();
      })();
    }
    return this.closing;
  }

  /** The durability settings of every connection this store holds, for diagnostics and tests. */
  connectionSettings(): SqliteConnectionSettings[] {
    const dbs = this.reader ? [this.db, this.reader.db] : [this.db];
    return dbs.map((db) => ({
      journalMode: String(db.pragma('journal_mode', { simple: true })),
      synchronous: Number(db.pragma('synchronous', { simple: true })),
      busyTimeoutMs: Number(db.pragma('busy_timeout', { simple: true })),
      fullfsync: Number(db.pragma('fullfsync', { simple: true })),
    }));
  }

  /** Counters of the write path (physical commits, group sizes, rollbacks), reads and history work. */
  stats(): SqliteStoreStats {
    return { ...this.writer.stats, ...this.history.stats, reads: this.reads };
  }

  /** What `close()` does before closing a file store; bounded by `closeBudgetMs`. */
  private async compactAtRest(): Promise<void> {
    const budgetMs = this.options.historyCompaction?.closeBudgetMs ?? DEFAULT_CLOSE_COMPACTION_BUDGET_MS;
    const deadline = performance.now() + budgetMs;
    try {
      const own = await this.compactor.compact('own', budgetMs);
      const left = deadline - performance.now();
      if (own === 'budgetSpent' || (await this.compactor.compact('due', left)) === 'budgetSpent') {
        this.logger.warn('closing with history not yet compacted: the close budget ran out', {
          store: this.description,
          budgetMs,
        });
      }
      await this.compactor.releaseFreePages(Number.POSITIVE_INFINITY, 1, deadline);
    } catch (err) {
      this.logger.warn('could not compact the store before closing; it stays larger on disk', {
        store: this.description,
        error: String(err),
      });
    }
  }

  /** The smallest `compact_at` of any raw history tail, null when there is none; read outside the write path. */
  private nextDueTail(): Promise<number | null> {
    const next = (stmts: SqliteStatements) => (stmts.nextDueTail.get() as { t: number | null }).t;
    const reader = this.reader;
    if (reader) return reader.mutex.lock(async () => next(reader.stmts));
    return this.writer.exclusive(async () => next(this.writer.statements));
  }

  /** One read callback in a deferred transaction on `db`, retried while the connection is busy. */
  private async readOn<T>(
    db: Database.Database,
    stmts: SqliteStatements,
    fn: (tx: SqliteTx) => Promise<T>,
  ): Promise<T> {
    if (!db.open) throw closedError(this.description);
    this.reads++;
    const budgetMs = this.options.busyRetryBudgetMs ?? DEFAULT_BUSY_RETRY_BUDGET_MS;
    const started = performance.now();
    for (let attempt = 0; ; attempt++) {
      const tx = new SqliteTx(stmts, false, this.keys, this.history);
      let failure: unknown;
      try {
        stmts.beginDeferred.run();
        const result = await fn(tx);
        if (tx.transientFault !== undefined) throw tx.transientFault;
        stmts.commit.run();
        this.keys.publish(tx.learnedKeys);
        return result;
      } catch (err) {
        failure = err;
      } finally {
        tx.end();
      }
      if (db.inTransaction) {
        try {
          stmts.rollback.run();
        } catch {
          // The connection already rolled back (SQLite does on some errors); nothing is left to undo.
        }
      }
      const transient =
        tx.transientFault ?? (isTransientStoreErrorClass(classifyStoreError(failure)) ? failure : undefined);
      if (transient === undefined) {
        throw failure instanceof Database.SqliteError ? storeFailure(this.description, failure) : failure;
      }
      if (performance.now() - started >= budgetMs) throw busyError(this.description, budgetMs, transient);
      await sleep(backoffMs(attempt));
    }
  }
}

interface SqliteReader {
  readonly db: Database.Database;
  readonly stmts: SqliteStatements;
  readonly mutex: AsyncMutex;
}

/**
 * Applies the per-connection pragmas. Throws SQLITE_BUSY when switching to WAL races another process.
 * A node creating a file makes it `auto_vacuum = INCREMENTAL` first (possible only before anything is
 * written, WAL switch included), so `close()` can give the pages of compacted raw history back.
 */
function configureConnection(db: Database.Database, options: SqliteStoreOptions): void {
  if (options.path !== MEMORY) {
    if (options.mode === 'node' && Number(db.pragma('page_count', { simple: true })) === 0) {
      db.pragma('auto_vacuum = INCREMENTAL');
    }
    const mode = String(db.pragma('journal_mode = WAL', { simple: true }));
    if (mode.toLowerCase() !== 'wal') {
      throw new StoreError(
        'STORE_OPEN_FAILED',
        `could not switch sqlite:${options.path} to WAL journal mode (it is '${mode}'); is the file on a ` +
          'read-only or network filesystem? Use a local, writable path.',
      );
    }
  }
  db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`);
  // Off by default in SQLite for backward compatibility. The schema declares no foreign keys; this
  // makes any that exist (a deferred one can fail a COMMIT, which the group commit handles) binding.
  db.pragma('foreign_keys = ON');
  if (process.platform === 'darwin') db.pragma('fullfsync = ON');
}

function validateCompaction(options: HistoryCompactionOptions | undefined): void {
  for (const key of ['idleMs', 'intervalMs', 'closeBudgetMs'] as const) {
    const value = options?.[key];
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      throw new ValidationError(
        `historyCompaction.${key}`,
        `must be a non-negative number of ms, got ${value}`,
      );
    }
  }
}

/** Runs a synchronous step, retrying it asynchronously while it fails with a transient error. */
async function retryWhileBusy<T>(step: () => T, budgetMs: number, where: string): Promise<T> {
  const started = performance.now();
  for (let attempt = 0; ; attempt++) {
    try {
      return step();
    } catch (err) {
      if (!isTransientStoreErrorClass(classifyStoreError(err))) throw err;
      if (performance.now() - started >= budgetMs) throw busyError(where, budgetMs, err);
      await sleep(backoffMs(attempt));
    }
  }
}

function closedError(where: string): StoreError {
  return new StoreError('STORE_CLOSED', `${where} is closed; open a new Store to keep using it`);
}

function openFailed(where: string, err: unknown): StoreError {
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  const hint =
    code === 'SQLITE_NOTADB'
      ? 'the file is not a SQLite database; point longhaul at a new file or at a store it created'
      : code === 'SQLITE_CANTOPEN'
        ? 'check that the directory exists and is writable'
        : 'check the path and its permissions';
  return new StoreError('STORE_OPEN_FAILED', `cannot open ${where}: ${message}; ${hint}`, { cause: err });
}

/** One holder at a time, granted in call order. */
class AsyncMutex {
  private tail: Promise<unknown> = Promise.resolve();
  lock<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(() => fn());
    this.tail = result.catch(() => undefined);
    return result;
  }
}
