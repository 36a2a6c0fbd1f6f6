import type { FailureInfo } from '../../common/errors.js';
import type { ActivityOptionsMs, HistoryEvent, NewEvent } from '../../common/events.js';
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
 * Row <-> record mapping for the PostgreSQL adapter (its statements are in postgres-statements.ts). Rows
 * were written by the engine through this module, so they are trusted: JSON is parsed without
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

export type Encoder = (value: unknown) => SqlValue;
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

/** Prefix of the activity columns in a row that also holds its run's (getRunWithActivities). */
export const ACTIVITY_PREFIX = 'a_';

/** The columns of `columns` taken from `source` (a result row, perhaps with prefixed names). */
export function pickRow<Row>(columns: Columns<never>, source: object, prefix = ''): Row {
  const from = source as Record<string, unknown>;
  const row: Record<string, unknown> = {};
  for (const [column] of Object.values<readonly [string, Encoder]>(columns)) {
    row[column] = from[prefix + column];
  }
  return row as Row;
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

export function rowToBuffered(r: BufferRow): BufferedEvent {
  return {
    seq: r.seq,
    event: { type: r.type, time: r.time, attributes: JSON.parse(r.attributes) } as NewEvent,
  };
}

/** The row `record` is stored as: every column, encoded as an insert binds it, in key order. */
export function rowOf<R, Row = Record<string, SqlValue>>(columns: Columns<R>, record: R): Row {
  const row: Record<string, SqlValue> = {};
  for (const key of Object.keys(columns) as (keyof R & string)[]) {
    const [column, encode] = columns[key];
    row[column] = encode(record[key]);
  }
  return row as Row;
}

/** Binds every column of `columns` from `record`, in key order. */
export function encodeAll<R>(columns: Columns<R>, record: R): SqlValue[] {
  return Object.values(rowOf(columns, record));
}

// ---- statements ----

/** A quoted SQL identifier. Schema names are validated before they get here; quoting is defence in depth. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
