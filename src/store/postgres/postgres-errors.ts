/** The PostgreSQL adapter's errors, each saying what went wrong and what to do. */
import { StoreError } from '../../common/errors.js';
import { errorCode, type StoreErrorClass } from '../errors.js';

export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function closedError(where: string): StoreError {
  return new StoreError('STORE_CLOSED', `${where} is closed; open a new Store to keep using it`);
}

export function unavailable(where: string, err: unknown): StoreError {
  return new StoreError(
    'STORE_UNAVAILABLE',
    `cannot connect to ${where}: ${messageOf(err)}; check that PostgreSQL is running and reachable, and the ` +
      'user, database and credentials of the connection string',
    { cause: err },
  );
}

export function failure(where: string, err: unknown): StoreError {
  if (err instanceof StoreError) return err;
  return new StoreError('STORE_FAILURE', `${where}: ${messageOf(err)} (${errorCode(err) ?? 'no code'})`, {
    cause: err,
  });
}

export function retriesExhausted(
  where: string,
  budgetMs: number,
  cls: StoreErrorClass,
  cause: unknown,
): StoreError {
  const why =
    cls === 'connectionLost'
      ? 'kept losing its connection (is PostgreSQL restarting or unreachable?)'
      : cls === 'busy'
        ? 'kept finding the server busy'
        : `kept failing with ${cls === 'deadlock' ? 'deadlocks' : 'serialization failures'} (heavy contention on the same rows)`;
  return new StoreError(
    'STORE_UNAVAILABLE',
    `a transaction on ${where} ${why} for ${budgetMs} ms: ${messageOf(cause)}. It was not committed; retry it later.`,
    { cause },
  );
}
