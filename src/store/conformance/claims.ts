import { describe, expect, it } from 'vitest';
import type { StoreTx } from '../store.js';
import { activity, query, run, T0, timer } from './records.js';
import type { SuiteContext } from './suite-context.js';

/** Claim and sweep queries, and the wake-up times. */
export function describeClaimsAndSweeps(s: SuiteContext): void {
  const { tx } = s;
  describe('claim and sweep queries', () => {
    it('findClaimableWorkflowTasks leaves a sticky run to its worker until others may take it', async () => {
      await tx(async (t) => {
        const scheduled = { wftPhase: 'scheduled', wftVisibleAt: T0 } as const;
        await t.insertRun(run({ ...scheduled, runId: 'sticky', workflowId: 'a', stickyWorker: 'w1' }));
        await t.insertRun(run({ ...scheduled, runId: 'free', workflowId: 'b', stickyWorker: null }));
      });
      const ids = (workerId: string | undefined, othersVisibleBy: number) =>
        tx((t) =>
          t.findClaimableWorkflowTasks(
            'default',
            'q1',
            T0 + 10,
            10,
            workerId === undefined ? undefined : { workerId, othersVisibleBy },
          ),
        ).then((rs) => rs.map((r) => r.runId).sort());
      expect(await ids('w2', T0 - 1)).toEqual(['free']);
      expect(await ids('w1', T0 - 1)).toEqual(['free', 'sticky']);
      expect(await ids('w2', T0)).toEqual(['free', 'sticky']);
      expect(await ids(undefined, 0)).toEqual(['free', 'sticky']);
      expect((await s.store.read((t) => t.getRun('sticky')))?.stickyWorker).toBe('w1');
      await tx((t) => t.updateRun('sticky', { stickyWorker: null }));
      expect(await ids('w2', T0 - 1)).toEqual(['free', 'sticky']);
    });

    it('findClaimableWorkflowTasks: scheduled, visible, running, this queue, oldest first, limited', async () => {
      await tx(async (t) => {
        const s = { wftPhase: 'scheduled' } as const;
        await t.insertRun(run({ ...s, runId: 'late', workflowId: 'w1', wftVisibleAt: T0 + 30 }));
        await t.insertRun(run({ ...s, runId: 'due2', workflowId: 'w2', wftVisibleAt: T0 + 20 }));
        await t.insertRun(run({ ...s, runId: 'due1', workflowId: 'w3', wftVisibleAt: T0 + 10 }));
        await t.insertRun(run({ ...s, runId: 'due0', workflowId: 'w4', wftVisibleAt: T0 }));
        await t.insertRun(run({ runId: 'idle', workflowId: 'w5', wftPhase: 'idle' }));
        await t.insertRun(run({ runId: 'started', workflowId: 'w6', wftPhase: 'started' }));
        await t.insertRun(run({ ...s, runId: 'closed', workflowId: 'w7', status: 'completed' }));
        await t.insertRun(run({ ...s, runId: 'q2', workflowId: 'w8', taskQueue: 'q2' }));
        await t.insertRun(run({ ...s, runId: 'ns2', workflowId: 'w9', namespace: 'ns2' }));
      });
      const ids = async (ns: string, q: string, now: number, limit: number) =>
        (await tx((t) => t.findClaimableWorkflowTasks(ns, q, now, limit))).map((r) => r.runId);
      expect(await ids('default', 'q1', T0 + 20, 10)).toEqual(['due0', 'due1', 'due2']);
      expect(await ids('default', 'q1', T0 + 20, 2)).toEqual(['due0', 'due1']);
      expect(await ids('default', 'q1', T0 - 1, 10)).toEqual([]);
      expect(await ids('default', 'q2', T0 + 100, 10)).toEqual(['q2']);
      expect(await ids('ns2', 'q1', T0 + 100, 10)).toEqual(['ns2']);
      const [first] = await tx((t) => t.findClaimableWorkflowTasks('default', 'q1', T0, 1));
      expect(first).toEqual(
        run({ runId: 'due0', workflowId: 'w4', wftPhase: 'scheduled', wftVisibleAt: T0 }),
      );
    });

    it('findClaimableActivities: scheduled, visible, not cancel-requested, this queue, oldest first', async () => {
      await tx(async (t) => {
        await t.insertActivity(activity({ scheduledEventId: 1, visibleAt: T0 + 20 }));
        await t.insertActivity(activity({ scheduledEventId: 2, visibleAt: T0 + 10 }));
        await t.insertActivity(activity({ scheduledEventId: 3, visibleAt: T0 + 30 }));
        await t.insertActivity(activity({ scheduledEventId: 4, visibleAt: T0, phase: 'started' }));
        await t.insertActivity(activity({ scheduledEventId: 5, visibleAt: T0, cancelRequested: true }));
        await t.insertActivity(activity({ scheduledEventId: 6, visibleAt: T0, taskQueue: 'q2' }));
        await t.insertActivity(activity({ scheduledEventId: 7, visibleAt: T0, namespace: 'ns2' }));
      });
      const ids = async (ns: string, q: string, now: number, limit: number) =>
        (await tx((t) => t.findClaimableActivities(ns, q, now, limit))).map((a) => a.scheduledEventId);
      expect(await ids('default', 'q1', T0 + 20, 10)).toEqual([2, 1]);
      expect(await ids('default', 'q1', T0 + 30, 1)).toEqual([2]);
      expect(await ids('default', 'q1', T0 + 9, 10)).toEqual([]);
      expect(await ids('default', 'q2', T0, 10)).toEqual([6]);
      expect(await ids('ns2', 'q1', T0, 10)).toEqual([7]);
    });

    it('findClaimableQueries: pending, or claimed with an expired lease; this queue; oldest first', async () => {
      await tx(async (t) => {
        await t.insertQuery(query({ id: 'p-new', createdAt: T0 + 5 }));
        await t.insertQuery(query({ id: 'p-old', createdAt: T0 }));
        await t.insertQuery(
          query({ id: 'c-expired', phase: 'claimed', createdAt: T0 + 1, leaseExpiresAt: T0 + 10 }),
        );
        await t.insertQuery(
          query({ id: 'c-live', phase: 'claimed', createdAt: T0 + 2, leaseExpiresAt: T0 + 99 }),
        );
        await t.insertQuery(query({ id: 'answered', phase: 'answered', createdAt: T0 }));
        await t.insertQuery(query({ id: 'q2', taskQueue: 'q2' }));
        await t.insertQuery(query({ id: 'ns2', namespace: 'ns2' }));
      });
      const ids = async (ns: string, q: string, now: number, limit: number) =>
        (await tx((t) => t.findClaimableQueries(ns, q, now, limit))).map((x) => x.id);
      expect(await ids('default', 'q1', T0 + 10, 10)).toEqual(['p-old', 'c-expired', 'p-new']);
      expect(await ids('default', 'q1', T0 + 9, 10)).toEqual(['p-old', 'p-new']);
      expect(await ids('default', 'q1', T0 + 10, 2)).toEqual(['p-old', 'c-expired']);
      expect(await ids('default', 'q2', T0, 10)).toEqual(['q2']);
      expect(await ids('ns2', 'q1', T0, 10)).toEqual(['ns2']);
    });

    it('findDueTimers: fireAt <= now across namespaces, earliest first, limited', async () => {
      await tx(async (t) => {
        // Timers and activities always belong to a run (the runtime writes them for a run it holds).
        await t.insertRun(run());
        await t.insertRun(run({ runId: 'r2', workflowId: 'w2', namespace: 'ns2' }));
        await t.insertTimer(timer({ timerKey: 'c', fireAt: T0 + 30 }));
        await t.insertTimer(timer({ timerKey: 'b', fireAt: T0 + 20, namespace: 'ns2', runId: 'r2' }));
        await t.insertTimer(timer({ timerKey: 'a', fireAt: T0 + 10 }));
      });
      const keys = async (now: number, limit: number) =>
        (await tx((t) => t.findDueTimers(now, limit))).map((x) => x.timerKey);
      expect(await keys(T0 + 20, 10)).toEqual(['a', 'b']);
      expect(await keys(T0 + 30, 2)).toEqual(['a', 'b']);
      expect(await keys(T0 + 9, 10)).toEqual([]);
      expect((await tx((t) => t.findDueTimers(T0 + 10, 1)))[0]).toEqual(
        timer({ timerKey: 'a', fireAt: T0 + 10 }),
      );
    });

    it('findExpiredWorkflowTasks: running, started, lease expired, earliest first, limited', async () => {
      await tx(async (t) => {
        const s = { wftPhase: 'started' } as const;
        await t.insertRun(run({ ...s, runId: 'e2', workflowId: 'w1', wftLeaseExpiresAt: T0 + 20 }));
        await t.insertRun(
          run({ ...s, runId: 'e1', workflowId: 'w2', wftLeaseExpiresAt: T0 + 10, namespace: 'n2' }),
        );
        await t.insertRun(run({ ...s, runId: 'live', workflowId: 'w3', wftLeaseExpiresAt: T0 + 99 }));
        await t.insertRun(
          run({ runId: 'sched', workflowId: 'w4', wftPhase: 'scheduled', wftLeaseExpiresAt: T0 }),
        );
        await t.insertRun(
          run({ ...s, runId: 'closed', workflowId: 'w5', status: 'failed', wftLeaseExpiresAt: T0 }),
        );
      });
      const ids = async (now: number, limit: number) =>
        (await tx((t) => t.findExpiredWorkflowTasks(now, limit))).map((r) => r.runId);
      expect(await ids(T0 + 20, 10)).toEqual(['e1', 'e2']);
      expect(await ids(T0 + 20, 1)).toEqual(['e1']);
      expect(await ids(T0 + 9, 10)).toEqual([]);
    });

    it('findDueActivities: deadline <= now, earliest first, limited', async () => {
      await tx(async (t) => {
        await t.insertRun(run());
        await t.insertRun(run({ runId: 'r2', workflowId: 'w2', namespace: 'n2' }));
        await t.insertActivity(activity({ scheduledEventId: 1, deadline: T0 + 20, phase: 'started' }));
        await t.insertActivity(activity({ scheduledEventId: 2, deadline: T0 + 10 }));
        await t.insertActivity(activity({ scheduledEventId: 3, deadline: null }));
        await t.insertActivity(
          activity({ scheduledEventId: 4, deadline: T0 + 15, runId: 'r2', namespace: 'n2' }),
        );
      });
      const ids = async (now: number, limit: number) =>
        (await tx((t) => t.findDueActivities(now, limit))).map((a) => `${a.runId}/${a.scheduledEventId}`);
      expect(await ids(T0 + 20, 10)).toEqual(['run-1/2', 'r2/4', 'run-1/1']);
      expect(await ids(T0 + 20, 2)).toEqual(['run-1/2', 'r2/4']);
      expect(await ids(T0 + 9, 10)).toEqual([]);
    });
  });

  describe('nextWakeTime', () => {
    const wake = () => s.store.read((t) => t.nextWakeTime());

    it('is null when nothing can become due', async () => {
      expect(await wake()).toBeNull();
      await tx(async (t) => {
        await t.insertRun(run({ runId: 'idle', wftPhase: 'idle', wftVisibleAt: T0, wftLeaseExpiresAt: T0 }));
        await t.insertRun(run({ runId: 'c', workflowId: 'w2', status: 'completed', wftPhase: 'scheduled' }));
        await t.insertActivity(activity({ phase: 'started', deadline: null }));
        await t.insertActivity(activity({ scheduledEventId: 6, cancelRequested: true }));
        await t.insertQuery(query({ id: 'a', phase: 'answered', leaseExpiresAt: T0 }));
        await t.insertQuery(query({ id: 'p', phase: 'pending', leaseExpiresAt: T0 }));
      });
      expect(await wake()).toBeNull();
    });

    it.each([
      ['a timer', (t: StoreTx) => t.insertTimer(timer({ fireAt: T0 + 7 }))],
      [
        'an activity deadline',
        (t: StoreTx) => t.insertActivity(activity({ phase: 'started', deadline: T0 + 7 })),
      ],
      [
        'a scheduled activity becoming visible',
        (t: StoreTx) => t.insertActivity(activity({ visibleAt: T0 + 7 })),
      ],
      [
        'a scheduled workflow task',
        (t: StoreTx) => t.insertRun(run({ wftPhase: 'scheduled', wftVisibleAt: T0 + 7 })),
      ],
      [
        'a workflow task lease',
        (t: StoreTx) =>
          t.insertRun(run({ wftPhase: 'started', wftVisibleAt: T0, wftLeaseExpiresAt: T0 + 7 })),
      ],
      [
        'a claimed query lease',
        (t: StoreTx) => t.insertQuery(query({ phase: 'claimed', leaseExpiresAt: T0 + 7 })),
      ],
    ])('counts %s', async (_what, insert) => {
      await tx(insert);
      expect(await wake()).toBe(T0 + 7);
    });

    it('is the minimum over every source and follows deletes', async () => {
      await tx(async (t) => {
        await t.insertTimer(timer({ fireAt: T0 + 50 }));
        await t.insertActivity(activity({ phase: 'started', deadline: T0 + 40, visibleAt: T0 }));
        await t.insertActivity(activity({ scheduledEventId: 6, visibleAt: T0 + 30 }));
        await t.insertRun(run({ wftPhase: 'scheduled', wftVisibleAt: T0 + 20 }));
        await t.insertRun(
          run({ runId: 'r2', workflowId: 'w2', wftPhase: 'started', wftLeaseExpiresAt: T0 + 10 }),
        );
      });
      expect(await wake()).toBe(T0 + 10);
      await tx((t) => t.updateRun('r2', { status: 'completed' }));
      expect(await wake()).toBe(T0 + 20);
      await tx((t) => t.updateRun('run-1', { wftPhase: 'idle' }));
      expect(await wake()).toBe(T0 + 30);
      await tx((t) => t.deleteActivity('run-1', 6));
      expect(await wake()).toBe(T0 + 40);
      await tx((t) => t.deleteActivity('run-1', 5));
      expect(await wake()).toBe(T0 + 50);
      await tx((t) => t.deleteTimer('run-1', 't1'));
      expect(await wake()).toBeNull();
    });
  });

  describe('nextSweepTime', () => {
    const sweep = () => s.store.read((t) => t.nextSweepTime());

    it('counts timers, activity deadlines and started task leases, not claimable work', async () => {
      await tx(async (t) => {
        await t.insertRun(run({ wftPhase: 'scheduled', wftVisibleAt: T0 - 100 }));
        await t.insertActivity(activity({ phase: 'scheduled', visibleAt: T0 - 100, deadline: null }));
        await t.insertQuery(query({ phase: 'claimed', leaseExpiresAt: T0 - 100 }));
      });
      expect(await sweep()).toBeNull();
      await tx((t) => t.insertTimer(timer({ fireAt: T0 + 30 })));
      expect(await sweep()).toBe(T0 + 30);
      await tx((t) =>
        t.insertActivity(activity({ scheduledEventId: 6, phase: 'started', deadline: T0 + 20 })),
      );
      expect(await sweep()).toBe(T0 + 20);
      await tx((t) =>
        t.insertRun(run({ runId: 'r2', workflowId: 'w2', wftPhase: 'started', wftLeaseExpiresAt: T0 + 10 })),
      );
      expect(await sweep()).toBe(T0 + 10);
      await tx((t) => t.updateRun('r2', { status: 'completed' }));
      expect(await sweep()).toBe(T0 + 20);
    });
  });
}
