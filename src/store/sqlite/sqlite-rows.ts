import type BetterSqlite3 from 'better-sqlite3';
import type { FailureInfo } from '../../common/errors.js';
import type { ActivityOptionsMs, HistoryEvent, NewEvent } from '../../common/events.js';
import type {
  ActivityPhase,
  ActivityRecord,
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
 * Row <-> record mapping for the SQLite adapter, and the statements that read and write those rows. Rows were written by the engine through this module, so
 * they are trusted: JSON is parsed without validation. `undefined` is stored as SQL NULL; JSON `null` is
 * stored as the text `null`, so the two stay distinct for `unknown` fields.
 */

export type SqlValue = string | number | null;

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
  cancel_requested: number;
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
}

type Encoder = (value: unknown) => SqlValue;
const plain: Encoder = (v) => (v === undefined ? null : (v as SqlValue));
const bool: Encoder = (v) => (v ? 1 : 0);
const json: Encoder = (v) => toJson(v);
const jsonOrNull: Encoder = (v) => (v === null ? null : toJson(v));

/** Record field -> [column, encoder], for inserts and patches. Key order is the column order. */
export const RUN_COLUMNS: Readonly<Record<keyof RunRecord, readonly [string, Encoder]>> = {
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
    cancelRequested: r.cancel_requested !== 0,
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
  cancel_requested: number;
  lease_owner: string | null;
  token: number;
  deadline: number | null;
}

export const ACTIVITY_COLUMNS: Readonly<Record<keyof ActivityRecord, readonly [string, Encoder]>> = {
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
    cancelRequested: r.cancel_requested !== 0,
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

export const QUERY_COLUMNS: Readonly<Record<keyof QueryRecord, readonly [string, Encoder]>> = {
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

// ---- timers, requests, events ----

export interface TimerRow {
  run_id: string;
  timer_key: string;
  namespace: string;
  kind: string;
  fire_at: number;
  started_event_id: number;
}

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

export function rowToEvent(r: EventRow): HistoryEvent {
  return {
    eventId: r.event_id,
    type: r.type,
    time: r.time,
    attributes: JSON.parse(r.attributes),
  } as HistoryEvent;
}

export interface BufferRow {
  seq: number;
  type: string;
  time: number;
  attributes: string;
}

export function rowToBuffered(r: BufferRow): { seq: number; event: NewEvent } {
  return {
    seq: r.seq,
    event: { type: r.type, time: r.time, attributes: JSON.parse(r.attributes) } as NewEvent,
  };
}

/** Binds every column of `columns` from `record`, in key order. */
export function encodeAll<R>(
  columns: Readonly<Record<keyof R, readonly [string, Encoder]>>,
  record: R,
): SqlValue[] {
  const out: SqlValue[] = [];
  for (const key in columns) {
    const [, encode] = columns[key];
    out.push(encode(record[key]));
  }
  return out;
}

/** `INSERT INTO table (c1, c2, ...) VALUES (?, ?, ...)` over every column of `columns`. */
export function insertSql(
  table: string,
  columns: Readonly<Record<string, readonly [string, Encoder]>>,
): string {
  const names = Object.values(columns).map(([c]) => c);
  return `INSERT INTO ${table} (${names.join(', ')}) VALUES (${names.map(() => '?').join(', ')})`;
}

export type Stmt = BetterSqlite3.Statement<unknown[], unknown>;

const OPEN_QUERY = "(phase = 'pending' OR (phase = 'claimed' AND lease_expires_at <= ?))";

/** Every fixed statement's SQL, prepared once per connection by `prepareStatements`. */
const SQL = {
  beginImmediate: 'BEGIN IMMEDIATE',
  beginDeferred: 'BEGIN DEFERRED',
  commit: 'COMMIT',
  rollback: 'ROLLBACK',

  insertRun: insertSql('runs', RUN_COLUMNS),
  getRun: 'SELECT * FROM runs WHERE run_id = ?',
  runExists: 'SELECT 1 FROM runs WHERE run_id = ?',
  findRunById: 'SELECT * FROM runs WHERE run_id = ? AND namespace = ? AND workflow_id = ?',
  // rowid breaks start-time ties (continue-as-new within one clock tick): the later insert wins.
  findLatestRun:
    'SELECT * FROM runs WHERE namespace = ? AND workflow_id = ? ORDER BY start_time DESC, rowid DESC LIMIT 1',
  findOpenRun: "SELECT * FROM runs WHERE namespace = ? AND workflow_id = ? AND status = 'running'",

  maxEventId: 'SELECT max(event_id) AS m FROM events WHERE run_id = ?',
  insertEvent: 'INSERT INTO events (run_id, event_id, type, time, attributes) VALUES (?, ?, ?, ?, ?)',
  readEvents:
    'SELECT event_id, type, time, attributes FROM events WHERE run_id = ? AND event_id >= ? ORDER BY event_id LIMIT ?',

  insertBuffered: 'INSERT INTO buffer (run_id, type, time, attributes) VALUES (?, ?, ?, ?)',
  listBuffered: 'SELECT seq, type, time, attributes FROM buffer WHERE run_id = ? ORDER BY seq',
  deleteBuffered: 'DELETE FROM buffer WHERE run_id = ? AND seq <= ?',

  insertActivity: insertSql('activities', ACTIVITY_COLUMNS),
  getActivity: 'SELECT * FROM activities WHERE run_id = ? AND scheduled_event_id = ?',
  activityExists: 'SELECT 1 FROM activities WHERE run_id = ? AND scheduled_event_id = ?',
  listActivities: 'SELECT * FROM activities WHERE run_id = ? ORDER BY scheduled_event_id',
  deleteActivity: 'DELETE FROM activities WHERE run_id = ? AND scheduled_event_id = ?',

  insertTimer:
    'INSERT INTO timers (run_id, timer_key, namespace, kind, fire_at, started_event_id) VALUES (?, ?, ?, ?, ?, ?)',
  listTimers: 'SELECT * FROM timers WHERE run_id = ? ORDER BY fire_at, timer_key',
  deleteTimer: 'DELETE FROM timers WHERE run_id = ? AND timer_key = ?',

  deleteRunActivities: 'DELETE FROM activities WHERE run_id = ?',
  deleteRunTimers: 'DELETE FROM timers WHERE run_id = ?',
  deleteRunBuffer: 'DELETE FROM buffer WHERE run_id = ?',
  deleteRunOpenQueries: "DELETE FROM queries WHERE run_id = ? AND phase <> 'answered'",

  putRequest:
    'INSERT INTO requests (namespace, request_id, kind, run_id, created_at) VALUES (?, ?, ?, ?, ?) ' +
    'ON CONFLICT (namespace, request_id) DO UPDATE SET kind = excluded.kind, run_id = excluded.run_id, ' +
    'created_at = excluded.created_at',
  getRequest: 'SELECT * FROM requests WHERE namespace = ? AND request_id = ?',
  deleteRequestsBefore:
    'DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests WHERE created_at < ? ORDER BY created_at LIMIT ?)',

  insertQuery: insertSql('queries', QUERY_COLUMNS),
  getQuery: 'SELECT * FROM queries WHERE id = ?',
  queryExists: 'SELECT 1 FROM queries WHERE id = ?',
  deleteQuery: 'DELETE FROM queries WHERE id = ?',

  claimableWorkflowTasks:
    "SELECT * FROM runs WHERE namespace = ? AND task_queue = ? AND status = 'running' AND wft_phase = 'scheduled' " +
    'AND wft_visible_at <= ? ORDER BY wft_visible_at, run_id LIMIT ?',
  claimableActivities:
    "SELECT * FROM activities WHERE namespace = ? AND task_queue = ? AND phase = 'scheduled' " +
    'AND cancel_requested = 0 AND visible_at <= ? ORDER BY visible_at, run_id, scheduled_event_id LIMIT ?',
  claimableQueries: `SELECT * FROM queries WHERE namespace = ? AND task_queue = ? AND ${OPEN_QUERY} ORDER BY created_at, id LIMIT ?`,
  dueTimers: 'SELECT * FROM timers WHERE fire_at <= ? ORDER BY fire_at, run_id, timer_key LIMIT ?',
  expiredWorkflowTasks:
    "SELECT * FROM runs WHERE status = 'running' AND wft_phase = 'started' AND wft_lease_expires_at <= ? " +
    'ORDER BY wft_lease_expires_at, run_id LIMIT ?',
  dueActivities:
    'SELECT * FROM activities WHERE deadline IS NOT NULL AND deadline <= ? ' +
    'ORDER BY deadline, run_id, scheduled_event_id LIMIT ?',
  nextWakeTime:
    'SELECT min(t) AS t FROM (' +
    'SELECT min(fire_at) AS t FROM timers ' +
    'UNION ALL SELECT min(deadline) FROM activities WHERE deadline IS NOT NULL ' +
    "UNION ALL SELECT min(visible_at) FROM activities WHERE phase = 'scheduled' AND cancel_requested = 0 " +
    "UNION ALL SELECT min(wft_visible_at) FROM runs WHERE status = 'running' AND wft_phase = 'scheduled' " +
    "UNION ALL SELECT min(wft_lease_expires_at) FROM runs WHERE status = 'running' AND wft_phase = 'started' " +
    "UNION ALL SELECT min(lease_expires_at) FROM queries WHERE phase = 'claimed')",
  nextSweepTime:
    'SELECT min(t) AS t FROM (' +
    'SELECT min(fire_at) AS t FROM timers ' +
    'UNION ALL SELECT min(deadline) FROM activities WHERE deadline IS NOT NULL ' +
    "UNION ALL SELECT min(wft_lease_expires_at) FROM runs WHERE status = 'running' AND wft_phase = 'started')",
} as const;

/** The prepared statements of one connection. */
export type SqliteStatements = { readonly [K in keyof typeof SQL]: Stmt } & {
  readonly db: BetterSqlite3.Database;
  /** Patch statements by table and column set, prepared on first use. */
  readonly patches: Map<string, Stmt>;
};

export function prepareStatements(db: BetterSqlite3.Database): SqliteStatements {
  const out: Record<string, unknown> = { db, patches: new Map<string, Stmt>() };
  for (const [name, sql] of Object.entries(SQL)) out[name] = db.prepare(sql);
  return out as SqliteStatements;
}
