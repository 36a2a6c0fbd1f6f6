import { describe, expect, it } from 'vitest';
import type { ActivityPatch } from '../store.js';
import { activity, FAILURE, marker, query, RETRY, run, signal, T0, timer } from './records.js';
import type { SuiteContext } from './suite-context.js';

/** Activities, timers, request ids and queries. */
export function describePendingState(s: SuiteContext): void {
  const { tx, txFails } = s;
  describe('activities', () => {
    it('insert, get, list (by scheduledEventId), update, delete', async () => {
      const a = activity({
        scheduledEventId: 9,
        heartbeatDetails: { progress: [1, 'two'] },
        lastFailure: FAILURE,
      });
      const b = activity({ scheduledEventId: 5, heartbeatDetails: null, deadline: T0 + 50 });
      await tx(async (t) => {
        await t.insertActivity(a);
        await t.insertActivity(b);
        await t.insertActivity(activity({ runId: 'r2', workflowId: 'wf-2' }));
      });
      expect(await s.store.read((t) => t.getActivity('run-1', 9))).toEqual(a);
      const b2 = await s.store.read((t) => t.getActivity('run-1', 5));
      expect(b2).toEqual(b);
      expect(b2?.heartbeatDetails).toBeNull();
      expect((await s.store.read((t) => t.getActivity('run-1', 5)))?.cancelRequested).toBe(false);
      expect((await s.store.read((t) => t.listActivities('run-1'))).map((x) => x.scheduledEventId)).toEqual([
        5, 9,
      ]);

      const patch: ActivityPatch = {
        activityType: 'ship',
        taskQueue: 'q2',
        input: [{ x: 1 }],
        options: { retry: { ...RETRY, maximumAttempts: 9 } },
        phase: 'started',
        attempt: 2,
        scheduledTime: T0 + 1,
        visibleAt: T0 + 2,
        startedTime: T0 + 3,
        lastHeartbeatTime: T0 + 4,
        heartbeatDetails: 'hb',
        lastFailure: null,
        cancelRequested: true,
        leaseOwner: 'w2',
        token: 5,
        deadline: T0 + 99,
      };
      await tx((t) => t.updateActivity('run-1', 9, patch));
      expect(await s.store.read((t) => t.getActivity('run-1', 9))).toEqual({ ...a, ...patch });
      await txFails('ACTIVITY_NOT_FOUND', (t) => t.updateActivity('run-1', 77, { attempt: 2 }));
      await tx(async (t) => {
        await t.deleteActivity('run-1', 9);
        await t.deleteActivity('run-1', 12345);
      });
      expect(await s.store.read((t) => t.getActivity('run-1', 9))).toBeUndefined();
      expect(await s.store.read((t) => t.listActivities('r2'))).toHaveLength(1);
    });

    it('keeps undefined heartbeat details undefined and refuses a duplicate key', async () => {
      await tx((t) => t.insertActivity(activity()));
      const got = await s.store.read((t) => t.getActivity('run-1', 5));
      expect(got?.heartbeatDetails).toBeUndefined();
      expect(got?.lastFailure).toBeNull();
      await txFails('DUPLICATE_KEY', (t) => t.insertActivity(activity()));
    });
  });

  describe('a run with its activities', () => {
    it('getRunWithActivities returns what getRun and listActivities return, in a read and in a transaction', async () => {
      const a = activity({ scheduledEventId: 9, heartbeatDetails: { progress: 1 }, lastFailure: FAILURE });
      const b = activity({ scheduledEventId: 5 });
      await tx(async (t) => {
        await t.insertRun(run());
        await t.insertRun(run({ runId: 'r2', workflowId: 'wf-2' }));
        await t.insertRun(run({ runId: 'r3', workflowId: 'wf-3' }));
        await t.insertActivity(a);
        await t.insertActivity(b);
        await t.insertActivity(activity({ runId: 'r2', workflowId: 'wf-2' }));
      });
      for (const read of [s.store.read.bind(s.store), tx]) {
        const got = await read((t) => t.getRunWithActivities('run-1'));
        expect(got.run).toEqual(await s.store.read((t) => t.getRun('run-1')));
        expect(got.activities).toEqual([b, a]);
        // A run without activities, and no run at all.
        expect(await read((t) => t.getRunWithActivities('r3'))).toEqual({
          run: await s.store.read((t) => t.getRun('r3')),
          activities: [],
        });
        expect(await read((t) => t.getRunWithActivities('nope'))).toEqual({ run: undefined, activities: [] });
      }
      // Inside a transaction it sees the transaction's own writes.
      await tx(async (t) => {
        await t.deleteActivity('run-1', 5);
        await t.updateRun('run-1', { nextEventId: 42 });
        const got = await t.getRunWithActivities('run-1');
        expect(got.run?.nextEventId).toBe(42);
        expect(got.activities.map((x) => x.scheduledEventId)).toEqual([9]);
      });
    });

    it('getRunWithActivities inside a transaction locks the activities: concurrent increments are serial', async () => {
      await tx(async (t) => {
        await t.insertRun(run());
        await t.insertActivity(activity({ scheduledEventId: 5, attempt: 1 }));
      });
      // Half read the activity through getRunWithActivities, half through getActivity (which does not
      // touch the run): only a lock on the activity row itself keeps every increment.
      const count = 20;
      await Promise.all(
        Array.from({ length: count }, (_, i) =>
          s.store.transaction(async (t) => {
            const current =
              i % 2 === 0
                ? (await t.getRunWithActivities('run-1')).activities[0]!
                : (await t.getActivity('run-1', 5))!;
            await t.updateActivity('run-1', 5, { attempt: current.attempt + 1 });
          }),
        ),
      );
      expect((await s.store.read((t) => t.getActivity('run-1', 5)))?.attempt).toBe(1 + count);
    });
  });

  describe('timers', () => {
    it('insert, list (by fireAt), delete; a duplicate key is refused', async () => {
      const t1 = timer({ timerKey: 'b', fireAt: T0 + 20 });
      const t2 = timer({ timerKey: 'a', fireAt: T0 + 10, kind: 'workflowRunTimeout', startedEventId: 0 });
      await tx(async (t) => {
        await t.insertTimer(t1);
        await t.insertTimer(t2);
        await t.insertTimer(timer({ runId: 'r2' }));
      });
      expect(await s.store.read((t) => t.listTimers('run-1'))).toEqual([t2, t1]);
      await txFails('DUPLICATE_KEY', (t) => t.insertTimer(t1));
      await tx(async (t) => {
        await t.deleteTimer('run-1', 'a');
        await t.deleteTimer('run-1', 'never');
      });
      expect(await s.store.read((t) => t.listTimers('run-1'))).toEqual([t1]);
      expect(await s.store.read((t) => t.listTimers('r2'))).toHaveLength(1);
    });
  });

  describe('requests and queries', () => {
    it('deleteRequestsBefore forgets old request ids, oldest first, up to the limit', async () => {
      await tx(async (t) => {
        for (let i = 0; i < 5; i++) {
          await t.putRequest({
            namespace: 'default',
            requestId: `r${i}`,
            kind: 'signal',
            runId: 'run-1',
            createdAt: T0 + i,
          });
        }
      });
      expect(await tx((t) => t.deleteRequestsBefore(T0 + 3, 2))).toBe(2);
      expect(await tx((t) => t.deleteRequestsBefore(T0 + 3, 10))).toBe(1);
      await s.store.read(async (t) => {
        for (const id of ['r0', 'r1', 'r2']) expect(await t.getRequest('default', id)).toBeUndefined();
        for (const id of ['r3', 'r4']) expect(await t.getRequest('default', id)).toBeDefined();
      });
    });

    it('putRequest stores per namespace and overwrites the same id', async () => {
      await tx(async (t) => {
        await t.putRequest({
          namespace: 'default',
          requestId: 'q',
          kind: 'start',
          runId: 'r1',
          createdAt: T0,
        });
        await t.putRequest({
          namespace: 'other',
          requestId: 'q',
          kind: 'signal',
          runId: 'r9',
          createdAt: T0,
        });
      });
      expect(await s.store.read((t) => t.getRequest('default', 'q'))).toEqual({
        namespace: 'default',
        requestId: 'q',
        kind: 'start',
        runId: 'r1',
        createdAt: T0,
      });
      expect((await s.store.read((t) => t.getRequest('other', 'q')))?.runId).toBe('r9');
      expect(await s.store.read((t) => t.getRequest('default', 'missing'))).toBeUndefined();
      await tx((t) =>
        t.putRequest({
          namespace: 'default',
          requestId: 'q',
          kind: 'cancel',
          runId: 'r2',
          createdAt: T0 + 1,
        }),
      );
      expect(await s.store.read((t) => t.getRequest('default', 'q'))).toMatchObject({
        kind: 'cancel',
        runId: 'r2',
      });
    });

    it('queries: insert, get, update, delete; absent failure reads back as null', async () => {
      const q = query({ id: 'q1', args: [{ deep: ['x'] }] });
      await tx((t) => t.insertQuery(q));
      const got = await s.store.read((t) => t.getQuery('q1'));
      expect(got).toEqual({ ...q, failure: null });
      expect(got?.failure).toBeNull();
      expect(got?.result).toBeUndefined();
      await tx((t) => t.updateQuery('q1', { phase: 'claimed', leaseExpiresAt: T0 + 5 }));
      await tx((t) => t.updateQuery('q1', { phase: 'answered', result: null }));
      const answered = await s.store.read((t) => t.getQuery('q1'));
      expect(answered).toEqual({
        ...q,
        phase: 'answered',
        leaseExpiresAt: T0 + 5,
        result: null,
        failure: null,
      });
      expect(answered?.result).toBeNull();
      await tx((t) => t.updateQuery('q1', { result: { ok: [1] }, failure: FAILURE }));
      expect(await s.store.read((t) => t.getQuery('q1'))).toMatchObject({
        result: { ok: [1] },
        failure: FAILURE,
      });
      await txFails('QUERY_NOT_FOUND', (t) => t.updateQuery('missing', { phase: 'claimed' }));
      await tx((t) => t.deleteQuery('q1'));
      expect(await s.store.read((t) => t.getQuery('q1'))).toBeUndefined();
    });
  });

  it('deleteRunState removes activities, timers, buffer and open queries of that run only', async () => {
    await tx(async (t) => {
      await t.insertRun(run());
      await t.appendEvents('run-1', 1, [marker(1)]);
      await t.putRequest({
        namespace: 'default',
        requestId: 'x',
        kind: 'start',
        runId: 'run-1',
        createdAt: T0,
      });
      for (const runId of ['run-1', 'run-2']) {
        await t.insertActivity(activity({ runId }));
        await t.insertTimer(timer({ runId }));
        await t.addBuffered(runId, signal('s'));
        await t.insertQuery(query({ id: `${runId}-pending`, runId }));
        await t.insertQuery(query({ id: `${runId}-claimed`, runId, phase: 'claimed' }));
        await t.insertQuery(query({ id: `${runId}-answered`, runId, phase: 'answered', result: 1 }));
      }
    });
    await tx((t) => t.deleteRunState('run-1'));
    await s.store.read(async (t) => {
      expect(await t.listActivities('run-1')).toEqual([]);
      expect(await t.listTimers('run-1')).toEqual([]);
      expect(await t.listBuffered('run-1')).toEqual([]);
      expect(await t.getQuery('run-1-pending')).toBeUndefined();
      expect(await t.getQuery('run-1-claimed')).toBeUndefined();
      expect((await t.getQuery('run-1-answered'))?.result).toBe(1);
      expect(await t.getRun('run-1')).toBeDefined();
      expect(await t.readEvents('run-1')).toHaveLength(1);
      expect(await t.getRequest('default', 'x')).toBeDefined();
      expect(await t.listActivities('run-2')).toHaveLength(1);
      expect(await t.listTimers('run-2')).toHaveLength(1);
      expect(await t.listBuffered('run-2')).toHaveLength(1);
      expect(await t.getQuery('run-2-pending')).toBeDefined();
    });
  });
}
