import type { Statement } from './postgres-rows.js';

/**
 * Deferred writes: inside `transaction`, the adapter holds back writes whose result the caller does not
 * read (it only needs to know they will succeed) and sends them together, as one statement of
 * data-modifying CTEs, just before the next statement that must run now (a read, a write that reports
 * something) or together with COMMIT. A step of the hot path thus writes with one round trip instead of
 * four, and that round trip also commits.
 *
 * Each deferred write states which row counts the immediate call would have accepted. The statement
 * itself checks them: when any write of a batch gets another count, it raises an error, so a COMMIT sent
 * right behind it finds the transaction aborted and rolls back. Either way (a count, or any other
 * non-transient database error), the adapter cannot report the failure at the call that made the write
 * any more: the store rolls the transaction back and runs the callback again with immediate writes,
 * where the error surfaces at the call, exactly as the store contract says (callbacks may run more than
 * once already: transient faults re-run them).
 *
 * Sub-statements of one statement all see the snapshot taken at its start and not each other's
 * effects, and one row must not be changed twice in one statement. So two writes that share a key (the
 * row or rows they touch) never go in one batch: the second flushes the first. A write may touch more
 * rows than its key names (`covers`: a run's whole pending state); it then shares no batch with a
 * write of any of those rows, unless both only delete.
 */

/** The row counts an immediate write would accept from its last CTE entry: any, at least one, exactly n. */
export type ExpectedRows = 'any' | 'some' | number;

export function acceptsRows(expected: ExpectedRows, rows: number): boolean {
  if (expected === 'any') return rows >= 0;
  if (expected === 'some') return rows > 0;
  return rows === expected;
}

export interface DeferredWrite {
  /** What the write touches: a run, an activity, a timer, a run's events or buffer, a query, a request. */
  readonly key: string;
  /** The SQL shape, stable across calls (names the prepared batch statements). */
  readonly shape: string;
  /** The write's CTE entries (placeholders `$1..` of its own values), the last one named `alias`. */
  readonly sql: (alias: string) => string;
  readonly values: readonly unknown[];
  /** The row counts of the last CTE entry the immediate call would have accepted. */
  readonly expect: ExpectedRows;
  /**
   * Rows touched beyond `key`: keys `k` such that `k` is one of these or starts with one of them and a
   * colon (a run's whole pending state: `activities:RUN`, `timers:RUN`, ...).
   */
  readonly covers?: readonly string[];
  /** The write only deletes rows: two deletes of one row in one statement leave it deleted, as in turn. */
  readonly deletes?: boolean;
  /** It writes nothing: it checks a read answered without a round trip (postgres-row-memory.ts). */
  readonly check?: boolean;
}

/** Whether `write` (one with `covers`) touches the rows named by `key` of a write that `deletes` or not. */
function covers(write: DeferredWrite, key: string, deletes: boolean): boolean {
  if (write.deletes && deletes) return false;
  return write.covers!.some((c) => key === c || (key.startsWith(c) && key[c.length] === ':'));
}

/** A data-modifying statement (no RETURNING) as the one CTE entry of a deferred write. */
export function cteOf(statement: Statement): (alias: string) => string {
  return (alias) => `${alias} AS (${statement.text} RETURNING 1)`;
}

/**
 * The size of one batch statement. A task that schedules a thousand activities makes a thousand writes.
 * One statement holds at most 65,535 parameters (the protocol counts them in 16 bits) and its SELECT at
 * most 1,664 columns (one per write, see BatchStatements); a batch past either fails, and the whole
 * transaction runs again with a round trip per write. Well below both, the server's planning time grows
 * faster than the batch: 3,200 inserts took 0.2 s in batches of 50 and 2 s in batches of 1,000. So a
 * batch is sent once it holds MAX_BATCH_WRITES writes; steps of the hot path have fewer than ten.
 */
export const MAX_BATCH_PARAMETERS = 65_535;
export const MAX_BATCH_WRITES = 50;

/** The parameters a write adds to a batch: its values, and its expected count where it is exact. */
function parametersOf(write: DeferredWrite): number {
  return write.values.length + (typeof write.expect === 'number' ? 1 : 0);
}

/** The writes held back by one transaction handle, in call order. */
export class DeferredWrites {
  private writes: DeferredWrite[] = [];
  private readonly keys = new Set<string>();
  /** The writes of the batch that touch more than their key (`covers`). */
  private scoped: DeferredWrite[] = [];
  private parameters = 0;

  get size(): number {
    return this.writes.length;
  }

  /** Whether the batch changes anything (holds more than checks). */
  get changes(): boolean {
    return this.writes.some((w) => !w.check);
  }

  /** Whether `write` can join the batch without passing MAX_BATCH_WRITES or MAX_BATCH_PARAMETERS. */
  fits(write: DeferredWrite): boolean {
    return (
      this.writes.length < MAX_BATCH_WRITES && this.parameters + parametersOf(write) <= MAX_BATCH_PARAMETERS
    );
  }

  /** Whether a write of the batch touches rows `write` touches (then `write` may not join it). */
  touches(write: DeferredWrite): boolean {
    if (this.keys.has(write.key)) return true;
    const deletes = write.deletes === true;
    if (this.scoped.some((w) => covers(w, write.key, deletes))) return true;
    return write.covers !== undefined && this.writes.some((w) => covers(write, w.key, w.deletes === true));
  }

  add(write: DeferredWrite): void {
    this.writes.push(write);
    this.keys.add(write.key);
    if (write.covers) this.scoped.push(write);
    this.parameters += parametersOf(write);
  }

  /** Empties the batch, returning what it held. */
  take(): DeferredWrite[] {
    const writes = this.writes;
    this.writes = [];
    this.keys.clear();
    this.scoped = [];
    this.parameters = 0;
    return writes;
  }
}

/** Distinct batch shapes prepared by name; beyond this they run unnamed. */
const BATCH_CACHE_LIMIT = 512;

/** The prefix of the error a batch raises when a write touched another number of rows than expected. */
const BATCH_REJECTED = 'longhaul: a deferred write touched an unexpected number of rows';

/**
 * The statements that send a batch, by the sequence of its writes' shapes and expectations, named on
 * first use (each connection parses and plans a shape once). Results: one row, `c0, c1, ...`: the rows
 * each write's last CTE entry returned, and `lh_xid`: the transaction's id (postgres-row-memory.ts). A write expecting an exact count gets it as a parameter after
 * all the writes' own (`batchValues`), so counts do not multiply the shapes. When a count is not as
 * expected the statement fails (a cast of the message `BATCH_REJECTED ...` to int: error 22P02).
 */
export class BatchStatements {
  private readonly cache = new Map<string, Statement>();

  get(writes: readonly DeferredWrite[]): Statement {
    const signature = writes
      .map((w) => `${w.shape}\t${typeof w.expect === 'number' ? 'n' : w.expect}`)
      .join('\n');
    const cached = this.cache.get(signature);
    if (cached) return cached;
    let offset = 0;
    const entries: string[] = [];
    const counts: string[] = [];
    writes.forEach((w, i) => {
      entries.push(renumber(w.sql(`w${i}`), offset));
      counts.push(`(SELECT count(*) FROM w${i})::int AS c${i}`);
      offset += w.values.length;
    });
    const checks: string[] = [];
    writes.forEach((w, i) => {
      if (w.expect === 'some') checks.push(`c${i} > 0`);
      else if (typeof w.expect === 'number') checks.push(`c${i} = $${++offset}`);
    });
    const columns = writes.map((_, i) => `c${i}`).join(', ');
    // The ELSE branch reads the counts, so it is evaluated only when reached (never folded at planning).
    const guard =
      checks.length === 0
        ? ''
        : `, CASE WHEN ${checks.join(' AND ')} THEN 0 ` +
          `ELSE ('${BATCH_REJECTED} (rows: ' || array_to_string(ARRAY[${columns}], ',') || ')')::int END AS rejected`;
    // `lh_xid`: the transaction's id as row versions carry it (xmin, 32 bits), for remembered rows.
    const xid = ', (txid_current() % 4294967296)::text AS lh_xid';
    const text = `WITH ${entries.join(', ')}, lh_counts AS (SELECT ${counts.join(', ')}) SELECT ${columns}${guard}${xid} FROM lh_counts`;
    if (this.cache.size >= BATCH_CACHE_LIMIT) return { name: '', text };
    const stmt = { name: `lh_batch_${this.cache.size + 1}`, text };
    this.cache.set(signature, stmt);
    return stmt;
  }
}

/** The parameters of a batch statement: each write's values, then the exact counts expected. */
export function batchValues(writes: readonly DeferredWrite[]): unknown[] {
  const values = writes.flatMap((w) => w.values);
  for (const w of writes) if (typeof w.expect === 'number') values.push(w.expect);
  return values;
}

/**
 * Shifts the `$n` placeholders of `sql` by `offset`, leaving quoted identifiers and string literals
 * (which could hold a `$`) as they are.
 */
export function renumber(sql: string, offset: number): string {
  if (offset === 0) return sql;
  return sql.replace(/"(?:[^"]|"")*"|'(?:[^']|'')*'|\$(\d+)/g, (match, n: string | undefined) =>
    n === undefined ? match : `$${Number(n) + offset}`,
  );
}
