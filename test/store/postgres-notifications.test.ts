import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { openStore } from '../../src/store/open-store.js';
import {
  MAX_PAYLOAD_BYTES,
  notificationChannel,
  packPayloads,
} from '../../src/store/postgres/postgres-channel.js';
import { PostgresNotifications } from '../../src/store/postgres/postgres-notifications.js';
import type { PostgresPool } from '../../src/store/postgres/postgres-pool.js';
import type { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import {
  adminClient,
  adminQuery,
  dropSchema,
  POSTGRES_URL,
  storeUrl,
  testSchema,
} from './fixtures/postgres.js';

const schemas: string[] = [];
const opened: PostgresStore[] = [];

/** A schema name for this test (optionally padded to `length` characters), dropped after it. */
function newSchema(length?: number): string {
  let s = testSchema();
  if (length !== undefined) s = `${s}_${'x'.repeat(length - s.length - 1)}`;
  schemas.push(s);
  return s;
}

async function open(schema: string): Promise<PostgresStore> {
  const store = (await openStore(storeUrl(schema), { mode: 'node' })) as PostgresStore;
  opened.push(store);
  return store;
}

beforeAll(async () => {
  // Fails the file with a clear message when the server is unreachable.
  await (await adminClient()).end();
});
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close();
  for (const s of schemas.splice(0)) await dropSchema(s);
});

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

/** Polls `check` every 5 ms until it returns true (bounded). */
async function until(check: () => boolean | Promise<boolean>, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Subscribes to `store`'s wake-ups and waits until its listening connection is up. */
async function subscribed(store: PostgresStore): Promise<string[]> {
  const received: string[] = [];
  store.notifications.subscribe((topic) => received.push(topic));
  await until(() => store.stats().notifications.listenConnects >= 1, 'the LISTEN connection');
  return received;
}

function listenConnects(store: PostgresStore): number {
  return store.stats().notifications.listenConnects;
}

describe('channels', () => {
  it('are longhaul_wake_<schema>, hashed to at most 63 bytes for long schema names', () => {
    expect(notificationChannel('longhaul')).toBe('longhaul_wake_longhaul');
    const a = `s${'a'.repeat(60)}1`;
    const b = `s${'a'.repeat(60)}2`;
    for (const s of [a, b]) {
      expect(Buffer.byteLength(notificationChannel(s))).toBe(63);
      expect(notificationChannel(s)).toMatch(/^longhaul_wake_saaa[a-z0-9_]+_[0-9a-f]{16}$/);
    }
    expect(notificationChannel(a)).not.toBe(notificationChannel(b));
    // The longest unhashed name: 14 + 49 = 63 bytes.
    expect(notificationChannel('x'.repeat(49))).toBe(`longhaul_wake_${'x'.repeat(49)}`);
  });
});

describe('publish and subscribe', () => {
  it('a topic published by one store reaches a subscriber of another store on the same schema only', async () => {
    const schema = newSchema();
    const other = newSchema();
    const [publisher, subscriber, otherPublisher, otherSubscriber] = await Promise.all([
      open(schema),
      open(schema),
      open(other),
      open(other),
    ]);
    const received = await subscribed(subscriber);
    const otherReceived = await subscribed(otherSubscriber);

    publisher.notifications.publish(['{"kind":"timer","fireAt":1}', 'plain topic ✓']);
    await until(() => received.length >= 2, 'the topics on the same schema', 2_000);
    expect(received).toEqual(['{"kind":"timer","fireAt":1}', 'plain topic ✓']);

    // NOTIFY delivers in commit order on one database: had the other schema's subscriber been sent the
    // first topics, they would arrive before this sentinel.
    otherPublisher.notifications.publish(['sentinel']);
    await until(() => otherReceived.length >= 1, 'the sentinel', 2_000);
    expect(otherReceived).toEqual(['sentinel']);
    expect(received).toEqual(['{"kind":"timer","fireAt":1}', 'plain topic ✓']);
  });

  it('schemas with long names sharing a 50-character prefix do not wake each other', async () => {
    const a = newSchema(63);
    const b = `${a.slice(0, 50)}${'y'.repeat(13)}`;
    schemas.push(b);
    expect(notificationChannel(a)).not.toBe(notificationChannel(b));
    const [pubA, subA, pubB, subB] = await Promise.all([open(a), open(a), open(b), open(b)]);
    const receivedA = await subscribed(subA);
    const receivedB = await subscribed(subB);
    pubA.notifications.publish(['to a']);
    await until(() => receivedA.length >= 1, 'the topic on schema a', 2_000);
    pubB.notifications.publish(['sentinel']);
    await until(() => receivedB.length >= 1, 'the sentinel on schema b', 2_000);
    expect(receivedA).toEqual(['to a']);
    expect(receivedB).toEqual(['sentinel']);
  });

  it('a store does not hear its own notifications back (it woke its own process already)', async () => {
    const schema = newSchema();
    const [a, b] = await Promise.all([open(schema), open(schema)]);
    const receivedA = await subscribed(a);
    const receivedB = await subscribed(b);
    a.notifications.publish(['from a']);
    await until(() => receivedB.length >= 1, 'the topic at b', 2_000);
    b.notifications.publish(['from b']);
    await until(() => receivedA.length >= 1, 'the topic at a', 2_000);
    expect(receivedA).toEqual(['from b']);
    expect(receivedB).toEqual(['from a']);
  });

  it('every subscriber gets every topic; an unsubscribed one gets no more, and a throwing one harms no other', async () => {
    const schema = newSchema();
    const [publisher, subscriber] = await Promise.all([open(schema), open(schema)]);
    const first: string[] = [];
    const second: string[] = [];
    subscriber.notifications.subscribe(() => {
      throw new Error('listener bug');
    });
    const offFirst = subscriber.notifications.subscribe((t) => first.push(t));
    subscriber.notifications.subscribe((t) => second.push(t));
    await until(() => listenConnects(subscriber) >= 1, 'the LISTEN connection');
    publisher.notifications.publish(['one']);
    await until(() => first.length === 1 && second.length === 1, 'both subscribers', 2_000);
    offFirst();
    publisher.notifications.publish(['two']);
    await until(() => second.length === 2, 'the remaining subscriber', 2_000);
    expect(first).toEqual(['one']);
    expect(second).toEqual(['one', 'two']);
  });
});

describe('coalescing', () => {
  it('many publishes in one turn of the event loop become one NOTIFY statement, deduplicated', async () => {
    const schema = newSchema();
    const [publisher, subscriber] = await Promise.all([open(schema), open(schema)]);
    const received = await subscribed(subscriber);
    for (let i = 0; i < 1000; i++) publisher.notifications.publish([`topic ${i % 50}`]);
    await until(() => received.length >= 50, 'the 50 distinct topics', 2_000);
    // A subscriber can hear the NOTIFY before the publisher's statement returns and counts it.
    await until(
      () => publisher.stats().notifications.notifyStatements >= 1,
      'the statement to be counted',
      2_000,
    );
    const stats = publisher.stats().notifications;
    expect(stats).toMatchObject({ published: 1000, notifyStatements: 1, payloadsSent: 1, topicsSent: 50 });
    expect(new Set(received).size).toBe(50);
    expect(received).toHaveLength(50);
  });

  it('publishes spread over many turns of the event loop still share NOTIFY statements', async () => {
    const schema = newSchema();
    const [publisher, subscriber] = await Promise.all([open(schema), open(schema)]);
    const received = await subscribed(subscriber);
    for (let i = 0; i < 500; i++) {
      publisher.notifications.publish([`spread ${i}`]);
      await new Promise((r) => setImmediate(r));
    }
    await until(() => received.length >= 500, 'the 500 topics', 5_000);
    await until(() => publisher.stats().notifications.topicsSent >= 500, 'the topics to be counted', 2_000);
    const stats = publisher.stats().notifications;
    expect(stats.topicsSent).toBe(500);
    expect(stats.notifyStatements).toBeLessThan(100);
    expect(new Set(received).size).toBe(500);
  });

  it('splits large batches into payloads under 8000 bytes and drops only a topic too long for any', async () => {
    const schema = newSchema();
    const [publisher, subscriber] = await Promise.all([open(schema), open(schema)]);
    const received = await subscribed(subscriber);
    // ~46 kB of topics, with multi-byte characters and characters JSON escapes.
    const topics = Array.from({ length: 300 }, (_, i) => `${i} ${'é"\\'.repeat(30)}${'x'.repeat(40)}`);
    publisher.notifications.publish([...topics, 'y'.repeat(MAX_PAYLOAD_BYTES)]);
    await until(() => received.length >= 300, 'the 300 topics', 2_000);
    expect(received).toEqual(topics);
    await until(
      () => publisher.stats().notifications.notifyStatements >= 1,
      'the statement to be counted',
      2_000,
    );
    const stats = publisher.stats().notifications;
    expect(stats.payloadsSent).toBeGreaterThanOrEqual(6);
    expect(stats.notifyStatements).toBe(1);
    expect(stats.dropped).toBe(1);
  });

  it('packs payloads of at most 7999 bytes, in order', () => {
    const topics = Array.from({ length: 500 }, (_, i) => `${i}:${'€'.repeat(i % 97)}"`);
    const { payloads, tooLong } = packPayloads([...topics, '€'.repeat(2700)]);
    expect(tooLong).toBe(1);
    for (const p of payloads) expect(Buffer.byteLength(p.text)).toBeLessThanOrEqual(7999);
    expect(payloads.flatMap((p) => JSON.parse(p.text) as string[])).toEqual(topics);
    expect(payloads.reduce((n, p) => n + p.topics, 0)).toBe(500);
    // Nearly full: each payload but the last would overflow with the next topic.
    for (const p of payloads.slice(0, -1)) expect(Buffer.byteLength(p.text)).toBeGreaterThan(7999 - 300);
  });
});

describe('reconnecting', () => {
  it('the listening connection comes back after pg_terminate_backend and receives topics again', async () => {
    const schema = newSchema();
    const [publisher, subscriber] = await Promise.all([open(schema), open(schema)]);
    const received = await subscribed(subscriber);
    const pid = subscriber.stats().notifications.listenerPid;
    expect(pid).toBeTypeOf('number');
    const killed = await adminQuery<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [pid]);
    expect(killed).toEqual([{ ok: true }]);

    // Nothing else breaks meanwhile.
    await subscriber.transaction(async (tx) => tx.getRun('none'));
    await until(() => listenConnects(subscriber) >= 2, 'the reconnect', 5_000);
    const newPid = subscriber.stats().notifications.listenerPid;
    expect(newPid).not.toBe(pid);

    publisher.notifications.publish(['after the reconnect']);
    await until(() => received.includes('after the reconnect'), 'the topic after the reconnect', 2_000);
  });

  it('keeps retrying while the server refuses connections, and close stops it at once', async () => {
    const listenClients: pg.Client[] = [];
    const notifications = new PostgresNotifications({
      pool: unreachablePool(),
      newListenClient: () => {
        const client = new pg.Client({ connectionString: UNREACHABLE, connectionTimeoutMillis: 1000 });
        listenClients.push(client);
        return client;
      },
      schema: 'lh_test_unreachable',
      description: 'unreachable',
      logger: silentLogger,
    });
    notifications.subscribe(() => undefined);
    await until(() => listenClients.length >= 3, 'three connection attempts', 5_000);
    expect(notifications.stats().listenConnects).toBe(0);
    const started = performance.now();
    await within(notifications.close(), 3_000, 'close');
    expect(performance.now() - started).toBeLessThan(1_000);
    const attempts = listenClients.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(listenClients.length).toBe(attempts);
  });
});

const UNREACHABLE = 'postgres://postgres@127.0.0.1:1/test';

function unreachablePool(): pg.Pool {
  const pool = new pg.Pool({ connectionString: UNREACHABLE, connectionTimeoutMillis: 1000 });
  pool.on('error', () => undefined);
  return pool;
}

describe('publish never throws', () => {
  it('after the store closed', async () => {
    const store = await open(newSchema());
    store.notifications.subscribe(() => undefined);
    await store.close();
    expect(() => store.notifications.publish(['late'])).not.toThrow();
    expect(store.stats().notifications.pending).toBe(0);
  });

  it('when the pool was ended under it, or the database is unreachable: the topics are dropped', async () => {
    const ended = new pg.Pool({ connectionString: POSTGRES_URL });
    await ended.end();
    for (const pool of [ended, unreachablePool()]) {
      const notifications = new PostgresNotifications({
        pool,
        newListenClient: () => new pg.Client({ connectionString: UNREACHABLE }),
        schema: 'lh_test_unreachable',
        description: 'test',
        logger: silentLogger,
      });
      expect(() => notifications.publish(['a', 'b'])).not.toThrow();
      await until(() => notifications.stats().dropped === 2, 'the topics to be dropped', 3_000);
      await notifications.close();
      if (pool !== ended) await pool.end();
    }
  });

  it('while the database hangs: the queue stays bounded (oldest dropped) and close does not wait long', async () => {
    const hanging: PostgresPool = {
      connect: () => new Promise(() => undefined),
      end: async () => undefined,
      on: () => undefined,
    };
    const notifications = new PostgresNotifications({
      pool: hanging,
      newListenClient: () => new pg.Client({ connectionString: UNREACHABLE }),
      schema: 'lh_test_hanging',
      description: 'test',
      logger: silentLogger,
    });
    // ~1 kB topics: the 1 MiB queue holds about 1040 of them.
    const topic = (i: number) => `${i} ${'z'.repeat(1000)}`;
    for (let i = 0; i < 3000; i++) notifications.publish([topic(i)]);
    let stats = notifications.stats();
    expect(stats.pending).toBeGreaterThan(1000);
    expect(stats.pending).toBeLessThan(1050);
    expect(stats.dropped).toBe(3000 - stats.pending);
    await new Promise((r) => setTimeout(r, 20));
    // A flush took them and waits for a connection that never comes; the queue fills up again.
    expect(notifications.stats().pending).toBe(0);
    for (let i = 3000; i < 6000; i++) notifications.publish([topic(i)]);
    stats = notifications.stats();
    expect(stats.pending).toBeLessThan(1050);
    expect(stats.dropped).toBeGreaterThan(3900);
    const started = performance.now();
    await within(notifications.close(), 3_000, 'close');
    expect(performance.now() - started).toBeLessThan(1_500);
  });
});

describe('currentTime', () => {
  it('is the database clock, between two readings of now() around it, and never goes back', async () => {
    const store = await open(newSchema());
    const admin = await adminClient();
    try {
      const read = async () =>
        Number(
          (await admin.query<{ t: number }>('SELECT (extract(epoch from now()) * 1000)::float8 AS t'))
            .rows[0]!.t,
        );
      const before = await read();
      const time = await store.currentTime();
      const after = await read();
      expect(typeof time).toBe('number');
      expect(time).toBeGreaterThanOrEqual(before);
      expect(time).toBeLessThanOrEqual(after);
      expect(after - before).toBeLessThan(200);
      let last = time;
      for (let i = 0; i < 50; i++) {
        const t = await store.currentTime();
        expect(t).toBeGreaterThanOrEqual(last);
        last = t;
      }
      // The test host and the server share a clock here; in general they need not.
      expect(Math.abs(last - Date.now())).toBeLessThan(1_000);
    } finally {
      await admin.end();
    }
  });

  it('rejects with STORE_CLOSED after close', async () => {
    const store = await open(newSchema());
    await store.close();
    const err = await store.currentTime().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_CLOSED');
  });
});

describe('through the runtime', () => {
  const children: ChildProcessWithoutNullStreams[] = [];
  const schema = testSchema();
  let client: Client | undefined;
  afterAll(async () => {
    await client?.close();
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await dropSchema(schema);
  });

  it('a worker in another process, polling every 10 s, is woken by a notification and completes a workflow within 2 s', async () => {
    const url = storeUrl(schema);
    const fixture = fileURLToPath(new URL('./fixtures/postgres-wake-worker.ts', import.meta.url));
    const queue = `wake-${randomBytes(3).toString('hex')}`;
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', fixture, url, queue], {
      stdio: 'pipe',
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const alive = () => {
      if (child.exitCode !== null) throw new Error(`the worker exited (${child.exitCode}): ${stderr}`);
      return true;
    };
    await until(() => alive() && stdout.includes('ready\n'), 'the worker to start', 30_000);
    // The worker's LISTEN (the only one on this schema so far).
    const listen = `LISTEN "${notificationChannel(schema)}"`;
    await until(
      async () => (await adminQuery('SELECT 1 FROM pg_stat_activity WHERE query = $1', [listen])).length > 0,
      "the worker's LISTEN connection",
      10_000,
    );
    client = await Client.connect(url);
    // The worker polled once when it started; its next poll is ~10 s away.
    await new Promise((r) => setTimeout(r, 500));

    const latencies: number[] = [];
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const handle = await client.workflow.start('hello', {
        workflowId: `wake-${i}`,
        taskQueue: queue,
        args: [`p${i}`],
      });
      expect(await within(handle.result(), 2_000, `workflow ${i} (worker stderr: ${stderr})`)).toBe(
        `hello p${i}`,
      );
      latencies.push(performance.now() - started);
      alive();
    }
    expect(Math.max(...latencies)).toBeLessThan(2_000);

    child.kill('SIGTERM');
    await within(new Promise((resolve) => child.once('exit', resolve)), 10_000, 'the worker to shut down');
    expect(stdout).toContain('stopped');
  });
});
