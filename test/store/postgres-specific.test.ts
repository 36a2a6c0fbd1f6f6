import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StoreError, ValidationError } from '../../src/common/errors.js';
import { jsonLogger } from '../../src/common/logger.js';
import { activity, marker, run, signal, T0, timer } from '../../src/store/conformance/records.js';
import { classifyStoreError, isTransientStoreErrorClass } from '../../src/store/errors.js';
import { openStore, parsePostgresConnection } from '../../src/store/open-store.js';
import {
  checkPostgresSchemaForClient,
  migratePostgresSchema,
  POSTGRES_MIGRATIONS,
  POSTGRES_SCHEMA_VERSION,
  POSTGRES_TABLES,
  type PostgresMigration,
} from '../../src/store/postgres/postgres-migrations.js';
import type { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import type { RunRecord, Store } from '../../src/store/store.js';
import {
  adminClient,
  adminQuery,
  dropSchema,
  emptyTables,
  schemaExists,
  storeUrl,
  testSchema,
} from './fixtures/postgres.js';
import { spawnFixture } from './fixtures/spawn-fixture.js';

const schemas: string[] = [];
const opened: Store[] = [];

/** A schema name for this test, dropped after it. */
function newSchema(): string {
  const s = testSchema();
  schemas.push(s);
  return s;
}

beforeAll(async () => {
  // Fails the file with a clear message when the server is unreachable.
  await (await adminClient()).end();
});
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
  for (const s of schemas.splice(0)) await dropSchema(s);
});

async function open(url: string, mode: 'node' | 'client' = 'node'): Promise<Store> {
  const store = await openStore(url, { mode });
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

async function expectCode(promise: Promise<unknown>, code: string): Promise<StoreError> {
  const err = await rejection(promise);
  expect(err, String(err)).toBeInstanceOf(StoreError);
  expect((err as StoreError).code, (err as Error).message).toBe(code);
  return err as StoreError;
}

async function tablesOf(schema: string): Promise<string[]> {
  const rows = await adminQuery<{ tablename: string }>(
    'SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename',
    [schema],
  );
  return rows.map((r) => r.tablename);
}

async function versionsOf(schema: string): Promise<number[]> {
  const rows = await adminQuery<{ version: number }>(
    `SELECT version FROM "${schema}".schema_version ORDER BY 1`,
  );
  return rows.map((r) => r.version);
}

function counterRun(runId = 'counter', workflowId = runId): RunRecord {
  return run({ runId, workflowId, nextEventId: 0 });
}

async function counter(store: Store, runId = 'counter'): Promise<number> {
  return (await store.read((tx) => tx.getRun(runId)))!.nextEventId;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every 10 ms until it returns true (bounded). */
async function until(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('connection strings', () => {
  const invalid = (url: string, pattern: RegExp) => {
    let err: unknown;
    try {
      parsePostgresConnection(url);
    } catch (e) {
      err = e;
    }
    expect(err, `expected '${url}' to be refused`).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe('connection');
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).not.toContain('s3cret');
  };

  it('parses the schema (default longhaul), pool options and driver options; the password stays out of the description', () => {
    const c = parsePostgresConnection('postgres://me:s3cret@db.example:6543/app');
    expect(c.schema).toBe('longhaul');
    expect(c.description).toBe('postgres://me@db.example:6543/app?schema=longhaul');
    expect(c.connectionString).toBe('postgres://me:s3cret@db.example:6543/app');
    const d = parsePostgresConnection(
      'postgresql://me:s3cret@db/app?schema=tenant_1&poolSize=4&connectTimeoutMs=500&application_name=api&sslmode=require',
    );
    expect(d).toEqual({
      schema: 'tenant_1',
      poolSize: 4,
      connectTimeoutMs: 500,
      description: 'postgresql://me@db/app?schema=tenant_1',
      connectionString: 'postgresql://me:s3cret@db/app?application_name=api&sslmode=require',
    });
  });

  it('refuses schema names that are not lower-case identifiers', () => {
    for (const name of [
      '',
      'Tenant',
      '1abc',
      'a-b',
      'a b',
      'x;drop',
      '"x"',
      'pg_temp',
      'é',
      'a'.repeat(64),
    ]) {
      invalid(
        `postgres://me:s3cret@db/app?schema=${encodeURIComponent(name)}`,
        /schema must be a lower-case SQL identifier/,
      );
    }
    expect(parsePostgresConnection(`postgres://db/app?schema=${'a'.repeat(63)}`).schema).toHaveLength(63);
    expect(parsePostgresConnection('postgres://db/app?schema=_x9').schema).toBe('_x9');
  });

  it('refuses malformed URLs and unknown options without echoing the password', () => {
    invalid('postgres://me:s3cret@db:port/app', /not a valid URL/);
    invalid('postgres://me:s3/cr@et@[::1/app', /not a valid URL/);
    invalid('postgres://me:s3cret@db/app/extra', /one database name/);
    invalid('postgres://me:s3cret@db/app#frag', /fragment/);
    invalid('postgres://me:s3cret@db/app?sslmod=require', /unknown option 'sslmod'.*schema, poolSize/);
    invalid('postgres://me:s3cret@db/app?poolSize=0', /poolSize must be an integer from 1/);
    invalid('postgres://me:s3cret@db/app?poolSize=many', /poolSize/);
    invalid('postgres://me:s3cret@db/app?connectTimeoutMs=-1', /connectTimeoutMs/);
  });

  it('openStore routes postgres:// and postgresql:// here, and echoes no password for unknown schemes', async () => {
    for (const url of [
      'postgres://me:s3cret@db/app?schema=Bad',
      'postgresql://me:s3cret@db/app?schema=Bad',
    ]) {
      const err = await rejection(openStore(url, { mode: 'node' }));
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as Error).message).toMatch(/schema must be/);
      expect((err as Error).message).not.toContain('s3cret');
    }
    const err = await rejection(openStore('mongodb://me:s3cret@db/app', { mode: 'node' }));
    expect((err as Error).message).toMatch(/postgres:\/\/USER@HOST\/DB\?schema=NAME/);
    expect((err as Error).message).not.toContain('s3cret');
  });

  it('an unreachable server fails fast with STORE_UNAVAILABLE, without the password', async () => {
    const err = await expectCode(
      openStore('postgres://me:s3cret@127.0.0.1:1/test?schema=lh_test_unreachable', { mode: 'node' }),
      'STORE_UNAVAILABLE',
    );
    expect(err.message).toMatch(/cannot connect to postgres:\/\/me@127\.0\.0\.1:1\/test/);
    expect(err.message).not.toContain('s3cret');
  });

  it('never logs the password', async () => {
    const schema = newSchema();
    const lines: string[] = [];
    const url = new URL(storeUrl(schema));
    url.password = 's3cret';
    const store = await openStore(url.href, {
      mode: 'node',
      logger: jsonLogger((l) => lines.push(l), 'debug'),
    });
    opened.push(store);
    expect(store.description).not.toContain('s3cret');
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('\n')).not.toContain('s3cret');
  });
});

describe('schema versions', () => {
  it('a node creates the schema at the current version; opening again changes nothing', async () => {
    const schema = newSchema();
    await open(storeUrl(schema));
    expect(await tablesOf(schema)).toEqual([...POSTGRES_TABLES].sort());
    expect(await versionsOf(schema)).toEqual(POSTGRES_MIGRATIONS.map((m) => m.version));
    await open(storeUrl(schema));
    expect(await versionsOf(schema)).toEqual([POSTGRES_SCHEMA_VERSION]);
  });

  it('a node refuses a schema newer than it knows (SCHEMA_TOO_NEW) and changes nothing', async () => {
    const schema = newSchema();
    await (await openStore(storeUrl(schema), { mode: 'node' })).close();
    await adminQuery(`INSERT INTO "${schema}".schema_version (version, description) VALUES (99, 'future')`);
    const before = await tablesOf(schema);
    const err = await expectCode(openStore(storeUrl(schema), { mode: 'node' }), 'SCHEMA_TOO_NEW');
    expect(err.message).toMatch(/version 99.*up to 1.*Upgrade longhaul/);
    await expectCode(openStore(storeUrl(schema), { mode: 'client' }), 'SCHEMA_TOO_NEW');
    expect(await tablesOf(schema)).toEqual(before);
    expect(await versionsOf(schema)).toEqual([1, 99]);
  });

  it('migrates step by step, and a client refuses a schema older than it needs (SCHEMA_TOO_OLD)', async () => {
    const schema = newSchema();
    await (await openStore(storeUrl(schema), { mode: 'node' })).close();
    const next: PostgresMigration = {
      version: POSTGRES_SCHEMA_VERSION + 1,
      description: 'a later step',
      sql: (s) => `CREATE TABLE ${s}.later (id integer PRIMARY KEY)`,
    };
    const admin = await adminClient();
    try {
      const where = `postgres://test?schema=${schema}`;
      const err = await rejection(
        checkPostgresSchemaForClient(admin, schema, where, POSTGRES_SCHEMA_VERSION + 1),
      );
      expect((err as StoreError).code).toBe('SCHEMA_TOO_OLD');
      expect((err as Error).message).toMatch(/start a worker/);
      expect(await migratePostgresSchema(admin, schema, where, [...POSTGRES_MIGRATIONS, next])).toEqual({
        from: POSTGRES_SCHEMA_VERSION,
        to: POSTGRES_SCHEMA_VERSION + 1,
      });
      expect(await tablesOf(schema)).toContain('later');
      await checkPostgresSchemaForClient(admin, schema, where, POSTGRES_SCHEMA_VERSION + 1);
    } finally {
      await admin.end();
    }
    // This build knows one version less than the store now has.
    await expectCode(openStore(storeUrl(schema), { mode: 'client' }), 'SCHEMA_TOO_NEW');
  });

  it('a client on a missing schema fails with STORE_NOT_FOUND and creates nothing', async () => {
    const schema = newSchema();
    const err = await expectCode(openStore(storeUrl(schema), { mode: 'client' }), 'STORE_NOT_FOUND');
    expect(err.message).toMatch(/does not exist.*start a worker/);
    expect(await schemaExists(schema)).toBe(false);

    await adminQuery(`CREATE SCHEMA "${schema}"`);
    await expectCode(openStore(storeUrl(schema), { mode: 'client' }), 'STORE_NOT_FOUND');
    expect(await tablesOf(schema)).toEqual([]);
  });

  it('a client works on a current schema', async () => {
    const schema = newSchema();
    const node = await open(storeUrl(schema));
    await node.transaction((tx) => tx.insertRun(run()));
    const client = await open(storeUrl(schema), 'client');
    expect((await client.read((tx) => tx.getRun('run-1')))?.runId).toBe('run-1');
  });

  it('a node refuses a schema that holds other tables (NOT_A_LONGHAUL_STORE)', async () => {
    const schema = newSchema();
    await adminQuery(`CREATE SCHEMA "${schema}"`);
    await adminQuery(`CREATE TABLE "${schema}".invoices (id integer)`);
    await expectCode(openStore(storeUrl(schema), { mode: 'node' }), 'NOT_A_LONGHAUL_STORE');
    expect(await tablesOf(schema)).toEqual(['invoices']);
  });
});

describe('nodes starting at once', () => {
  const children: ChildProcessWithoutNullStreams[] = [];
  afterAll(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  it('several stores migrating an empty schema concurrently end with one correct schema', async () => {
    const schema = newSchema();
    const stores = await Promise.all(
      Array.from({ length: 6 }, () => openStore(storeUrl(schema, { poolSize: '2' }), { mode: 'node' })),
    );
    opened.push(...stores);
    expect(await tablesOf(schema)).toEqual([...POSTGRES_TABLES].sort());
    expect(await versionsOf(schema)).toEqual([POSTGRES_SCHEMA_VERSION]);
    await stores[0]!.transaction((tx) => tx.insertRun(counterRun()));
    await Promise.all(
      stores.flatMap((s) =>
        Array.from({ length: 10 }, () =>
          s.transaction(async (tx) => {
            const r = await tx.getRun('counter');
            await tx.updateRun('counter', { nextEventId: r!.nextEventId + 1 });
          }),
        ),
      ),
    );
    expect(await counter(stores[5]!)).toBe(60);
  });

  it('two child processes race to migrate, then increment concurrently with the parent; the count is exact', async () => {
    const schema = newSchema();
    const url = storeUrl(schema, { poolSize: '2' });
    const fixture = fileURLToPath(new URL('./fixtures/postgres-increment.ts', import.meta.url));
    const spawnChild = () => {
      const kid = spawnFixture(fixture, [url, '100']);
      children.push(kid.child);
      return kid;
    };
    const kids = [spawnChild(), spawnChild()];
    await within(Promise.all(kids.map((k) => k.lineSeen('ready'))), 30_000, 'children to open the store');
    expect(await versionsOf(schema)).toEqual([POSTGRES_SCHEMA_VERSION]);
    const parent = await open(url);
    await parent.transaction((tx) => tx.insertRun(counterRun()));
    for (const k of kids) k.child.stdin.write('go\n');
    for (let i = 0; i < 100; i++) {
      await parent.transaction(async (tx) => {
        const r = await tx.getRun('counter');
        await tx.updateRun('counter', { nextEventId: r!.nextEventId + 1 });
      });
    }
    const codes = await within(Promise.all(kids.map((k) => k.exited)), 60_000, 'children to finish');
    expect(codes, kids.map((k) => k.stderr()).join('\n')).toEqual([0, 0]);
    expect(await counter(parent)).toBe(300);
  });
});

describe('transactions and locks', () => {
  let schema: string;
  beforeAll(async () => {
    schema = testSchema();
    await (await openStore(storeUrl(schema), { mode: 'node' })).close();
  });
  afterAll(async () => {
    await dropSchema(schema);
  });
  afterEach(() => emptyTables(schema));

  /** A store on the shared schema whose connections carry `app` as application_name. */
  async function storeFor(app: string, extra: Record<string, string> = {}): Promise<PostgresStore> {
    const store = await openStore(storeUrl(schema, { application_name: app, ...extra }), { mode: 'node' });
    opened.push(store);
    return store as PostgresStore;
  }

  it('a transaction whose connection is terminated (pg_terminate_backend) is re-run and commits exactly once', async () => {
    const app = `lh_kill_${Math.random().toString(36).slice(2, 8)}`;
    const store = await storeFor(app);
    await store.transaction((tx) => tx.insertRun(counterRun()));
    let attempts = 0;
    const value = await within(
      store.transaction(async (tx) => {
        attempts++;
        const r = await tx.getRun('counter');
        await tx.updateRun('counter', { nextEventId: r!.nextEventId + 1 });
        await tx.appendEvents('counter', 1, [marker(1)]);
        if (attempts === 1) {
          const killed = await adminQuery<{ ok: boolean }>(
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'",
            [app],
          );
          expect(killed).toEqual([{ ok: true }]);
          await until(
            async () =>
              (
                await adminQuery(
                  "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'",
                  [app],
                )
              ).length === 0,
            'the backend to exit',
          );
        }
        await tx.addBuffered('counter', signal('after'));
        return attempts;
      }),
      20_000,
      'the transaction to be re-run',
    );
    expect(value).toBe(2);
    expect(store.stats().retries).toBeGreaterThanOrEqual(1);
    await store.read(async (tx) => {
      expect((await tx.getRun('counter'))?.nextEventId).toBe(1);
      expect((await tx.readEvents('counter')).map((e) => e.eventId)).toEqual([1]);
      expect(await tx.listBuffered('counter')).toHaveLength(1);
    });
  });

  it('a connection terminated while its statement waits for a lock is re-run once the lock frees', async () => {
    const app = `lh_kill_${Math.random().toString(36).slice(2, 8)}`;
    const store = await storeFor(app);
    await store.transaction((tx) => tx.insertRun(counterRun()));
    const admin = await adminClient();
    try {
      await admin.query('BEGIN');
      await admin.query(`SELECT 1 FROM "${schema}".runs WHERE run_id = 'counter' FOR UPDATE`);
      let attempts = 0;
      const pending = store.transaction(async (tx) => {
        attempts++;
        const r = await tx.getRun('counter');
        await tx.updateRun('counter', { nextEventId: r!.nextEventId + 1 });
      });
      await until(
        async () =>
          (
            await admin.query(
              "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
              [app],
            )
          ).rows.length === 1,
        'the blocked statement to be terminated',
      );
      await new Promise((r) => setTimeout(r, 50));
      await admin.query('COMMIT');
      await within(pending, 20_000, 'the re-run transaction');
      expect(attempts).toBe(2);
      expect(await counter(store)).toBe(1);
    } finally {
      await admin.end();
    }
  });

  it('a deadlock (40P01) aborts one transaction, which is re-run; both commit', async () => {
    const store = await storeFor('lh_deadlock', { options: '-c deadlock_timeout=50' });
    await store.transaction(async (tx) => {
      await tx.insertRun(counterRun('a'));
      await tx.insertRun(counterRun('b'));
    });
    const lockedA = deferred();
    const lockedB = deferred();
    let attempts = 0;
    const cross = (first: string, second: string, mine: () => void, theirs: Promise<void>) =>
      store.transaction(async (tx) => {
        attempts++;
        const x = await tx.getRun(first);
        await tx.updateRun(first, { nextEventId: x!.nextEventId + 1 });
        mine();
        await theirs;
        const y = await tx.getRun(second);
        await tx.updateRun(second, { nextEventId: y!.nextEventId + 1 });
      });
    await within(
      Promise.all([
        cross('a', 'b', lockedA.resolve, lockedB.promise),
        cross('b', 'a', lockedB.resolve, lockedA.promise),
      ]),
      20_000,
      'both transactions',
    );
    expect(attempts).toBe(3);
    expect(store.stats().retries).toBe(1);
    expect(await counter(store, 'a')).toBe(2);
    expect(await counter(store, 'b')).toBe(2);
  });

  it('the due sweeps skip a timer or activity whose run another transaction holds, so a sweep never waits for a run while holding its rows', async () => {
    const store = await storeFor('lh_sweep_order', { options: '-c deadlock_timeout=50' });
    await store.transaction(async (tx) => {
      await tx.insertRun(run());
      await tx.insertActivity(activity({ scheduledEventId: 5, phase: 'started', deadline: T0 }));
      await tx.insertTimer(timer({ fireAt: T0 }));
    });
    const retries = store.stats().retries;
    const holding = deferred();
    const found = deferred();
    // A workflow task's commit takes the run, then the run's activities.
    const commit = store.transaction(async (tx) => {
      await tx.getRun('run-1');
      holding.resolve();
      await found.promise;
      return (await tx.listActivities('run-1')).length;
    });
    await holding.promise;
    // A sweep meanwhile: finds due rows, then takes each one's run (with rows locked before their run,
    // this and the commit would wait for each other: a deadlock, broken after deadlock_timeout).
    const swept = await within(
      store.transaction(async (tx) => {
        const timers = await tx.findDueTimers(T0 + 1, 10);
        const activities = await tx.findDueActivities(T0 + 1, 10);
        found.resolve();
        for (const row of [...timers, ...activities]) await tx.getRun(row.runId);
        return { timers: timers.length, activities: activities.length };
      }),
      20_000,
      'the sweep',
    );
    expect(swept).toEqual({ timers: 0, activities: 0 });
    expect(await within(commit, 20_000, 'the commit')).toBe(1);
    expect(store.stats().retries).toBe(retries);
    // Once the run is free, the same sweep finds both.
    const later = await store.transaction(async (tx) => [
      (await tx.findDueTimers(T0 + 1, 10)).map((t) => t.timerKey),
      (await tx.findDueActivities(T0 + 1, 10)).map((a) => a.scheduledEventId),
    ]);
    expect(later).toEqual([['t1'], [5]]);
  });

  it('getRunWithActivities that waited for the run lock sees what the holder committed, activities added and removed', async () => {
    // Its statement's snapshot predates the holder's commit: without a second look, the activity the
    // holder added would be missing (the removed one is skipped by the lock either way).
    const app = `lh_run_acts_${Math.random().toString(36).slice(2, 8)}`;
    const store = await storeFor(app);
    await store.transaction(async (tx) => {
      await tx.insertRun(run());
      await tx.insertActivity(activity({ scheduledEventId: 5 }));
    });
    const admin = await adminClient();
    try {
      const holding = deferred();
      const release = deferred();
      const holder = store.transaction(async (tx) => {
        await tx.getRun('run-1');
        await tx.deleteActivity('run-1', 5);
        await tx.insertActivity(activity({ scheduledEventId: 6, activityId: '2' }));
        await tx.updateRun('run-1', { nextEventId: 9 });
        holding.resolve();
        await release.promise;
      });
      await holding.promise;
      const reader = store.transaction((tx) => tx.getRunWithActivities('run-1'));
      await until(
        async () =>
          (
            await admin.query(
              "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
              [app],
            )
          ).rows.length === 1,
        'the read to wait for the run lock',
      );
      release.resolve();
      await within(holder, 20_000, 'the holder');
      const got = await within(reader, 20_000, 'the read');
      expect(got.run?.nextEventId).toBe(9);
      expect(got.activities.map((a) => a.scheduledEventId)).toEqual([6]);
    } finally {
      await admin.end();
    }
  });

  it('a serialization failure (40001) is classified transient, and a transaction failing with it is re-run', async () => {
    // A real 40001: two SERIALIZABLE transactions that each read what the other writes.
    const [c1, c2] = [await adminClient(), await adminClient()];
    let failure: unknown;
    try {
      await adminQuery('CREATE TABLE IF NOT EXISTS "' + schema + '".ssi (k integer PRIMARY KEY, v integer)');
      await adminQuery(`INSERT INTO "${schema}".ssi VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING`);
      await c1.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
      await c2.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
      await c1.query(`SELECT sum(v) FROM "${schema}".ssi`);
      await c2.query(`SELECT sum(v) FROM "${schema}".ssi`);
      await c1.query(`UPDATE "${schema}".ssi SET v = 1 WHERE k = 1`);
      await c2.query(`UPDATE "${schema}".ssi SET v = 1 WHERE k = 2`);
      await c1.query('COMMIT');
      await c2.query('COMMIT').catch((e: unknown) => {
        failure = e;
      });
    } finally {
      await c1.end();
      await c2.end();
      await adminQuery(`DROP TABLE IF EXISTS "${schema}".ssi`);
    }
    expect((failure as { code?: string }).code).toBe('40001');
    expect(classifyStoreError(failure)).toBe('serialization');
    expect(isTransientStoreErrorClass(classifyStoreError(failure))).toBe(true);

    const store = await storeFor('lh_ssi');
    let attempts = 0;
    await store.transaction(async (tx) => {
      attempts++;
      await tx.insertRun(run());
      if (attempts === 1) throw failure;
    });
    expect(attempts).toBe(2);
    expect((await store.read((tx) => tx.getRun('run-1')))?.runId).toBe('run-1');
  });

  it('classifies PostgreSQL faults in the one table', () => {
    const cls = (code: string | undefined, message = 'x') =>
      classifyStoreError(Object.assign(new Error(message), { code }));
    expect(cls('40P01')).toBe('deadlock');
    expect(cls('57P01')).toBe('connectionLost');
    expect(cls('08006')).toBe('connectionLost');
    expect(cls('08P01')).toBe('fatal');
    expect(cls('53300')).toBe('busy');
    expect(cls('23505')).toBe('constraint');
    expect(cls('42P01')).toBe('fatal');
    expect(cls(undefined, 'Connection terminated unexpectedly')).toBe('connectionLost');
    expect(cls(undefined, 'Client has encountered a connection error and is not queryable')).toBe(
      'connectionLost',
    );
    expect(cls(undefined, 'something else')).toBe('fatal');
  });

  it("the server's protocol violation (08P01) is fatal, not a lost connection: the connection still answers", async () => {
    const client = await adminClient();
    try {
      // More parameters than the protocol's 16-bit count can carry: the server refuses the message.
      const values = Array.from({ length: 70_000 }, (_, i) => i);
      const err = await rejection(client.query({ text: 'SELECT $1::int', values }));
      expect((err as { code?: string }).code).toBe('08P01');
      expect(classifyStoreError(err)).toBe('fatal');
      expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await client.end();
    }
  });

  it('a database error the callback catches still fails the transaction: nothing is reported committed', async () => {
    const store = await storeFor('lh_abort');
    const err = await rejection(
      store.transaction(async (tx) => {
        await tx.insertRun(run({ runId: 'ok', workflowId: 'ok' }));
        // PostgreSQL text cannot hold NUL: the statement fails and aborts the transaction.
        await tx.insertRun(run({ runId: 'bad\u0000id', workflowId: 'w' })).catch(() => undefined);
        return 'done';
      }),
    );
    expect((err as StoreError).code).toBe('STORE_FAILURE');
    expect(await store.read((tx) => tx.getRun('ok'))).toBeUndefined();
  });

  it('getRun inside a transaction locks the run; claim queries skip locked rows instead of waiting', async () => {
    const a = await storeFor('lh_locks_a');
    const b = await storeFor('lh_locks_b');
    await a.transaction(async (tx) => {
      for (const id of ['r1', 'r2', 'r3']) {
        await tx.insertRun(run({ runId: id, workflowId: id, wftPhase: 'scheduled', wftVisibleAt: T0 }));
      }
    });
    const holding = deferred();
    const release = deferred();
    const holder = a.transaction(async (tx) => {
      const claimed = await tx.findClaimableWorkflowTasks('default', 'q1', T0, 1);
      expect(claimed.map((r) => r.runId)).toEqual(['r1']);
      holding.resolve();
      await release.promise;
      await tx.updateRun('r1', { nextEventId: 5 });
    });
    await holding.promise;
    const others = await within(
      b.transaction((tx) => tx.findClaimableWorkflowTasks('default', 'q1', T0, 10)),
      5000,
      'a claim that skips the locked row',
    );
    expect(others.map((r) => r.runId)).toEqual(['r2', 'r3']);
    let sawNext = -1;
    const reader = b.transaction(async (tx) => {
      sawNext = (await tx.getRun('r1'))!.nextEventId;
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(sawNext).toBe(-1); // still waiting for the lock
    release.resolve();
    await holder;
    await reader;
    expect(sawNext).toBe(5); // read the committed value once the lock was granted
    // A read handle takes no locks and never waits.
    expect((await b.read((tx) => tx.getRun('r1')))?.nextEventId).toBe(5);
  });

  it('concurrent calls with one request id run one after the other (the second sees the first)', async () => {
    const store = await storeFor('lh_requests');
    await store.transaction((tx) => tx.insertRun(run()));
    const firstRead = deferred();
    const deliver = (delayMs: number, onRead?: () => void) =>
      store.transaction(async (tx) => {
        const seen = await tx.getRequest('default', 'req-1');
        onRead?.();
        if (seen) return 'duplicate';
        await new Promise((r) => setTimeout(r, delayMs));
        await tx.addBuffered('run-1', signal('once'));
        await tx.putRequest({
          namespace: 'default',
          requestId: 'req-1',
          kind: 'signal',
          runId: 'run-1',
          createdAt: T0,
        });
        return 'delivered';
      });
    const first = deliver(100, firstRead.resolve);
    await firstRead.promise;
    const second = deliver(0);
    expect(await Promise.all([first, second])).toEqual(['delivered', 'duplicate']);
    expect(await store.read((tx) => tx.listBuffered('run-1'))).toHaveLength(1);
  });

  it('inside a transaction, listActivities locks the rows it returns (like getActivity)', async () => {
    const store = await storeFor('lh_list_lock');
    await store.transaction(async (tx) => {
      await tx.insertRun(run());
      await tx.insertActivity(activity({ scheduledEventId: 5 }));
      await tx.insertActivity(activity({ scheduledEventId: 7, activityId: '2' }));
    });
    const admin = await adminClient();
    try {
      await admin.query("SET lock_timeout = '100ms'");
      const tryUpdate = async (): Promise<string> => {
        try {
          await admin.query(`UPDATE "${schema}".activities SET attempt = 2 WHERE scheduled_event_id = 7`);
          return 'updated';
        } catch (err) {
          return (err as { code?: string }).code ?? 'error';
        }
      };
      const inside = await store.transaction(async (tx) => {
        expect((await tx.listActivities('run-1')).map((a) => a.scheduledEventId)).toEqual([5, 7]);
        return tryUpdate();
      });
      expect(inside).toBe('55P03'); // lock_not_available: the row was held by the transaction
      // A read handle takes no locks.
      const underRead = await store.read(async (tx) => {
        await tx.listActivities('run-1');
        return tryUpdate();
      });
      expect(underRead).toBe('updated');
    } finally {
      await admin.end();
    }
  });

  it('read handles refuse writes (READ_ONLY) and see one snapshot', async () => {
    const store = await storeFor('lh_read');
    await store.transaction((tx) => tx.insertRun(run()));
    await expectCode(
      store.read((tx) =>
        (tx as unknown as { updateRun: (id: string, p: object) => Promise<void> }).updateRun('run-1', {}),
      ),
      'READ_ONLY',
    );
    const snapshot = await store.read(async (tx) => {
      const before = await tx.getRun('run-1');
      await store.transaction((w) => w.updateRun('run-1', { nextEventId: 9 }));
      const after = await tx.getRun('run-1');
      return [before?.nextEventId, after?.nextEventId];
    });
    expect(snapshot).toEqual([1, 1]);
    expect((await store.read((tx) => tx.getRun('run-1')))?.nextEventId).toBe(9);
  });

  it('reads with { snapshot: false } open no transaction: each statement sees the latest commit', async () => {
    const store = await storeFor('lh_latest');
    await store.transaction((tx) => tx.insertRun(run()));
    await expectCode(
      store.read(
        (tx) =>
          (tx as unknown as { updateRun: (id: string, p: object) => Promise<void> }).updateRun('run-1', {}),
        { snapshot: false },
      ),
      'READ_ONLY',
    );
    const seen = await store.read(
      async (tx) => {
        const before = await tx.getRun('run-1');
        await store.transaction((w) => w.updateRun('run-1', { nextEventId: 9 }));
        const after = await tx.getRun('run-1');
        return [before?.nextEventId, after?.nextEventId];
      },
      { snapshot: false },
    );
    expect(seen).toEqual([1, 9]);
    // `now()` is the transaction's start: it equals the statement's start only outside a transaction block.
    const autocommit = async (tx: unknown): Promise<unknown[]> =>
      (
        await (tx as { db: { query(q: { text: string }): Promise<{ rows: unknown[] }> } }).db.query({
          text: 'SELECT now() = statement_timestamp() AS autocommit',
        })
      ).rows;
    const probe = await store.read(
      async (tx) => {
        await tx.getRun('run-1');
        return autocommit(tx);
      },
      { snapshot: false },
    );
    expect(probe).toEqual([{ autocommit: true }]);
    // A snapshot read opens its transaction with its first statement (BEGIN goes out with it).
    const inBlock = await store.read(async (tx) => {
      await tx.getRun('run-1');
      await new Promise((resolve) => setTimeout(resolve, 5));
      return autocommit(tx);
    });
    expect(inBlock).toEqual([{ autocommit: false }]);
  });
});
