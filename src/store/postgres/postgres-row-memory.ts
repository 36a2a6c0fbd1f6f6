import type { RunWithActivities } from '../store.js';
import type { DeferredWrite } from './postgres-batch.js';
import { type ActivityRow, type RunRow, rowToActivity, rowToRun } from './postgres-rows.js';

/**
 * Remembered rows: a run's row and its activities' rows as this store's last transaction on the run left
 * them, each with the `xmin` (the id of the transaction that wrote that row version) it has in the
 * database. A transaction that reads a remembered run with `getRunWithActivities` gets the remembered
 * rows at once, without a round trip, and a check joins its next batch of writes (postgres-batch.ts):
 * the check locks the run and then its activities, as the read would have, and passes only if the run
 * row and the set of activity rows still carry the remembered xmins. A hot-path step is then one round
 * trip: the check, the step's writes and COMMIT go out together.
 *
 * Why an xmin proves the rows are the remembered ones: PostgreSQL writes a new row version, with the
 * writing transaction's id as its xmin, on every UPDATE; a lock (`FOR UPDATE`) does not change it. So a
 * row whose xmin is the one remembered is the version remembered, byte for byte. A remembered entry is
 * built from rows read in the same transaction (with their xmins) or from rows written by it (the row as
 * read or remembered, with the written values encoded exactly as the statement sent them, and the
 * transaction's own id), so it holds what a read would return. Activities are only inserted by a
 * transaction that also updates their run, and the check compares the whole set, so a row added or
 * removed by anyone else fails it too.
 *
 * The buffer is covered too: every buffered event also rewrites its run's row (a new xmin), so a run
 * remembered with an empty buffer answers `listBuffered` with nothing, and the same check proves it.
 * A start's `findOpenRun` works the same way with nothing remembered: it assumes no open run of the
 * workflow id, and a check that none is open goes first in the batch (`checkNoOpenRun`).
 *
 * A failed check rejects the batch: the store rolls back and runs the callback again without memory
 * (PostgresStore.run). A callback that throws has the checks of its remembered reads sent alone before
 * the rollback, so an error too stands only if the rows it came from were current. A stale entry thus
 * costs one extra round trip and never changes a result. Rows written inside a savepoint carry the
 * savepoint's own transaction id, so a transaction that used one remembers nothing; neither does one
 * that rolled back or one whose transaction id is unknown.
 */

/** A row remembered with its xmin; null while the row was written by the current transaction. */
export interface Versioned<R> {
  readonly row: R;
  readonly xmin: string | null;
}

/**
 * What a transaction knows of one run: its row, every one of its activities' rows, and whether its
 * buffer is known to be empty (every write to the buffer also rewrites the run's row, so the run's xmin
 * covers it).
 */
export interface KnownRun {
  run: Versioned<RunRow>;
  readonly activities: Map<number, Versioned<ActivityRow>>;
  bufferEmpty: boolean;
}

/**
 * Runs remembered per store, and the bytes their rows may take (payloads can be large: an activity's
 * input may hold 2 MB). The least recently used are forgotten past either; a run whose rows alone
 * would take more than a sixteenth of the bytes is not remembered.
 */
export const MEMORY_CAPACITY = 4_096;
export const MEMORY_BYTES = 64 * 1024 * 1024;

/** The remembered runs of one store (see above). Entries are never trusted without the check. */
export class RowMemory {
  private readonly runs = new Map<string, { readonly known: KnownRun; readonly bytes: number }>();
  private total = 0;
  /** Workflow ids (namespace, id) last read with an open run, least recently noted first. */
  private readonly openIds = new Set<string>();

  constructor(
    private readonly capacity = MEMORY_CAPACITY,
    private readonly budget = MEMORY_BYTES,
  ) {}

  get size(): number {
    return this.runs.size;
  }

  /** About how many bytes the remembered rows take. */
  get bytes(): number {
    return this.total;
  }

  /**
   * Whether the last read of this workflow id's open run found one: a start of it then reads instead of
   * assuming none (signal-with-start and useExisting meet open runs by design; each wrong assumption
   * costs a rejected batch).
   */
  hadOpenRun(namespace: string, workflowId: string): boolean {
    return this.openIds.has(`${namespace}\u0000${workflowId}`);
  }

  noteOpenRun(namespace: string, workflowId: string, open: boolean): void {
    const key = `${namespace}\u0000${workflowId}`;
    this.openIds.delete(key);
    if (!open) return;
    this.openIds.add(key);
    if (this.openIds.size > this.capacity) this.openIds.delete(this.openIds.values().next().value!);
  }

  /** A copy of the entry for `runId`, for one transaction to build on. */
  take(runId: string): KnownRun | undefined {
    const known = this.runs.get(runId)?.known;
    return known && { run: known.run, activities: new Map(known.activities), bufferEmpty: known.bufferEmpty };
  }

  forget(runId: string): void {
    const entry = this.runs.get(runId);
    if (!entry) return;
    this.total -= entry.bytes;
    this.runs.delete(runId);
  }

  /**
   * Remembers what a committed transaction left: rows it wrote get its id `xid` as their xmin. Forgets
   * the run instead when a written row's xmin is unknown (no batch reported `xid`) or the run closed
   * (no step of it will come).
   */
  remember(runId: string, known: KnownRun, xid: string | undefined): void {
    const written = known.run.xmin === null || [...known.activities.values()].some((a) => a.xmin === null);
    this.forget(runId); // re-inserted last: the map's order is the order of use
    if ((written && xid === undefined) || known.run.row.status !== 'running') return;
    const stamp = <R>(v: Versioned<R>): Versioned<R> =>
      v.xmin === null ? { row: v.row, xmin: xid ?? null } : v;
    const activities = new Map<number, Versioned<ActivityRow>>();
    let bytes = bytesOf(known.run.row);
    for (const [id, a] of known.activities) {
      activities.set(id, stamp(a));
      bytes += bytesOf(a.row);
    }
    if (bytes > this.budget / 16) return;
    const entry = { run: stamp(known.run), activities, bufferEmpty: known.bufferEmpty };
    this.runs.set(runId, { known: entry, bytes });
    this.total += bytes;
    while (this.runs.size > this.capacity || this.total > this.budget) {
      const oldest = this.runs.keys().next().value;
      if (oldest === undefined) break;
      this.forget(oldest);
    }
  }
}

/** About how many bytes a row takes: strings at two bytes a character, other values at eight. */
function bytesOf(row: object): number {
  let bytes = 0;
  for (const value of Object.values(row)) bytes += typeof value === 'string' ? 2 * value.length : 8;
  return bytes;
}

/** The records a read of `known` would have returned (activities by scheduled event id). */
export function recordsOf(known: KnownRun): RunWithActivities {
  const activities = [...known.activities.values()]
    .map((a) => rowToActivity(a.row))
    .sort((x, y) => x.scheduledEventId - y.scheduledEventId);
  return { run: rowToRun(known.run.row), activities };
}

/**
 * The check that makes a remembered read valid: one CTE entry returning one row only if the run's row
 * still has the remembered xmin and its activities are exactly the remembered ones (scheduled event id
 * and xmin, in order). The run is locked first, then its activities, the order every transaction that
 * takes both follows. It must be the first entry of its batch: a row changed by an earlier entry of the
 * same statement cannot be locked again by it, and the check would fail for nothing.
 */
export function checkOf(sql: (alias: string) => string, runId: string, known: KnownRun): DeferredWrite {
  const versions = [...known.activities.entries()]
    .sort((x, y) => x[0] - y[0])
    .map(([id, a]) => `${id}:${a.xmin}`)
    .join(',');
  return {
    key: `check:${runId}`,
    shape: 'checkRemembered',
    sql,
    values: [runId, known.run.xmin, versions],
    expect: 1,
    check: true,
  };
}

/**
 * The check that makes an assumed absence valid: a start's `findOpenRun` answered "none" without a round
 * trip (the usual case: a new workflow id). One row only if the workflow id has no running run; it goes
 * first in its batch, before the insert of the new run. When a run is open, the insert would have hit
 * `runs_one_open` anyway; the check makes the batch fail before writing, and the start runs again reading.
 */
export function checkNoOpenRun(
  sql: (alias: string) => string,
  namespace: string,
  workflowId: string,
): DeferredWrite {
  return {
    key: `open:${namespace}:${workflowId}`,
    shape: 'checkNoOpenRun',
    sql,
    values: [namespace, workflowId],
    expect: 1,
    check: true,
  };
}

/** The CTE entry of `checkNoOpenRun` for the schema `s` (quoted): `$1` namespace, `$2` workflow id. */
export function checkNoOpenRunSql(s: string): (alias: string) => string {
  return (alias) =>
    `${alias} AS (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM ${s}.runs ` +
    `WHERE namespace = $1 AND workflow_id = $2 AND status = 'running'))`;
}

/** The CTE entry of `checkOf` for the schema `s` (quoted): `$1` run id, `$2` its xmin, `$3` activities. */
export function checkRememberedSql(s: string): (alias: string) => string {
  return (alias) =>
    `${alias} AS (SELECT 1 FROM (SELECT xmin FROM ${s}.runs WHERE run_id = $1 FOR UPDATE) r ` +
    `WHERE r.xmin::text = $2 AND (SELECT coalesce(string_agg(scheduled_event_id || ':' || xmin::text, ',' ` +
    `ORDER BY scheduled_event_id), '') FROM (SELECT scheduled_event_id, xmin FROM ${s}.activities ` +
    `WHERE run_id = $1 ORDER BY scheduled_event_id FOR UPDATE) a) = $3)`;
}

/**
 * What one transaction knows of runs' rows, and what its writes change, for the store's memory: runs it
 * read (or took from memory) are known completely and follow its writes; a write to a run it does not
 * know makes the run unknown (`dirty`), and the memory forgets it when the transaction ends.
 */
export class TransactionRows {
  readonly #known = new Map<string, KnownRun>();
  readonly #dirty = new Set<string>();

  constructor(private readonly memory: RowMemory) {}

  /** The remembered rows of a run this transaction has neither read nor changed yet, if any. */
  take(runId: string): KnownRun | undefined {
    if (this.#known.has(runId) || this.#dirty.has(runId)) return undefined;
    const known = this.memory.take(runId);
    if (known) this.#known.set(runId, known);
    return known;
  }

  /** What this transaction knows of `runId` (read locked, written whole, or remembered and checked). */
  known(runId: string): KnownRun | undefined {
    return this.#known.get(runId);
  }

  /** `runId`'s rows are now `known` (read, or written whole, by this transaction). */
  learn(runId: string, known: KnownRun): void {
    this.#known.set(runId, known);
    this.#dirty.delete(runId);
  }

  /**
   * A write changed rows of `runId`. `apply` updates what this transaction knows of them and returns
   * false when it cannot; then, as when nothing is known, the run is forgotten at the end.
   */
  change(runId: string, apply: (known: KnownRun) => boolean): void {
    const known = this.#known.get(runId);
    if (known && apply(known)) return;
    this.#known.delete(runId);
    this.#dirty.add(runId);
  }

  /**
   * Once the attempt is over: a transaction that committed (`xid`: its id, if a batch reported it)
   * teaches the memory what it left; otherwise every run it knew or changed is forgotten.
   */
  settle(committed: boolean, xid: string | undefined): void {
    for (const runId of this.#dirty) this.memory.forget(runId);
    for (const [runId, known] of this.#known) {
      if (committed) this.memory.remember(runId, known, xid);
      else this.memory.forget(runId);
    }
  }
}
