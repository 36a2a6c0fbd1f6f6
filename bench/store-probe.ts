/**
 * Cheap instrumentation for the PostgreSQL W1 breakdown: how long a store spends in transactions and
 * reads (each call's wall time, and the time at least one was in flight), how many statements the `pg`
 * driver sent meanwhile, and in how many round trips (a connection pipelines statements: one sent while
 * another of its connection is unanswered shares that one's round trip). `stop()` undoes every patch;
 * call it in a `finally`.
 */
import pg from 'pg';
import type { ReadOptions, Store, StoreReader, StoreTx } from '../src/store/store.js';

export interface StoreProbeResult {
  readonly transactions: number;
  readonly reads: number;
  /** Sum of the wall time of every transaction and read (ms), from call to settlement. */
  readonly callMs: number;
  /** Wall time during which at least one transaction or read was in flight (ms). */
  readonly busyMs: number;
  /** Queries sent by any `pg` client of this process (BEGIN and COMMIT included). */
  readonly statements: number;
  /** Queries sent while no earlier one of the same connection was unanswered: the waits for the server. */
  readonly roundTrips: number;
  /** The same queries by kind (`BEGIN`, `COMMIT`, `NOTIFY`, or the verb and first table: `SELECT runs`). */
  readonly byKind: ReadonlyMap<string, number>;
}

export interface StoreProbe {
  /** Undoes the patches and returns the figures; later calls return the same figures. */
  stop(): StoreProbeResult;
}

type Query = (this: object, ...args: unknown[]) => unknown;

export function probeStore(store: Store): StoreProbe {
  let transactions = 0;
  let reads = 0;
  let callMs = 0;
  let busyMs = 0;
  let active = 0;
  let busySince = 0;
  let statements = 0;
  let roundTrips = 0;
  const unanswered = new WeakMap<object, number>();
  const byKind = new Map<string, number>();
  const timed = <T>(p: () => Promise<T>): Promise<T> => {
    const start = performance.now();
    if (active++ === 0) busySince = start;
    return p().finally(() => {
      const end = performance.now();
      callMs += end - start;
      if (--active === 0) busyMs += end - busySince;
    });
  };
  const { transaction, read } = store;
  const callTransaction = transaction.bind(store);
  const callRead = read.bind(store);
  store.transaction = <T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> => {
    transactions++;
    return timed(() => callTransaction(fn));
  };
  store.read = <T>(fn: (tx: StoreReader) => Promise<T>, options?: ReadOptions): Promise<T> => {
    reads++;
    return timed(() => callRead(fn, options));
  };
  // The store's pool creates its connections from the same `pg.Client` class.
  const proto = pg.Client.prototype as unknown as { query: Query };
  const query = proto.query;
  proto.query = function (this: object, ...args: unknown[]) {
    statements++;
    const kind = statementKind(args[0]);
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
    const pending = unanswered.get(this) ?? 0;
    if (pending === 0) roundTrips++;
    const result = query.apply(this, args);
    if (!(result instanceof Promise)) return result;
    unanswered.set(this, pending + 1);
    const answered = () => unanswered.set(this, (unanswered.get(this) ?? 1) - 1);
    result.then(answered, answered);
    return result;
  };
  let result: StoreProbeResult | null = null;
  return {
    stop() {
      if (result) return result;
      store.transaction = transaction;
      store.read = read;
      proto.query = query;
      result = { transactions, reads, callMs, busyMs, statements, roundTrips, byKind };
      return result;
    },
  };
}

/**
 * `BEGIN`, `COMMIT`, `ROLLBACK`, `NOTIFY`, `SELECT run+activities` (getRunWithActivities), else the
 * first word and the first schema-qualified table (a batch of writes is `WITH` and its first table).
 */
function statementKind(query: unknown): string {
  const text =
    typeof query === 'string' ? query : String((query as { text?: unknown } | null)?.text ?? 'unknown');
  const verb = text.trimStart().split(/\s/, 1)[0]!.toUpperCase();
  if (verb === 'BEGIN' || verb === 'COMMIT' || verb === 'ROLLBACK') return verb;
  if (text.includes('pg_notify')) return 'NOTIFY';
  if (text.startsWith('WITH r AS (SELECT')) return 'SELECT run+activities';
  const table = /"[^"]+"\.(\w+)|\b\w+\.(\w+)/.exec(text);
  return table ? `${verb} ${table[1] ?? table[2]}` : verb;
}
