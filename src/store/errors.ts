/**
 * One table classifying database errors for every store adapter.
 *
 * The class decides what the adapter does with an error raised by the database driver:
 * - `busy`: another connection holds a lock (SQLITE_BUSY, SQLITE_LOCKED, PostgreSQL lock_not_available).
 *   Transient: roll back, back off, re-run the transaction.
 * - `serialization`: the transaction's snapshot is stale (PostgreSQL 40001, SQLITE_BUSY_SNAPSHOT).
 *   Transient: re-run the whole transaction.
 * - `deadlock`: the database aborted this transaction to break a deadlock (PostgreSQL 40P01). Transient.
 * - `connectionLost`: the connection went away (PostgreSQL 57P01-57P03, class 08 but for 08P01, socket
 *   errors).
 *   Transient, but a connection lost during COMMIT may or may not have committed: only callbacks that are
 *   safe to re-run (every store callback must be) may be retried.
 * - `constraint`: a uniqueness or integrity rule rejected the write (SQLITE_CONSTRAINT_*, PostgreSQL class
 *   23). Never retried; the adapter maps it to a StoreError with a specific code.
 * - `fatal`: anything else (corruption, disk full, bugs). Never retried.
 */
export type StoreErrorClass =
  | 'busy'
  | 'serialization'
  | 'deadlock'
  | 'connectionLost'
  | 'constraint'
  | 'fatal';

/** Exact driver codes. SQLite extended codes are looked up first, then their primary code. */
const BY_CODE: Readonly<Record<string, StoreErrorClass>> = {
  // SQLite (better-sqlite3 `SqliteError.code`)
  SQLITE_BUSY: 'busy',
  SQLITE_BUSY_RECOVERY: 'busy',
  SQLITE_BUSY_TIMEOUT: 'busy',
  SQLITE_BUSY_SNAPSHOT: 'serialization',
  SQLITE_LOCKED: 'busy',
  SQLITE_LOCKED_SHAREDCACHE: 'busy',
  SQLITE_CONSTRAINT: 'constraint',
  // PostgreSQL SQLSTATEs (`pg` error `.code`)
  '40001': 'serialization', // serialization_failure
  '40P01': 'deadlock', // deadlock_detected
  '55P03': 'busy', // lock_not_available
  '57P01': 'connectionLost', // admin_shutdown
  '57P02': 'connectionLost', // crash_shutdown
  '57P03': 'connectionLost', // cannot_connect_now
  // protocol_violation: the server refused a malformed message (a statement with more parameters than
  // the protocol can count, say). A client bug, not a lost connection: the connection stays usable, and
  // a re-run would fail alike.
  '08P01': 'fatal',
  '23505': 'constraint', // unique_violation
  '53300': 'busy', // too_many_connections: the server is at max_connections; a slot frees up soon
  // Node socket errors raised by network drivers
  ECONNRESET: 'connectionLost',
  ECONNREFUSED: 'connectionLost',
  EPIPE: 'connectionLost',
  ETIMEDOUT: 'connectionLost',
};

/** SQLSTATE classes (first two characters) for codes not listed above. */
const BY_SQLSTATE_CLASS: Readonly<Record<string, StoreErrorClass>> = {
  '08': 'connectionLost', // connection_exception
  '23': 'constraint', // integrity_constraint_violation
};

/**
 * Driver errors that carry no code, by message. The `pg` driver raises these itself when the socket
 * closes under a query or a checked-out client (e.g. after `pg_terminate_backend`), or a connect times out.
 */
const BY_MESSAGE: readonly (readonly [RegExp, StoreErrorClass])[] = [
  [/^Connection terminated/, 'connectionLost'],
  [/^Client has encountered a connection error and is not queryable/, 'connectionLost'],
  [/^timeout exceeded when trying to connect/, 'connectionLost'],
];

/** Classifies an error thrown by a database driver. Unknown errors (and non-errors) are `fatal`. */
export function classifyStoreError(err: unknown): StoreErrorClass {
  const code = errorCode(err);
  if (code === undefined) {
    const message = err instanceof Error ? err.message : undefined;
    const match = message === undefined ? undefined : BY_MESSAGE.find(([pattern]) => pattern.test(message));
    return match ? match[1] : 'fatal';
  }
  const exact = BY_CODE[code];
  if (exact) return exact;
  if (code.startsWith('SQLITE_')) {
    const primary = code.split('_', 2).join('_');
    return BY_CODE[primary] ?? 'fatal';
  }
  if (/^[0-9A-Z]{5}$/.test(code)) return BY_SQLSTATE_CLASS[code.slice(0, 2)] ?? 'fatal';
  return 'fatal';
}

/** True for the classes whose transaction may be rolled back and re-run. */
export function isTransientStoreErrorClass(cls: StoreErrorClass): boolean {
  return cls === 'busy' || cls === 'serialization' || cls === 'deadlock' || cls === 'connectionLost';
}

/** The driver's error code (`err.code` when it is a string). */
export function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}
