import type BetterSqlite3 from 'better-sqlite3';
import { StoreError } from '../../common/errors.js';

/** The part of a better-sqlite3 connection the migrations use. */
export type MigrationDb = Pick<BetterSqlite3.Database, 'exec' | 'prepare' | 'inTransaction'>;

/** One schema step. Versions are 1, 2, 3, ... in order; a released step is never edited, only added to. */
export interface SqliteMigration {
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

/**
 * The schema, as numbered steps. Times are INTEGER milliseconds since the epoch, booleans 0/1, and
 * JSON values (inputs, options, failures, memo) TEXT holding `JSON.stringify` output, so a value reads
 * back byte for byte, key order included.
 *
 * Layout, chosen for bytes on disk (a sleeping workflow should cost a few hundred bytes):
 * - `run_keys` gives every run id the store has seen a small integer key (`rk`); every per-run table
 *   refers to runs by it instead of repeating the id. Columns holding a run id are declared BLOB (no type
 *   conversion): a run id that is a lowercase UUID is stored as its 16 bytes, any other id as TEXT (`sqlite-rows.ts`, encodeRunId). A key exists for every run
 *   id written anywhere (history, timers, ... may be written before the run record), and is never reused.
 * - `runs` is keyed by `rk`. "One running run per workflow id" is checked by the adapter inside the write
 *   transaction (`BEGIN IMMEDIATE` makes that check race-free across processes), not by an index.
 * - `history` holds a run's events in chunks: each row holds consecutive events, JSON-encoded and
 *   compressed (`sqlite-history.ts`). Its key is `rk << 32 | first event id`, so a run's chunks are
 *   adjacent and ordered without an index.
 * - `history_tail` holds, per run, the events appended since its chunks were last compacted, uncompressed
 *   (appending is a string concatenation). `compact_at` (ms since the epoch) is when the compactor may
 *   compress it into `history`; the row is deleted then, so a store at rest holds no tails. Kept apart
 *   from `history` so the churn of growing and deleted raw rows never leaves `history` pages half empty.
 * - Small per-run tables are `WITHOUT ROWID` where their primary key is the only way they are read.
 * - Files are created with `auto_vacuum = INCREMENTAL` (by `SqliteStore.open`, before the first write:
 *   SQLite fixes it then), so pages freed by compacted tails can be given back to the filesystem.
 */
export const SQLITE_MIGRATIONS: readonly SqliteMigration[] = [
  {
    version: 1,
    description: 'run keys, runs, history chunks, buffer, activities, timers, requests, queries',
    sql: `
CREATE TABLE run_keys (
  rk INTEGER PRIMARY KEY,
  run_id BLOB NOT NULL UNIQUE
);

CREATE TABLE runs (
  rk INTEGER PRIMARY KEY,
  namespace TEXT NOT NULL,
  workflow_id TEXT NOT NULL,
  workflow_type TEXT NOT NULL,
  task_queue TEXT NOT NULL,
  status TEXT NOT NULL,
  next_event_id INTEGER NOT NULL,
  start_time INTEGER NOT NULL,
  close_time INTEGER,
  request_id TEXT,
  workflow_task_timeout_ms INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL,
  memo TEXT,
  search_attributes TEXT,
  last_completed_task_event_id INTEGER NOT NULL,
  wft_phase TEXT NOT NULL,
  wft_attempt INTEGER NOT NULL,
  wft_scheduled_event_id INTEGER NOT NULL,
  wft_started_event_id INTEGER NOT NULL,
  wft_visible_at INTEGER NOT NULL,
  wft_started_time INTEGER NOT NULL,
  wft_lease_owner TEXT,
  wft_lease_expires_at INTEGER NOT NULL,
  wft_token INTEGER NOT NULL,
  wft_failure TEXT,
  sticky_worker TEXT
);
CREATE INDEX runs_by_workflow ON runs (namespace, workflow_id);
CREATE INDEX runs_wft_claim ON runs (namespace, task_queue, wft_visible_at)
  WHERE status = 'running' AND wft_phase = 'scheduled';
CREATE INDEX runs_wft_visible ON runs (wft_visible_at) WHERE status = 'running' AND wft_phase = 'scheduled';
CREATE INDEX runs_wft_lease ON runs (wft_lease_expires_at) WHERE status = 'running' AND wft_phase = 'started';

CREATE TABLE history (
  chunk_key INTEGER PRIMARY KEY,
  last_event_id INTEGER NOT NULL,
  base_time INTEGER NOT NULL,
  chunk BLOB NOT NULL
);

CREATE TABLE history_tail (
  rk INTEGER PRIMARY KEY,
  first_event_id INTEGER NOT NULL,
  last_event_id INTEGER NOT NULL,
  base_time INTEGER NOT NULL,
  compact_at INTEGER NOT NULL,
  events TEXT NOT NULL
);
CREATE INDEX history_tail_due ON history_tail (compact_at);

CREATE TABLE buffer (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  rk INTEGER NOT NULL,
  type TEXT NOT NULL,
  time INTEGER NOT NULL,
  attributes TEXT NOT NULL
);
CREATE INDEX buffer_by_run ON buffer (rk, seq);

CREATE TABLE activities (
  rk INTEGER NOT NULL,
  scheduled_event_id INTEGER NOT NULL,
  namespace TEXT NOT NULL,
  workflow_id TEXT NOT NULL,
  activity_id TEXT NOT NULL,
  activity_type TEXT NOT NULL,
  task_queue TEXT NOT NULL,
  input TEXT NOT NULL,
  options TEXT NOT NULL,
  phase TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  scheduled_time INTEGER NOT NULL,
  visible_at INTEGER NOT NULL,
  started_time INTEGER,
  last_heartbeat_time INTEGER,
  heartbeat_details TEXT,
  last_failure TEXT,
  cancel_requested INTEGER NOT NULL,
  lease_owner TEXT,
  token INTEGER NOT NULL,
  deadline INTEGER,
  PRIMARY KEY (rk, scheduled_event_id)
);
CREATE INDEX activities_claim ON activities (namespace, task_queue, visible_at)
  WHERE phase = 'scheduled' AND cancel_requested = 0;
CREATE INDEX activities_visible ON activities (visible_at) WHERE phase = 'scheduled' AND cancel_requested = 0;
CREATE INDEX activities_deadline ON activities (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE timers (
  rk INTEGER NOT NULL,
  timer_key TEXT NOT NULL,
  namespace TEXT NOT NULL,
  kind TEXT NOT NULL,
  fire_at INTEGER NOT NULL,
  started_event_id INTEGER NOT NULL,
  PRIMARY KEY (rk, timer_key)
) WITHOUT ROWID;
CREATE INDEX timers_fire_at ON timers (fire_at);

CREATE TABLE requests (
  namespace TEXT NOT NULL,
  request_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  run_id BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, request_id)
);
CREATE INDEX requests_created_at ON requests (created_at);

CREATE TABLE queries (
  id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  run_id BLOB NOT NULL,
  task_queue TEXT NOT NULL,
  query_type TEXT NOT NULL,
  args TEXT NOT NULL,
  phase TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  lease_expires_at INTEGER NOT NULL,
  result TEXT,
  failure TEXT
);
CREATE INDEX queries_claim ON queries (namespace, task_queue, phase, created_at);
CREATE INDEX queries_by_run ON queries (run_id);
CREATE INDEX queries_lease ON queries (lease_expires_at) WHERE phase = 'claimed';
`,
  },
];

/** The newest schema version this build of longhaul knows. */
export const SQLITE_SCHEMA_VERSION = SQLITE_MIGRATIONS.length;

const VERSION_KEY = 'schema_version';

function hasTable(db: MigrationDb, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

/** The schema version recorded in the file, or 0 when it has no longhaul schema yet. */
export function readSchemaVersion(db: MigrationDb): number {
  if (!hasTable(db, 'meta')) return 0;
  const row = db.prepare('SELECT value FROM meta WHERE key = ?').get(VERSION_KEY) as
    | { value: string }
    | undefined;
  if (!row) return 0;
  const version = Number(row.value);
  if (!Number.isInteger(version) || version < 0) {
    throw new StoreError(
      'STORE_CORRUPT',
      `the store's meta table holds schema_version '${row.value}', which is not a version number; restore the file from a backup`,
    );
  }
  return version;
}

function tooNew(where: string, found: number, known: number): StoreError {
  return new StoreError(
    'SCHEMA_TOO_NEW',
    `the store at ${where} has schema version ${found}, but this longhaul knows versions up to ${known}; ` +
      'a newer longhaul has migrated it. Upgrade longhaul on this host (nothing was changed).',
  );
}

/**
 * Brings the schema to the newest version, for a node. Runs every pending step in one `BEGIN IMMEDIATE`
 * transaction, so processes starting at once are safe: one migrates, the others wait for the write lock
 * and then find nothing to do. Refuses (changing nothing) a store whose version is newer than `migrations`
 * knows, and a database that already holds tables but no longhaul schema. May throw SQLITE_BUSY from
 * `BEGIN IMMEDIATE`; the caller retries.
 */
export function migrateSchema(
  db: MigrationDb,
  where: string,
  migrations: readonly SqliteMigration[] = SQLITE_MIGRATIONS,
): { from: number; to: number } {
  const known = migrations.length;
  db.exec('BEGIN IMMEDIATE');
  try {
    if (!hasTable(db, 'meta')) {
      const other = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' LIMIT 1").get() as
        | { name: string }
        | undefined;
      if (other) {
        throw new StoreError(
          'NOT_A_LONGHAUL_STORE',
          `${where} is a SQLite database with other tables (e.g. '${other.name}') but no longhaul schema; ` +
            'point longhaul at a new file or at a store it created.',
        );
      }
      db.exec('CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)');
    }
    const from = readSchemaVersion(db);
    if (from > known) throw tooNew(where, from, known);
    for (const step of migrations) {
      if (step.version <= from) continue;
      db.exec(step.sql);
    }
    if (known > from) {
      db.prepare(
        'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      ).run(VERSION_KEY, String(known));
    }
    db.exec('COMMIT');
    return { from, to: Math.max(from, known) };
  } catch (err) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw err;
  }
}

/**
 * Checks, for a client (which never creates or migrates a store), that the schema is exactly the one this
 * longhaul knows. Reads only.
 */
export function checkSchemaForClient(db: MigrationDb, where: string, known = SQLITE_SCHEMA_VERSION): void {
  const found = readSchemaVersion(db);
  if (found === 0) {
    throw new StoreError(
      'STORE_NOT_FOUND',
      `the store at ${where} exists but has no longhaul schema yet; start a worker (a node) against it ` +
        'first: workers create and migrate the store, clients only connect to it.',
    );
  }
  if (found > known) throw tooNew(where, found, known);
  if (found < known) {
    throw new StoreError(
      'SCHEMA_TOO_OLD',
      `the store at ${where} has schema version ${found}, older than the version ${known} this longhaul ` +
        'needs; start a worker (a node) of this longhaul version against it to migrate it, then connect again.',
    );
  }
}
