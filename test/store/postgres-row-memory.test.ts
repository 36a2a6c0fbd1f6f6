/**
 * Remembered rows of the PostgreSQL store (src/store/postgres/postgres-row-memory.ts): a transaction that
 * reads a run this store's last transaction on it left gets the rows without a round trip, and a check
 * that joins its batch of writes proves them current (their xmins). A run changed by anyone else fails
 * the check, and the callback runs again reading every row: results are always those of a real read.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { activity, FAILURE, run, signal } from '../../src/store/conformance/records.js';
import { openStore } from '../../src/store/open-store.js';
import { RowMemory } from '../../src/store/postgres/postgres-row-memory.js';
import type { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import type { RunWithActivities, StoreTx } from '../../src/store/store.js';
import {
  adminQuery,
  countQueries,
  dropSchema,
  emptyTables,
  type QueryCounter,
  storeUrl,
  testSchema,
} from './fixtures/postgres.js';

describe('remembered rows on PostgreSQL', () => {
  let schema: string;
  let store: PostgresStore;
  let other: PostgresStore;
  let queries: QueryCounter;

  beforeAll(async () => {
    schema = testSchema();
    store = (await openStore(storeUrl(schema), { mode: 'node' })) as PostgresStore;
    other = (await openStore(storeUrl(schema), { mode: 'node' })) as PostgresStore;
    queries = countQueries();
  });
  afterAll(async () => {
    queries.restore();
    await store.close();
    await other.close();
    await dropSchema(schema);
  });
  afterEach(() => emptyTables(schema));

  const roundTrips = <T>(fn: () => Promise<T>) => queries.counted(fn);

  /** What a plain read returns now (no memory, no lock). */
  const fresh = (runId = 'run-1'): Promise<RunWithActivities> =>
    store.read((tx) => tx.getRunWithActivities(runId));

  /** A run with two activities, one started, written by `store` (which then remembers them). */
  async function seed(): Promise<void> {
    await store.transaction(async (tx) => {
      await tx.insertRun(run({ memo: { customer: 'ada', note: 'ünïcode \u2028' }, nextEventId: 6 }));
      await tx.insertActivity(activity({ scheduledEventId: 5 }));
      await tx.insertActivity(
        activity({ scheduledEventId: 7, activityId: '2', phase: 'started', token: 3, leaseOwner: 'w1' }),
      );
    });
  }

  /** A hot-path-like step: read the run and its activities, complete activity 7, schedule another. */
  const step = async (tx: StoreTx) => {
    const read = await tx.getRunWithActivities('run-1');
    await tx.deleteActivity('run-1', 7);
    await tx.updateRun('run-1', { nextEventId: read.run!.nextEventId + 2, wftToken: read.run!.wftToken + 1 });
    await tx.insertActivity(activity({ scheduledEventId: 9, activityId: '3', lastFailure: FAILURE }));
    return read;
  };

  it('a step on a run this store wrote is one round trip, and reads exactly what a read would', async () => {
    await seed();
    const expected = await fresh();
    const before = store.stats();
    const { value: read, roundTrips: trips } = await roundTrips(() => store.transaction(step));
    expect(trips).toBe(1); // one statement: the check, then the writes; it commits by itself
    expect(read).toEqual(expected);
    expect(store.stats().remembered).toBe(before.remembered + 1);
    expect(store.stats().stale).toBe(before.stale);
    const after = await fresh();
    expect(after.run?.nextEventId).toBe(8);
    expect(after.activities.map((a) => a.scheduledEventId)).toEqual([5, 9]);
    // What the step wrote is remembered in turn: the next read answers from memory, equal to a real one.
    const again = await roundTrips(() => store.transaction((tx) => tx.getRunWithActivities('run-1')));
    expect(again.value).toEqual(after);
    expect(again.roundTrips).toBe(1);
    expect(store.stats().remembered).toBe(before.remembered + 2);
  });

  it('a run row changed by another connection fails the check: the callback runs again and reads it', async () => {
    await seed();
    await adminQuery(`UPDATE "${schema}".runs SET next_event_id = 40, memo = '{"changed":true}'`);
    const before = store.stats();
    const seen: number[] = [];
    await store.transaction(async (tx) => {
      const read = await step(tx);
      seen.push(read.run!.nextEventId);
    });
    expect(seen).toEqual([6, 40]); // the remembered run, then the real one
    expect(store.stats().stale).toBe(before.stale + 1);
    expect(store.stats().replays).toBe(before.replays);
    const after = await fresh();
    expect(after.run?.nextEventId).toBe(42);
    expect(after.run?.memo).toEqual({ changed: true });
  });

  it('an error thrown on what remembered rows said is reported only if they were current', async () => {
    await seed();
    await adminQuery(`UPDATE "${schema}".runs SET next_event_id = 40`);
    const before = store.stats();
    const seen: number[] = [];
    // A guard like a fencing token's: it fails on the remembered run, and holds on the real one.
    const guarded = (tx: StoreTx) => async () => {
      const { run: r } = await tx.getRunWithActivities('run-1');
      seen.push(r!.nextEventId);
      if (r!.nextEventId !== 40) throw new Error(`next event id ${r!.nextEventId} is not current`);
      return 'passed';
    };
    await expect(store.transaction((tx) => guarded(tx)())).resolves.toBe('passed');
    expect(seen).toEqual([6, 40]);
    expect(store.stats().stale).toBe(before.stale + 1);
    // Rows that are current: the error stands, after one check.
    await store.transaction(async (tx) => {
      await tx.getRunWithActivities('run-1');
      await tx.updateRun('run-1', { nextEventId: 41 });
    });
    const failing = await roundTrips(() => store.transaction((tx) => guarded(tx)()).catch((e: Error) => e));
    expect((failing.value as Error).message).toBe('next event id 41 is not current');
    expect(failing.roundTrips).toBe(2); // BEGIN with the check, ROLLBACK
    expect(store.stats().stale).toBe(before.stale + 1);
  });

  it('an activity changed, added or removed by another connection fails the check', async () => {
    const changes = [
      `UPDATE "${schema}".activities SET lease_owner = 'zombie', token = 4 WHERE scheduled_event_id = 7`,
      `INSERT INTO "${schema}".activities SELECT run_id, 11, namespace, workflow_id, '9', activity_type, task_queue, input, options, phase, attempt, scheduled_time, visible_at, started_time, last_heartbeat_time, heartbeat_details, last_failure, cancel_requested, lease_owner, token, deadline FROM "${schema}".activities WHERE scheduled_event_id = 5`,
      `DELETE FROM "${schema}".activities WHERE scheduled_event_id = 5`,
    ];
    for (const change of changes) {
      await seed();
      await adminQuery(change);
      const expected = await fresh();
      const before = store.stats().stale;
      const reads: RunWithActivities[] = [];
      await store.transaction(async (tx) => {
        reads.push(await tx.getRunWithActivities('run-1'));
        await tx.updateRun('run-1', { wftToken: 9 });
      });
      expect(reads).toHaveLength(2);
      expect(reads[1]).toEqual(expected);
      expect(store.stats().stale).toBe(before + 1);
      await adminQuery(`TRUNCATE "${schema}".runs, "${schema}".activities`);
    }
  });

  it('two stores taking turns on one run each notice the other and never lose a write', async () => {
    await seed();
    const staleBefore = store.stats().stale + other.stats().stale;
    for (let i = 0; i < 6; i++) {
      const s = i % 2 === 0 ? store : other;
      await s.transaction(async (tx) => {
        const { run: r } = await tx.getRunWithActivities('run-1');
        await tx.updateRun('run-1', { nextEventId: r!.nextEventId + 1 });
      });
    }
    expect((await fresh()).run?.nextEventId).toBe(12);
    // Turn 0 (`store`, which wrote the run) passes its check; turn 1 (`other`) has no memory and reads;
    // each later turn finds the other store wrote since, re-runs reading, and remembers again.
    expect(store.stats().stale + other.stats().stale).toBe(staleBefore + 4);
  });

  it('a transaction that rolls back, or writes in a savepoint, leaves nothing remembered', async () => {
    await seed();
    await expect(
      store.transaction(async (tx) => {
        await step(tx);
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    let before = store.stats().remembered;
    await store.transaction(async (tx) => void (await tx.getRunWithActivities('run-1')));
    expect(store.stats().remembered).toBe(before); // forgotten: read for real
    // A change to 'running' runs in a savepoint, whose rows carry another transaction id.
    await store.transaction(async (tx) => {
      await tx.getRunWithActivities('run-1');
      await tx.updateRun('run-1', { status: 'running' });
    });
    before = store.stats().remembered;
    await store.transaction(async (tx) => void (await tx.getRunWithActivities('run-1')));
    expect(store.stats().remembered).toBe(before);
    expect((await fresh()).run?.status).toBe('running');
  });

  it("a remembered run's empty buffer needs no read: a workflow task on it is one round trip", async () => {
    await seed(); // a new run: nothing buffered
    const expected = await store.read((tx) => tx.listBuffered('run-1'));
    const { value, roundTrips: trips } = await roundTrips(() =>
      store.transaction(async (tx) => {
        await tx.getRunWithActivities('run-1');
        const buffered = await tx.listBuffered('run-1');
        await tx.updateRun('run-1', { wftToken: 2 });
        return buffered;
      }),
    );
    expect(expected).toEqual([]);
    expect(value).toEqual(expected);
    expect(trips).toBe(1);
  });

  it('an event buffered by another store fails the check; the re-run reads it, and consuming it is remembered', async () => {
    await seed();
    // A signal arriving at another node while a task is in flight: buffered there.
    await other.transaction(async (tx) => {
      await tx.getRun('run-1');
      await tx.addBuffered('run-1', signal('go'));
    });
    const before = store.stats();
    const seen: string[][] = [];
    const task = (tx: StoreTx) => async () => {
      await tx.getRunWithActivities('run-1');
      const buffered = await tx.listBuffered('run-1');
      seen.push(buffered.map((b) => b.event.type));
      if (buffered.length > 0) await tx.deleteBuffered('run-1', buffered[buffered.length - 1]!.seq);
      await tx.updateRun('run-1', { wftToken: 3 });
    };
    await store.transaction((tx) => task(tx)());
    expect(seen).toEqual([[], ['SignalReceived']]); // remembered (empty), then read for real
    expect(store.stats().stale).toBe(before.stale + 1);
    expect(await store.read((tx) => tx.listBuffered('run-1'))).toEqual([]);
    // The transaction that read and consumed the buffer taught the memory that it is empty again.
    const next = await roundTrips(() => store.transaction((tx) => task(tx)()));
    expect(next.roundTrips).toBe(1);
    expect(seen[2]).toEqual([]);
    expect(store.stats().stale).toBe(before.stale + 1);
  });

  it('an event this store buffers makes its own memory of the buffer unknown until read', async () => {
    await seed();
    await store.transaction(async (tx) => {
      await tx.getRunWithActivities('run-1');
      await tx.addBuffered('run-1', signal('one'));
    });
    const { value, roundTrips: trips } = await roundTrips(() =>
      store.transaction(async (tx) => {
        await tx.getRunWithActivities('run-1');
        return (await tx.listBuffered('run-1')).map((b) => b.event.attributes);
      }),
    );
    expect(value).toEqual([{ signalName: 'one', input: ['one', { x: [1] }] }]);
    expect(trips).toBe(3); // BEGIN with the check, the buffer, COMMIT
  });

  /** A start: no open run of the workflow id, then the new run (the runtime's startWorkflow, reduced). */
  const start = (runId: string, seen: string[] = []) =>
    store.transaction(async (tx) => {
      const open = await tx.findOpenRun('default', 'wf-1');
      seen.push(open?.runId ?? 'none');
      if (open) throw new Error(`already running: ${open.runId}`);
      await tx.insertRun(run({ runId }));
      return runId;
    });

  it('a start assumes its workflow id has no open run: one statement, checked in it', async () => {
    const { value, statements, roundTrips: trips } = await queries.counted(() => start('run-1'));
    expect(value).toBe('run-1');
    expect(statements).toEqual(['WITH w0']); // the check, then the insert: alone, it commits by itself
    expect(trips).toBe(1);
    expect((await store.read((tx) => tx.findOpenRun('default', 'wf-1')))?.runId).toBe('run-1');
  });

  it('a start whose workflow id has an open run after all runs again reading it, and gets it right', async () => {
    await other.transaction((tx) => tx.insertRun(run({ runId: 'run-0' })));
    const before = store.stats();
    const seen: string[] = [];
    await expect(start('run-1', seen)).rejects.toThrow('already running: run-0');
    expect(seen).toEqual(['none', 'run-0']); // assumed, then read (the error came from the real read)
    expect(store.stats().stale).toBe(before.stale + 1);
    const runs = await adminQuery(`SELECT run_id FROM "${schema}".runs`);
    expect(runs).toEqual([{ run_id: 'run-0' }]);
    // Once found open, the workflow id is read at its next start rather than assumed wrongly again.
    await expect(start('run-1', seen)).rejects.toThrow('already running: run-0');
    expect(seen.slice(2)).toEqual(['run-0']);
    expect(store.stats().stale).toBe(before.stale + 1);
    // Read without an open run, it is assumed none again at the start after.
    await adminQuery(`UPDATE "${schema}".runs SET status = 'completed'`);
    await start('run-1', seen);
    expect(seen.slice(3)).toEqual(['none']);
    await expect(start('run-2', seen)).rejects.toThrow('already running: run-1');
    expect(seen.slice(4)).toEqual(['none', 'run-1']); // assumed (run-1 is open), then read
    expect(store.stats().stale).toBe(before.stale + 2);
  });

  it('two stores starting one workflow id at once: one run, the other start sees it', async () => {
    for (let round = 0; round < 10; round++) {
      await emptyTables(schema);
      const results = await Promise.allSettled([
        start(`a-${round}`),
        other.transaction(async (tx) => {
          if (await tx.findOpenRun('default', 'wf-1')) throw new Error('already running');
          await tx.insertRun(run({ runId: `b-${round}` }));
        }),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(String(rejected.reason)).toMatch(/already running/);
      const runs = await adminQuery(`SELECT run_id FROM "${schema}".runs`);
      expect(runs).toHaveLength(1);
    }
  });

  it('a write to a run this transaction does not know (no read) makes the store forget the run', async () => {
    await seed();
    await store.transaction((tx) => tx.updateActivity('run-1', 5, { attempt: 2 }));
    const before = store.stats();
    const read = await store.transaction((tx) => tx.getRunWithActivities('run-1'));
    expect(read.activities.find((a) => a.scheduledEventId === 5)?.attempt).toBe(2);
    expect(store.stats().remembered).toBe(before.remembered);
    expect(store.stats().stale).toBe(before.stale);
  });
});

describe('RowMemory', () => {
  const entry = (status = 'running') => ({
    run: { row: { status } as never, xmin: null },
    activities: new Map([[5, { row: {} as never, xmin: '77' }]]),
    bufferEmpty: true,
  });

  it('forgets the least recently remembered run past its capacity', () => {
    const memory = new RowMemory(2);
    memory.remember('a', entry(), '100');
    memory.remember('b', entry(), '101');
    memory.remember('a', entry(), '102'); // used again: now the newest
    memory.remember('c', entry(), '103');
    expect(memory.size).toBe(2);
    expect(memory.take('b')).toBeUndefined();
    expect(memory.take('a')?.run.xmin).toBe('102');
    expect(memory.take('c')?.activities.get(5)?.xmin).toBe('77'); // unwritten rows keep their xmin
  });

  it('keeps the rows within its byte budget, and does not remember a run too large for it', () => {
    const big = (chars: number) => ({
      run: { row: { status: 'running', memo: 'x'.repeat(chars) } as never, xmin: '1' },
      activities: new Map(),
      bufferEmpty: false,
    });
    const memory = new RowMemory(100, 16_000); // runs of at most 1,000 bytes
    memory.remember('huge', big(600), '2'); // 1,214 bytes ('running' is 14)
    expect(memory.take('huge')).toBeUndefined();
    for (let i = 0; i < 20; i++) memory.remember(`r${i}`, big(400), '3'); // 814 bytes each
    expect(memory.bytes).toBeLessThanOrEqual(16_000);
    expect(memory.size).toBe(19);
    expect(memory.take('r0')).toBeUndefined(); // the oldest went first
    expect(memory.take('r19')).toBeDefined();
    memory.forget('r19');
    expect(memory.bytes).toBe(18 * 814);
  });

  it('does not remember a closed run, nor written rows whose transaction id is unknown', () => {
    const memory = new RowMemory();
    memory.remember('a', entry('completed'), '100');
    memory.remember('b', entry(), undefined);
    expect(memory.size).toBe(0);
  });
});
