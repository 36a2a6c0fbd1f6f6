import { StoreError } from '../../common/errors.js';
import type { HistoryEvent, NewEvent } from '../../common/events.js';
import { classifyStoreError, errorCode, isTransientStoreErrorClass } from '../errors.js';
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
import type { SqliteHistoryLog } from './sqlite-history-log.js';
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
  type SqlValue,
  type TimerRow,
} from './sqlite-rows.js';
import type { SqliteStatements } from './sqlite-statements.js';

type Columns = Readonly<Record<string, readonly [string, (value: unknown) => SqlValue]>>;

const RUN_PATCHABLE = patchable(RUN_COLUMNS, ['namespace', 'workflowId', 'startTime']);
const ACTIVITY_PATCHABLE = patchable(ACTIVITY_COLUMNS, [
  'namespace',
  'workflowId',
  'scheduledEventId',
  'activityId',
]);
const QUERY_PATCHABLE = new Set(['phase', 'leaseExpiresAt', 'result', 'failure']);
const PATCH_CACHE_LIMIT = 512;
/** Event ids are the low 32 bits of a history chunk key. */
const MAX_EVENT_ID = 0xffff_ffff;

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
export class SqliteTx implements StoreTx {
  /** The first transient driver error seen; the store re-runs the transaction when set. */
  transientFault: unknown;
  /** Run keys this handle looked up or created; the store publishes them to its cache after commit. */
  readonly learnedKeys = new Map<string, number>();
  private ended = false;

  constructor(
    private readonly s: SqliteStatements,
    private readonly writable: boolean,
    private readonly keys: RunKeyCache,
    private readonly history: SqliteHistoryLog,
  ) {}

  end(): void {
    this.ended = true;
  }

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

  /**
   * The run key of `runId`: from the store's cache, else from `run_keys`; with `create`, a new key when
   * the id has none yet (only inside a write). Undefined when the id has no key and `create` is false.
   */
  private runKey(runId: string, create: true): number;
  private runKey(runId: string, create?: boolean): number | undefined;
  private runKey(runId: string, create = false): number | undefined {
    let rk = this.keys.get(runId) ?? this.learnedKeys.get(runId);
    if (rk !== undefined) return rk;
    const stored = encodeRunId(runId);
    rk = (this.s.runKey.get(stored) as { rk: number } | undefined)?.rk;
    if (rk === undefined && create) rk = Number(this.s.insertRunKey.run(stored).lastInsertRowid);
    if (rk !== undefined) this.learnedKeys.set(runId, rk);
    return rk;
  }

  /** `op` with the run's key; `empty` when the store has never seen the run id. */
  private perRun<T>(runId: string, op: (rk: number) => T): T | [] {
    const rk = this.runKey(runId);
    return rk === undefined ? [] : op(rk);
  }

  private read<T>(op: () => T): T {
    return this.exec(op, undefined);
  }

  private write<T>(op: () => T, onConstraint?: (code: string | undefined) => StoreError | undefined): T {
    if (!this.writable && !this.ended) {
      throw new StoreError(
        'READ_ONLY',
        'this handle comes from Store.read(); write inside Store.transaction()',
      );
    }
    return this.exec(op, onConstraint);
  }

  private exec<T>(
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

  private patch(
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

function notFound(code: string, what: string): StoreError {
  return new StoreError(code, `${what} does not exist (it may have been deleted when its run closed)`);
}
