import { StoreError } from '../../common/errors.js';
import { quoteIdent } from './postgres-rows.js';

/** The part of a `pg` client the migrations use. */
export interface MigrationClient {
  query<R = Record<string, unknown>>(text: string, values?: readonly unknown[]): Promise<{ rows: R[] }>;
}

/** One schema step. Versions are 1, 2, 3, ... in order; a released step is never edited, only added to. */
export interface PostgresMigration {
  readonly version: number;
  readonly description: string;
  /** The step's DDL for a schema, given as a quoted identifier. */
  readonly sql: (schema: string) => string;
}

/**
 * The schema, as numbered steps, inside one PostgreSQL schema of the user's choosing (`?schema=`, default
 * `longhaul`), so several stores can share a database. Times are `bigint` milliseconds since the epoch;
 * JSON values are `text` (exact round trip, see `postgres-rows.ts`).
 *
 * - `runs`: keyed by run id; `seq` (identity) is the insertion order that breaks `findRun` start-time
 *   ties. "One running run per workflow id" is the partial unique index `runs_one_open`.
 * - `events`: one row per history event, primary key (run_id, event_id): append-only, and the key makes a
 *   duplicate id impossible whatever the callers do.
 * - `buffer.seq` is an identity: it only grows, never reused after deletes.
 * - Partial indexes back each claim, sweep and wake-up query, so `nextWakeTime` is six index probes.
 */
export const POSTGRES_MIGRATIONS: readonly PostgresMigration[] = [
  {
    version: 1,
    description: 'runs, events, buffer, activities, timers, requests, queries',
    sql: (s) => `
CREATE TABLE ${s}.runs (
  run_id text PRIMARY KEY,
  seq bigint GENERATED ALWAYS AS IDENTITY,
  namespace text NOT NULL,
  workflow_id text NOT NULL,
  workflow_type text NOT NULL,
  task_queue text NOT NULL,
  status text NOT NULL,
  next_event_id bigint NOT NULL,
  start_time bigint NOT NULL,
  close_time bigint,
  request_id text,
  workflow_task_timeout_ms bigint NOT NULL,
  cancel_requested boolean NOT NULL,
  memo text,
  search_attributes text,
  last_completed_task_event_id bigint NOT NULL,
  wft_phase text NOT NULL,
  wft_attempt integer NOT NULL,
  wft_scheduled_event_id bigint NOT NULL,
  wft_started_event_id bigint NOT NULL,
  wft_visible_at bigint NOT NULL,
  wft_started_time bigint NOT NULL,
  wft_lease_owner text,
  wft_lease_expires_at bigint NOT NULL,
  wft_token bigint NOT NULL,
  wft_failure text,
  sticky_worker text
);
CREATE UNIQUE INDEX runs_one_open ON ${s}.runs (namespace, workflow_id) WHERE status = 'running';
CREATE INDEX runs_by_workflow ON ${s}.runs (namespace, workflow_id, start_time DESC, seq DESC);
CREATE INDEX runs_wft_claim ON ${s}.runs (namespace, task_queue, wft_visible_at, seq)
  WHERE status = 'running' AND wft_phase = 'scheduled';
CREATE INDEX runs_wft_visible ON ${s}.runs (wft_visible_at) WHERE status = 'running' AND wft_phase = 'scheduled';
CREATE INDEX runs_wft_lease ON ${s}.runs (wft_lease_expires_at) WHERE status = 'running' AND wft_phase = 'started';

CREATE TABLE ${s}.events (
  run_id text NOT NULL,
  event_id bigint NOT NULL,
  type text NOT NULL,
  time bigint NOT NULL,
  attributes text NOT NULL,
  PRIMARY KEY (run_id, event_id)
);

CREATE TABLE ${s}.buffer (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id text NOT NULL,
  type text NOT NULL,
  time bigint NOT NULL,
  attributes text NOT NULL
);
CREATE INDEX buffer_by_run ON ${s}.buffer (run_id, seq);

CREATE TABLE ${s}.activities (
  run_id text NOT NULL,
  scheduled_event_id bigint NOT NULL,
  namespace text NOT NULL,
  workflow_id text NOT NULL,
  activity_id text NOT NULL,
  activity_type text NOT NULL,
  task_queue text NOT NULL,
  input text NOT NULL,
  options text NOT NULL,
  phase text NOT NULL,
  attempt integer NOT NULL,
  scheduled_time bigint NOT NULL,
  visible_at bigint NOT NULL,
  started_time bigint,
  last_heartbeat_time bigint,
  heartbeat_details text,
  last_failure text,
  cancel_requested boolean NOT NULL,
  lease_owner text,
  token bigint NOT NULL,
  deadline bigint,
  PRIMARY KEY (run_id, scheduled_event_id)
);
CREATE INDEX activities_claim ON ${s}.activities (namespace, task_queue, visible_at)
  WHERE phase = 'scheduled' AND NOT cancel_requested;
CREATE INDEX activities_visible ON ${s}.activities (visible_at) WHERE phase = 'scheduled' AND NOT cancel_requested;
CREATE INDEX activities_deadline ON ${s}.activities (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE ${s}.timers (
  run_id text NOT NULL,
  timer_key text NOT NULL,
  namespace text NOT NULL,
  kind text NOT NULL,
  fire_at bigint NOT NULL,
  started_event_id bigint NOT NULL,
  PRIMARY KEY (run_id, timer_key)
);
CREATE INDEX timers_fire_at ON ${s}.timers (fire_at);

CREATE TABLE ${s}.requests (
  namespace text NOT NULL,
  request_id text NOT NULL,
  kind text NOT NULL,
  run_id text NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (namespace, request_id)
);
CREATE INDEX requests_created_at ON ${s}.requests (created_at);

CREATE TABLE ${s}.queries (
  id text PRIMARY KEY,
  namespace text NOT NULL,
  run_id text NOT NULL,
  task_queue text NOT NULL,
  query_type text NOT NULL,
  args text NOT NULL,
  phase text NOT NULL,
  created_at bigint NOT NULL,
  lease_expires_at bigint NOT NULL,
  result text,
  failure text
);
CREATE INDEX queries_claim ON ${s}.queries (namespace, task_queue, created_at) WHERE phase <> 'answered';
CREATE INDEX queries_by_run ON ${s}.queries (run_id);
CREATE INDEX queries_lease ON ${s}.queries (lease_expires_at) WHERE phase = 'claimed';
`,
  },
];

/** The newest schema version this build of longhaul knows. */
export const POSTGRES_SCHEMA_VERSION = POSTGRES_MIGRATIONS.length;

/** The tables of the newest schema; a client checks they all exist. */
export const POSTGRES_TABLES = [
  'schema_version',
  'runs',
  'events',
  'buffer',
  'activities',
  'timers',
  'requests',
  'queries',
] as const;

/**
 * Key of the transaction-level advisory lock that serialises migrations of one schema: computed by the
 * server from 'longhaul:migrate:' + the schema name, so nodes migrating different schemas of one
 * database never wait for each other.
 */
export function migrationLockKey(schema: string): string {
  return `longhaul:migrate:${schema}`;
}

function tooNew(where: string, found: number, known: number): StoreError {
  return new StoreError(
    'SCHEMA_TOO_NEW',
    `the store at ${where} has schema version ${found}, but this longhaul knows versions up to ${known}; ` +
      'a newer longhaul has migrated it. Upgrade longhaul on this host (nothing was changed).',
  );
}

async function schemaExists(db: MigrationClient, schema: string): Promise<boolean> {
  const { rows } = await db.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
  return rows.length > 0;
}

async function tablesIn(db: MigrationClient, schema: string): Promise<string[]> {
  const { rows } = await db.query<{ tablename: string }>(
    'SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename',
    [schema],
  );
  return rows.map((r) => r.tablename);
}

/** The version recorded in the schema's version table (0 when it holds none). */
async function readVersion(db: MigrationClient, schema: string, where: string): Promise<number> {
  const { rows } = await db.query<{ v: number | null }>(
    `SELECT max(version) AS v FROM ${quoteIdent(schema)}.schema_version`,
  );
  const v = rows[0]?.v ?? 0;
  if (!Number.isInteger(v) || v < 0) {
    throw new StoreError('STORE_CORRUPT', `${where}: schema_version holds '${String(v)}', not a version`);
  }
  return v;
}

/**
 * Brings the schema to the newest version, for a node, in one transaction on `db` (a dedicated
 * connection): takes `pg_advisory_xact_lock` on the schema's migration key (so nodes starting at once
 * migrate one after another: the first does the work, the others find nothing to do), creates the schema
 * if missing, refuses (changing nothing) a version newer than `migrations` knows, or a schema that holds
 * tables but no longhaul version table, then applies every pending step and records it. PostgreSQL DDL is
 * transactional: a failed step leaves the schema as it was.
 */
export async function migratePostgresSchema(
  db: MigrationClient,
  schema: string,
  where: string,
  migrations: readonly PostgresMigration[] = POSTGRES_MIGRATIONS,
): Promise<{ from: number; to: number }> {
  const s = quoteIdent(schema);
  const known = migrations.length;
  await db.query('BEGIN ISOLATION LEVEL READ COMMITTED');
  try {
    await db.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [migrationLockKey(schema)]);
    // Checked first, so a role without CREATE on the database can use a schema an administrator made.
    if (!(await schemaExists(db, schema))) await db.query(`CREATE SCHEMA ${s}`);
    const tables = await tablesIn(db, schema);
    if (!tables.includes('schema_version')) {
      if (tables.length > 0) {
        throw new StoreError(
          'NOT_A_LONGHAUL_STORE',
          `${where}: schema '${schema}' holds other tables (e.g. '${tables[0]}') but no longhaul schema; ` +
            'choose another schema with ?schema=NAME, or one longhaul created.',
        );
      }
      await db.query(
        `CREATE TABLE ${s}.schema_version (version integer PRIMARY KEY, description text NOT NULL, ` +
          'applied_at timestamptz NOT NULL DEFAULT now())',
      );
    }
    const from = await readVersion(db, schema, where);
    if (from > known) throw tooNew(where, from, known);
    for (const step of migrations) {
      if (step.version <= from) continue;
      await db.query(step.sql(s));
      await db.query(`INSERT INTO ${s}.schema_version (version, description) VALUES ($1, $2)`, [
        step.version,
        step.description,
      ]);
    }
    await db.query('COMMIT');
    return { from, to: Math.max(from, known) };
  } catch (err) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * Checks, for a client (which never creates or migrates anything), that the schema exists with exactly
 * the version this longhaul knows and all its tables. Reads only catalogs and the version table.
 */
export async function checkPostgresSchemaForClient(
  db: MigrationClient,
  schema: string,
  where: string,
  known = POSTGRES_SCHEMA_VERSION,
  tables: readonly string[] = POSTGRES_TABLES,
): Promise<void> {
  const startWorker =
    'start a worker (a node) against it first: workers create and migrate the store, clients only ' +
    'connect to it.';
  if (!(await schemaExists(db, schema))) {
    throw new StoreError('STORE_NOT_FOUND', `${where}: schema '${schema}' does not exist; ${startWorker}`);
  }
  const present = new Set(await tablesIn(db, schema));
  if (!present.has('schema_version')) {
    throw new StoreError(
      'STORE_NOT_FOUND',
      `${where}: schema '${schema}' has no longhaul tables yet; ${startWorker}`,
    );
  }
  const found = await readVersion(db, schema, where);
  if (found === 0) {
    throw new StoreError(
      'STORE_NOT_FOUND',
      `${where}: schema '${schema}' is not migrated yet; ${startWorker}`,
    );
  }
  if (found > known) throw tooNew(where, found, known);
  if (found < known) {
    throw new StoreError(
      'SCHEMA_TOO_OLD',
      `${where} has schema version ${found}, older than the version ${known} this longhaul needs; start a ` +
        'worker (a node) of this longhaul version against it to migrate it, then connect again.',
    );
  }
  const missing = tables.filter((t) => !present.has(t));
  if (missing.length > 0) {
    throw new StoreError(
      'STORE_NOT_FOUND',
      `${where}: schema '${schema}' is at version ${found} but lacks the table(s) ${missing.join(', ')}; ` +
        'restore them from a backup, or point longhaul at a complete store.',
    );
  }
}
