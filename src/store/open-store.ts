import { resolve } from 'node:path';
import { StoreError, ValidationError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite/sqlite-store.js';
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

/**
 * Opens the store a connection string names. For SQLite, the resolved absolute path is logged at info
 * level once the store is open. `postgres://` fails with StoreError 'UNSUPPORTED_STORE' until the PostgreSQL adapter ships;
 * anything else is a ValidationError naming the field 'connection' and the accepted forms.
 */
export async function openStore(url: string, options: OpenStoreOptions): Promise<Store> {
  if (typeof url !== 'string') throw invalid(`must be a string, got ${typeof url}`);
  if (options.mode !== 'node' && options.mode !== 'client') {
    throw new ValidationError('mode', `must be 'node' or 'client', got '${String(options.mode)}'`);
  }
  if (url.startsWith('sqlite:')) {
    const connection = parseSqliteConnection(url, process.cwd());
    return SqliteStore.open({ ...connection, mode: options.mode, logger: options.logger });
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    throw new StoreError(
      'UNSUPPORTED_STORE',
      'the PostgreSQL store adapter is not available in this version of longhaul yet; use a SQLite store ' +
        '(sqlite:./longhaul.db) for now',
    );
  }
  throw invalid(`'${redact(url)}' is not a connection string longhaul understands; ${ACCEPTED_FORMS}`);
}

function invalid(message: string): ValidationError {
  return new ValidationError('connection', message);
}

/** Hides a password in `scheme://user:password@host` before it reaches an error message. */
function redact(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, '$1:***@');
}
