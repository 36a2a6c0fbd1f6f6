import { StoreError } from '../../common/errors.js';
import { classifyStoreError, errorCode, isTransientStoreErrorClass } from '../errors.js';
import {
  acceptsRows,
  type BatchStatements,
  batchValues,
  cteOf,
  type DeferredWrite,
  DeferredWrites,
  type ExpectedRows,
} from './postgres-batch.js';
import { failure, messageOf } from './postgres-errors.js';
import type { RowMemory } from './postgres-row-memory.js';
import type { Columns, SqlValue, Statement } from './postgres-rows.js';
import type {
  DeferredForms,
  PatchStatements,
  PostgresStatements,
  WhereBuilder,
} from './postgres-statements.js';

/** The SQL of one store: fixed statements, patch and batch shapes, deferred forms of some writes. */
export interface PostgresSql {
  readonly st: PostgresStatements;
  readonly patches: PatchStatements;
  readonly batches: BatchStatements;
  readonly deferred: DeferredForms;
  /** The checks that make a remembered read, and an assumed absence, valid (postgres-row-memory.ts). */
  readonly checkRemembered: (alias: string) => string;
  readonly checkNoOpenRun: (alias: string) => string;
}

/** How a write touches rows beyond its key (see DeferredWrite), and its CTE entries where not `cteOf`. */
export interface WriteForm {
  readonly covers?: readonly string[];
  readonly deletes?: boolean;
  readonly sql?: (alias: string) => string;
}

export interface PostgresTxOptions {
  /** A `transaction` handle (else a `read` handle: writes are refused). */
  readonly writable: boolean;
  /** The statement that opens the transaction, sent with the first statement; none: each runs alone. */
  readonly begin?: Statement;
  /**
   * A transaction whose only statement is its last batch of writes sends that batch alone, without
   * BEGIN and COMMIT: one statement is a transaction of its own (autocommit), at the server's default
   * isolation, which the store has checked is READ COMMITTED, as its BEGIN says.
   */
  readonly autocommit?: boolean;
  /** Hold back writes and send them together (see postgres-batch.ts); false: each write runs at once. */
  readonly deferWrites: boolean;
  /** The store's description, for errors. */
  readonly where: string;
  readonly schema: string;
  /**
   * The store's remembered rows (postgres-row-memory.ts), for a `transaction` handle that defers writes:
   * `getRunWithActivities` may answer from them, and the handle tracks what its writes change.
   */
  readonly memory?: RowMemory;
  /** Whether reads may answer from `memory` (false: they read, and only teach it). Default true. */
  readonly recall?: boolean;
}

/** What a `pg` query resolves to, as far as the adapter reads it. */
export interface PgResult {
  readonly rows: unknown[];
  readonly rowCount: number | null;
  readonly command?: string;
}

/**
 * The part of a `pg` client the transaction handle uses: named (prepared) parameterised queries, sent
 * without waiting for earlier answers (the pool's connections pipeline), and the socket, corked so that
 * statements sent together leave in one write.
 */
export interface PgQueryable {
  query(config: {
    readonly name?: string;
    readonly text: string;
    readonly values?: readonly unknown[];
  }): Promise<PgResult>;
  readonly connection?: { readonly stream: { cork(): void; uncork(): void } };
}

const SAVEPOINT = 'lh_savepoint';

/**
 * The statement plumbing of a transaction handle (see PostgresTx): sending statements, holding back and
 * flushing deferred writes, patches, and remembering the faults that doom an attempt.
 */
export class PostgresTxBase {
  /** The first transient driver error seen; the store re-runs the transaction when set. */
  transientFault: unknown;
  /** The first other driver error outside a savepoint: the server aborted the transaction. */
  abortedBy: unknown;
  /** Why a batch of deferred writes failed: the store re-runs the callback with immediate writes. */
  replayNeeded: unknown;
  private ended = false;
  protected readonly st: PostgresStatements;
  protected readonly writable: boolean;
  private readonly where: string;
  protected readonly schema: string;
  private readonly deferred: DeferredWrites | undefined;
  protected readonly memory: RowMemory | undefined;
  protected readonly recall: boolean;
  /** The opening statement, until it goes out with the first statement (see `send`). */
  private begin: Statement | undefined;
  private readonly autocommit: boolean;
  /** The opening statement's answer, once sent: undefined while the transaction has sent nothing. */
  begun: Promise<PgResult> | undefined;
  /** The transaction's id as its row versions carry it (xmin), once a batch of writes reported it. */
  xid: string | undefined;
  /** Whether a write ran inside a savepoint (its rows carry the savepoint's own transaction id). */
  usedSavepoint = false;

  constructor(
    private readonly db: PgQueryable,
    protected readonly sql: PostgresSql,
    options: PostgresTxOptions,
  ) {
    this.st = sql.st;
    this.writable = options.writable;
    this.where = options.where;
    this.schema = options.schema;
    this.deferred = options.writable && options.deferWrites ? new DeferredWrites() : undefined;
    this.memory = this.deferred ? options.memory : undefined;
    this.recall = options.recall ?? true;
    this.begin = options.begin;
    this.autocommit = options.autocommit ?? false;
  }

  end(): void {
    this.ended = true;
  }

  /** The row-locking variant inside `transaction`, the plain one inside `read`. */
  protected locking(plain: Statement, forUpdate: Statement): Statement {
    return this.writable ? forUpdate : plain;
  }

  protected async one<R>(stmt: Statement, values: readonly unknown[]): Promise<R | undefined> {
    return (await this.exec(stmt, values)).rows[0] as R | undefined;
  }

  protected async all<R>(stmt: Statement, values: readonly unknown[]): Promise<R[]> {
    return (await this.exec(stmt, values)).rows as R[];
  }

  protected checkWritable(): void {
    this.checkOpen();
    if (!this.writable) {
      throw new StoreError(
        'READ_ONLY',
        'this handle comes from Store.read(); write inside Store.transaction()',
      );
    }
  }

  private checkOpen(): void {
    if (this.ended) {
      throw new StoreError(
        'TX_ENDED',
        'this transaction already ended; use the handle only inside its callback',
      );
    }
  }

  /**
   * Runs one statement, after the deferred writes (it may read what they wrote). Refuses to send
   * anything once the transaction is doomed (a transient fault or a rejected batch: it will be re-run;
   * an abort: the server would refuse anyway). `inSavepoint`: see `send`.
   */
  protected async exec(stmt: Statement, values: readonly unknown[], inSavepoint = false): Promise<PgResult> {
    this.checkOpen();
    await this.flush();
    return this.send(stmt, values, inSavepoint ? 'savepoint' : 'plain');
  }

  /**
   * Sends the deferred writes, if any, as one statement (postgres-batch.ts). The store calls it once
   * more after the callback, with `then`: a function that sends COMMIT, called in the same socket write
   * as the batch (or alone when nothing is held back; never when the transaction sent nothing at all),
   * so the last writes and COMMIT share one round trip (with `autocommit`, a batch that is the whole
   * transaction goes alone, and nothing is opened). A batch that does not succeed exactly as its
   * writes would have one by one sets `replayNeeded` and throws STORE_RETRY (the statement itself fails
   * then, so a COMMIT behind it rolls back).
   */
  async flush(then?: () => void): Promise<void> {
    const writes = this.deferred?.take();
    if (!writes || writes.length === 0) {
      if (this.begun) then?.();
      return;
    }
    // Throws before anything is sent; `send` then issues the query before its first await.
    this.checkUsable();
    if (then && this.autocommit && this.begun === undefined) {
      // The batch is the whole transaction: it commits by itself, and on failure rolls back by itself.
      this.begin = undefined;
      then = undefined;
    }
    const sent = this.together(() => {
      const batch = this.send(this.sql.batches.get(writes), batchValues(writes), 'batch');
      then?.();
      return batch;
    });
    const row = (await sent).rows[0] as (Record<string, number> & { lh_xid?: string }) | undefined;
    this.xid ??= row?.lh_xid;
    // The statement checks the counts itself, so this never fires. Were it to, a COMMIT sent behind the
    // batch has gone: the re-run meets the callback's own guards, as after a COMMIT lost in flight.
    const rejected = writes.findIndex((w, i) => !acceptsRows(w.expect, row?.[`c${i}`] ?? -1));
    if (rejected >= 0) {
      this.replayNeeded ??= new Error(
        `deferred write ${rejected} (${writes[rejected]?.key}) returned ${row?.[`c${rejected}`]} rows`,
      );
      throw replayError(this.replayNeeded);
    }
  }

  /**
   * After the callback threw: sends the checks of remembered reads still held back alone, in the open
   * transaction (which the store then rolls back), and drops the other writes held back. An error that
   * came from remembered rows that are no longer current is thus never reported: a failed check sets
   * `replayNeeded`, and the store runs the callback again reading every row.
   */
  async verifyRemembered(): Promise<void> {
    const checks = this.deferred?.take().filter((w) => w.check) ?? [];
    if (checks.length === 0 || this.doomed) return;
    await this.send(this.sql.batches.get(checks), batchValues(checks), 'batch');
  }

  /** Runs `send` with the socket corked: the statements it issues leave in one write (one syscall). */
  private together<T>(send: () => T): T {
    const stream = this.db.connection?.stream;
    stream?.cork();
    try {
      return send();
    } finally {
      stream?.uncork();
    }
  }

  /**
   * Holds `write` back if this handle defers writes, flushing first a batch that touches its rows, one
   * it would make too large for one statement, or any batch that changes rows if `first` (the write must
   * see the effects of every earlier one; checks change nothing).
   */
  protected async deferWrite(write: DeferredWrite, first = false): Promise<boolean> {
    if (!this.deferred) return false;
    this.checkUsable();
    const d = this.deferred;
    if (d.touches(write) || !d.fits(write) || (first && d.changes)) await this.flush();
    d.add(write);
    return true;
  }

  /**
   * A write of one statement touching the rows named by `key`: held back where this handle defers
   * writes (resolves undefined; the batch checks the row count against `expect`), else sent now (resolves
   * its result, for the caller to check). `first`: see `deferWrite`. `form`: the rows it touches beyond
   * `key`, whether it only deletes, and its CTE entries where the statement is not a single entry.
   */
  protected async write(
    key: string,
    stmt: Statement,
    values: readonly unknown[],
    expect: ExpectedRows = 'any',
    first = false,
    form: WriteForm = {},
  ): Promise<PgResult | undefined> {
    const { sql = cteOf(stmt), covers, deletes } = form;
    const write = { key, shape: stmt.name || stmt.text, sql, values, expect, covers, deletes };
    if (await this.deferWrite(write, first)) return undefined;
    return this.exec(stmt, values);
  }

  /** A write that only deletes the rows named by `key` (see `write`). */
  protected remove(key: string, stmt: Statement, values: readonly unknown[]): Promise<PgResult | undefined> {
    return this.write(key, stmt, values, 'any', false, { deletes: true });
  }

  /** Whether an earlier statement doomed this attempt (it will be rolled back, perhaps re-run). */
  get doomed(): boolean {
    return (
      this.transientFault !== undefined || this.replayNeeded !== undefined || this.abortedBy !== undefined
    );
  }

  /** Throws if an earlier statement doomed this attempt. */
  private checkUsable(): void {
    if (this.transientFault !== undefined) throw retryError(this.transientFault);
    if (this.replayNeeded !== undefined) throw replayError(this.replayNeeded);
    if (this.abortedBy !== undefined) throw failure(this.where, this.abortedBy);
  }

  /**
   * One statement. `batch`: deferred writes, whose non-transient errors mean "re-run with immediate
   * writes" (the error will surface at its call there); `savepoint`: a constraint error is rolled back
   * to the savepoint by the caller, so it does not abort the transaction.
   */
  private async send(
    stmt: Statement,
    values: readonly unknown[],
    kind: 'plain' | 'savepoint' | 'batch',
  ): Promise<PgResult> {
    this.checkUsable();
    try {
      return await this.together(() => {
        if (this.begin) {
          // The transaction opens with its first statement: both go out in one write, one round trip.
          this.begun = this.db.query(this.begin);
          this.begun.catch(() => undefined); // the store awaits it
          this.begin = undefined;
        }
        return this.db.query(
          stmt.name ? { name: stmt.name, text: stmt.text, values } : { text: stmt.text, values },
        );
      });
    } catch (err) {
      const cls = classifyStoreError(err);
      if (isTransientStoreErrorClass(cls)) {
        this.transientFault ??= err;
        throw retryError(err);
      }
      if (kind === 'batch') {
        this.replayNeeded ??= err;
        throw replayError(err);
      }
      if (!(kind === 'savepoint' && cls === 'constraint')) this.abortedBy ??= err;
      if (cls === 'constraint') {
        throw new StoreError(
          errorCode(err) === '23505' ? 'DUPLICATE_KEY' : 'CONSTRAINT_VIOLATION',
          `${this.where}: ${messageOf(err)}`,
          { cause: err },
        );
      }
      throw failure(this.where, err);
    }
  }

  /**
   * Updates the row `key` names with the fields of `patch` that are not undefined; returns the columns
   * it set, encoded as sent (none: it only checked that the row exists).
   */
  protected async patch(
    table: string,
    columns: Columns<never>,
    identity: readonly string[],
    key: WhereBuilder,
    keyValues: readonly SqlValue[],
    patch: object,
    exists: Statement,
    missing: () => StoreError,
    guard?: { readonly savepoint: boolean; readonly constraint: () => StoreError },
  ): Promise<Record<string, SqlValue>> {
    this.checkWritable();
    const names: string[] = [];
    const values: SqlValue[] = [];
    const written: Record<string, SqlValue> = {};
    const all = columns as Readonly<Record<string, readonly [string, (v: unknown) => SqlValue]>>;
    for (const [field, value] of Object.entries(patch)) {
      if (value === undefined) continue;
      const column = all[field];
      if (!column || identity.includes(field)) {
        throw new StoreError('INVALID_PATCH', `${table}: field '${field}' cannot be changed by a patch`);
      }
      const encoded = column[1](value);
      names.push(column[0]);
      values.push(encoded);
      written[column[0]] = encoded;
    }
    if (names.length === 0) {
      if ((await this.exec(exists, keyValues)).rows.length === 0) throw missing();
      return written;
    }
    const stmt = this.sql.patches.get(table, names, key);
    const params = [...values, ...keyValues];
    let result: PgResult | undefined;
    if (guard?.savepoint) {
      this.usedSavepoint = true;
      await this.exec({ name: '', text: `SAVEPOINT ${SAVEPOINT}` }, []);
      try {
        result = await this.exec(stmt, params, true);
      } catch (err) {
        if (!(err instanceof StoreError) || err.code !== 'DUPLICATE_KEY') throw err;
        await this.exec({ name: '', text: `ROLLBACK TO SAVEPOINT ${SAVEPOINT}` }, []);
        await this.exec({ name: '', text: `RELEASE SAVEPOINT ${SAVEPOINT}` }, []);
        throw guard.constraint();
      }
      await this.exec({ name: '', text: `RELEASE SAVEPOINT ${SAVEPOINT}` }, []);
    } else {
      result = await this.write(`${table}:${keyValues.join(':')}`, stmt, params, 'some');
      if (!result) return written; // deferred: the batch checks the row count
    }
    if (result.rowCount === 0) throw missing();
    return written;
  }
}

function replayError(cause: unknown): StoreError {
  return new StoreError(
    'STORE_RETRY',
    'a batch of deferred writes was rejected; the transaction will be re-run with immediate writes',
    { cause },
  );
}

function retryError(cause: unknown): StoreError {
  return new StoreError('STORE_RETRY', 'transient database fault; the transaction will be re-run', { cause });
}
