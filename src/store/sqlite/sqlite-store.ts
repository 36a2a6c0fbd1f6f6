import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { StoreError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { silentLogger } from '../../common/logger.js';
import { classifyStoreError, errorCode, isTransientStoreErrorClass } from '../errors.js';
import type { Store, StoreCapabilities, StoreReader, StoreTx } from '../store.js';
import { checkSchemaForClient, migrateSchema } from './sqlite-migrations.js';
import { prepareStatements, type SqliteStatements } from './sqlite-rows.js';
import { SqliteTx } from './sqlite-tx.js';

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
  readonly logger?: Logger;
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

/**
 * The SQLite store: one file, any number of processes on one host (never a network filesystem).
 *
 * Guarantees:
 * - Every connection runs in WAL mode with `synchronous=FULL` (unless the caller chose `normal`), and
 *   `fullfsync` on macOS, so a committed transaction survives a process crash and a power loss.
 * - Transactions of one Store instance run one at a time, in call order (an async mutex), each as one
 *   `BEGIN IMMEDIATE ... COMMIT`. A throw inside the callback rolls everything back and rethrows the same
 *   error. `read` runs under the same mutex in a deferred transaction, so it sees one committed snapshot.
 * - Lock waits never freeze the event loop for long: SQLite waits at most `busyTimeoutMs`, then the
 *   transaction is rolled back and its callback re-run after an asynchronous, jittered backoff (2 ms
 *   doubling to 100 ms), until `busyRetryBudgetMs` has passed (then StoreError 'STORE_BUSY'). The callback
 *   may therefore run more than once and must have no effects outside the transaction.
 * - Do not call `transaction` or `read` of the same Store from inside a callback: it would wait for itself.
 */
export class SqliteStore implements Store {
  readonly capabilities: StoreCapabilities;
  readonly description: string;
  private readonly mutex = new AsyncMutex();
  private readonly stmts: SqliteStatements;
  private closed = false;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly db: Database.Database,
    private readonly options: SqliteStoreOptions,
    description: string,
  ) {
    this.description = description;
    this.capabilities = { sharedAcrossProcesses: options.path !== MEMORY };
    this.stmts = prepareStatements(db);
  }

  /** Opens (and for a node, creates and migrates) the store. Fails with a StoreError saying what to do. */
  static async open(options: SqliteStoreOptions): Promise<SqliteStore> {
    const logger = options.logger ?? silentLogger;
    const memory = options.path === MEMORY;
    const where = memory ? 'sqlite::memory:' : `sqlite:${options.path}`;
    const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    const budgetMs = options.busyRetryBudgetMs ?? DEFAULT_BUSY_RETRY_BUDGET_MS;
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
    let db: Database.Database;
    try {
      db = new Database(options.path, { fileMustExist: options.mode === 'client', timeout: busyTimeoutMs });
    } catch (err) {
      throw openFailed(where, err);
    }
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
      if (options.mode === 'client') {
        // Check before any pragma that could write, so a client never initialises a file.
        await retryWhileBusy(() => checkSchemaForClient(db, where), budgetMs, where);
      }
      await retryWhileBusy(() => configureConnection(db, options), budgetMs, where);
      if (options.mode === 'node') {
        const { from, to } = await retryWhileBusy(() => migrateSchema(db, where), budgetMs, where);
        if (from !== to) logger.info('migrated the SQLite store schema', { path: options.path, from, to });
      }
    } catch (err) {
      db.close();
      throw err instanceof StoreError ? err : openFailed(where, err);
    }
    logger.info('opened SQLite store', { path: options.path, mode: options.mode });
    return new SqliteStore(db, options, where);
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.run(fn, true);
  }

  read<T>(fn: (tx: StoreReader) => Promise<T>): Promise<T> {
    return this.run(fn, false);
  }

  /** Waits for queued transactions, then closes the connection. Idempotent; never call it from a callback. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.closing = this.mutex.lock(async () => {
        this.db.close();
      });
    }
    return this.closing;
  }

  /** The durability settings of every connection this store holds (one), for diagnostics and tests. */
  connectionSettings(): SqliteConnectionSettings[] {
    const db = this.db;
    return [
      {
        journalMode: String(db.pragma('journal_mode', { simple: true })),
        synchronous: Number(db.pragma('synchronous', { simple: true })),
        busyTimeoutMs: Number(db.pragma('busy_timeout', { simple: true })),
        fullfsync: Number(db.pragma('fullfsync', { simple: true })),
      },
    ];
  }

  private run<T>(fn: (tx: SqliteTx) => Promise<T>, writable: boolean): Promise<T> {
    if (this.closed) return Promise.reject(closedError(this.description));
    return this.mutex.lock(() => this.runLocked(fn, writable));
  }

  private async runLocked<T>(fn: (tx: SqliteTx) => Promise<T>, writable: boolean): Promise<T> {
    if (!this.db.open) throw closedError(this.description);
    const budgetMs = this.options.busyRetryBudgetMs ?? DEFAULT_BUSY_RETRY_BUDGET_MS;
    const started = performance.now();
    for (let attempt = 0; ; attempt++) {
      const tx = new SqliteTx(this.stmts, writable);
      let failure: unknown;
      try {
        (writable ? this.stmts.beginImmediate : this.stmts.beginDeferred).run();
        const result = await fn(tx);
        if (tx.transientFault !== undefined) throw tx.transientFault;
        this.stmts.commit.run();
        return result;
      } catch (err) {
        failure = err;
      } finally {
        tx.end();
      }
      if (this.db.inTransaction) {
        try {
          this.stmts.rollback.run();
        } catch {
          // The connection already rolled back (SQLite does on some errors); nothing is left to undo.
        }
      }
      // A transient fault seen by any statement forces a re-run, even if the callback swallowed it.
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

/** Applies the per-connection pragmas. Throws SQLITE_BUSY when switching to WAL races another process. */
function configureConnection(db: Database.Database, options: SqliteStoreOptions): void {
  if (options.path !== MEMORY) {
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
  if (process.platform === 'darwin') db.pragma('fullfsync = ON');
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

/** Jittered exponential backoff: 2 ms doubling to 100 ms, each delay drawn from [half, full]. */
function backoffMs(attempt: number): number {
  const ceiling = Math.min(100, 2 * 2 ** Math.min(attempt, 10));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function busyError(where: string, budgetMs: number, cause: unknown): StoreError {
  return new StoreError(
    'STORE_BUSY',
    `${where} stayed locked by another connection for ${budgetMs} ms; another process may hold a long ` +
      'write transaction, or the file is on a network filesystem (use a local disk). The transaction was ' +
      'not committed; retry it, or raise busyRetryBudgetMs.',
    { cause },
  );
}

function closedError(where: string): StoreError {
  return new StoreError('STORE_CLOSED', `${where} is closed; open a new Store to keep using it`);
}

function storeFailure(where: string, err: unknown): StoreError {
  const message = err instanceof Error ? err.message : String(err);
  return new StoreError('STORE_FAILURE', `${where}: ${message} (${errorCode(err) ?? 'no code'})`, {
    cause: err,
  });
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
