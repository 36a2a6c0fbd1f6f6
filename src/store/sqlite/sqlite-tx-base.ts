import { StoreError } from '../../common/errors.js';
import { classifyStoreError, errorCode, isTransientStoreErrorClass } from '../errors.js';
import type { SqliteHistoryLog } from './sqlite-history-log.js';
import { encodeRunId, type SqlValue } from './sqlite-rows.js';
import type { SqliteStatements } from './sqlite-statements.js';

export type Columns = Readonly<Record<string, readonly [string, (value: unknown) => SqlValue]>>;

const PATCH_CACHE_LIMIT = 512;

/**
 * Run id -> run key, shared by the handles of one store. Holds only keys known to be committed (a key
 * is never changed or reused once committed), so a hit needs no query. Bounded: the oldest entries go.
 */
export class RunKeyCache {
  private readonly keys = new Map<string, number>();
  constructor(private readonly limit = 20_000) {}
  get(runId: string): number | undefined {
    return this.keys.get(runId);
  }
  /** Adds keys learned by a handle whose transaction committed (or by a read of committed data). */
  publish(learned: ReadonlyMap<string, number>): void {
    for (const [runId, rk] of learned) {
      if (this.keys.has(runId)) continue;
      if (this.keys.size >= this.limit) this.keys.delete(this.keys.keys().next().value as string);
      this.keys.set(runId, rk);
    }
  }
}

/**
 * The statement plumbing of a transaction handle; SqliteTx (sqlite-tx.ts) holds the store operations.
 * Run ids map to run keys through the store's cache; every statement runs through `exec`, which maps
 * driver errors to StoreErrors (see SqliteTx) and refuses a handle whose callback settled; `patch`
 * updates the given fields of one row with a statement cached per set of fields.
 */
export class SqliteTxBase {
  /** The first transient driver error seen; the store re-runs the transaction when set. */
  transientFault: unknown;
  /** Run keys this handle looked up or created; the store publishes them to its cache after commit. */
  readonly learnedKeys = new Map<string, number>();
  private ended = false;

  constructor(
    protected readonly s: SqliteStatements,
    protected readonly writable: boolean,
    protected readonly keys: RunKeyCache,
    protected readonly history: SqliteHistoryLog,
  ) {}

  end(): void {
    this.ended = true;
  }

  /**
   * The run key of `runId`: from the store's cache, else from `run_keys`; with `create`, a new key when
   * the id has none yet (only inside a write). Undefined when the id has no key and `create` is false.
   */
  protected runKey(runId: string, create: true): number;
  protected runKey(runId: string, create?: boolean): number | undefined;
  protected runKey(runId: string, create = false): number | undefined {
    let rk = this.keys.get(runId) ?? this.learnedKeys.get(runId);
    if (rk !== undefined) return rk;
    const stored = encodeRunId(runId);
    rk = (this.s.runKey.get(stored) as { rk: number } | undefined)?.rk;
    if (rk === undefined && create) rk = Number(this.s.insertRunKey.run(stored).lastInsertRowid);
    if (rk !== undefined) this.learnedKeys.set(runId, rk);
    return rk;
  }

  /** `op` with the run's key; `empty` when the store has never seen the run id. */
  protected perRun<T>(runId: string, op: (rk: number) => T): T | [] {
    const rk = this.runKey(runId);
    return rk === undefined ? [] : op(rk);
  }

  protected read<T>(op: () => T): T {
    return this.exec(op, undefined);
  }

  protected write<T>(op: () => T, onConstraint?: (code: string | undefined) => StoreError | undefined): T {
    if (!this.writable && !this.ended) {
      throw new StoreError(
        'READ_ONLY',
        'this handle comes from Store.read(); write inside Store.transaction()',
      );
    }
    return this.exec(op, onConstraint);
  }

  protected exec<T>(
    op: () => T,
    onConstraint: ((code: string | undefined) => StoreError | undefined) | undefined,
  ): T {
    if (this.ended) {
      throw new StoreError(
        'TX_ENDED',
        'this transaction already ended; use the handle only inside its callback',
      );
    }
    try {
      return op();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      const cls = classifyStoreError(err);
      if (isTransientStoreErrorClass(cls)) {
        this.transientFault ??= err;
        throw new StoreError('STORE_RETRY', 'transient database fault; the transaction will be re-run', {
          cause: err,
        });
      }
      if (cls === 'constraint') {
        const code = errorCode(err);
        const mapped = onConstraint?.(code);
        if (mapped) throw mapped;
        const duplicate = code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
        throw new StoreError(
          duplicate ? 'DUPLICATE_KEY' : 'CONSTRAINT_VIOLATION',
          `${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
      }
      const message = err instanceof Error ? err.message : String(err);
      throw new StoreError('STORE_FAILURE', `SQLite store: ${message} (${errorCode(err) ?? 'no code'})`, {
        cause: err,
      });
    }
  }

  protected patch(
    table: string,
    columns: Columns,
    allowed: ReadonlySet<string>,
    where: string,
    key: readonly SqlValue[],
    patch: object,
    exists: SqliteStatements['runExists'],
    missing: () => StoreError,
    onConstraint?: (code: string | undefined) => StoreError | undefined,
  ): void {
    this.write(() => {
      const fields: string[] = [];
      const values: SqlValue[] = [];
      for (const [field, value] of Object.entries(patch)) {
        if (value === undefined) continue;
        const column = columns[field];
        if (!column || !allowed.has(field)) {
          throw new StoreError('INVALID_PATCH', `${table}: field '${field}' cannot be changed by a patch`);
        }
        fields.push(field);
        values.push(column[1](value));
      }
      if (fields.length === 0) {
        if (exists.get(...key) === undefined) throw missing();
        return;
      }
      const signature = `${table}:${fields.join(',')}`;
      let stmt = this.s.patches.get(signature);
      if (!stmt) {
        const sets = fields.map((f) => `${columns[f]![0]} = ?`).join(', ');
        stmt = this.s.db.prepare(`UPDATE ${table} SET ${sets} WHERE ${where}`);
        if (this.s.patches.size < PATCH_CACHE_LIMIT) this.s.patches.set(signature, stmt);
      }
      if (stmt.run(...values, ...key).changes === 0) throw missing();
    }, onConstraint);
  }
}
