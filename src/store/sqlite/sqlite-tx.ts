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
  ACTIVITY_COLUMNS,
  type ActivityRow,
  type BufferRow,
  encodeAll,
  encodeRunId,
  QUERY_COLUMNS,
  type QueryRow,
  type RequestRow,
  RUN_COLUMNS,
  type RunRow,
  rowToActivity,
  rowToBuffered,
  rowToQuery,
  rowToRequest,
  rowToRun,
  rowToTimer,
  type TimerRow,
} from './sqlite-rows.js';
import { type Columns, SqliteTxBase } from './sqlite-tx-base.js';

const RUN_PATCHABLE = patchable(RUN_COLUMNS, ['namespace', 'workflowId', 'startTime']);
const ACTIVITY_PATCHABLE = patchable(ACTIVITY_COLUMNS, [
  'namespace',
  'workflowId',
  'scheduledEventId',
  'activityId',
]);
const QUERY_PATCHABLE = new Set(['phase', 'leaseExpiresAt', 'result', 'failure']);
/** Event ids are the low 32 bits of a history chunk key. */
const MAX_EVENT_ID = 0xffff_ffff;

function patchable(columns: Columns, identity: readonly string[]): ReadonlySet<string> {
  return new Set(Object.keys(columns).filter((k) => !identity.includes(k)));
}

/**
 * The transaction handle given to callbacks. Methods are synchronous underneath (better-sqlite3) and
 * return settled promises. Driver errors become StoreErrors: constraint violations get specific codes
 * (DUPLICATE_OPEN_RUN, EVENT_CONFLICT, DUPLICATE_KEY), a transient fault is remembered so the transaction
 * is re-run even if the callback catches it, and anything else is STORE_FAILURE. A handle cannot be used
 * after its callback settled (TX_ENDED). Patch fields whose value is `undefined` are left unchanged.
 */
export class SqliteTx extends SqliteTxBase implements StoreTx {
  async getRun(runId: string): Promise<RunRecord | undefined> {
    const row = this.read(() => {
      const rk = this.runKey(runId);
      return rk === undefined ? undefined : (this.s.getRun.get(rk) as RunRow | undefined);
    });
    return row && rowToRun(row);
  }

  async findRun(namespace: string, workflowId: string, runId?: string): Promise<RunRecord | undefined> {
    const row = this.read(() => {
      if (runId === undefined) return this.s.findLatestRun.get(namespace, workflowId) as RunRow | undefined;
      const rk = this.runKey(runId);
      return rk === undefined
        ? undefined
        : (this.s.findRunById.get(rk, namespace, workflowId) as RunRow | undefined);
    });
    return row && rowToRun(row);
  }

  async findOpenRun(namespace: string, workflowId: string): Promise<RunRecord | undefined> {
    const row = this.read(() => this.s.findOpenRun.get(namespace, workflowId) as RunRow | undefined);
    return row && rowToRun(row);
  }

  async readEvents(runId: string, fromEventId = 1, limit?: number): Promise<HistoryEvent[]> {
    const max = limit ?? Number.POSITIVE_INFINITY;
    const out: HistoryEvent[] = [];
    this.read(() => {
      const rk = this.runKey(runId);
      if (rk === undefined || max <= 0 || fromEventId > MAX_EVENT_ID) return;
      this.history.read(this.s, rk, Math.max(1, Math.floor(fromEventId)), max, out);
    });
    return out;
  }

  async lastEvent(runId: string): Promise<HistoryEvent | undefined> {
    const out: HistoryEvent[] = [];
    this.read(() => {
      const rk = this.runKey(runId);
      const last = rk === undefined ? 0 : this.history.lastEventId(this.s, rk);
      if (last > 0) this.history.read(this.s, rk!, last, 1, out);
    });
    return out[0];
  }

  async listBuffered(runId: string): Promise<BufferedEvent[]> {
    return this.read(() => this.perRun(runId, (rk) => this.s.listBuffered.all(rk) as BufferRow[])).map(
      rowToBuffered,
    );
  }

  async getActivity(runId: string, scheduledEventId: number): Promise<ActivityRecord | undefined> {
    const row = this.read(() => {
      const rk = this.runKey(runId);
      return rk === undefined
        ? undefined
        : (this.s.getActivity.get(rk, scheduledEventId) as ActivityRow | undefined);
    });
    return row && rowToActivity(row);
  }

  async listActivities(runId: string): Promise<ActivityRecord[]> {
    return this.read(() => this.perRun(runId, (rk) => this.s.listActivities.all(rk) as ActivityRow[])).map(
      rowToActivity,
    );
  }

  async getRunWithActivities(runId: string): Promise<RunWithActivities> {
    const run = await this.getRun(runId);
    return { run, activities: run ? await this.listActivities(runId) : [] };
  }

  async listTimers(runId: string): Promise<TimerRecord[]> {
    return this.read(() => this.perRun(runId, (rk) => this.s.listTimers.all(rk) as TimerRow[])).map(
      rowToTimer,
    );
  }

  async getRequest(namespace: string, requestId: string): Promise<RequestRecord | undefined> {
    const row = this.read(() => this.s.getRequest.get(namespace, requestId) as RequestRow | undefined);
    return row && rowToRequest(row);
  }

  async getQuery(id: string): Promise<QueryRecord | undefined> {
    const row = this.read(() => this.s.getQuery.get(id) as QueryRow | undefined);
    return row && rowToQuery(row);
  }

  async nextWakeTime(): Promise<number | null> {
    return this.read(() => (this.s.nextWakeTime.get() as { t: number | null }).t);
  }

  async nextSweepTime(): Promise<number | null> {
    return this.read(() => (this.s.nextSweepTime.get() as { t: number | null }).t);
  }

  async insertRun(run: RunRecord): Promise<void> {
    this.write(() => {
      const rk = this.runKey(run.runId, true);
      // One running run per workflow id: checked here rather than by a unique index (it saves an index
      // entry per run); the write transaction holds the database's write lock, so nothing can race it.
      if (run.status === 'running' && this.s.otherOpenRun.get(run.namespace, run.workflowId, rk)) {
        throw new StoreError(
          'DUPLICATE_OPEN_RUN',
          `workflow '${run.workflowId}' in namespace '${run.namespace}' already has a running run`,
        );
      }
      this.s.insertRun.run(rk, ...encodeAll(RUN_COLUMNS, run));
    });
  }

  async updateRun(runId: string, patch: RunPatch): Promise<void> {
    const rk = this.write(() => this.runKey(runId));
    const missing = () => notFound('RUN_NOT_FOUND', `run ${runId}`);
    if (rk === undefined) throw missing();
    if (patch.status === 'running') {
      this.write(() => {
        const id = this.s.runIdentity.get(rk) as { namespace: string; workflow_id: string } | undefined;
        if (id && this.s.otherOpenRun.get(id.namespace, id.workflow_id, rk)) {
          throw new StoreError(
            'DUPLICATE_OPEN_RUN',
            `run ${runId} cannot become running: its workflow id has a running run`,
          );
        }
      });
    }
    this.patch('runs', RUN_COLUMNS, RUN_PATCHABLE, 'rk = ?', [rk], patch, this.s.runExists, missing);
  }

  async appendEvents(runId: string, firstEventId: number, events: readonly NewEvent[]): Promise<void> {
    const conflict = () =>
      new StoreError(
        'EVENT_CONFLICT',
        `run ${runId} already has event ${firstEventId}: another writer appended first; reload the run and retry`,
      );
    this.write(
      () => {
        if (events.length === 0) return;
        const rk = this.runKey(runId, true)!;
        // History is appended to the run's raw tail; the compactor compresses it later (sqlite-history-log.ts).
        this.history.append(this.s, rk, firstEventId, events, (lastEventId) => {
          if (firstEventId <= lastEventId) throw conflict();
          if (firstEventId !== lastEventId + 1 || !Number.isInteger(firstEventId)) {
            throw new StoreError(
              'EVENT_GAP',
              `run ${runId} ends at event ${lastEventId}; appending at ${firstEventId} would leave a gap in its history`,
            );
          }
          if (firstEventId + events.length - 1 > MAX_EVENT_ID) {
            throw new StoreError(
              'HISTORY_TOO_LONG',
              `run ${runId} cannot hold more than ${MAX_EVENT_ID} events`,
            );
          }
        });
      },
      () => conflict(),
    );
  }

  async addBuffered(runId: string, event: NewEvent): Promise<void> {
    this.write(() =>
      this.s.insertBuffered.run(
        this.runKey(runId, true),
        event.type,
        event.time,
        JSON.stringify(event.attributes),
      ),
    );
  }

  async deleteBuffered(runId: string, uptoSeq: number): Promise<void> {
    this.write(() => this.perRun(runId, (rk) => this.s.deleteBuffered.run(rk, uptoSeq)));
  }

  async insertActivity(activity: ActivityRecord): Promise<void> {
    this.write(() =>
      this.s.insertActivity.run(this.runKey(activity.runId, true), ...encodeAll(ACTIVITY_COLUMNS, activity)),
    );
  }

  async updateActivity(runId: string, scheduledEventId: number, patch: ActivityPatch): Promise<void> {
    const missing = () => notFound('ACTIVITY_NOT_FOUND', `activity ${scheduledEventId} of run ${runId}`);
    const rk = this.write(() => this.runKey(runId));
    if (rk === undefined) throw missing();
    this.patch(
      'activities',
      ACTIVITY_COLUMNS,
      ACTIVITY_PATCHABLE,
      'rk = ? AND scheduled_event_id = ?',
      [rk, scheduledEventId],
      patch,
      this.s.activityExists,
      missing,
    );
  }

  async deleteActivity(runId: string, scheduledEventId: number): Promise<void> {
    this.write(() => this.perRun(runId, (rk) => this.s.deleteActivity.run(rk, scheduledEventId)));
  }

  async insertTimer(t: TimerRecord): Promise<void> {
    this.write(() =>
      this.s.insertTimer.run(
        this.runKey(t.runId, true),
        t.timerKey,
        t.namespace,
        t.kind,
        t.fireAt,
        t.startedEventId,
      ),
    );
  }

  async deleteTimer(runId: string, timerKey: string): Promise<void> {
    this.write(() => this.perRun(runId, (rk) => this.s.deleteTimer.run(rk, timerKey)));
  }

  async deleteRunState(runId: string): Promise<void> {
    this.write(() => {
      this.perRun(runId, (rk) => {
        this.s.deleteRunActivities.run(rk);
        this.s.deleteRunTimers.run(rk);
        this.s.deleteRunBuffer.run(rk);
      });
      this.s.deleteRunOpenQueries.run(encodeRunId(runId));
    });
  }

  async putRequest(r: RequestRecord): Promise<void> {
    this.write(() =>
      this.s.putRequest.run(r.namespace, r.requestId, r.kind, encodeRunId(r.runId), r.createdAt),
    );
  }

  async deleteRequestsBefore(createdBefore: number, limit: number): Promise<number> {
    return this.write(() => this.s.deleteRequestsBefore.run(createdBefore, limit).changes);
  }

  async insertQuery(query: QueryRecord): Promise<void> {
    this.write(() => this.s.insertQuery.run(...encodeAll(QUERY_COLUMNS, query)));
  }

  async updateQuery(
    id: string,
    patch: Partial<Pick<QueryRecord, 'phase' | 'leaseExpiresAt' | 'result' | 'failure'>>,
  ): Promise<void> {
    this.patch('queries', QUERY_COLUMNS, QUERY_PATCHABLE, 'id = ?', [id], patch, this.s.queryExists, () =>
      notFound('QUERY_NOT_FOUND', `query ${id}`),
    );
  }

  async deleteQuery(id: string): Promise<void> {
    this.write(() => this.s.deleteQuery.run(id));
  }

  // Claim and sweep queries. SQLite has no row locks: the whole transaction holds the write lock.

  async findClaimableWorkflowTasks(
    namespace: string,
    taskQueue: string,
    now: number,
    limit: number,
    claimant?: { readonly workerId: string; readonly othersVisibleBy: number },
  ) {
    const worker = claimant?.workerId ?? null;
    const othersBy = claimant?.othersVisibleBy ?? now;
    const rows = this.read(
      () => this.s.claimableWorkflowTasks.all(namespace, taskQueue, now, worker, othersBy, limit) as RunRow[],
    );
    return rows.map(rowToRun);
  }

  async findClaimableActivities(namespace: string, taskQueue: string, now: number, limit: number) {
    const rows = this.read(
      () => this.s.claimableActivities.all(namespace, taskQueue, now, limit) as ActivityRow[],
    );
    return rows.map(rowToActivity);
  }

  async findClaimableQueries(namespace: string, taskQueue: string, now: number, limit: number) {
    const rows = this.read(() => this.s.claimableQueries.all(namespace, taskQueue, now, limit) as QueryRow[]);
    return rows.map(rowToQuery);
  }

  /** SQLite has no row locks: a claim never passes over due work. */
  lockedDue(): number {
    return 0;
  }

  async findDueTimers(now: number, limit: number): Promise<TimerRecord[]> {
    return this.read(() => this.s.dueTimers.all(now, limit) as TimerRow[]).map(rowToTimer);
  }

  async findExpiredWorkflowTasks(now: number, limit: number): Promise<RunRecord[]> {
    return this.read(() => this.s.expiredWorkflowTasks.all(now, limit) as RunRow[]).map(rowToRun);
  }

  async findDueActivities(now: number, limit: number): Promise<ActivityRecord[]> {
    return this.read(() => this.s.dueActivities.all(now, limit) as ActivityRow[]).map(rowToActivity);
  }

  // ---- plumbing ----
}

function notFound(code: string, what: string): StoreError {
  return new StoreError(code, `${what} does not exist (it may have been deleted when its run closed)`);
}
