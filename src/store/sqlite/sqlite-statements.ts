import type BetterSqlite3 from 'better-sqlite3';
import { ACTIVITY_COLUMNS, insertSql, QUERY_COLUMNS, RUN_COLUMNS } from './sqlite-rows.js';

/**
 * Every fixed statement of the SQLite adapter, prepared once per connection (the rows they read and
 * write are mapped in sqlite-rows.ts; patch statements are built per column set by the handle).
 */

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
