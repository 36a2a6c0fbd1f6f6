import pg from 'pg';
import type { MigrationClient } from './postgres-migrations.js';
import type { PgQueryable, PgResult } from './postgres-tx-base.js';

/**
 * The connections of a PostgreSQL store: the part of `pg` the store uses, typed as just that, and the
 * pool every store opens (pipelining, bigint parsing, timeouts).
 */

/** The part of a `pg` pool client the store uses. */
export interface PostgresPoolClient extends PgQueryable, MigrationClient {
  /** The backend's process id (`pg` sets it once connected; absent from its type declarations). */
  readonly processID?: number | null;
  query(config: {
    readonly name?: string;
    readonly text: string;
    readonly values?: readonly unknown[];
  }): Promise<PgResult>;
  query<R = Record<string, unknown>>(text: string, values?: readonly unknown[]): Promise<{ rows: R[] }>;
  /** Returns the connection to the pool; with an error, closes it instead (its state is unknown). */
  release(destroy?: Error | boolean): void;
  on(event: 'error', listener: (err: Error) => void): unknown;
  off(event: 'error', listener: (err: Error) => void): unknown;
}

/** The part of a `pg.Pool` the store uses. */
export interface PostgresPool {
  connect(): Promise<PostgresPoolClient>;
  end(): Promise<void>;
  on(event: 'error', listener: (err: Error) => void): unknown;
  /** A connection left the pool (closed, broken, idle too long). */
  on(event: 'remove', listener: (client: PostgresPoolClient) => void): unknown;
}

const DEFAULT_POOL_SIZE = 10;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Idle pooled connections close after this many ms. */
const IDLE_TIMEOUT_MS = 30_000;
const INT8_OID = 20;
const INT8_ARRAY_OID = 1016;

/**
 * `bigint` columns read back as numbers, not strings (every time, id and counter the engine stores is a
 * safe integer). Set on this store's pool only, never on the `pg` module (no global side effects).
 */
const TYPES = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID) return (value: string) => Number(value);
    // `{1,2,3}`: the adapter reads only one-dimensional bigint[] without NULLs.
    if (oid === INT8_ARRAY_OID)
      return (value: string) => (value === '{}' ? [] : value.slice(1, -1).split(',').map(Number));
    return pg.types.getTypeParser(oid, format ?? 'text');
  },
} as pg.CustomTypesConfig;

/** What a store's pool is made from (PostgresStoreOptions). */
export interface PoolOptions {
  readonly connectionString: string;
  /** Most connections (default 10). */
  readonly poolSize?: number;
  /** How long, in ms, opening a connection may take before it counts as failed (default 10 000). */
  readonly connectTimeoutMs?: number;
}

export function createPool(options: PoolOptions): PostgresPool {
  return new pg.Pool({
    connectionString: options.connectionString,
    max: options.poolSize ?? DEFAULT_POOL_SIZE,
    connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    allowExitOnIdle: true,
    types: TYPES,
    // Queries go out without waiting for the answers to earlier ones (pg >= 8.23): BEGIN with the first
    // statement, the last batch of writes with COMMIT. Answers come back in order.
    pipeline: true,
  });
}
