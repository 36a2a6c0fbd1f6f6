import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreError, ValidationError } from '../../src/common/errors.js';
import type { HistoryEvent, NewEvent } from '../../src/common/events.js';
import type { Logger } from '../../src/common/logger.js';
import { run } from '../../src/store/conformance/records.js';
import { classifyStoreError, isTransientStoreErrorClass } from '../../src/store/errors.js';
import { openStore, parseSqliteConnection } from '../../src/store/open-store.js';
import {
  checkSchemaForClient,
  migrateSchema,
  SQLITE_MIGRATIONS,
  SQLITE_SCHEMA_VERSION,
} from '../../src/store/sqlite/sqlite-migrations.js';
import { SqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite/sqlite-store.js';
import type { RunRecord, Store, StoreTx } from '../../src/store/store.js';
import { spawnFixture } from './fixtures/spawn-fixture.js';

let dir: string;
let file: string;
const opened: Store[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'longhaul-sqlite-'));
  file = join(dir, 'store.db');
});
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function open(url: string, mode: 'node' | 'client' = 'node', logger?: Logger): Promise<Store> {
  const store = await openStore(url, { mode, logger });
  opened.push(store);
  return store;
}

async function openSqlite(options: Partial<SqliteStoreOptions>): Promise<SqliteStore> {
  const store = await SqliteStore.open({ path: file, mode: 'node', ...options });
  opened.push(store);
  return store;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

function raw(path = file): Database.Database {
  return new Database(path, { fileMustExist: true });
}

function schemaSnapshot(path = file): unknown {
  const db = raw(path);
  try {
    return {
      master: db.prepare('SELECT type, name, sql FROM sqlite_master ORDER BY name').all(),
      meta: db.prepare('SELECT key, value FROM meta ORDER BY key').all(),
    };
  } finally {
    db.close();
  }
}

function counterRun(): RunRecord {
  return run({ workflowId: 'counter', runId: 'counter', workflowType: 'counter', nextEventId: 0 });
}

async function increment(store: Store): Promise<void> {
  await store.transaction(async (tx) => {
    const run = await tx.getRun('counter');
    await tx.updateRun('counter', { nextEventId: run!.nextEventId + 1 });
  });
}

async function counter(store: Store): Promise<number> {
  return (await store.read((tx) => tx.getRun('counter')))!.nextEventId;
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('connection settings', () => {
  it('every connection runs WAL with synchronous=FULL and a 50 ms busy timeout (node and client)', async () => {
    const node = (await open(`sqlite:${file}`)) as SqliteStore;
    const client = (await open(`sqlite:${file}`, 'client')) as SqliteStore;
    for (const store of [node, client]) {
      const settings = store.connectionSettings();
      expect(settings.length).toBeGreaterThan(0);
      for (const s of settings) {
        expect(s).toMatchObject({ journalMode: 'wal', synchronous: 2, busyTimeoutMs: 50 });
        if (process.platform === 'darwin') expect(s.fullfsync).toBe(1);
      }
    }
    const db = raw();
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('honours synchronous=normal and busyTimeoutMs from the connection string', async () => {
    const store = (await open(`sqlite:${file}?synchronous=normal&busyTimeoutMs=250`)) as SqliteStore;
    expect(store.connectionSettings()[0]).toMatchObject({
      journalMode: 'wal',
      synchronous: 1,
      busyTimeoutMs: 250,
    });
    const mem = (await open('sqlite::memory:')) as SqliteStore;
    expect(mem.connectionSettings()[0]).toMatchObject({ journalMode: 'memory', synchronous: 2 });
    expect(mem.capabilities.sharedAcrossProcesses).toBe(false);
    expect(store.capabilities.sharedAcrossProcesses).toBe(true);
  });

  it('resolves a relative path against the current directory and logs the absolute path', async () => {
    const lines: { message: string; fields?: Record<string, unknown> }[] = [];
    const logger: Logger = {
      debug() {},
      info: (message, fields) => lines.push({ message, fields }),
      warn() {},
      error() {},
    };
    const store = await open(`sqlite:${relative(process.cwd(), file)}`, 'node', logger);
    expect(store.description).toBe(`sqlite:${file}`);
    expect(existsSync(file)).toBe(true);
    expect(lines.some((l) => l.fields?.path === file)).toBe(true);
  });
});

describe('schema versions', () => {
  it('a node creates the schema at the newest version; opening again changes nothing', async () => {
    await (await open(`sqlite:${file}`)).close();
    const db = raw();
    expect(db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get()).toEqual({
      value: String(SQLITE_SCHEMA_VERSION),
    });
    db.close();
    const before = schemaSnapshot();
    await (await open(`sqlite:${file}`)).close();
    expect(schemaSnapshot()).toEqual(before);
  });

  it('refuses a store with a newer schema (SCHEMA_TOO_NEW) and modifies nothing', async () => {
    await (await open(`sqlite:${file}`)).close();
    const db = raw();
    db.prepare("UPDATE meta SET value = '999' WHERE key = 'schema_version'").run();
    db.close();
    const before = schemaSnapshot();
    for (const mode of ['node', 'client'] as const) {
      const err = await rejection(openStore(`sqlite:${file}`, { mode }));
      expect(err).toBeInstanceOf(StoreError);
      expect((err as StoreError).code).toBe('SCHEMA_TOO_NEW');
      expect((err as Error).message).toMatch(/999/);
      expect((err as Error).message).toMatch(/upgrade longhaul/i);
    }
    expect(schemaSnapshot()).toEqual(before);
  });

  it('a node migrates step by step; an older longhaul then refuses the store', async () => {
    await (await open(`sqlite:${file}`)).close();
    const next = [
      ...SQLITE_MIGRATIONS,
      { version: 2, description: 'test step', sql: 'CREATE TABLE extra (x)' },
    ];
    const db = raw();
    expect(migrateSchema(db, file, next)).toEqual({ from: 1, to: 2 });
    expect(migrateSchema(db, file, next)).toEqual({ from: 2, to: 2 });
    db.close();
    const err = await rejection(openStore(`sqlite:${file}`, { mode: 'node' }));
    expect((err as StoreError).code).toBe('SCHEMA_TOO_NEW');
  });

  it('a client refuses an older schema and asks for a node of this version to migrate it', async () => {
    await (await open(`sqlite:${file}`)).close();
    const db = raw();
    let err: unknown;
    try {
      checkSchemaForClient(db, file, SQLITE_SCHEMA_VERSION + 1);
    } catch (e) {
      err = e;
    }
    db.close();
    expect((err as StoreError).code).toBe('SCHEMA_TOO_OLD');
    expect((err as Error).message).toMatch(/start a worker/);
  });

  it('several nodes opening a new file at once all succeed with one schema', async () => {
    const stores = await Promise.all(Array.from({ length: 6 }, () => open(`sqlite:${file}`)));
    await stores[0]!.transaction((tx) => tx.insertRun(counterRun()));
    for (const s of stores) expect(await counter(s)).toBe(0);
    const db = raw();
    expect(db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get()).toEqual({ value: '1' });
    db.close();
  });

  it('refuses a SQLite database that longhaul did not create, and a file that is not SQLite', async () => {
    const db = new Database(file);
    db.exec('CREATE TABLE users (id INTEGER)');
    db.close();
    const err = await rejection(openStore(`sqlite:${file}`, { mode: 'node' }));
    expect((err as StoreError).code).toBe('NOT_A_LONGHAUL_STORE');
    const check = raw();
    expect(check.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([
      { name: 'users' },
    ]);
    check.close();

    const junk = join(dir, 'junk.db');
    writeFileSync(junk, 'this is not a database, just some text that is long enough '.repeat(20));
    const err2 = await rejection(openStore(`sqlite:${junk}`, { mode: 'node' }));
    expect(err2).toBeInstanceOf(StoreError);
    expect((err2 as StoreError).code).toBe('STORE_OPEN_FAILED');
  });
});

describe('external changes', () => {
  it("stays the same across this store's own commits and changes when another connection commits", async () => {
    const store = (await open(`sqlite:${file}`)) as SqliteStore;
    const other = await open(`sqlite:${file}`);
    const before = store.externalChanges();
    await store.transaction((tx) => tx.insertRun(run()));
    await store.transaction((tx) => tx.updateRun('run-1', { nextEventId: 4 }));
    await store.read((tx) => tx.getRun('run-1'));
    expect(store.externalChanges()).toBe(before);
    await other.transaction((tx) => tx.updateRun('run-1', { nextEventId: 5 }));
    const after = store.externalChanges();
    expect(after).not.toBe(before);
    // And a commit of this store is, again, none of its own business.
    await store.transaction((tx) => tx.updateRun('run-1', { nextEventId: 6 }));
    expect(store.externalChanges()).toBe(after);
    await store.close();
    expect(store.externalChanges()).toBeNaN();
  });
});

describe('client mode', () => {
  it('fails with STORE_NOT_FOUND on a missing file and creates nothing', async () => {
    const err = await rejection(openStore(`sqlite:${file}`, { mode: 'client' }));
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_NOT_FOUND');
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(/does not exist/);
    expect((err as Error).message).toMatch(/worker/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('fails with STORE_NOT_FOUND on a file without a schema and leaves it untouched', async () => {
    writeFileSync(file, '');
    const err = await rejection(openStore(`sqlite:${file}`, { mode: 'client' }));
    expect((err as StoreError).code).toBe('STORE_NOT_FOUND');
    expect((err as Error).message).toMatch(/no longhaul schema/);
    expect(statSync(file).size).toBe(0);
    expect(readdirSync(dir)).toEqual(['store.db']);
  });

  it('refuses sqlite::memory:, which no client can share', async () => {
    const err = await rejection(openStore('sqlite::memory:', { mode: 'client' }));
    expect((err as StoreError).code).toBe('STORE_NOT_FOUND');
  });

  it('connects to a store a node created and sees its data', async () => {
    const node = await open(`sqlite:${file}`);
    await node.transaction((tx) => tx.insertRun(counterRun()));
    const client = await open(`sqlite:${file}`, 'client');
    expect(await counter(client)).toBe(0);
  });
});

describe('connection strings', () => {
  const invalid = async (url: string, pattern: RegExp) => {
    const err = await rejection(openStore(url, { mode: 'node' }));
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe('connection');
    expect((err as Error).message).toMatch(pattern);
  };

  it('rejects unknown schemes, naming the accepted forms', async () => {
    await invalid('mysql://localhost/db', /sqlite:PATH.*sqlite::memory:.*postgres:\/\//);
    await invalid('./longhaul.db', /accepted forms/);
    await invalid('', /accepted forms/);
  });

  it('rejects malformed sqlite: strings and options', async () => {
    await invalid('sqlite:', /no file path/);
    await invalid('sqlite:?synchronous=full', /no file path/);
    await invalid(`sqlite:${file}?synchronous=off`, /synchronous must be 'full'.*or 'normal'/);
    await invalid(`sqlite:${file}?busyTimeoutMs=soon`, /busyTimeoutMs must be a non-negative integer/);
    await invalid(`sqlite:${file}?busyTimeoutMs=-5`, /busyTimeoutMs/);
    await invalid(`sqlite:${file}?journal=delete`, /unknown option 'journal'/);
    await invalid('sqlite://relative.db', /without '\/\/'/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('parses paths and options', () => {
    expect(parseSqliteConnection('sqlite:./a/b.db', '/srv/app')).toEqual({ path: '/srv/app/a/b.db' });
    expect(parseSqliteConnection('sqlite:/var/x.db', '/srv/app')).toEqual({ path: '/var/x.db' });
    expect(parseSqliteConnection('sqlite:///var/x.db', '/srv/app')).toEqual({ path: '/var/x.db' });
    expect(parseSqliteConnection('sqlite::memory:?synchronous=NORMAL', '/srv')).toEqual({
      path: ':memory:',
      synchronous: 'normal',
    });
    expect(parseSqliteConnection('sqlite:x.db?busyTimeoutMs=0&synchronous=full', '/srv')).toEqual({
      path: '/srv/x.db',
      busyTimeoutMs: 0,
      synchronous: 'full',
    });
  });
});

describe('error classification', () => {
  it.each([
    ['SQLITE_BUSY', 'busy'],
    ['SQLITE_BUSY_SNAPSHOT', 'serialization'],
    ['SQLITE_LOCKED', 'busy'],
    ['SQLITE_CONSTRAINT_UNIQUE', 'constraint'],
    ['SQLITE_CONSTRAINT_PRIMARYKEY', 'constraint'],
    ['SQLITE_IOERR_FSYNC', 'fatal'],
    ['SQLITE_CORRUPT', 'fatal'],
    ['40001', 'serialization'],
    ['40P01', 'deadlock'],
    ['57P01', 'connectionLost'],
    ['08006', 'connectionLost'],
    ['23505', 'constraint'],
    ['23503', 'constraint'],
    ['42P01', 'fatal'],
    ['ECONNRESET', 'connectionLost'],
  ])('%s is %s', (code, cls) => {
    expect(classifyStoreError(Object.assign(new Error('x'), { code }))).toBe(cls);
  });

  it('only busy, serialization, deadlock and connectionLost are transient; unknown errors are fatal', () => {
    expect(classifyStoreError(new Error('no code'))).toBe('fatal');
    expect(classifyStoreError('string')).toBe('fatal');
    const transient = (
      ['busy', 'serialization', 'deadlock', 'connectionLost', 'constraint', 'fatal'] as const
    ).filter(isTransientStoreErrorClass);
    expect(transient).toEqual(['busy', 'serialization', 'deadlock', 'connectionLost']);
  });
});

describe('locking', () => {
  /** Holds the write lock of `store` until the returned release function is called. */
  async function holdWriteLock(store: Store): Promise<{ release(): void; done: Promise<void> }> {
    let release!: () => void;
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => {
      locked = r;
    });
    const done = store.transaction(async (tx) => {
      await tx.updateRun('counter', { wftToken: 1 });
      locked();
      await new Promise<void>((r) => {
        release = r;
      });
    });
    await isLocked;
    return { release: () => release(), done };
  }

  it('a transaction waits for another connection’s write lock without freezing the event loop', async () => {
    const a = await openSqlite({});
    const b = await openSqlite({});
    await a.transaction((tx) => tx.insertRun(counterRun()));
    const lock = await holdWriteLock(a);
    let maxGap = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 5);
    const started = performance.now();
    let calls = 0;
    const waiting = b.transaction(async (tx) => {
      calls++;
      const run = await tx.getRun('counter');
      await tx.updateRun('counter', { nextEventId: run!.nextEventId + 10 });
      return run!.wftToken;
    });
    // The lock is held for 1.5 s: an event loop frozen by the wait would show a gap that long; a loaded
    // machine may delay the ticker a few hundred ms, which the bound leaves room for.
    setTimeout(lock.release, 1500);
    const tokenSeen = await within(waiting, 10_000, 'the waiting transaction');
    clearInterval(ticker);
    await lock.done;
    expect(performance.now() - started).toBeGreaterThanOrEqual(1400);
    expect(tokenSeen).toBe(1);
    expect(calls).toBe(1);
    expect(maxGap).toBeLessThan(1000);
    expect(await counter(a)).toBe(10);
  });

  it('gives up after the retry budget with STORE_BUSY, committing nothing', async () => {
    const a = await openSqlite({});
    const b = await openSqlite({ busyRetryBudgetMs: 200 });
    await a.transaction((tx) => tx.insertRun(counterRun()));
    const lock = await holdWriteLock(a);
    let calls = 0;
    const started = performance.now();
    const err = await within(
      rejection(
        b.transaction(async (tx: StoreTx) => {
          calls++;
          await tx.updateRun('counter', { nextEventId: 99 });
        }),
      ),
      10_000,
      'STORE_BUSY',
    );
    lock.release();
    await lock.done;
    expect(performance.now() - started).toBeGreaterThanOrEqual(200);
    expect((err as StoreError).code).toBe('STORE_BUSY');
    expect((err as Error).message).toMatch(/locked/);
    expect(calls).toBe(0);
    expect(await counter(a)).toBe(0);
  });

  it('runs the transactions of one store in call order, and read handles refuse writes', async () => {
    const store = await openSqlite({});
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        store.transaction(async () => {
          await new Promise((r) => setTimeout(r, (10 - i) % 3));
          order.push(i);
        }),
      ),
    );
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const err = await rejection(store.read((tx) => (tx as StoreTx).insertRun(counterRun())));
    expect((err as StoreError).code).toBe('READ_ONLY');
  });
});

describe('group commit', () => {
  it('concurrent transactions share physical commits; each caller gets its own result', async () => {
    const store = await openSqlite({});
    await store.transaction((tx) => tx.insertRun(counterRun()));
    const before = store.stats();
    const values = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        store.transaction(async (tx) => {
          const run = await tx.getRun('counter');
          await tx.updateRun('counter', { nextEventId: run!.nextEventId + 1 });
          return i;
        }),
      ),
    );
    expect(values).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(await counter(store)).toBe(100);
    const after = store.stats();
    expect(after.transactions - before.transactions).toBe(100);
    // 100 callbacks queued together: at most 64 per COMMIT, so two commits, not a hundred.
    expect(after.commits - before.commits).toBeLessThanOrEqual(4);
    expect(after.largestGroup).toBeGreaterThan(1);
    expect(after.largestGroup).toBeLessThanOrEqual(64);
  });

  it('a lone transaction commits at once, without waiting for company', async () => {
    const store = await openSqlite({});
    const before = store.stats();
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      await store.transaction((tx) => tx.insertRun(run({ runId: `r${i}`, workflowId: `w${i}` })));
    }
    const after = store.stats();
    expect(after.commits - before.commits).toBe(20);
    expect((performance.now() - started) / 20).toBeLessThan(20);
  });

  it('a throwing callback in a group is rolled back to its savepoint; its error reaches only its caller', async () => {
    const store = await openSqlite({});
    const boom = new Error('boom');
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        store.transaction(async (tx) => {
          await tx.insertRun(run({ runId: `r${i}`, workflowId: `w${i}` }));
          if (i === 4) throw boom;
          return i;
        }),
      ),
    );
    expect(outcomes[4]).toEqual({ status: 'rejected', reason: boom });
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(9);
    expect(store.stats().callbackFailures).toBe(1);
    expect(await store.read((tx) => tx.getRun('r4'))).toBeUndefined();
    expect(await store.read((tx) => tx.getRun('r5'))).toBeDefined();
  });

  it('a COMMIT that fails is never acknowledged: the group re-runs one by one and only the culprit fails', async () => {
    const store = await openSqlite({});
    // A deferred foreign key, broken by a trigger on one timer key, fails the COMMIT itself (not a
    // statement): SQLite checks deferred constraints when the transaction commits.
    const db = raw();
    db.exec(`
      CREATE TABLE poison_parent (id INTEGER PRIMARY KEY);
      CREATE TABLE poison_child (p INTEGER REFERENCES poison_parent (id) DEFERRABLE INITIALLY DEFERRED);
      CREATE TRIGGER poison AFTER INSERT ON timers WHEN NEW.timer_key = 'poison'
        BEGIN INSERT INTO poison_child VALUES (42); END;
    `);
    db.close();
    const calls = new Map<number, number>();
    const outcomes = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) =>
        store.transaction(async (tx) => {
          calls.set(i, (calls.get(i) ?? 0) + 1);
          await tx.insertTimer({
            namespace: 'default',
            runId: `r${i}`,
            timerKey: i === 2 ? 'poison' : 'fine',
            kind: 'user',
            fireAt: 1,
            startedEventId: 1,
          });
          return i;
        }),
      ),
    );
    expect(outcomes.map((o) => o.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
      'fulfilled',
    ]);
    const err = (outcomes[2] as PromiseRejectedResult).reason as StoreError;
    expect(err).toBeInstanceOf(StoreError);
    expect(err.code).toBe('STORE_FAILURE');
    expect(err.message).toMatch(/FOREIGN ?KEY/i);
    // Every callback ran in the failed group and once more alone.
    expect([...calls.values()]).toEqual([2, 2, 2, 2, 2, 2]);
    const stats = store.stats();
    expect(stats.isolations).toBe(1);
    await store.read(async (tx) => {
      for (const i of [0, 1, 3, 4, 5]) expect(await tx.listTimers(`r${i}`)).toHaveLength(1);
      expect(await tx.listTimers('r2')).toEqual([]);
    });
  });

  it('reads see every transaction that resolved before them, while a write group is open', async () => {
    const store = await openSqlite({});
    await store.transaction((tx) => tx.insertRun(counterRun()));
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let entered!: () => void;
    const inside = new Promise<void>((r) => {
      entered = r;
    });
    const open = store.transaction(async (tx) => {
      await tx.updateRun('counter', { nextEventId: 5 });
      entered();
      await gate;
    });
    await inside;
    // The read does not wait for the open group, and does not see its uncommitted write.
    expect(await within(counter(store), 2_000, 'a read during an open group')).toBe(0);
    release();
    await open;
    expect(await counter(store)).toBe(5);
    expect(store.connectionSettings()).toHaveLength(2);
  });

  it('checkpoint() moves the WAL into the database file and truncates it', async () => {
    const store = await openSqlite({});
    for (let i = 0; i < 5; i++)
      await store.transaction((tx) => tx.insertRun(run({ runId: `r${i}`, workflowId: `w${i}` })));
    expect(statSync(`${file}-wal`).size).toBeGreaterThan(0);
    expect(await store.checkpoint()).toEqual({ busy: false, remainingFrames: 0 });
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(await store.read((tx) => tx.getRun('r4'))).toBeDefined();
  });
});

function marker(n: number, time = 1_700_000_000_000 + n): NewEvent {
  return {
    type: 'MarkerRecorded',
    time,
    attributes: { markerName: 'm', details: { n, text: 'x'.repeat(20) } },
  };
}

async function append(
  store: Store,
  runId: string,
  first: number,
  events: readonly NewEvent[],
): Promise<void> {
  await store.transaction((tx) => tx.appendEvents(runId, first, events));
}

/** Rows of the history tables, straight from the file. */
function historyRows(path = file): { chunks: { format: number }[]; tails: number } {
  const db = raw(path);
  try {
    return {
      chunks: db.prepare('SELECT unicode(chunk) AS format FROM history ORDER BY chunk_key').all() as {
        format: number;
      }[],
      tails: (db.prepare('SELECT count(*) AS n FROM history_tail').get() as { n: number }).n,
    };
  } finally {
    db.close();
  }
}

/** A store whose compactor only runs when the test asks (`compactHistory`) or at close. */
function manualCompaction(idleMs = 0): Partial<SqliteStoreOptions> {
  return { historyCompaction: { idleMs, intervalMs: 0 } };
}

describe('storage layout', () => {
  it('keeps a short history in one compressed chunk row and reads any slice of it', async () => {
    const store = await openSqlite(manualCompaction());
    const runId = '0b7e6a52-6f1c-4a4e-9d7e-0c2f5f9f6a11';
    let next = 1;
    for (const size of [2, 1, 3, 5]) {
      await append(
        store,
        runId,
        next,
        Array.from({ length: size }, (_, k) => marker(next + k)),
      );
      next += size;
      await store.compactHistory();
    }
    const db = raw();
    const key = db.prepare('SELECT typeof(run_id) AS t, length(run_id) AS l FROM run_keys').get();
    db.close();
    expect(historyRows()).toEqual({ chunks: [{ format: 1 }], tails: 0 });
    expect(key).toEqual({ t: 'blob', l: 16 });
    const events = await store.read((tx) => tx.readEvents(runId));
    expect(events.map((e) => e.eventId)).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));
    expect(events[6]).toEqual({ eventId: 7, ...marker(7) });
    expect((await store.read((tx) => tx.readEvents(runId, 4, 3))).map((e) => e.eventId)).toEqual([4, 5, 6]);
    expect((await store.read((tx) => tx.readEvents(runId, 11, 3))).map((e) => e.eventId)).toEqual([11]);
  });

  it('starts a new chunk once the last one is large, and reads across chunks', async () => {
    const store = await openSqlite(manualCompaction());
    const runId = 'text-id';
    for (let i = 1; i <= 60; i++) {
      await append(store, runId, i, [
        {
          type: 'SignalReceived',
          time: 1_700_000_000_000 + i * 1000.5,
          attributes: { signalName: `s${i}`, input: [Math.random().toString(36).repeat(4)] },
        },
      ]);
      await store.compactHistory();
    }
    const rows = historyRows();
    expect(rows.chunks.length).toBeGreaterThan(1);
    expect(rows.tails).toBe(0);
    const events = await store.read((tx) => tx.readEvents(runId, 5, 50));
    expect(events.map((e) => e.eventId)).toEqual(Array.from({ length: 50 }, (_, i) => i + 5));
    expect(events[0]!.time).toBe(1_700_000_000_000 + 5 * 1000.5);
    expect((events[0]!.attributes as { signalName: string }).signalName).toBe('s5');
  });
});

describe('history compaction', () => {
  /** `length` characters that deflate cannot shrink much, the same for the same length. */
  const noise = (length: number): string => {
    let x = length;
    let out = '';
    while (out.length < length) {
      x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
      out += x.toString(36);
    }
    return out.slice(0, length);
  };

  it('appends never compress or decompress: events go to a raw tail', async () => {
    const store = await openSqlite(manualCompaction());
    for (let i = 1; i <= 30; i++) await append(store, 'r1', i, [marker(i)]);
    await store.compactHistory({ all: true });
    const compacted = store.stats();
    expect(compacted.deflates).toBe(1);
    // Appending after a compaction still touches no compressed chunk.
    for (let i = 31; i <= 60; i++) await append(store, 'r1', i, [marker(i)]);
    for (let i = 1; i <= 20; i++) await append(store, `other-${i}`, 1, [marker(1), marker(2)]);
    const after = store.stats();
    expect(after.deflates).toBe(compacted.deflates);
    expect(after.inflates).toBe(compacted.inflates);
    expect(historyRows()).toEqual({ chunks: [{ format: 1 }], tails: 21 });
    const events = await store.read((tx) => tx.readEvents('r1'));
    expect(events).toEqual(Array.from({ length: 60 }, (_, i) => ({ eventId: i + 1, ...marker(i + 1) })));
    // The last event, from the tail, then (all compacted) from the last chunk.
    expect(await store.read((tx) => tx.lastEvent('r1'))).toEqual({ eventId: 60, ...marker(60) });
    await store.compactHistory({ all: true });
    expect(historyRows().tails).toBe(0);
    expect(await store.read((tx) => tx.lastEvent('r1'))).toEqual({ eventId: 60, ...marker(60) });
    expect(await store.read((tx) => tx.lastEvent('other-3'))).toEqual({ eventId: 2, ...marker(2) });
  });

  it('compresses tails idle for idleMs and leaves recently appended ones alone', async () => {
    // Long enough that a stall of the machine between the second append and the compaction (a loaded
    // CI run has shown 900 ms) does not make the recent tail due too.
    const idleMs = 2000;
    const store = await openSqlite(manualCompaction(idleMs));
    await append(store, 'idle', 1, [marker(1), marker(2)]);
    // Due times are rounded up to a quarter of idleMs.
    await new Promise((r) => setTimeout(r, idleMs * 1.25 + 150));
    await append(store, 'busy', 1, [marker(1), marker(2)]);
    await store.compactHistory();
    expect(store.stats().tailsCompacted).toBe(1);
    const db = raw();
    const tails = db.prepare('SELECT k.run_id FROM history_tail t JOIN run_keys k ON k.rk = t.rk').all();
    db.close();
    expect(tails).toEqual([{ run_id: 'busy' }]);
    expect(historyRows().chunks).toHaveLength(1);
  });

  it('a tail whose run waits for a workflow task is due only after 300 times idleMs', async () => {
    const idleMs = 10; // the waiting tail is due after 3 s, well past any stall before the first check
    const store = await openSqlite(manualCompaction(idleMs));
    const scheduled: NewEvent = {
      type: 'WorkflowTaskScheduled',
      time: 1_700_000_000_002,
      attributes: { taskQueue: 'q', attempt: 1 },
    };
    const appended = performance.now();
    await append(store, 'waiting', 1, [marker(1), scheduled]);
    await append(store, 'idle', 1, [marker(1), marker(2)]);
    await new Promise((r) => setTimeout(r, idleMs * 10));
    await store.compactHistory();
    const tailRuns = () => {
      const db = raw();
      try {
        return db.prepare('SELECT k.run_id FROM history_tail t JOIN run_keys k ON k.rk = t.rk').all();
      } finally {
        db.close();
      }
    };
    // A worker appends the task's outcome to that tail before long: compacting it now would be wasted.
    expect(tailRuns()).toEqual([{ run_id: 'waiting' }]);
    // With no worker to take the task, the tail is still compacted, later.
    await new Promise((r) => setTimeout(r, Math.max(0, appended + idleMs * 300 + 100 - performance.now())));
    await store.compactHistory();
    expect(tailRuns()).toEqual([]);
    expect(await store.read((tx) => tx.readEvents('waiting'))).toEqual([
      { eventId: 1, ...marker(1) },
      { eventId: 2, ...scheduled },
    ]);
  });

  it('the compactor timer compresses idle tails on its own', async () => {
    const store = await openSqlite({ historyCompaction: { idleMs: 20, intervalMs: 10 } });
    for (let i = 1; i <= 5; i++) await append(store, `r${i}`, 1, [marker(1), marker(2), marker(3)]);
    const started = performance.now();
    while (historyRows().tails > 0) {
      if (performance.now() - started > 10_000) throw new Error('the compactor did not run within 10 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(store.stats().tailsCompacted).toBe(5);
    expect(historyRows().chunks).toHaveLength(5);
    for (let i = 1; i <= 5; i++) {
      expect(await store.read((tx) => tx.readEvents(`r${i}`))).toEqual(
        [1, 2, 3].map((n) => ({ eventId: n, ...marker(n) })),
      );
    }
  });

  it('readEvents returns exactly the same events before and after each compaction', async () => {
    const store = await openSqlite(manualCompaction());
    const runId = 'mixed';
    const times = [
      1_700_000_000_000,
      1_700_000_000_000.25,
      0.1 + 0.2,
      -5,
      1e21,
      Number.MAX_SAFE_INTEGER,
      1_700_000_000_123,
    ];
    const expected: HistoryEvent[] = [];
    let next = 1;
    const snapshot = async () => {
      const all = await store.read((tx) => tx.readEvents(runId));
      const slices: HistoryEvent[][] = [];
      for (let from = 1; from <= next; from += 3) {
        slices.push(await store.read((tx) => tx.readEvents(runId, from, 4)));
      }
      return { all, slices };
    };
    for (let round = 0; round < 12; round++) {
      const batch = Array.from({ length: 1 + (round % 4) }, (_, k): NewEvent => {
        const n = next + k;
        return {
          type: 'SignalReceived',
          time: times[n % times.length]!,
          attributes: {
            signalName: `s${n}`,
            input: [{ z: n, a: 'héllo — 你好 — 👩‍👩‍👧‍👦 "q" \\ \n', noise: noise(n * 40), n: 1 / 3 }],
          },
        };
      });
      await append(store, runId, next, batch);
      for (const [k, e] of batch.entries()) expected.push({ eventId: next + k, ...e } as HistoryEvent);
      next += batch.length;
      const before = await snapshot();
      expect(before.all).toEqual(expected);
      if (round % 3 !== 2) await store.compactHistory({ all: true });
      const after = await snapshot();
      expect(after).toEqual(before);
      for (let i = 0; i < expected.length; i++) {
        expect(JSON.stringify(after.all[i]!.attributes)).toBe(JSON.stringify(expected[i]!.attributes));
      }
    }
    expect(historyRows().chunks.length).toBeGreaterThan(1);
  });

  it('an append from another Store on the same file while compacting is never lost', async () => {
    const compacting = await openSqlite({ historyCompaction: { idleMs: 0, intervalMs: 1 } });
    const appending = await openSqlite(manualCompaction(60_000));
    const runs = ['a', 'b', 'c'];
    const count = 120;
    let appended = false;
    const compactions = (async () => {
      while (!appended) {
        await compacting.compactHistory({ all: true });
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 1; i <= count; i++) {
      await Promise.all(runs.map((r) => append(appending, r, i, [marker(i)])));
      // Let the other store's compaction in between the appends now and then.
      if (i % 4 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    appended = true;
    await compactions;
    // Compactions and appends interleaved many times (each compaction merges a tail into its chunk).
    expect(compacting.stats().tailsCompacted).toBeGreaterThan(30);
    const expected = Array.from({ length: count }, (_, i) => ({ eventId: i + 1, ...marker(i + 1) }));
    for (const r of runs) {
      expect(await appending.read((tx) => tx.readEvents(r))).toEqual(expected);
    }
    await compacting.compactHistory({ all: true });
    for (const r of runs) {
      expect(await compacting.read((tx) => tx.readEvents(r))).toEqual(expected);
    }
    expect(historyRows().tails).toBe(0);
  });

  it('close() compresses every tail, recent ones too, and gives the freed pages back', async () => {
    const store = await openSqlite({ historyCompaction: { idleMs: 60_000, intervalMs: 0 } });
    for (let i = 0; i < 300; i++) {
      await append(
        store,
        `r${i}`,
        1,
        Array.from({ length: 8 }, (_, k) => marker(k + 1)),
      );
    }
    expect(historyRows().tails).toBe(300);
    await store.close();
    const rows = historyRows();
    expect(rows.tails).toBe(0);
    expect(rows.chunks).toHaveLength(300);
    expect(rows.chunks.every((c) => c.format === 1)).toBe(true);
    const db = raw();
    expect(db.pragma('auto_vacuum', { simple: true })).toBe(2);
    expect(db.pragma('freelist_count', { simple: true })).toBe(0);
    db.close();
    const again = await openSqlite({});
    expect(await again.read((tx) => tx.readEvents('r7'))).toEqual(
      Array.from({ length: 8 }, (_, k) => ({ eventId: k + 1, ...marker(k + 1) })),
    );
  });

  it('close() leaves the recent tails of another open Store to it; the last close leaves none', async () => {
    const first = await openSqlite(manualCompaction(60_000));
    const second = await openSqlite(manualCompaction(60_000));
    await append(first, 'mine', 1, [marker(1), marker(2)]);
    await append(second, 'theirs', 1, [marker(1), marker(2)]);
    await append(first, 'shared', 1, [marker(1)]);
    await append(second, 'shared', 2, [marker(2)]);
    await second.close();
    const db = raw();
    const tails = db.prepare('SELECT k.run_id FROM history_tail t JOIN run_keys k ON k.rk = t.rk').all();
    db.close();
    expect(tails).toEqual([{ run_id: 'mine' }]);
    await first.close();
    expect(historyRows().tails).toBe(0);
    expect(historyRows().chunks).toHaveLength(3);
  });

  it('once no raw tail is left, the compactor gives the free pages back without closing', async () => {
    const store = await openSqlite({ historyCompaction: { idleMs: 20, intervalMs: 10 } });
    const events = Array.from({ length: 8 }, (_, k) => ({
      ...marker(k + 1),
      attributes: { noise: noise(400) },
    }));
    await Promise.all(Array.from({ length: 400 }, (_, i) => append(store, `r${i}`, 1, events as NewEvent[])));
    const pages = () => {
      const db = raw();
      try {
        return {
          total: db.pragma('page_count', { simple: true }) as number,
          free: db.pragma('freelist_count', { simple: true }) as number,
          tails: (db.prepare('SELECT count(*) AS n FROM history_tail').get() as { n: number }).n,
        };
      } finally {
        db.close();
      }
    };
    const peak = pages().total;
    const started = performance.now();
    let now = pages();
    // The compactor leaves fewer than 64 free pages alone (later writes reuse them).
    while (now.tails > 0 || now.free >= 64) {
      if (performance.now() - started > 10_000)
        throw new Error(`not compact after 10 s: ${JSON.stringify(now)}`);
      await new Promise((r) => setTimeout(r, 20));
      now = pages();
    }
    expect(now.total).toBeLessThan(peak / 2);
    expect(await store.read((tx) => tx.readEvents('r399'))).toEqual(
      events.map((e, k) => ({ eventId: k + 1, ...e })),
    );
  });

  it('rejects invalid compaction options', async () => {
    const err = await rejection(openSqlite({ historyCompaction: { idleMs: -1 } }));
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe('historyCompaction.idleMs');
  });
});

describe('drivers', () => {
  it('a process on SQLite never loads the PostgreSQL driver', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/loaded-drivers.ts', import.meta.url));
    const kid = spawnFixture(fixture, [`sqlite:${file}`]);
    const code = await within(kid.exited, 30_000, 'the child to open the store');
    expect(code, kid.stderr()).toBe(0);
    expect(JSON.parse(kid.stdout())).toEqual({ pg: false, betterSqlite3: true });
  });
});

describe('several processes on one file', () => {
  const children: ChildProcessWithoutNullStreams[] = [];
  afterAll(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  it('200 increments from each of 2 child processes and the parent, concurrently, end up exact', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/increment-counter.ts', import.meta.url));
    const url = `sqlite:${file}`;
    const spawnChild = () => {
      const kid = spawnFixture(fixture, [url, '200']);
      children.push(kid.child);
      return kid;
    };
    // Both children start on a file that does not exist yet: they race to create and migrate it.
    const kids = [spawnChild(), spawnChild()];
    await within(Promise.all(kids.map((k) => k.lineSeen('ready'))), 30_000, 'children to open the store');
    const parent = await open(url);
    await parent.transaction((tx) => tx.insertRun(counterRun()));
    for (const k of kids) k.child.stdin.write('go\n');
    for (let i = 0; i < 200; i++) await increment(parent);
    const codes = await within(Promise.all(kids.map((k) => k.exited)), 60_000, 'children to finish');
    expect(codes, kids.map((k) => k.stderr()).join('\n')).toEqual([0, 0]);
    expect(await counter(parent)).toBe(600);
  });
});
