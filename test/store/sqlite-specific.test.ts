import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreError, ValidationError } from '../../src/common/errors.js';
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
    setTimeout(lock.release, 400);
    const tokenSeen = await within(waiting, 10_000, 'the waiting transaction');
    clearInterval(ticker);
    await lock.done;
    expect(performance.now() - started).toBeGreaterThanOrEqual(350);
    expect(tokenSeen).toBe(1);
    expect(calls).toBe(1);
    expect(maxGap).toBeLessThan(250);
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

describe('storage layout', () => {
  it('keeps a short history in one compressed chunk row and reads any slice of it', async () => {
    const store = await openSqlite({});
    const runId = '0b7e6a52-6f1c-4a4e-9d7e-0c2f5f9f6a11';
    const attrs = (n: number) => ({ markerName: 'm', details: { n, text: 'x'.repeat(20) } });
    let next = 1;
    for (const size of [2, 1, 3, 5]) {
      await store.transaction((tx) =>
        tx.appendEvents(
          runId,
          next,
          Array.from({ length: size }, (_, k) => ({
            type: 'MarkerRecorded' as const,
            time: 1_700_000_000_000 + next + k,
            attributes: attrs(next + k),
          })),
        ),
      );
      next += size;
    }
    const db = raw();
    const rows = db.prepare('SELECT count(*) AS n FROM history').get() as { n: number };
    const key = db.prepare('SELECT typeof(run_id) AS t, length(run_id) AS l FROM run_keys').get();
    db.close();
    expect(rows.n).toBe(1);
    expect(key).toEqual({ t: 'blob', l: 16 });
    const events = await store.read((tx) => tx.readEvents(runId));
    expect(events.map((e) => e.eventId)).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));
    expect(events[6]).toEqual({
      eventId: 7,
      type: 'MarkerRecorded',
      time: 1_700_000_000_007,
      attributes: attrs(7),
    });
    expect((await store.read((tx) => tx.readEvents(runId, 4, 3))).map((e) => e.eventId)).toEqual([4, 5, 6]);
    expect((await store.read((tx) => tx.readEvents(runId, 11, 3))).map((e) => e.eventId)).toEqual([11]);
  });

  it('starts a new chunk once the last one is large, and reads across chunks', async () => {
    const store = await openSqlite({});
    const runId = 'text-id';
    for (let i = 1; i <= 60; i++) {
      await store.transaction((tx) =>
        tx.appendEvents(runId, i, [
          {
            type: 'SignalReceived',
            time: 1_700_000_000_000 + i * 1000.5,
            attributes: { signalName: `s${i}`, input: [Math.random().toString(36).repeat(4)] },
          },
        ]),
      );
    }
    const db = raw();
    const rows = (db.prepare('SELECT count(*) AS n FROM history').get() as { n: number }).n;
    db.close();
    expect(rows).toBeGreaterThan(1);
    const events = await store.read((tx) => tx.readEvents(runId, 5, 50));
    expect(events.map((e) => e.eventId)).toEqual(Array.from({ length: 50 }, (_, i) => i + 5));
    expect(events[0]!.time).toBe(1_700_000_000_000 + 5 * 1000.5);
    expect((events[0]!.attributes as { signalName: string }).signalName).toBe('s5');
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
      const child = spawn(process.execPath, ['--import', 'tsx', fixture, url, '200'], { stdio: 'pipe' });
      children.push(child);
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
      });
      const lineSeen = (line: string) =>
        new Promise<void>((resolve, reject) => {
          const check = () => {
            if (out.includes(`${line}\n`)) resolve();
          };
          child.stdout.on('data', check);
          child.on('exit', (code) => reject(new Error(`child exited (${code}) before '${line}': ${err}`)));
          check();
        });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      return { child, lineSeen, exited, stderr: () => err };
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
