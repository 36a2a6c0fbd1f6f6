import type BetterSqlite3 from 'better-sqlite3';
import type { FailureInfo } from '../../common/errors.js';
import type { ActivityOptionsMs, NewEvent } from '../../common/events.js';
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

export type SqlValue = string | number | Buffer | null;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A run id as stored: a lowercase UUID as its 16 bytes, anything else as TEXT (a BLOB never equals TEXT). */
export function encodeRunId(runId: string): string | Buffer {
  return runId.length === 36 && UUID.test(runId) ? Buffer.from(runId.replace(/-/g, ''), 'hex') : runId;
}

export function decodeRunId(stored: string | Uint8Array): string {
  if (typeof stored === 'string') return stored;
  const h = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
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

// ---- runs ----

export interface RunRow {
  run_id: string | Uint8Array;
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
  sticky_worker: string | null;
}

type Encoder = (value: unknown) => SqlValue;
const plain: Encoder = (v) => (v === undefined ? null : (v as SqlValue));
const bool: Encoder = (v) => (v ? 1 : 0);
const json: Encoder = (v) => toJson(v);
const jsonOrNull: Encoder = (v) => (v === null ? null : toJson(v));

/**
 * Record field -> [column, encoder], for inserts (after the run key) and patches. Key order is the
 * column order. The run id lives in `run_keys`.
 */
export const RUN_COLUMNS: Readonly<Record<Exclude<keyof RunRecord, 'runId'>, readonly [string, Encoder]>> = {
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
    runId: decodeRunId(r.run_id),
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
    stickyWorker: r.sticky_worker,
  };
}

// ---- activities ----

export interface ActivityRow {
  run_id: string | Uint8Array;
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

/** As RUN_COLUMNS: inserted after the run key; the run id lives in `run_keys`. */
export const ACTIVITY_COLUMNS: Readonly<
  Record<Exclude<keyof ActivityRecord, 'runId'>, readonly [string, Encoder]>
> = {
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
    runId: decodeRunId(r.run_id),
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
  run_id: string | Uint8Array;
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
  runId: ['run_id', (v) => encodeRunId(v as string)],
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
    runId: decodeRunId(r.run_id),
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
  run_id: string | Uint8Array;
  timer_key: string;
  namespace: string;
  kind: string;
  fire_at: number;
  started_event_id: number;
}

export function rowToTimer(r: TimerRow): TimerRecord {
  return {
    namespace: r.namespace,
    runId: decodeRunId(r.run_id),
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
  run_id: string | Uint8Array;
  created_at: number;
}

export function rowToRequest(r: RequestRow): RequestRecord {
  return {
    namespace: r.namespace,
    requestId: r.request_id,
    kind: r.kind as RequestRecord['kind'],
    runId: decodeRunId(r.run_id),
    createdAt: r.created_at,
  };
}

/** One history chunk (see `sqlite-history.ts`). */
export interface ChunkRow {
  first_event_id: number;
  last_event_id: number;
  base_time: number;
  chunk: Uint8Array;
}

/** The last chunk of a run, without its content. */
export interface ChunkSizeRow {
  first_event_id: number;
  last_event_id: number;
  base_time: number;
  /** Stored bytes (format byte included). */
  size: number;
}

/** A run's raw tail (see `sqlite-history.ts`). */
export interface TailRow {
  first_event_id: number;
  last_event_id: number;
  base_time: number;
  events: string;
}

/** A run's raw tail, without its content. */
export interface TailHeadRow {
  first_event_id: number;
  last_event_id: number;
  base_time: number;
  compact_at: number;
  /** Characters of the tail text. */
  size: number;
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
export function encodeAll<R, K extends keyof R>(
  columns: Readonly<Record<K, readonly [string, Encoder]>>,
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
  leading: readonly string[] = [],
): string {
  const names = [...leading, ...Object.values(columns).map(([c]) => c)];
  return `INSERT INTO ${table} (${names.join(', ')}) VALUES (${names.map(() => '?').join(', ')})`;
}

export type Stmt = BetterSqlite3.Statement<unknown[], unknown>;

/** Row sources that add the run id (from `run_keys`) to a per-run table's columns. */
const RUN = 'k.run_id, r.* FROM runs r JOIN run_keys k ON k.rk = r.rk';
const ACTIVITY = 'k.run_id, a.* FROM activities a JOIN run_keys k ON k.rk = a.rk';
const TIMER = 'k.run_id, t.* FROM timers t JOIN run_keys k ON k.rk = t.rk';

const OPEN_QUERY = "(phase = 'pending' OR (phase = 'claimed' AND lease_expires_at <= ?))";

/** Every fixed statement's SQL, prepared once per connection by `prepareStatements`. */
const SQL = {
  beginImmediate: 'BEGIN IMMEDIATE',
  beginDeferred: 'BEGIN DEFERRED',
  commit: 'COMMIT',
  rollback: 'ROLLBACK',
  savepoint: 'SAVEPOINT longhaul_member',
  releaseSavepoint: 'RELEASE longhaul_member',
  rollbackToSavepoint: 'ROLLBACK TO longhaul_member',

  runKey: 'SELECT rk FROM run_keys WHERE run_id = ?',
  insertRunKey: 'INSERT INTO run_keys (run_id) VALUES (?)',

  insertRun: insertSql('runs', RUN_COLUMNS, ['rk']),
  getRun: `SELECT ${RUN} WHERE r.rk = ?`,
  runExists: 'SELECT 1 FROM runs WHERE rk = ?',
  findRunById: `SELECT ${RUN} WHERE r.rk = ? AND r.namespace = ? AND r.workflow_id = ?`,
  // The run key breaks start-time ties (continue-as-new within one clock tick): the later run wins.
  findLatestRun: `SELECT ${RUN} WHERE r.namespace = ? AND r.workflow_id = ? ORDER BY r.start_time DESC, r.rk DESC LIMIT 1`,
  findOpenRun: `SELECT ${RUN} WHERE r.namespace = ? AND r.workflow_id = ? AND r.status = 'running'`,
  otherOpenRun:
    "SELECT 1 FROM runs WHERE namespace = ? AND workflow_id = ? AND status = 'running' AND rk <> ?",
  runIdentity: 'SELECT namespace, workflow_id FROM runs WHERE rk = ?',

  // History chunks: chunk_key = rk << 32 | first event id (see the schema).
  // Named parameters: @rk (run key), @first (first event id of a chunk), @from (first event id wanted).
  lastChunk:
    'SELECT chunk_key & 4294967295 AS first_event_id, last_event_id, base_time, chunk FROM history ' +
    'WHERE chunk_key BETWEEN (@rk << 32) AND (@rk << 32) + 4294967295 ORDER BY chunk_key DESC LIMIT 1',
  insertChunk:
    'INSERT INTO history (chunk_key, last_event_id, base_time, chunk) ' +
    'VALUES ((@rk << 32) + @first, @last, @base, @chunk)',
  updateChunk:
    'UPDATE history SET last_event_id = @last, chunk = @chunk WHERE chunk_key = (@rk << 32) + @first',
  lastChunkSize:
    'SELECT chunk_key & 4294967295 AS first_event_id, last_event_id, base_time, length(chunk) AS size ' +
    'FROM history WHERE chunk_key BETWEEN (@rk << 32) AND (@rk << 32) + 4294967295 ' +
    'ORDER BY chunk_key DESC LIMIT 1',
  readChunks:
    'SELECT chunk_key & 4294967295 AS first_event_id, last_event_id, base_time, chunk FROM history ' +
    'WHERE chunk_key BETWEEN (@rk << 32) + coalesce((SELECT max(chunk_key) & 4294967295 FROM history ' +
    'WHERE chunk_key BETWEEN (@rk << 32) AND (@rk << 32) + @from), 0) AND (@rk << 32) + 4294967295 ' +
    'ORDER BY chunk_key',

  // Raw tails (see `sqlite-history.ts`): at most one per run, keyed by its run key.
  tailHead:
    'SELECT first_event_id, last_event_id, base_time, compact_at, length(events) AS size ' +
    'FROM history_tail WHERE rk = ?',
  readTail: 'SELECT first_event_id, last_event_id, base_time, events FROM history_tail WHERE rk = ?',
  insertTail:
    'INSERT INTO history_tail (rk, first_event_id, last_event_id, base_time, compact_at, events) ' +
    'VALUES (@rk, @first, @last, @base, @compactAt, @events)',
  appendTail:
    'UPDATE history_tail SET last_event_id = @last, compact_at = @compactAt, events = events || @events ' +
    'WHERE rk = @rk',
  /** As `appendTail` when `compact_at` stays: leaves the `history_tail_due` index entry alone. */
  appendTailSameDue:
    'UPDATE history_tail SET last_event_id = @last, events = events || @events WHERE rk = @rk',
  deleteTail: 'DELETE FROM history_tail WHERE rk = ?',
  dueTails: 'SELECT rk FROM history_tail WHERE compact_at <= ? ORDER BY compact_at LIMIT ?',
  nextDueTail: 'SELECT min(compact_at) AS t FROM history_tail',

  insertBuffered: 'INSERT INTO buffer (rk, type, time, attributes) VALUES (?, ?, ?, ?)',
  listBuffered: 'SELECT seq, type, time, attributes FROM buffer WHERE rk = ? ORDER BY seq',
  deleteBuffered: 'DELETE FROM buffer WHERE rk = ? AND seq <= ?',

  insertActivity: insertSql('activities', ACTIVITY_COLUMNS, ['rk']),
  getActivity: `SELECT ${ACTIVITY} WHERE a.rk = ? AND a.scheduled_event_id = ?`,
  activityExists: 'SELECT 1 FROM activities WHERE rk = ? AND scheduled_event_id = ?',
  listActivities: `SELECT ${ACTIVITY} WHERE a.rk = ? ORDER BY a.scheduled_event_id`,
  deleteActivity: 'DELETE FROM activities WHERE rk = ? AND scheduled_event_id = ?',

  insertTimer:
    'INSERT INTO timers (rk, timer_key, namespace, kind, fire_at, started_event_id) VALUES (?, ?, ?, ?, ?, ?)',
  listTimers: `SELECT ${TIMER} WHERE t.rk = ? ORDER BY t.fire_at, t.timer_key`,
  deleteTimer: 'DELETE FROM timers WHERE rk = ? AND timer_key = ?',

  deleteRunActivities: 'DELETE FROM activities WHERE rk = ?',
  deleteRunTimers: 'DELETE FROM timers WHERE rk = ?',
  deleteRunBuffer: 'DELETE FROM buffer WHERE rk = ?',
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
    `SELECT ${RUN} WHERE r.namespace = ? AND r.task_queue = ? AND r.status = 'running' ` +
    "AND r.wft_phase = 'scheduled' AND r.wft_visible_at <= ? " +
    'AND (r.sticky_worker IS NULL OR r.sticky_worker = ? OR r.wft_visible_at <= ?) ' +
    'ORDER BY r.wft_visible_at, r.rk LIMIT ?',
  claimableActivities:
    `SELECT ${ACTIVITY} WHERE a.namespace = ? AND a.task_queue = ? AND a.phase = 'scheduled' ` +
    'AND a.cancel_requested = 0 AND a.visible_at <= ? ORDER BY a.visible_at, a.rk, a.scheduled_event_id LIMIT ?',
  claimableQueries: `SELECT * FROM queries WHERE namespace = ? AND task_queue = ? AND ${OPEN_QUERY} ORDER BY created_at, id LIMIT ?`,
  dueTimers: `SELECT ${TIMER} WHERE t.fire_at <= ? ORDER BY t.fire_at, t.rk, t.timer_key LIMIT ?`,
  expiredWorkflowTasks:
    `SELECT ${RUN} WHERE r.status = 'running' AND r.wft_phase = 'started' AND r.wft_lease_expires_at <= ? ` +
    'ORDER BY r.wft_lease_expires_at, r.rk LIMIT ?',
  dueActivities:
    `SELECT ${ACTIVITY} WHERE a.deadline IS NOT NULL AND a.deadline <= ? ` +
    'ORDER BY a.deadline, a.rk, a.scheduled_event_id LIMIT ?',
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
