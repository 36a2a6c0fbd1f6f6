import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { StoreError } from '../../src/common/errors.js';
import { activity, marker, run, timer } from '../../src/store/conformance/records.js';
import { openStore } from '../../src/store/open-store.js';
import {
  BatchStatements,
  batchValues,
  cteOf,
  type DeferredWrite,
  DeferredWrites,
  MAX_BATCH_PARAMETERS,
  MAX_BATCH_WRITES,
  renumber,
} from '../../src/store/postgres/postgres-batch.js';
import type { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import {
  adminQuery,
  countQueries,
  dropSchema,
  emptyTables,
  type QueryCounter,
  storeUrl,
  testSchema,
} from './fixtures/postgres.js';

describe('batch statements', () => {
  it('renumbers placeholders, leaving quoted identifiers and literals alone', () => {
    expect(renumber(`UPDATE "a$1"."t" SET x = $1, y = '$2' WHERE id = $2`, 5)).toBe(
      `UPDATE "a$1"."t" SET x = $6, y = '$2' WHERE id = $7`,
    );
    expect(renumber('DELETE FROM t WHERE a = $1', 0)).toBe('DELETE FROM t WHERE a = $1');
  });

  it('builds one statement per sequence of shapes, numbering each write after the ones before', () => {
    const batches = new BatchStatements();
    const del = { name: 'd', text: 'DELETE FROM t WHERE a = $1 AND b = $2' };
    const upd = { name: 'u', text: 'UPDATE r SET x = $1 WHERE id = $2' };
    const write = (stmt: typeof del, values: unknown[]) => ({
      key: `${stmt.name}:${values.join()}`,
      shape: stmt.name,
      sql: cteOf(stmt),
      values,
      expect: 'any' as const,
    });
    const first = batches.get([write(del, [1, 2]), write(upd, [3, 4])]);
    expect(first.text).toBe(
      'WITH w0 AS (DELETE FROM t WHERE a = $1 AND b = $2 RETURNING 1), ' +
        'w1 AS (UPDATE r SET x = $3 WHERE id = $4 RETURNING 1), ' +
        'lh_counts AS (SELECT (SELECT count(*) FROM w0)::int AS c0, (SELECT count(*) FROM w1)::int AS c1) ' +
        'SELECT c0, c1, (txid_current() % 4294967296)::text AS lh_xid FROM lh_counts',
    );
    // Exact and at-least-one counts are checked by the statement itself; exact ones are parameters.
    const checked = batches.get([
      { ...write(del, [1, 2]), expect: 3 },
      { ...write(upd, [3, 4]), expect: 'some' as const },
    ]);
    expect(checked.text).toContain(
      "SELECT c0, c1, CASE WHEN c0 = $5 AND c1 > 0 THEN 0 ELSE ('longhaul: a deferred write",
    );
    expect(batchValues([{ ...write(del, [1, 2]), expect: 3 }, write(upd, [3, 4])])).toEqual([1, 2, 3, 4, 3]);
    // Same shapes, other values: the same (prepared) statement; another order is another statement.
    expect(batches.get([write(del, [5, 6]), write(upd, [7, 8])])).toBe(first);
    expect(batches.get([write(upd, [1, 2]), write(del, [3, 4])]).name).not.toBe(first.name);
  });
});

describe('which writes share a batch', () => {
  const write = (key: string, more: Partial<DeferredWrite> = {}): DeferredWrite => ({
    key,
    shape: key.split(':')[0]!,
    sql: (alias) => `${alias} AS (SELECT 1)`,
    values: [],
    expect: 'any',
    ...more,
  });
  const state = write('state:r1', {
    covers: ['activities:r1', 'timers:r1', 'buffer:r1', 'queries'],
    deletes: true,
  });

  it('a write touching more than its key shares no batch with a write of those rows, unless both delete', () => {
    const batch = new DeferredWrites();
    batch.add(write('activities:r1:5', { deletes: true }));
    batch.add(write('runs:r1'));
    batch.add(write('activities:r10:5')); // another run whose id starts alike
    expect(batch.touches(state)).toBe(false); // deletes and deletes: deleted once, as in turn
    batch.add(state);
    for (const key of ['activities:r1:6', 'timers:r1:t', 'buffer:r1', 'queries:q7']) {
      expect(batch.touches(write(key))).toBe(true); // an insert or update after the delete must see it
      expect(batch.touches(write(key, { deletes: true }))).toBe(false);
    }
    expect(batch.touches(write('activities:r2:6'))).toBe(false);
    expect(batch.touches(write('runs:r2'))).toBe(false);

    const inserted = new DeferredWrites();
    inserted.add(write('timers:r1:t'));
    expect(inserted.touches(state)).toBe(true); // the delete must see the timer inserted before it
    inserted.take();
    expect(inserted.touches(state)).toBe(false);
  });
});

describe('deferred writes on PostgreSQL', () => {
  let schema: string;
  let store: PostgresStore;
  let queries: QueryCounter;

  beforeAll(async () => {
    schema = testSchema();
    store = (await openStore(storeUrl(schema), { mode: 'node' })) as PostgresStore;
    queries = countQueries();
  });
  afterAll(async () => {
    queries.restore();
    await store.close();
    await dropSchema(schema);
  });
  afterEach(() => emptyTables(schema));

  /**
   * A run with activity 5, written by another store, so `store` reads it (it would answer from its
   * memory of its own writes: postgres-row-memory.test.ts).
   */
  async function seedFromAnotherStore(): Promise<void> {
    const writer = await openStore(storeUrl(schema), { mode: 'node' });
    try {
      await writer.transaction(async (tx) => {
        await tx.insertRun(run());
        await tx.insertActivity(activity({ scheduledEventId: 5 }));
      });
    } finally {
      await writer.close();
    }
  }

  const counted = <T>(fn: () => Promise<T>) => queries.counted(fn);

  it("a step's writes (delete, append, update, insert) go in one statement between its read and COMMIT", async () => {
    await seedFromAnotherStore();
    const before = store.stats().replays;
    const { statements, roundTrips } = await counted(() =>
      store.transaction(async (tx) => {
        const { run: r } = await tx.getRunWithActivities('run-1');
        await tx.deleteActivity('run-1', 5);
        await tx.appendEvents('run-1', r?.nextEventId ?? 0, [marker(1), marker(2)]);
        await tx.updateRun('run-1', { nextEventId: 3 });
        await tx.insertActivity(activity({ scheduledEventId: 6, activityId: '2' }));
      }),
    );
    // BEGIN, one read of the run and its activities, the writes, COMMIT.
    expect(statements).toHaveLength(4);
    expect(statements[0]).toMatch(/^BEGIN/);
    expect(statements[1]).toBe('WITH r');
    expect(statements[2]).toBe('WITH w0');
    expect(statements[3]).toBe('COMMIT');
    // BEGIN goes out with the read, COMMIT with the writes: two waits for the server, not four.
    expect(roundTrips).toBe(2);
    expect(store.stats().replays).toBe(before);
    const after = await store.read(async (tx) => ({
      run: await tx.getRun('run-1'),
      events: await tx.readEvents('run-1'),
      activities: await tx.listActivities('run-1'),
    }));
    expect(after.run?.nextEventId).toBe(3);
    expect(after.events.map((e) => e.eventId)).toEqual([1, 2]);
    expect(after.activities.map((a) => a.scheduledEventId)).toEqual([6]);
  });

  it('a transaction of writes alone is one statement, without BEGIN and COMMIT; one that sends nothing sends nothing', async () => {
    const write = await counted(() =>
      store.transaction(async (tx) => {
        await tx.insertRun(run());
        await tx.insertTimer(timer());
      }),
    );
    // One statement is a transaction of its own (the server's default isolation is READ COMMITTED).
    expect(write.statements).toEqual(['WITH w0']);
    expect(write.roundTrips).toBe(1);
    expect((await store.read((tx) => tx.listTimers('run-1'))).map((t) => t.timerKey)).toEqual(['t1']);
    const empty = await counted(() => store.transaction(async () => 'nothing to do'));
    expect(empty.value).toBe('nothing to do');
    expect(empty.statements).toEqual([]);
    const read = await counted(() => store.read((tx) => tx.getRun('run-1')));
    expect(read.value?.runId).toBe('run-1');
    // A snapshot read: BEGIN with its statement, then COMMIT.
    expect(read.statements).toEqual(['BEGIN ISOLATION', 'SELECT run_id,', 'COMMIT']);
    expect(read.roundTrips).toBe(2);
  });

  it('a server whose default isolation is not READ COMMITTED gets BEGIN and COMMIT around every batch', async () => {
    // A role of its own whose sessions default to SERIALIZABLE (trust auth: no password).
    const role = `${schema}_serializable`;
    await adminQuery(`CREATE ROLE "${role}" LOGIN SUPERUSER`);
    await adminQuery(`ALTER ROLE "${role}" SET default_transaction_isolation = 'serializable'`);
    const url = new URL(storeUrl(schema));
    url.username = role;
    const strict = await openStore(url.href, { mode: 'node' });
    try {
      const write = await counted(() => strict.transaction((tx) => tx.insertRun(run({ runId: 'run-s' }))));
      expect(write.statements).toEqual(['BEGIN ISOLATION', 'WITH w0', 'COMMIT']);
      expect(write.roundTrips).toBe(1);
      expect((await store.read((tx) => tx.getRun('run-s')))?.runId).toBe('run-s');
    } finally {
      await strict.close();
      await adminQuery(`DROP ROLE "${role}"`);
    }
  });

  it('a fan-out of 2,000 activities (the per-run limit) goes in batches of MAX_BATCH_WRITES, committed at the first attempt', async () => {
    const count = 2000;
    const before = store.stats();
    const { statements } = await counted(() =>
      store.transaction(async (tx) => {
        await tx.insertRun(run());
        for (let i = 0; i < count; i++) {
          await tx.insertActivity(activity({ scheduledEventId: i + 2, activityId: String(i) }));
        }
      }),
    );
    // One statement of 2,001 writes would pass PostgreSQL's limits (100 function arguments, 1,664
    // columns); it used to fail and the transaction ran again with a round trip per write.
    expect(store.stats().replays).toBe(before.replays);
    expect(store.stats().retries).toBe(before.retries);
    const batches = statements.filter((s) => s === 'WITH w0');
    expect(batches).toHaveLength(Math.ceil((count + 1) / MAX_BATCH_WRITES));
    expect(statements.filter((s) => s.startsWith('INSERT'))).toEqual([]);
    const stored = await store.read((tx) => tx.listActivities('run-1'));
    expect(stored.map((a) => a.scheduledEventId)).toEqual(Array.from({ length: count }, (_, i) => i + 2));
  });

  it('a batch stays within the 65,535 parameters of one statement', () => {
    const writes = new DeferredWrites();
    const wide: DeferredWrite = {
      key: 'k',
      shape: 'wide',
      sql: (alias) => `${alias} AS (SELECT 1)`,
      values: Array.from({ length: 30_000 }, () => 0),
      expect: 1,
    };
    expect(writes.fits(wide)).toBe(true);
    writes.add(wide);
    expect(writes.fits({ ...wide, key: 'k2' })).toBe(true);
    writes.add({ ...wide, key: 'k2' });
    expect(writes.fits({ ...wide, key: 'k3' })).toBe(false);
    writes.take();
    expect(writes.fits({ ...wide, key: 'k3' })).toBe(true);
    expect(MAX_BATCH_PARAMETERS).toBe(65_535);
  });

  it('a batch checks its own row counts: a wrong count fails the statement, so the COMMIT behind it rolls back', async () => {
    await store.transaction((tx) => tx.insertRun(run()));
    const before = store.stats().replays;
    // Batch of two: the update finds its row, the timer insert collides with nothing, but the append
    // finds event 1 taken by the concurrent commit below.
    const outcome = await store
      .transaction(async (tx) => {
        await tx.updateRun('run-1', { nextEventId: 2 });
        await tx.appendEvents('run-1', 1, [marker(7)]);
        if (store.stats().replays === before) {
          // First attempt only: another connection appends event 1 while these writes are held back.
          await store.transaction((other) => other.appendEvents('run-1', 1, [marker(1)]));
        }
      })
      .catch((e: unknown) => e);
    expect((outcome as StoreError).code).toBe('EVENT_CONFLICT');
    expect(store.stats().replays).toBe(before + 1);
    const after = await store.read(async (tx) => ({
      run: await tx.getRun('run-1'),
      events: await tx.readEvents('run-1'),
    }));
    // Nothing of the transaction was committed: not the run update sent in the same statement.
    expect(after.run?.nextEventId).toBe(1);
    expect(after.events.map((e) => e.attributes)).toEqual([marker(1).attributes]);
  });

  it('a read inside the transaction sees the writes held back before it', async () => {
    const seen = await store.transaction(async (tx) => {
      await tx.insertRun(run());
      await tx.updateRun('run-1', { nextEventId: 7 });
      await tx.insertTimer(timer());
      return { run: await tx.getRun('run-1'), timers: await tx.listTimers('run-1') };
    });
    expect(seen.run?.nextEventId).toBe(7);
    expect(seen.timers.map((t) => t.timerKey)).toEqual(['t1']);
  });

  it('two writes of the same rows keep their order (never one statement): the last one wins', async () => {
    const before = store.stats().replays;
    await store.transaction(async (tx) => {
      await tx.insertRun(run());
      await tx.updateRun('run-1', { nextEventId: 4 });
      await tx.updateRun('run-1', { nextEventId: 9 });
      await tx.insertActivity(activity({ scheduledEventId: 5 }));
      await tx.deleteActivity('run-1', 5);
      await tx.appendEvents('run-1', 1, [marker(1)]);
      await tx.appendEvents('run-1', 2, [marker(2)]);
    });
    const after = await store.read(async (tx) => ({
      run: await tx.getRun('run-1'),
      events: await tx.readEvents('run-1'),
      activities: await tx.listActivities('run-1'),
    }));
    expect(after.run?.nextEventId).toBe(9);
    expect(after.activities).toEqual([]);
    expect(after.events.map((e) => e.eventId)).toEqual([1, 2]);
    expect(store.stats().replays).toBe(before);
  });

  it('closing a run and starting the next of its workflow id in one transaction needs no replay', async () => {
    await store.transaction((tx) => tx.insertRun(run()));
    const before = store.stats().replays;
    await store.transaction(async (tx) => {
      await tx.getRun('run-1');
      await tx.updateRun('run-1', { status: 'completed', closeTime: 5 });
      await tx.insertRun(run({ runId: 'run-2' }));
      await tx.appendEvents('run-2', 1, [marker(1)]);
    });
    const open = await store.read((tx) => tx.findOpenRun('default', 'wf-1'));
    expect(open?.runId).toBe('run-2');
    expect(store.stats().replays).toBe(before);
  });

  it("deleting a closed run's pending state joins the step's batch, and keeps its order with every other write", async () => {
    await seedFromAnotherStore();
    await store.transaction(async (tx) => {
      await tx.insertTimer(timer());
      await tx.addBuffered('run-1', marker(1));
    });
    const before = store.stats().replays;
    const close = await counted(() =>
      store.transaction(async (tx) => {
        await tx.getRunWithActivities('run-1');
        await tx.deleteActivity('run-1', 5);
        await tx.deleteBuffered('run-1', 1);
        await tx.updateRun('run-1', { status: 'completed', closeTime: 9 });
        await tx.deleteRunState('run-1');
      }),
    );
    // BEGIN with the read, then the writes (the delete of the run's state among them) with COMMIT.
    expect(close.statements).toEqual([expect.stringMatching(/^BEGIN/), 'WITH r', 'WITH w0', 'COMMIT']);
    expect(store.stats().replays).toBe(before);
    const pending = () =>
      store.read(async (tx) => ({
        activities: (await tx.listActivities('run-1')).map((a) => a.scheduledEventId),
        timers: (await tx.listTimers('run-1')).map((t) => t.timerKey),
        buffered: (await tx.listBuffered('run-1')).length,
      }));
    expect(await pending()).toEqual({ activities: [], timers: [], buffered: 0 });
    // Rows written before the delete in the same transaction are deleted; rows written after it stay.
    await store.transaction(async (tx) => {
      await tx.insertActivity(activity({ scheduledEventId: 7 }));
      await tx.insertTimer(timer({ timerKey: 't2' }));
      await tx.addBuffered('run-1', marker(2));
      await tx.deleteRunState('run-1');
      await tx.insertTimer(timer({ timerKey: 't3' }));
    });
    expect(await pending()).toEqual({ activities: [], timers: ['t3'], buffered: 0 });
    expect(store.stats().replays).toBe(before);
  });

  it('a rejected deferred write is re-run with immediate writes: its error surfaces at its call', async () => {
    await seedFromAnotherStore();
    const before = store.stats().replays;
    const calls: string[] = [];
    const outcome = await store.transaction(async (tx) => {
      await tx.updateRun('run-1', { nextEventId: 2 });
      try {
        await tx.insertActivity(activity({ scheduledEventId: 5 }));
        calls.push('inserted');
      } catch (err) {
        calls.push((err as StoreError).code);
      }
      await tx.updateRun('run-1', { nextEventId: 3 });
      return 'done';
    });
    expect(outcome).toBe('done');
    // First attempt: the duplicate went unnoticed until the batch; the re-run reports it at the call.
    expect(calls).toEqual(['inserted', 'DUPLICATE_KEY']);
    expect(store.stats().replays).toBe(before + 1);
    expect((await store.read((tx) => tx.getRun('run-1')))?.nextEventId).toBe(3);
  });

  it('a missing row and an append that would conflict are reported at the call too, and nothing is written', async () => {
    await store.transaction(async (tx) => {
      await tx.insertRun(run());
      await tx.appendEvents('run-1', 1, [marker(1)]);
    });
    const missing = await store
      .transaction(async (tx) => {
        await tx.updateRun('run-1', { nextEventId: 5 });
        await tx.updateActivity('run-1', 99, { attempt: 2 });
      })
      .catch((e: unknown) => e);
    expect((missing as StoreError).code).toBe('ACTIVITY_NOT_FOUND');
    const conflict = await store
      .transaction(async (tx) => {
        await tx.updateRun('run-1', { nextEventId: 6 });
        await tx.appendEvents('run-1', 1, [marker(9)]);
      })
      .catch((e: unknown) => e);
    expect((conflict as StoreError).code).toBe('EVENT_CONFLICT');
    const after = await store.read(async (tx) => ({
      run: await tx.getRun('run-1'),
      events: await tx.readEvents('run-1'),
    }));
    expect(after.run?.nextEventId).toBe(1);
    expect(after.events.map((e) => e.attributes)).toEqual([marker(1).attributes]);
  });
});
