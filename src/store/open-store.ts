import { resolve } from 'node:path';
import { ValidationError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { PostgresStoreOptions } from './postgres/postgres-store.js';
import type { SqliteStoreOptions } from './sqlite/sqlite-store.js';
import type { Store } from './store.js';

export interface OpenStoreOptions {
  /**
   * `node` (workers, the server): creates the store if missing and migrates it. `client`: never creates or
   * migrates anything; fails with STORE_NOT_FOUND when there is no store yet, SCHEMA_TOO_OLD when a node of
   * this version has not migrated it, SCHEMA_TOO_NEW when a newer longhaul has.
   */
  readonly mode: 'node' | 'client';
  readonly logger?: Logger;
}

const ACCEPTED_FORMS =
  'accepted forms: sqlite:PATH (relative to the current directory, e.g. sqlite:./longhaul.db, or absolute, ' +
  'e.g. sqlite:/var/lib/app/longhaul.db), sqlite::memory: (one process only), with options as a query ' +
  'string (sqlite:./longhaul.db?synchronous=normal&busyTimeoutMs=100), or postgres://USER@HOST/DB?schema=NAME';

/** A parsed `sqlite:` connection string, path resolved to an absolute one (or ':memory:'). */
export type SqliteConnection = Pick<SqliteStoreOptions, 'path' | 'synchronous' | 'busyTimeoutMs'>;

/**
 * Parses a `sqlite:` connection string. Relative paths resolve against `cwd`. Options: `synchronous`
 * (`full`, the default, or `normal`) and `busyTimeoutMs` (a non-negative integer, default 50).
 * Throws ValidationError (field 'connection') on anything else.
 */
export function parseSqliteConnection(url: string, cwd: string): SqliteConnection {
  const rest = url.slice('sqlite:'.length);
  const q = rest.indexOf('?');
  const target = q === -1 ? rest : rest.slice(0, q);
  const query = q === -1 ? '' : rest.slice(q + 1);
  if (target === '') throw invalid(`'${url}' has no file path after 'sqlite:'`);
  if (target.startsWith('//') && !target.startsWith('///')) {
    throw invalid(`'${url}': write sqlite:PATH without '//' (sqlite:./file.db, or sqlite:/absolute/file.db)`);
  }
  const out: { -readonly [K in keyof SqliteConnection]: SqliteConnection[K] } = {
    path: target === ':memory:' ? ':memory:' : resolve(cwd, target),
  };
  for (const [key, value] of new URLSearchParams(query)) {
    if (key === 'synchronous') {
      const v = value.toLowerCase();
      if (v !== 'full' && v !== 'normal') {
        throw invalid(`synchronous must be 'full' (the default) or 'normal', got '${value}'`);
      }
      out.synchronous = v;
    } else if (key === 'busyTimeoutMs') {
      if (!/^\d+$/.test(value)) throw invalid(`busyTimeoutMs must be a non-negative integer, got '${value}'`);
      out.busyTimeoutMs = Number(value);
    } else {
      throw invalid(`unknown option '${key}' in '${url}'; SQLite options are synchronous and busyTimeoutMs`);
    }
  }
  return out;
}

/** A parsed `postgres://` connection string (see `parsePostgresConnection`). */
export type PostgresConnection = Pick<
  PostgresStoreOptions,
  'connectionString' | 'schema' | 'description' | 'poolSize' | 'connectTimeoutMs'
>;

/** Options of the `pg` driver passed through from a `postgres://` query string. */
const PG_OPTIONS = new Set([
  'application_name',
  'options',
  'sslmode',
  'ssl',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'host',
]);
const DEFAULT_SCHEMA = 'longhaul';
/** Lower-case SQL identifiers only, at most 63 bytes (PostgreSQL's limit); `pg_` names are reserved. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const MAX_POOL_SIZE = 1000;

/**
 * Parses a `postgres://` (or `postgresql://`) connection string: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`
 * with options as a query string. longhaul's own options: `schema` (the PostgreSQL schema holding the
 * store, default `longhaul`; a lower-case identifier), `poolSize` (most connections, default 10) and
 * `connectTimeoutMs` (default 10 000). The `pg` driver's `application_name`, `options`, `sslmode`, `ssl`,
 * `sslrootcert`, `sslcert`, `sslkey` and `host` (a Unix socket directory) pass through. Throws
 * ValidationError (field 'connection') on anything else; messages never contain the password.
 */
export function parsePostgresConnection(url: string): PostgresConnection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw invalid(
      `'${redactPostgres(url)}' is not a valid URL; write postgres://USER:PASSWORD@HOST:PORT/DB?schema=NAME ` +
        '(percent-encode special characters in the user name and password)',
    );
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw invalid(`'${redactPostgres(url)}' must start with postgres:// or postgresql://`);
  }
  if (parsed.hash !== '') throw invalid(`'${redactPostgres(url)}' has a '#' fragment; remove it`);
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  if (database.includes('/')) {
    throw invalid(`'${redactPostgres(url)}': the path must be one database name (postgres://HOST/DB)`);
  }
  let schema = DEFAULT_SCHEMA;
  let poolSize: number | undefined;
  let connectTimeoutMs: number | undefined;
  const passed = new URLSearchParams();
  for (const [key, value] of parsed.searchParams) {
    if (key === 'schema') {
      if (!SCHEMA_NAME.test(value) || value.startsWith('pg_')) {
        throw invalid(
          `schema must be a lower-case SQL identifier (letters a-z, digits and '_', not starting with a ` +
            `digit or 'pg_', at most 63 characters), got '${value}'`,
        );
      }
      schema = value;
    } else if (key === 'poolSize') {
      const n = Number(value);
      if (!/^\d+$/.test(value) || n < 1 || n > MAX_POOL_SIZE) {
        throw invalid(`poolSize must be an integer from 1 to ${MAX_POOL_SIZE}, got '${value}'`);
      }
      poolSize = n;
    } else if (key === 'connectTimeoutMs') {
      if (!/^\d+$/.test(value))
        throw invalid(`connectTimeoutMs must be a non-negative integer, got '${value}'`);
      connectTimeoutMs = Number(value);
    } else if (PG_OPTIONS.has(key)) {
      passed.append(key, value);
    } else {
      throw invalid(
        `unknown option '${key}' in a postgres:// connection string; longhaul's options are schema, poolSize ` +
          `and connectTimeoutMs, and the driver's ${[...PG_OPTIONS].join(', ')}`,
      );
    }
  }
  const driverUrl = new URL(parsed.href);
  driverUrl.search = passed.toString();
  const user = parsed.username ? `${parsed.username}@` : '';
  const out: { -readonly [K in keyof PostgresConnection]: PostgresConnection[K] } = {
    connectionString: driverUrl.href,
    schema,
    description: `${parsed.protocol}//${user}${parsed.host}${parsed.pathname}?schema=${schema}`,
  };
  if (poolSize !== undefined) out.poolSize = poolSize;
  if (connectTimeoutMs !== undefined) out.connectTimeoutMs = connectTimeoutMs;
  return out;
}

/**
 * Opens the store a connection string names. For SQLite, the resolved absolute path is logged at info
 * level once the store is open; for PostgreSQL, the connection string without its password. Anything
 * else is a ValidationError naming the field 'connection' and the accepted forms.
 */
export async function openStore(url: string, options: OpenStoreOptions): Promise<Store> {
  if (typeof url !== 'string') throw invalid(`must be a string, got ${typeof url}`);
  if (options.mode !== 'node' && options.mode !== 'client') {
    throw new ValidationError('mode', `must be 'node' or 'client', got '${String(options.mode)}'`);
  }
  // Each adapter and its driver load on first use: a process on SQLite never loads `pg` (about 10 MB of
  // memory), one on PostgreSQL never loads the SQLite addon.
  if (url.startsWith('sqlite:')) {
    const connection = parseSqliteConnection(url, process.cwd());
    const { SqliteStore } = await import('./sqlite/sqlite-store.js');
    return SqliteStore.open({ ...connection, mode: options.mode, logger: options.logger });
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const connection = parsePostgresConnection(url);
    const { PostgresStore } = await import('./postgres/postgres-store.js');
    return PostgresStore.open({ ...connection, mode: options.mode, logger: options.logger });
  }
  throw invalid(`'${redact(url)}' is not a connection string longhaul understands; ${ACCEPTED_FORMS}`);
}

function invalid(message: string): ValidationError {
  return new ValidationError('connection', message);
}

/**
 * Hides the credentials of a `postgres://` string that may not even parse: everything between `//` and
 * the last `@` (a password may itself hold `/`, `:` or `@`).
 */
function redactPostgres(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/).*@/i, '$1***@');
}

/** Hides a password in `scheme://user:password@host` before it reaches an error message. */
function redact(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, '$1:***@');
}
