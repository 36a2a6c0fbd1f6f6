import {
  ACTIVITY_COLUMNS,
  ACTIVITY_PREFIX,
  type Columns,
  type Encoder,
  QUERY_COLUMNS,
  quoteIdent,
  RUN_COLUMNS,
  type Statement,
  TIMER_COLUMNS,
} from './postgres-rows.js';

/** The fixed SQL of the PostgreSQL adapter, per schema (rows are mapped in postgres-rows.ts). */

/** The columns, each after `alias`; with `as`, each renamed to `as + column` (two tables' rows side by side). */
function columnList<R>(columns: Columns<R>, alias = '', as = ''): string {
  return Object.values<readonly [string, Encoder]>(columns)
    .map(([c]) => (as === '' ? alias + c : `${alias}${c} AS ${as}${c}`))
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
 * Locking: the `*ForUpdate` reads serve `getRun`/`getActivity`/`listActivities`/`getRunWithActivities`/
 * `getQuery`/`findRun`/`findOpenRun` inside `transaction` (the runtime reads, checks and writes those
 * rows: the lock makes that a compare-and-set); the claim and sweep queries lock what they return and
 * skip rows another transaction holds.
 */
export function buildStatements(schema: string) {
  const s = quoteIdent(schema);
  const runs = `${s}.runs`;
  const activities = `${s}.activities`;
  const timers = `${s}.timers`;
  const queries = `${s}.queries`;
  const RUN = `SELECT ${columnList(RUN_COLUMNS)} FROM ${runs}`;
  const RUN_LOCKED = `SELECT ${columnList(RUN_COLUMNS)}, xmin AS locked_xmin FROM ${runs}`;
  const ACTIVITY = `SELECT ${columnList(ACTIVITY_COLUMNS)} FROM ${activities}`;
  // With the row version's xmin, for remembered rows (postgres-row-memory.ts).
  const ACTIVITY_LOCKED = `SELECT ${columnList(ACTIVITY_COLUMNS)}, xmin::text AS lh_xmin FROM ${activities}`;
  const TIMER = `SELECT ${columnList(TIMER_COLUMNS)} FROM ${timers}`;
  const QUERY = `SELECT ${columnList(QUERY_COLUMNS)} FROM ${queries}`;
  const OPEN_QUERY = "(phase = 'pending' OR (phase = 'claimed' AND lease_expires_at <= $3))";
  const findLatest = `${RUN} WHERE namespace = $1 AND workflow_id = $2 ORDER BY start_time DESC, seq DESC LIMIT 1`;
  const findById = `${RUN} WHERE run_id = $3 AND namespace = $1 AND workflow_id = $2`;
  const findOpen = `${RUN} WHERE namespace = $1 AND workflow_id = $2 AND status = 'running'`;

  // The run, then (a nested loop on it, so locked after it) each of its activities in a row of its own,
  // under prefixed names; a run without activities is one row whose activity columns are null.
  // `fresh`: the run row locked is the version in the statement's snapshot. When the statement had to
  // wait for the run, the holder may have committed new activities, which that snapshot does not show
  // (rows it updated or deleted are followed by the lock; rows it inserted are not). Activities are only
  // inserted by a transaction that also updates their run, so a fresh run means a complete list.
  const runWithActivities = (lock: string) =>
    `WITH r AS (${RUN_LOCKED} WHERE run_id = $1${lock}), ` +
    `s AS (SELECT xmin AS seen_xmin FROM ${runs} WHERE run_id = $1) ` +
    `SELECT r.*, (r.locked_xmin = s.seen_xmin) IS TRUE AS fresh, a.* FROM r LEFT JOIN s ON true LEFT JOIN LATERAL ` +
    `(SELECT ${columnList(ACTIVITY_COLUMNS, '', ACTIVITY_PREFIX)}, xmin::text AS ${ACTIVITY_PREFIX}lh_xmin FROM ${activities} ` +
    `WHERE run_id = r.run_id ORDER BY scheduled_event_id${lock}) a ON true ORDER BY a.${ACTIVITY_PREFIX}scheduled_event_id`;

  const sql = {
    getRun: `${RUN} WHERE run_id = $1`,
    getRunForUpdate: `${RUN} WHERE run_id = $1 FOR UPDATE`,
    getRunWithActivities: runWithActivities(''),
    getRunWithActivitiesForUpdate: runWithActivities(' FOR UPDATE'),
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
      `WITH ${appendEventsEntries(s, 'last', 'ins')} ` +
      'SELECT last.id AS last_event_id, coalesce((SELECT array_agg(event_id) FROM ins), ' +
      "'{}'::bigint[]) AS inserted_ids FROM last",
    deleteEvents: `DELETE FROM ${s}.events WHERE run_id = $1 AND event_id = ANY($2::bigint[])`,
    readEvents:
      `SELECT event_id, type, time, attributes FROM ${s}.events WHERE run_id = $1 AND event_id >= $2 ` +
      'ORDER BY event_id LIMIT $3',
    lastEvent:
      `SELECT event_id, type, time, attributes FROM ${s}.events WHERE run_id = $1 ` +
      'ORDER BY event_id DESC LIMIT 1',

    insertBuffered: `WITH ${insertBufferedEntries(s, 'touch', 'ins')} SELECT count(*)::int AS n FROM ins`,
    listBuffered: `SELECT seq, type, time, attributes FROM ${s}.buffer WHERE run_id = $1 ORDER BY seq`,
    deleteBuffered: `DELETE FROM ${s}.buffer WHERE run_id = $1 AND seq <= $2`,

    insertActivity: `${insertSql(activities, ACTIVITY_COLUMNS)} ON CONFLICT DO NOTHING`,
    getActivity: `${ACTIVITY} WHERE run_id = $1 AND scheduled_event_id = $2`,
    getActivityForUpdate: `${ACTIVITY} WHERE run_id = $1 AND scheduled_event_id = $2 FOR UPDATE`,
    activityExists: `SELECT 1 FROM ${activities} WHERE run_id = $1 AND scheduled_event_id = $2`,
    listActivities: `${ACTIVITY} WHERE run_id = $1 ORDER BY scheduled_event_id`,
    listActivitiesForUpdate: `${ACTIVITY_LOCKED} WHERE run_id = $1 ORDER BY scheduled_event_id FOR UPDATE`,
    deleteActivity: `DELETE FROM ${activities} WHERE run_id = $1 AND scheduled_event_id = $2`,

    insertTimer: `${insertSql(timers, TIMER_COLUMNS)} ON CONFLICT DO NOTHING`,
    listTimers: `${TIMER} WHERE run_id = $1 ORDER BY fire_at, timer_key`,
    deleteTimer: `DELETE FROM ${timers} WHERE run_id = $1 AND timer_key = $2`,

    // One round trip: data-modifying CTEs all run, whatever the outer query reads.
    deleteRunState: `WITH ${deleteRunStateEntries(s, 'state')} SELECT count(*)::int AS n FROM state`,

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

    claimableWorkflowTasks: claimWithDue(
      `${columnList(RUN_COLUMNS)}, seq AS lh_seq`,
      runs,
      "namespace = $1 AND task_queue = $2 AND status = 'running' AND wft_phase = 'scheduled' " +
        'AND wft_visible_at <= $3 AND (sticky_worker IS NULL OR sticky_worker = $5 OR wft_visible_at <= $6)',
      ['wft_visible_at', 'seq'],
      ['wft_visible_at', 'lh_seq'],
    ),
    claimableActivities: claimWithDue(
      columnList(ACTIVITY_COLUMNS),
      activities,
      "namespace = $1 AND task_queue = $2 AND phase = 'scheduled' AND NOT cancel_requested AND visible_at <= $3",
      ['visible_at', 'run_id', 'scheduled_event_id'],
    ),
    claimableQueries: claimWithDue(
      columnList(QUERY_COLUMNS),
      queries,
      `namespace = $1 AND task_queue = $2 AND ${OPEN_QUERY}`,
      ['created_at', 'id'],
    ),
    // The due sweeps lock each row's run too (skipping the row if either is taken): the sweep then
    // writes the run, and waiting for the run while holding the timer or activity would be the reverse
    // of the order a workflow task's commit takes them in (run, then its timers and activities), a
    // deadlock. Every timer and activity has its run (runs are never deleted).
    dueTimers:
      `SELECT ${columnList(TIMER_COLUMNS, 't.')} FROM ${timers} t JOIN ${runs} r ON r.run_id = t.run_id ` +
      'WHERE t.fire_at <= $1 ORDER BY t.fire_at, t.run_id, t.timer_key LIMIT $2 FOR UPDATE OF t, r SKIP LOCKED',
    expiredWorkflowTasks:
      `${RUN} WHERE status = 'running' AND wft_phase = 'started' AND wft_lease_expires_at <= $1 ` +
      'ORDER BY wft_lease_expires_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED',
    dueActivities:
      `SELECT ${columnList(ACTIVITY_COLUMNS, 'a.')} FROM ${activities} a JOIN ${runs} r ON r.run_id = a.run_id ` +
      'WHERE a.deadline <= $1 ORDER BY a.deadline, a.run_id, a.scheduled_event_id LIMIT $2 ' +
      'FOR UPDATE OF a, r SKIP LOCKED',
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

/**
 * A claim: at most `$4` rows of `table` matching `where`, in `order`, locked, skipping rows another
 * transaction holds (`FOR UPDATE SKIP LOCKED`). Each row also carries `lh_due`: how many rows match
 * `where` in the statement's snapshot, locked or not (counted up to `$4 + 1`), so the caller can tell
 * that due work was passed over because another transaction held it. With no row claimed the answer is
 * one row of nulls but for `lh_due`. `outer` names the order's columns as the claim returns them.
 */
function claimWithDue(
  columns: string,
  table: string,
  where: string,
  order: readonly string[],
  outer: readonly string[] = order,
): string {
  return (
    `WITH c AS (SELECT ${columns} FROM ${table} WHERE ${where} ORDER BY ${order.join(', ')} LIMIT $4 ` +
    'FOR UPDATE SKIP LOCKED), ' +
    `d AS (SELECT count(*)::int AS lh_due FROM (SELECT 1 FROM ${table} WHERE ${where} LIMIT $4 + 1) m) ` +
    `SELECT c.*, d.lh_due FROM d LEFT JOIN c ON true ORDER BY ${outer.map((c) => `c.${c}`).join(', ')}`
  );
}

export type PostgresStatements = ReturnType<typeof buildStatements>;

/**
 * The CTE entries of an append ($1 run id, $2 first event id, $3..$5 types, times, attributes): `last`
 * reads the run's last event id, `ins` inserts the batch only directly after it and returns the ids it
 * wrote (fewer than the batch: a concurrent writer committed some of them, or the append would gap).
 */
function appendEventsEntries(schema: string, last: string, ins: string): string {
  return (
    `${last} AS (SELECT coalesce(max(event_id), 0) AS id FROM ${schema}.events WHERE run_id = $1), ` +
    `${ins} AS (INSERT INTO ${schema}.events (run_id, event_id, type, time, attributes) ` +
    'SELECT $1, $2 + u.ord - 1, u.type, u.time, u.attributes ' +
    `FROM unnest($3::text[], $4::bigint[], $5::text[]) WITH ORDINALITY AS u(type, time, attributes, ord), ${last} ` +
    `WHERE ${last}.id = $2 - 1 ON CONFLICT DO NOTHING RETURNING event_id)`
  );
}

/**
 * The CTE entries of a buffered event ($1 run id, $2..$4 type, time, attributes): `ins` inserts it, and
 * `touch` rewrites the run's row unchanged. That gives the row a new version (a new xmin), so a run
 * remembered with an empty buffer (postgres-row-memory.ts) fails its check once anything is buffered.
 */
function insertBufferedEntries(schema: string, touch: string, ins: string): string {
  return (
    `${touch} AS (UPDATE ${schema}.runs SET next_event_id = next_event_id WHERE run_id = $1), ` +
    `${ins} AS (INSERT INTO ${schema}.buffer (run_id, type, time, attributes) VALUES ($1, $2, $3, $4) RETURNING 1)`
  );
}

/** The CTE entries that delete a closed run's pending state ($1 run id); `last` deletes its queries. */
function deleteRunStateEntries(schema: string, last: string): string {
  return (
    `${last}_a AS (DELETE FROM ${schema}.activities WHERE run_id = $1), ` +
    `${last}_t AS (DELETE FROM ${schema}.timers WHERE run_id = $1), ` +
    `${last}_b AS (DELETE FROM ${schema}.buffer WHERE run_id = $1), ` +
    `${last} AS (DELETE FROM ${schema}.queries WHERE run_id = $1 AND phase <> 'answered' RETURNING 1)`
  );
}

/** The deferred forms (see postgres-batch.ts) of the writes whose statements are not one CTE entry. */
export interface DeferredForms {
  /** appendEvents, same parameters. */
  readonly append: (alias: string) => string;
  readonly insertBuffered: (alias: string) => string;
  readonly deleteRunState: (alias: string) => string;
}

export function deferredForms(schema: string): DeferredForms {
  const s = quoteIdent(schema);
  return {
    append: (alias) => appendEventsEntries(s, `${alias}_last`, alias),
    insertBuffered: (alias) => insertBufferedEntries(s, `${alias}_touch`, alias),
    deleteRunState: (alias) => deleteRunStateEntries(s, alias),
  };
}

/** Distinct patch shapes prepared by name; beyond this they run unnamed (the runtime uses a few dozen). */
const PATCH_CACHE_LIMIT = 512;

/**
 * The `UPDATE ... SET <fields> WHERE <key>` statements of one store, by table and field set, named on
 * first use so every connection prepares each shape once.
 */
export class PatchStatements {
  private readonly cache = new Map<string, Statement>();
  constructor(private readonly schema: string) {}

  get(table: string, columns: readonly string[], where: WhereBuilder): Statement {
    const signature = `${table}:${columns.join(',')}`;
    let stmt = this.cache.get(signature);
    if (!stmt) {
      const sets = columns.map((c, i) => `${c} = $${i + 1}`).join(', ');
      const n = columns.length;
      const text = `UPDATE ${quoteIdent(this.schema)}.${table} SET ${sets} WHERE ${where(n)}`;
      if (this.cache.size >= PATCH_CACHE_LIMIT) return { name: '', text };
      stmt = { name: `lh_patch_${this.cache.size + 1}`, text };
      this.cache.set(signature, stmt);
    }
    return stmt;
  }
}

/** Builds the `WHERE` clause of a patch statement, given how many `SET` parameters come first. */
export type WhereBuilder = (n: number) => string;

/** `WHERE` clauses of the patch statements, given how many `SET` parameters come first. */
function where(key: readonly string[]): (n: number) => string {
  return (n) => key.map((c, i) => `${c} = $${n + i + 1}`).join(' AND ');
}
export const RUN_KEY = where(['run_id']);
export const ACTIVITY_KEY = where(['run_id', 'scheduled_event_id']);
export const QUERY_KEY = where(['id']);
