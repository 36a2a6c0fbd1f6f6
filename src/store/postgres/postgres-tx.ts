import { StoreError } from '../../common/errors.js';
import type { HistoryEvent, NewEvent } from '../../common/events.js';
import type {
  ActivityPatch,
  ActivityRecord,
  BufferedEvent,
  QueryRecord,
  RequestRecord,
  RunPatch,
  RunRecord,
  RunWithActivities,
  StoreTx,
  TimerRecord,
} from '../store.js';
import {
  checkNoOpenRun,
  checkOf,
  recordsOf,
  TransactionRows,
  type Versioned,
} from './postgres-row-memory.js';
import {
  ACTIVITY_COLUMNS,
  ACTIVITY_PREFIX,
  type ActivityRow,
  type BufferRow,
  type EventRow,
  encodeAll,
  pickRow,
  QUERY_COLUMNS,
  type QueryRow,
  type RequestRow,
  RUN_COLUMNS,
  type RunRow,
  rowOf,
  rowToActivity,
  rowToBuffered,
  rowToEvent,
  rowToQuery,
  rowToRequest,
  rowToRun,
  rowToTimer,
  type TimerRow,
} from './postgres-rows.js';
import { ACTIVITY_KEY, QUERY_KEY, RUN_KEY } from './postgres-statements.js';
import { PostgresTxClaims } from './postgres-tx-claims.js';

const RUN_IDENTITY = ['runId', 'namespace', 'workflowId', 'startTime'];
const ACTIVITY_IDENTITY = ['runId', 'namespace', 'workflowId', 'scheduledEventId', 'activityId'];
const QUERY_PATCHABLE = new Set(['phase', 'leaseExpiresAt', 'result', 'failure']);

/**
 * The transaction handle given to callbacks: one pooled connection inside `BEGIN ... COMMIT` (a `read`
 * handle: a read-only REPEATABLE READ snapshot). Each method is one round trip on the normal path, except
 * that with `deferWrites` the writes whose result the caller does not read are held back and sent as one
 * statement before the next other statement or COMMIT (postgres-batch.ts). If such a batch does not
 * succeed exactly as the immediate writes would have, `replayNeeded` is set: the store rolls back and
 * re-runs the callback with immediate writes, so errors are reported at the call, as below.
 *
 * Errors: driver errors become StoreErrors. Duplicates are detected without raising a database error
 * (`ON CONFLICT DO NOTHING` plus a row count), so a caught DUPLICATE_KEY, DUPLICATE_OPEN_RUN,
 * EVENT_CONFLICT or EVENT_GAP leaves the transaction usable and writes nothing; the one statement that can
 * still hit a unique index (`updateRun` to status 'running') runs inside a savepoint. A transient fault
 * (deadlock, serialization failure, lost connection) is remembered so the store re-runs the whole
 * transaction even if the callback catches it; any other database error aborts the transaction on the
 * server and is remembered too, so the store never reports a commit for it. A handle cannot be used after
 * its callback settled (TX_ENDED). Patch fields whose value is `undefined` are left unchanged.
 */
export class PostgresTx extends PostgresTxClaims implements StoreTx {
  /** What this transaction knows and changes of runs' rows, where the store remembers rows. */
  readonly #rows = this.memory && new TransactionRows(this.memory);
  /** How many reads were answered without a round trip (each checked by the next batch). */
  remembered = 0;
  /** The last buffered seq each `listBuffered` of a known run returned (0: none). */
  readonly #bufferListed = new Map<string, number>();

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const row = await this.one<RunRow>(this.locking(this.st.getRun, this.st.getRunForUpdate), [runId]);
    return row && rowToRun(row);
  }

  async findRun(namespace: string, workflowId: string, runId?: string): Promise<RunRecord | undefined> {
    const row =
      runId === undefined
        ? await this.one<RunRow>(this.locking(this.st.findLatestRun, this.st.findLatestRunForUpdate), [
            namespace,
            workflowId,
          ])
        : await this.one<RunRow>(this.locking(this.st.findRunById, this.st.findRunByIdForUpdate), [
            namespace,
            workflowId,
            runId,
          ]);
    return row && rowToRun(row);
  }

  async findOpenRun(namespace: string, workflowId: string): Promise<RunRecord | undefined> {
    if (this.memory && this.recall && !this.memory.hadOpenRun(namespace, workflowId)) {
      // Assumed: none (a start of a new workflow id). The check goes out first in the next batch; when a
      // run is open after all, the batch fails and the callback runs again reading (and locking) it.
      await this.deferWrite(checkNoOpenRun(this.sql.checkNoOpenRun, namespace, workflowId), true);
      this.remembered++;
      return undefined;
    }
    const stmt = this.locking(this.st.findOpenRun, this.st.findOpenRunForUpdate);
    const row = await this.one<RunRow>(stmt, [namespace, workflowId]);
    // A workflow id found open (signal-with-start, useExisting) is read, not assumed, at its next start.
    this.memory?.noteOpenRun(namespace, workflowId, row !== undefined);
    return row && rowToRun(row);
  }

  async readEvents(runId: string, fromEventId = 1, limit?: number): Promise<HistoryEvent[]> {
    if (limit !== undefined && limit <= 0) return [];
    const from = Math.max(1, Math.floor(fromEventId));
    return (await this.all<EventRow>(this.st.readEvents, [runId, from, limit ?? null])).map(rowToEvent);
  }

  async lastEvent(runId: string): Promise<HistoryEvent | undefined> {
    const row = await this.one<EventRow>(this.st.lastEvent, [runId]);
    return row && rowToEvent(row);
  }

  async listBuffered(runId: string): Promise<BufferedEvent[]> {
    // A run this transaction knows (read locked, inserted, or remembered and checked by the next batch)
    // with an empty buffer: every buffered event rewrites its run's row, so the check covers the buffer.
    const known = this.#rows?.known(runId);
    if (known?.bufferEmpty) return [];
    const rows = await this.all<BufferRow>(this.st.listBuffered, [runId]);
    if (known) {
      // Read with the run locked: nothing else is buffered before this transaction ends.
      known.bufferEmpty = rows.length === 0;
      this.#bufferListed.set(runId, rows.length === 0 ? 0 : Number(rows[rows.length - 1]!.seq));
    }
    return rows.map(rowToBuffered);
  }

  async getActivity(runId: string, scheduledEventId: number): Promise<ActivityRecord | undefined> {
    const stmt = this.locking(this.st.getActivity, this.st.getActivityForUpdate);
    const row = await this.one<ActivityRow>(stmt, [runId, scheduledEventId]);
    return row && rowToActivity(row);
  }

  async listActivities(runId: string): Promise<ActivityRecord[]> {
    const stmt = this.locking(this.st.listActivities, this.st.listActivitiesForUpdate);
    return (await this.all<ActivityRow>(stmt, [runId])).map(rowToActivity);
  }

  async getRunWithActivities(runId: string): Promise<RunWithActivities> {
    const remembered = this.recall ? this.#rows?.take(runId) : undefined;
    if (remembered) {
      // No round trip: the check goes out with the next batch, first in it, and locks what the read would.
      await this.deferWrite(checkOf(this.sql.checkRemembered, runId, remembered), true);
      this.remembered++;
      return recordsOf(remembered);
    }
    const stmt = this.locking(this.st.getRunWithActivities, this.st.getRunWithActivitiesForUpdate);
    type Row = RunRow & { fresh: boolean; locked_xmin?: string } & Record<string, unknown>;
    const rows = await this.all<Row>(stmt, [runId]);
    if (rows.length === 0) return { run: undefined, activities: [] };
    const first = rows[0]!;
    // Each activity's row with the xmin of the version read. When the statement waited for a run another
    // transaction changed, the activities are read again, in a statement of their own that sees that
    // commit (the run is locked now, so they hold still).
    const activities: Versioned<ActivityRow>[] = first.fresh
      ? rows
          .filter((r) => r[`${ACTIVITY_PREFIX}scheduled_event_id`] !== null)
          .map((r) => ({
            row: pickRow(ACTIVITY_COLUMNS, r, ACTIVITY_PREFIX),
            xmin: (r[`${ACTIVITY_PREFIX}lh_xmin`] as string | undefined) ?? null,
          }))
      : (
          await this.all<ActivityRow & { lh_xmin?: string }>(
            this.locking(this.st.listActivities, this.st.listActivitiesForUpdate),
            [runId],
          )
        ).map((r) => ({ row: pickRow(ACTIVITY_COLUMNS, r), xmin: r.lh_xmin ?? null }));
    if (first.locked_xmin !== undefined) {
      this.#rows?.learn(runId, {
        run: { row: pickRow(RUN_COLUMNS, first), xmin: String(first.locked_xmin) },
        activities: new Map(activities.map((a) => [a.row.scheduled_event_id, a])),
        bufferEmpty: false, // not read
      });
    }
    return { run: rowToRun(first), activities: activities.map((a) => rowToActivity(a.row)) };
  }

  async listTimers(runId: string): Promise<TimerRecord[]> {
    return (await this.all<TimerRow>(this.st.listTimers, [runId])).map(rowToTimer);
  }

  /**
   * Inside `transaction`, first takes a transaction-level advisory lock on the request id (schema,
   * namespace, id): the runtime reads a request id, and records it only if it was absent, and a row lock
   * cannot guard a row that does not exist yet. Two concurrent calls with one request id thus run one
   * after the other, and the second sees the first's record (READ COMMITTED: the read starts after the
   * lock is granted).
   */
  async getRequest(namespace: string, requestId: string): Promise<RequestRecord | undefined> {
    if (this.writable) {
      await this.exec(this.st.lockRequestKey, [JSON.stringify([this.schema, namespace, requestId])]);
    }
    const row = await this.one<RequestRow>(this.st.getRequest, [namespace, requestId]);
    return row && rowToRequest(row);
  }

  async getQuery(id: string): Promise<QueryRecord | undefined> {
    const row = await this.one<QueryRow>(this.locking(this.st.getQuery, this.st.getQueryForUpdate), [id]);
    return row && rowToQuery(row);
  }

  async nextWakeTime(): Promise<number | null> {
    return (await this.one<{ t: number | null }>(this.st.nextWakeTime, []))?.t ?? null;
  }

  async nextSweepTime(): Promise<number | null> {
    return (await this.one<{ t: number | null }>(this.st.nextSweepTime, []))?.t ?? null;
  }

  async insertRun(run: RunRecord): Promise<void> {
    this.checkWritable();
    const row = rowOf<RunRecord, RunRow>(RUN_COLUMNS, run);
    const values = Object.values(row);
    // First in its batch: a run closed by an earlier write of this transaction must leave `runs_one_open`
    // before the insert looks at it (sub-statements of one statement do not see each other's effects).
    const result = await this.write(`runs:${run.runId}`, this.st.insertRun, values, 1, true);
    if (!result || result.rowCount === 1) {
      // A new run has no activities yet.
      this.#rows?.learn(run.runId, { run: { row, xmin: null }, activities: new Map(), bufferEmpty: true });
      return;
    }
    // Nothing inserted: the run id exists, or (the partial unique index) its workflow id has a running run.
    if ((await this.exec(this.st.runExists, [run.runId])).rows.length > 0) {
      throw new StoreError('DUPLICATE_KEY', `run ${run.runId} already exists`);
    }
    throw duplicateOpenRun(
      `workflow '${run.workflowId}' in namespace '${run.namespace}' already has a running run`,
    );
  }

  async updateRun(runId: string, patch: RunPatch): Promise<void> {
    const missing = () => notFound('RUN_NOT_FOUND', `run ${runId}`);
    const written = await this.patch(
      'runs',
      RUN_COLUMNS,
      RUN_IDENTITY,
      RUN_KEY,
      [runId],
      patch,
      this.st.runExists,
      missing,
      {
        // Only a change to 'running' can hit `runs_one_open`; a savepoint keeps the transaction usable.
        savepoint: patch.status === 'running',
        constraint: () =>
          duplicateOpenRun(`run ${runId} cannot become running: its workflow id has a running run`),
      },
    );
    if (Object.keys(written).length === 0) return;
    this.#rows?.change(runId, (k) => {
      k.run = { row: { ...k.run.row, ...written }, xmin: null };
      return true;
    });
  }

  async appendEvents(runId: string, firstEventId: number, events: readonly NewEvent[]): Promise<void> {
    this.checkWritable();
    const conflict = () =>
      new StoreError(
        'EVENT_CONFLICT',
        `run ${runId} already has event ${firstEventId}: another writer appended first; reload the run and retry`,
      );
    const gap = (last: number) =>
      new StoreError(
        'EVENT_GAP',
        `run ${runId} ends at event ${last}; appending at ${firstEventId} would leave a gap in its history`,
      );
    if (!Number.isSafeInteger(firstEventId) || firstEventId < 1) throw gap(Number.NaN);
    if (events.length === 0) return;
    const values = [
      runId,
      firstEventId,
      events.map((e) => e.type),
      events.map((e) => e.time),
      events.map((e) => JSON.stringify(e.attributes)),
    ];
    const key = `events:${runId}`;
    const expect = events.length;
    // Its own CTE form (the statement is itself a WITH, which cannot nest as a data-modifying CTE).
    if (
      await this.deferWrite({ key, shape: 'appendEvents', sql: this.sql.deferred.append, values, expect })
    ) {
      return;
    }
    const result = await this.exec(this.st.appendEvents, values);
    const row = result.rows[0] as { last_event_id: number; inserted_ids: readonly (number | string)[] };
    const inserted = row.inserted_ids.map(Number);
    if (inserted.length === events.length) return;
    if (inserted.length > 0) {
      // A concurrent writer committed some of these ids while this statement ran: undo this batch's own
      // rows (invisible to everyone else until commit), so a failed append writes nothing.
      await this.exec(this.st.deleteEvents, [runId, inserted]);
      throw conflict();
    }
    if (firstEventId > row.last_event_id + 1) throw gap(row.last_event_id);
    throw conflict();
  }

  async addBuffered(runId: string, event: NewEvent): Promise<void> {
    this.checkWritable();
    const values = [runId, event.type, event.time, JSON.stringify(event.attributes)];
    // It also rewrites the run's row (see insertBufferedEntries).
    const form = { covers: [`runs:${runId}`], sql: this.sql.deferred.insertBuffered };
    await this.write(`buffer:${runId}`, this.st.insertBuffered, values, 'any', false, form);
    this.#rows?.change(runId, (k) => {
      k.run = { row: k.run.row, xmin: null };
      k.bufferEmpty = false;
      return true;
    });
  }

  async deleteBuffered(runId: string, uptoSeq: number): Promise<void> {
    this.checkWritable();
    await this.remove(`buffer:${runId}`, this.st.deleteBuffered, [runId, uptoSeq]);
    this.#rows?.change(runId, (k) => {
      const listed = this.#bufferListed.get(runId);
      if (listed !== undefined && uptoSeq >= listed) k.bufferEmpty = true;
      return true;
    });
  }

  async insertActivity(activity: ActivityRecord): Promise<void> {
    this.checkWritable();
    const row = rowOf<ActivityRecord, ActivityRow>(ACTIVITY_COLUMNS, activity);
    const values = Object.values(row);
    const key = `activities:${activity.runId}:${activity.scheduledEventId}`;
    const result = await this.write(key, this.st.insertActivity, values, 1);
    if (result && result.rowCount !== 1) {
      throw new StoreError(
        'DUPLICATE_KEY',
        `activity ${activity.scheduledEventId} of run ${activity.runId} already exists`,
      );
    }
    this.#rows?.change(activity.runId, (k) => {
      k.activities.set(activity.scheduledEventId, { row, xmin: null });
      return true;
    });
  }

  async updateActivity(runId: string, scheduledEventId: number, patch: ActivityPatch): Promise<void> {
    const missing = () => notFound('ACTIVITY_NOT_FOUND', `activity ${scheduledEventId} of run ${runId}`);
    const key = [runId, scheduledEventId];
    const written = await this.patch(
      'activities',
      ACTIVITY_COLUMNS,
      ACTIVITY_IDENTITY,
      ACTIVITY_KEY,
      key,
      patch,
      this.st.activityExists,
      missing,
    );
    if (Object.keys(written).length === 0) return;
    this.#rows?.change(runId, (k) => {
      const known = k.activities.get(scheduledEventId);
      if (known) k.activities.set(scheduledEventId, { row: { ...known.row, ...written }, xmin: null });
      return known !== undefined;
    });
  }

  async deleteActivity(runId: string, scheduledEventId: number): Promise<void> {
    this.checkWritable();
    const key = `activities:${runId}:${scheduledEventId}`;
    await this.remove(key, this.st.deleteActivity, [runId, scheduledEventId]);
    this.#rows?.change(runId, (k) => k.activities.delete(scheduledEventId) || true);
  }

  async insertTimer(t: TimerRecord): Promise<void> {
    this.checkWritable();
    const values = [t.runId, t.timerKey, t.namespace, t.kind, t.fireAt, t.startedEventId];
    const key = `timers:${t.runId}:${t.timerKey}`;
    const result = await this.write(key, this.st.insertTimer, values, 1);
    if (result && result.rowCount !== 1) {
      throw new StoreError('DUPLICATE_KEY', `timer '${t.timerKey}' of run ${t.runId} already exists`);
    }
  }

  async deleteTimer(runId: string, timerKey: string): Promise<void> {
    this.checkWritable();
    await this.remove(`timers:${runId}:${timerKey}`, this.st.deleteTimer, [runId, timerKey]);
  }

  async deleteRunState(runId: string): Promise<void> {
    this.checkWritable();
    // Its activities, timers, buffer and unanswered queries: no write of those shares its batch, but
    // deletes may (deleting a row twice in one statement deletes it once).
    const form = {
      covers: [`activities:${runId}`, `timers:${runId}`, `buffer:${runId}`, 'queries'],
      deletes: true,
      sql: this.sql.deferred.deleteRunState,
    };
    await this.write(`state:${runId}`, this.st.deleteRunState, [runId], 'any', false, form);
    this.#rows?.change(runId, (k) => {
      k.activities.clear();
      k.bufferEmpty = true;
      return true;
    });
  }

  /**
   * Called by the store once the attempt is over: a committed transaction teaches the store's memory
   * what it left (rows it wrote carry its id), unless it wrote in a savepoint (those rows carry the
   * savepoint's own id); otherwise every run it knew or changed is forgotten.
   */
  settleMemory(committed: boolean): void {
    this.#rows?.settle(committed && !this.usedSavepoint, this.xid);
  }

  async putRequest(r: RequestRecord): Promise<void> {
    this.checkWritable();
    const values = [r.namespace, r.requestId, r.kind, r.runId, r.createdAt];
    await this.write(`requests:${r.namespace}:${r.requestId}`, this.st.putRequest, values);
  }

  async deleteRequestsBefore(createdBefore: number, limit: number): Promise<number> {
    this.checkWritable();
    return (await this.exec(this.st.deleteRequestsBefore, [createdBefore, limit])).rowCount ?? 0;
  }

  async insertQuery(query: QueryRecord): Promise<void> {
    this.checkWritable();
    const values = encodeAll(QUERY_COLUMNS, query);
    const key = `queries:${query.id}`;
    const result = await this.write(key, this.st.insertQuery, values, 1);
    if (result && result.rowCount !== 1) {
      throw new StoreError('DUPLICATE_KEY', `query ${query.id} already exists`);
    }
  }

  async updateQuery(
    id: string,
    patch: Partial<Pick<QueryRecord, 'phase' | 'leaseExpiresAt' | 'result' | 'failure'>>,
  ): Promise<void> {
    const identity = Object.keys(QUERY_COLUMNS).filter((k) => !QUERY_PATCHABLE.has(k));
    await this.patch('queries', QUERY_COLUMNS, identity, QUERY_KEY, [id], patch, this.st.queryExists, () =>
      notFound('QUERY_NOT_FOUND', `query ${id}`),
    );
  }

  async deleteQuery(id: string): Promise<void> {
    this.checkWritable();
    await this.remove(`queries:${id}`, this.st.deleteQuery, [id]);
  }
}

function duplicateOpenRun(message: string): StoreError {
  return new StoreError('DUPLICATE_OPEN_RUN', message);
}

function notFound(code: string, what: string): StoreError {
  return new StoreError(code, `${what} does not exist (it may have been deleted when its run closed)`);
}
