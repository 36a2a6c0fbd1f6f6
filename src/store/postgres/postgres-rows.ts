import type { FailureInfo } from '../../common/errors.js';
import type { ActivityOptionsMs, NewEvent } from '../../common/events.js';
import type {
  ActivityPhase,
  ActivityRecord,
  BufferedEvent,
  QueryPhase,
  QueryRecord,
  RequestRecord,
  RunRecord,
  RunStatus,
  TimerKind,
  TimerRecord,
  WorkflowTaskPhase,
} from '../store.js';

/**
 * Row <-> record mapping for the PostgreSQL adapter, and the statements that read and write those rows.
 * Rows were written by the engine through this module, so they are trusted: JSON is parsed without
 * validation. JSON values are `text` holding `JSON.stringify` output (not `jsonb`, which reorders keys and
 * refuses `\u0000`), so they read back byte for byte. `undefined` is stored as SQL NULL; JSON `null` as the
 * text `null`, so the two stay distinct for `unknown` fields. Times and counters are `bigint`, read back as
 * numbers (the pool's int8 parser; every value the engine stores is a safe integer).
 */

export type SqlValue = string | number | boolean | null | readonly string[] | readonly number[];

/** One statement: a name (prepared once per connection) and its text. Values are always parameters. */
export interface Statement {
  readonly name: string;
  readonly text: string;
}

/** JSON text for a value, or NULL for `undefined`. */
export function toJson(value: unknown): string | null {
  return value === undefined ? null : JSON.stringify(value);
}

function fromJson<T>(text: string | null): T | undefined {
  return text === null ? undefined : (JSON.parse(text) as T);
}

function fromJsonOrNull<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

type Encoder = (value: unknown) => SqlValue;
const plain: Encoder = (v) => (v === undefined ? null : (v as SqlValue));
const bool: Encoder = (v) => v === true;
const json: Encoder = (v) => toJson(v);
const jsonOrNull: Encoder = (v) => (v === null ? null : toJson(v));

/** Record field -> [column, encoder]. Key order is the column order of inserts. */
export type Columns<R> = Readonly<Record<keyof R & string, readonly [string, Encoder]>>;

// ---- runs ----

export interface RunRow {
  run_id: string;
  namespace: string;
  workflow_id: string;
  workflow_type: string;
  task_queue: string;
  status: string;
  next_event_id: number;
  start_time: number;
  close_time: number | null;
  request_id: string | null;
  workflow_task_timeout_ms: number;
  cancel_requested: boolean;
  memo: string | null;
  search_attributes: string | null;
  last_completed_task_event_id: number;
  wft_phase: string;
  wft_attempt: number;
  wft_scheduled_event_id: number;
  wft_started_event_id: number;
  wft_visible_at: number;
  wft_started_time: number;
  wft_lease_owner: string | null;
  wft_lease_expires_at: number;
  wft_token: number;
  wft_failure: string | null;
  sticky_worker: string | null;
}

export const RUN_COLUMNS: Columns<RunRecord> = {
  runId: ['run_id', plain],
  namespace: ['namespace', plain],
  workflowId: ['workflow_id', plain],
  workflowType: ['workflow_type', plain],
  taskQueue: ['task_queue', plain],
  status: ['status', plain],
  nextEventId: ['next_event_id', plain],
  startTime: ['start_time', plain],
  closeTime: ['close_time', plain],
  requestId: ['request_id', plain],
  workflowTaskTimeoutMs: ['workflow_task_timeout_ms', plain],
  cancelRequested: ['cancel_requested', bool],
  memo: ['memo', jsonOrNull],
  searchAttributes: ['search_attributes', jsonOrNull],
  lastCompletedTaskEventId: ['last_completed_task_event_id', plain],
  wftPhase: ['wft_phase', plain],
  wftAttempt: ['wft_attempt', plain],
  wftScheduledEventId: ['wft_scheduled_event_id', plain],
  wftStartedEventId: ['wft_started_event_id', plain],
  wftVisibleAt: ['wft_visible_at', plain],
  wftStartedTime: ['wft_started_time', plain],
  wftLeaseOwner: ['wft_lease_owner', plain],
  wftLeaseExpiresAt: ['wft_lease_expires_at', plain],
  wftToken: ['wft_token', plain],
  wftFailure: ['wft_failure', jsonOrNull],
  stickyWorker: ['sticky_worker', plain],
};

export function rowToRun(r: RunRow): RunRecord {
  return {
    namespace: r.namespace,
    workflowId: r.workflow_id,
    runId: r.run_id,
    workflowType: r.workflow_type,
    taskQueue: r.task_queue,
    status: r.status as RunStatus,
    nextEventId: r.next_event_id,
    startTime: r.start_time,
    closeTime: r.close_time,
    requestId: r.request_id,
    workflowTaskTimeoutMs: r.workflow_task_timeout_ms,
    cancelRequested: r.cancel_requested,
    memo: fromJsonOrNull<Record<string, unknown>>(r.memo),
    searchAttributes: fromJsonOrNull<Record<string, unknown>>(r.search_attributes),
    lastCompletedTaskEventId: r.last_completed_task_event_id,
    wftPhase: r.wft_phase as WorkflowTaskPhase,
    wftAttempt: r.wft_attempt,
    wftScheduledEventId: r.wft_scheduled_event_id,
    wftStartedEventId: r.wft_started_event_id,
    wftVisibleAt: r.wft_visible_at,
    wftStartedTime: r.wft_started_time,
    wftLeaseOwner: r.wft_lease_owner,
    wftLeaseExpiresAt: r.wft_lease_expires_at,
    wftToken: r.wft_token,
    wftFailure: fromJsonOrNull<FailureInfo>(r.wft_failure),
    stickyWorker: r.sticky_worker,
  };
}

// ---- activities ----

export interface ActivityRow {
  run_id: string;
  scheduled_event_id: number;
  namespace: string;
  workflow_id: string;
  activity_id: string;
  activity_type: string;
  task_queue: string;
  input: string;
  options: string;
  phase: string;
  attempt: number;
  scheduled_time: number;
  visible_at: number;
  started_time: number | null;
  last_heartbeat_time: number | null;
  heartbeat_details: string | null;
  last_failure: string | null;
  cancel_requested: boolean;
  lease_owner: string | null;
  token: number;
  deadline: number | null;
}

export const ACTIVITY_COLUMNS: Columns<ActivityRecord> = {
  runId: ['run_id', plain],
  scheduledEventId: ['scheduled_event_id', plain],
  namespace: ['namespace', plain],
  workflowId: ['workflow_id', plain],
  activityId: ['activity_id', plain],
  activityType: ['activity_type', plain],
  taskQueue: ['task_queue', plain],
  input: ['input', json],
  options: ['options', json],
  phase: ['phase', plain],
  attempt: ['attempt', plain],
  scheduledTime: ['scheduled_time', plain],
  visibleAt: ['visible_at', plain],
  startedTime: ['started_time', plain],
  lastHeartbeatTime: ['last_heartbeat_time', plain],
  heartbeatDetails: ['heartbeat_details', json],
  lastFailure: ['last_failure', jsonOrNull],
  cancelRequested: ['cancel_requested', bool],
  leaseOwner: ['lease_owner', plain],
  token: ['token', plain],
  deadline: ['deadline', plain],
};

export function rowToActivity(r: ActivityRow): ActivityRecord {
  return {
    namespace: r.namespace,
    workflowId: r.workflow_id,
    runId: r.run_id,
    scheduledEventId: r.scheduled_event_id,
    activityId: r.activity_id,
    activityType: r.activity_type,
    taskQueue: r.task_queue,
    input: JSON.parse(r.input) as unknown[],
    options: JSON.parse(r.options) as ActivityOptionsMs,
    phase: r.phase as ActivityPhase,
    attempt: r.attempt,
    scheduledTime: r.scheduled_time,
    visibleAt: r.visible_at,
    startedTime: r.started_time,
    lastHeartbeatTime: r.last_heartbeat_time,
    heartbeatDetails: fromJson<unknown>(r.heartbeat_details),
    lastFailure: fromJsonOrNull<FailureInfo>(r.last_failure),
    cancelRequested: r.cancel_requested,
    leaseOwner: r.lease_owner,
    token: r.token,
    deadline: r.deadline,
  };
}

// ---- queries ----

export interface QueryRow {
  id: string;
  namespace: string;
  run_id: string;
  task_queue: string;
  query_type: string;
  args: string;
  phase: string;
  created_at: number;
  lease_expires_at: number;
  result: string | null;
  failure: string | null;
}

export const QUERY_COLUMNS: Columns<QueryRecord> = {
  id: ['id', plain],
  namespace: ['namespace', plain],
  runId: ['run_id', plain],
  taskQueue: ['task_queue', plain],
  queryType: ['query_type', plain],
  args: ['args', json],
  phase: ['phase', plain],
  createdAt: ['created_at', plain],
  leaseExpiresAt: ['lease_expires_at', plain],
  result: ['result', json],
  failure: ['failure', jsonOrNull],
};

export function rowToQuery(r: QueryRow): QueryRecord {
  return {
    id: r.id,
    namespace: r.namespace,
    runId: r.run_id,
    taskQueue: r.task_queue,
    queryType: r.query_type,
    args: JSON.parse(r.args) as unknown[],
    phase: r.phase as QueryPhase,
    createdAt: r.created_at,
    leaseExpiresAt: r.lease_expires_at,
    result: fromJson<unknown>(r.result),
    failure: fromJsonOrNull<FailureInfo>(r.failure),
  };
}

// ---- timers, requests, events, buffer ----

export interface TimerRow {
  run_id: string;
  timer_key: string;
  namespace: string;
  kind: string;
  fire_at: number;
  started_event_id: number;
}

export const TIMER_COLUMNS: Columns<TimerRecord> = {
  runId: ['run_id', plain],
  timerKey: ['timer_key', plain],
  namespace: ['namespace', plain],
  kind: ['kind', plain],
  fireAt: ['fire_at', plain],
  startedEventId: ['started_event_id', plain],
};

export function rowToTimer(r: TimerRow): TimerRecord {
  return {
    namespace: r.namespace,
    runId: r.run_id,
    timerKey: r.timer_key,
    kind: r.kind as TimerKind,
    fireAt: r.fire_at,
    startedEventId: r.started_event_id,
  };
}

export interface RequestRow {
  namespace: string;
  request_id: string;
  kind: string;
  run_id: string;
  created_at: number;
}

export function rowToRequest(r: RequestRow): RequestRecord {
  return {
    namespace: r.namespace,
    requestId: r.request_id,
    kind: r.kind as RequestRecord['kind'],
    runId: r.run_id,
    createdAt: r.created_at,
  };
}

export interface EventRow {
  event_id: number;
  type: string;
  time: number;
  attributes: string;
}

export interface BufferRow {
  seq: number;
  type: string;
  time: number;
  attributes: string;
}

export function rowToBuffered(r: BufferRow): BufferedEvent {
  return {
    seq: r.seq,
    event: { type: r.type, time: r.time, attributes: JSON.parse(r.attributes) } as NewEvent,
  };
}

/** Binds every column of `columns` from `record`, in key order. */
export function encodeAll<R>(columns: Columns<R>, record: R): SqlValue[] {
  const out: SqlValue[] = [];
  for (const key of Object.keys(columns) as (keyof R & string)[]) {
    const [, encode] = columns[key];
    out.push(encode(record[key]));
  }
  return out;
}

// ---- statements ----

/** A quoted SQL identifier. Schema names are validated before they get here; quoting is defence in depth. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function columnList<R>(columns: Columns<R>, alias = ''): string {
  return Object.values<readonly [string, Encoder]>(columns)
    .map(([c]) => alias + c)
    .join(', ');
}

function insertSql<R>(table: string, columns: Columns<R>): string {
  const names = Object.values<readonly [string, Encoder]>(columns).map(([c]) => c);
  return `INSERT INTO ${table} (${names.join(', ')}) VALUES (${names.map((_, i) => `$${i + 1}`).join(', ')})`;
}

/**
 * Every fixed statement of one schema. `$n` placeholders only: no value is ever spliced into SQL text;
 * the only spliced names are the (validated, quoted) schema and fixed column names.
 *
 * Locking: the `*ForUpdate` reads serve `getRun`/`getActivity`/`getQuery`/`findRun`/`findOpenRun` inside
 * `transaction` (the runtime reads, checks and writes those rows: the lock makes that a compare-and-set);
 * the claim and sweep queries lock what they return and skip rows another transaction holds.
 */
export function buildStatements(schema: string) {
  const s = quoteIdent(schema);
  const runs = `${s}.runs`;
  const activities = `${s}.activities`;
  const timers = `${s}.timers`;
  const queries = `${s}.queries`;
  const RUN = `SELECT ${columnList(RUN_COLUMNS)} FROM ${runs}`;
  const ACTIVITY = `SELECT ${columnList(ACTIVITY_COLUMNS)} FROM ${activities}`;
  const TIMER = `SELECT ${columnList(TIMER_COLUMNS)} FROM ${timers}`;
  const QUERY = `SELECT ${columnList(QUERY_COLUMNS)} FROM ${queries}`;
  const OPEN_QUERY = "(phase = 'pending' OR (phase = 'claimed' AND lease_expires_at <= $3))";
  const findLatest = `${RUN} WHERE namespace = $1 AND workflow_id = $2 ORDER BY start_time DESC, seq DESC LIMIT 1`;
  const findById = `${RUN} WHERE run_id = $3 AND namespace = $1 AND workflow_id = $2`;
  const findOpen = `${RUN} WHERE namespace = $1 AND workflow_id = $2 AND status = 'running'`;

  const sql = {
    getRun: `${RUN} WHERE run_id = $1`,
    getRunForUpdate: `${RUN} WHERE run_id = $1 FOR UPDATE`,
    findLatestRun: findLatest,
    findLatestRunForUpdate: `${findLatest} FOR UPDATE`,
    findRunById: findById,
    findRunByIdForUpdate: `${findById} FOR UPDATE`,
    findOpenRun: findOpen,
    findOpenRunForUpdate: `${findOpen} FOR UPDATE`,
    // ON CONFLICT DO NOTHING (every unique index is an arbiter: the primary key and `runs_one_open`), so
    // a duplicate never aborts the transaction; the adapter tells the two apart with `runExists`.
    insertRun: `${insertSql(runs, RUN_COLUMNS)} ON CONFLICT DO NOTHING`,
    runExists: `SELECT 1 FROM ${runs} WHERE run_id = $1`,

    // Appends only directly after the run's last event, in one round trip, and reports that last event:
    // `inserted` < the batch size means nothing was written unless a concurrent writer committed some
    // of the same ids meanwhile (then `inserted_ids` names the rows this statement wrote).
    appendEvents:
      `WITH last AS (SELECT coalesce(max(event_id), 0) AS id FROM ${s}.events WHERE run_id = $1), ` +
      `ins AS (INSERT INTO ${s}.events (run_id, event_id, type, time, attributes) ` +
      'SELECT $1, $2 + u.ord - 1, u.type, u.time, u.attributes ' +
      'FROM unnest($3::text[], $4::bigint[], $5::text[]) WITH ORDINALITY AS u(type, time, attributes, ord), last ' +
      'WHERE last.id = $2 - 1 ON CONFLICT DO NOTHING RETURNING event_id) ' +
      'SELECT last.id AS last_event_id, coalesce((SELECT array_agg(event_id) FROM ins), ' +
      "'{}'::bigint[]) AS inserted_ids FROM last",
    deleteEvents: `DELETE FROM ${s}.events WHERE run_id = $1 AND event_id = ANY($2::bigint[])`,
    readEvents:
      `SELECT event_id, type, time, attributes FROM ${s}.events WHERE run_id = $1 AND event_id >= $2 ` +
      'ORDER BY event_id LIMIT $3',

    insertBuffered: `INSERT INTO ${s}.buffer (run_id, type, time, attributes) VALUES ($1, $2, $3, $4)`,
    listBuffered: `SELECT seq, type, time, attributes FROM ${s}.buffer WHERE run_id = $1 ORDER BY seq`,
    deleteBuffered: `DELETE FROM ${s}.buffer WHERE run_id = $1 AND seq <= $2`,

    insertActivity: `${insertSql(activities, ACTIVITY_COLUMNS)} ON CONFLICT DO NOTHING`,
    getActivity: `${ACTIVITY} WHERE run_id = $1 AND scheduled_event_id = $2`,
    getActivityForUpdate: `${ACTIVITY} WHERE run_id = $1 AND scheduled_event_id = $2 FOR UPDATE`,
    activityExists: `SELECT 1 FROM ${activities} WHERE run_id = $1 AND scheduled_event_id = $2`,
    listActivities: `${ACTIVITY} WHERE run_id = $1 ORDER BY scheduled_event_id`,
    listActivitiesForUpdate: `${ACTIVITY} WHERE run_id = $1 ORDER BY scheduled_event_id FOR UPDATE`,
    deleteActivity: `DELETE FROM ${activities} WHERE run_id = $1 AND scheduled_event_id = $2`,

    insertTimer: `${insertSql(timers, TIMER_COLUMNS)} ON CONFLICT DO NOTHING`,
    listTimers: `${TIMER} WHERE run_id = $1 ORDER BY fire_at, timer_key`,
    deleteTimer: `DELETE FROM ${timers} WHERE run_id = $1 AND timer_key = $2`,

    // One round trip: data-modifying CTEs all run, whatever the outer query reads.
    deleteRunState:
      `WITH a AS (DELETE FROM ${activities} WHERE run_id = $1), ` +
      `t AS (DELETE FROM ${timers} WHERE run_id = $1), ` +
      `b AS (DELETE FROM ${s}.buffer WHERE run_id = $1) ` +
      `DELETE FROM ${queries} WHERE run_id = $1 AND phase <> 'answered'`,

    putRequest:
      `INSERT INTO ${s}.requests (namespace, request_id, kind, run_id, created_at) VALUES ($1, $2, $3, $4, $5) ` +
      'ON CONFLICT (namespace, request_id) DO UPDATE SET kind = excluded.kind, run_id = excluded.run_id, ' +
      'created_at = excluded.created_at',
    getRequest:
      `SELECT namespace, request_id, kind, run_id, created_at FROM ${s}.requests ` +
      'WHERE namespace = $1 AND request_id = $2',
    // Serialises read-check-write on one request id, even while no row exists yet (see `getRequest`).
    lockRequestKey: 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))',
    deleteRequestsBefore:
      `DELETE FROM ${s}.requests WHERE (namespace, request_id) IN (SELECT namespace, request_id FROM ` +
      `${s}.requests WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,

    insertQuery: `${insertSql(queries, QUERY_COLUMNS)} ON CONFLICT DO NOTHING`,
    getQuery: `${QUERY} WHERE id = $1`,
    getQueryForUpdate: `${QUERY} WHERE id = $1 FOR UPDATE`,
    queryExists: `SELECT 1 FROM ${queries} WHERE id = $1`,
    deleteQuery: `DELETE FROM ${queries} WHERE id = $1`,

    claimableWorkflowTasks:
      `${RUN} WHERE namespace = $1 AND task_queue = $2 AND status = 'running' AND wft_phase = 'scheduled' ` +
      'AND wft_visible_at <= $3 AND (sticky_worker IS NULL OR sticky_worker = $5 OR wft_visible_at <= $6) ' +
      'ORDER BY wft_visible_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED',
    claimableActivities:
      `${ACTIVITY} WHERE namespace = $1 AND task_queue = $2 AND phase = 'scheduled' AND NOT cancel_requested ` +
      'AND visible_at <= $3 ORDER BY visible_at, run_id, scheduled_event_id LIMIT $4 FOR UPDATE SKIP LOCKED',
    claimableQueries:
      `${QUERY} WHERE namespace = $1 AND task_queue = $2 AND ${OPEN_QUERY} ORDER BY created_at, id LIMIT $4 ` +
      'FOR UPDATE SKIP LOCKED',
    dueTimers: `${TIMER} WHERE fire_at <= $1 ORDER BY fire_at, run_id, timer_key LIMIT $2 FOR UPDATE SKIP LOCKED`,
    expiredWorkflowTasks:
      `${RUN} WHERE status = 'running' AND wft_phase = 'started' AND wft_lease_expires_at <= $1 ` +
      'ORDER BY wft_lease_expires_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED',
    dueActivities:
      `${ACTIVITY} WHERE deadline <= $1 ORDER BY deadline, run_id, scheduled_event_id LIMIT $2 ` +
      'FOR UPDATE SKIP LOCKED',
    // Each branch is an index-only min() over a partial index (see the migrations).
    nextWakeTime:
      'SELECT least(' +
      `(SELECT min(fire_at) FROM ${timers}), ` +
      `(SELECT min(deadline) FROM ${activities} WHERE deadline IS NOT NULL), ` +
      `(SELECT min(visible_at) FROM ${activities} WHERE phase = 'scheduled' AND NOT cancel_requested), ` +
      `(SELECT min(wft_visible_at) FROM ${runs} WHERE status = 'running' AND wft_phase = 'scheduled'), ` +
      `(SELECT min(wft_lease_expires_at) FROM ${runs} WHERE status = 'running' AND wft_phase = 'started'), ` +
      `(SELECT min(lease_expires_at) FROM ${queries} WHERE phase = 'claimed')) AS t`,
    nextSweepTime:
      'SELECT least(' +
      `(SELECT min(fire_at) FROM ${timers}), ` +
      `(SELECT min(deadline) FROM ${activities} WHERE deadline IS NOT NULL), ` +
      `(SELECT min(wft_lease_expires_at) FROM ${runs} WHERE status = 'running' AND wft_phase = 'started')) AS t`,
  };
  const out = {} as { [K in keyof typeof sql]: Statement };
  for (const [key, text] of Object.entries(sql)) {
    (out as Record<string, Statement>)[key] = { name: `lh_${key}`, text };
  }
  return out;
}

export type PostgresStatements = ReturnType<typeof buildStatements>;
