import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type FailureInfo, StoreError } from '../common/errors.js';
import type { NewEvent } from '../common/events.js';
import type {
  ActivityPatch,
  ActivityRecord,
  QueryRecord,
  RunRecord,
  Store,
  StoreTx,
  TimerRecord,
} from './store.js';

/** What a conformance factory returns: a fresh, empty store for one test. */
export interface StoreConformanceFixture {
  readonly store: Store;
  /** Closes every store the fixture opened and removes the data. */
  cleanup(): Promise<void>;
  /**
   * Opens a second, independent Store on the same database. Required when the store says it is
   * `sharedAcrossProcesses`; the suite closes what it returns.
   */
  openAnother?(): Promise<Store>;
}

/**
 * The Store contract as tests. Every adapter must pass this suite unchanged; each test gets a fresh store
 * from `factory`. Beyond `store.ts`, it pins down these semantics:
 * - findRun without a runId returns the run with the latest startTime, the later insert on a tie.
 * - A constraint failure (DUPLICATE_OPEN_RUN, EVENT_CONFLICT, ...) that the callback catches leaves the
 *   transaction usable, and a failed `appendEvents` writes none of its events.
 * - appendEvents also refuses a gap ('EVENT_GAP'); update* of a missing row fails (RUN_NOT_FOUND,
 *   ACTIVITY_NOT_FOUND, QUERY_NOT_FOUND); delete* of a missing row is a no-op; a duplicate key on insert is
 *   'DUPLICATE_KEY'; putRequest overwrites.
 * - JSON values round-trip exactly: `JSON.stringify` of what comes back equals that of what went in (key
 *   order, NUL characters and all), `undefined` stays distinct from `null`, absent `| null` fields are null.
 * - nextWakeTime also counts claimed queries' lease expiry, and ignores cancel-requested activities'
 *   visibility (they can never be claimed).
 * - A transaction handle used after its callback settled fails with 'TX_ENDED'; a closed store fails
 *   with 'STORE_CLOSED'.
 */
export function defineStoreConformanceSuite(
  name: string,
  factory: () => Promise<StoreConformanceFixture>,
  /** Whether the store under test can be opened twice (a file or a server, not an in-memory database). */
  options: { readonly shared: boolean } = { shared: true },
): void {
  describe(`Store conformance: ${name}`, () => {
    let fixture: StoreConformanceFixture;
    let store: Store;
    const tx = <T>(fn: (t: StoreTx) => Promise<T>): Promise<T> => store.transaction(fn);
    const txFails = (code: string, fn: (t: StoreTx) => Promise<unknown>) => expectStoreError(tx(fn), code);

    beforeEach(async () => {
      fixture = await factory();
      store = fixture.store;
    });
    afterEach(async () => {
      await fixture.cleanup();
    });

    describe('runs', () => {
      it('getRun returns exactly the inserted record, and undefined for an unknown id', async () => {
        const r = run({
          cancelRequested: true,
          requestId: 'req-1',
          memo: { note: 'hi', nested: { a: [1, 2] } },
          searchAttributes: { Customer: 'acme', Amount: 12.5 },
          wftFailure: FAILURE,
          wftLeaseOwner: 'worker-1',
          closeTime: null,
        });
        await tx((t) => t.insertRun(r));
        expect(await store.read((t) => t.getRun(r.runId))).toEqual(r);
        expect(await store.read((t) => t.getRun('nope'))).toBeUndefined();
      });

      it('findRun with a runId matches namespace, workflow id and run id together', async () => {
        await tx(async (t) => {
          await t.insertRun(run({ runId: 'r1', workflowId: 'a' }));
          await t.insertRun(run({ runId: 'r2', workflowId: 'b' }));
        });
        await store.read(async (t) => {
          expect((await t.findRun('default', 'a', 'r1'))?.runId).toBe('r1');
          expect(await t.findRun('default', 'a', 'r2')).toBeUndefined();
          expect(await t.findRun('other', 'a', 'r1')).toBeUndefined();
          expect(await t.findRun('default', 'zzz')).toBeUndefined();
        });
      });

      it('findRun without a runId returns the most recently started run, the later insert on a tie', async () => {
        await tx(async (t) => {
          await t.insertRun(run({ runId: 'new', startTime: T0 + 100, status: 'completed' }));
          await t.insertRun(run({ runId: 'old', startTime: T0, status: 'completed' }));
        });
        expect((await store.read((t) => t.findRun('default', 'wf-1')))?.runId).toBe('new');
        await tx((t) => t.insertRun(run({ runId: 'tie', startTime: T0 + 100 })));
        expect((await store.read((t) => t.findRun('default', 'wf-1')))?.runId).toBe('tie');
      });

      it('findOpenRun returns the running run only', async () => {
        await tx(async (t) => {
          await t.insertRun(run({ runId: 'closed', status: 'failed', startTime: T0 + 5 }));
          await t.insertRun(run({ runId: 'open', startTime: T0 }));
        });
        expect((await store.read((t) => t.findOpenRun('default', 'wf-1')))?.runId).toBe('open');
        await tx((t) => t.updateRun('open', { status: 'completed', closeTime: T0 + 9 }));
        expect(await store.read((t) => t.findOpenRun('default', 'wf-1'))).toBeUndefined();
      });

      it('allows one running run per namespace and workflow id (DUPLICATE_OPEN_RUN)', async () => {
        await tx((t) => t.insertRun(run({ runId: 'r1' })));
        await txFails('DUPLICATE_OPEN_RUN', (t) => t.insertRun(run({ runId: 'r2' })));
        expect(await store.read((t) => t.getRun('r2'))).toBeUndefined();
        await tx(async (t) => {
          await t.insertRun(run({ runId: 'r3', status: 'completed' }));
          await t.insertRun(run({ runId: 'r4', status: 'terminated' }));
          await t.insertRun(run({ runId: 'r5', namespace: 'other' }));
        });
        await tx((t) => t.updateRun('r1', { status: 'completed' }));
        await tx((t) => t.insertRun(run({ runId: 'r6' })));
        await txFails('DUPLICATE_OPEN_RUN', (t) => t.updateRun('r3', { status: 'running' }));
        expect((await store.read((t) => t.findOpenRun('default', 'wf-1')))?.runId).toBe('r6');
      });

      it('a caught DUPLICATE_OPEN_RUN leaves the transaction usable', async () => {
        await tx((t) => t.insertRun(run({ runId: 'r1' })));
        const code = await tx(async (t) => {
          await t.insertRun(run({ runId: 'other', workflowId: 'wf-2' }));
          const c = await t.insertRun(run({ runId: 'r2' })).then(
            () => 'none',
            (e: StoreError) => e.code,
          );
          await t.updateRun('other', { nextEventId: 7 });
          return c;
        });
        expect(code).toBe('DUPLICATE_OPEN_RUN');
        expect((await store.read((t) => t.getRun('other')))?.nextEventId).toBe(7);
      });

      it('rejects a second run with the same run id (DUPLICATE_KEY)', async () => {
        await tx((t) => t.insertRun(run({ runId: 'r1', status: 'completed' })));
        await txFails('DUPLICATE_KEY', (t) =>
          t.insertRun(run({ runId: 'r1', workflowId: 'x', status: 'completed' })),
        );
      });

      it('updateRun changes exactly the patched fields; null clears, undefined leaves as is', async () => {
        const r = run({ wftLeaseOwner: 'w1', memo: { a: 1 } });
        await tx((t) => t.insertRun(r));
        const patch = {
          workflowType: 'other',
          taskQueue: 'q9',
          status: 'failed',
          nextEventId: 42,
          closeTime: T0 + 1,
          requestId: 'rq',
          workflowTaskTimeoutMs: 5,
          cancelRequested: true,
          memo: null,
          searchAttributes: { k: ['v', 1] },
          lastCompletedTaskEventId: 40,
          wftPhase: 'started',
          wftAttempt: 3,
          wftScheduledEventId: 38,
          wftStartedEventId: 39,
          wftVisibleAt: T0 + 2,
          wftStartedTime: T0 + 3,
          wftLeaseOwner: null,
          wftLeaseExpiresAt: T0 + 4,
          wftToken: 11,
          wftFailure: FAILURE,
        } as const;
        await tx((t) => t.updateRun(r.runId, patch));
        expect(await store.read((t) => t.getRun(r.runId))).toEqual({ ...r, ...patch });
        await tx((t) =>
          t.updateRun(r.runId, { nextEventId: 43, wftFailure: undefined, closeTime: undefined }),
        );
        expect(await store.read((t) => t.getRun(r.runId))).toEqual({ ...r, ...patch, nextEventId: 43 });
        await txFails('RUN_NOT_FOUND', (t) => t.updateRun('missing', { nextEventId: 2 }));
      });
    });

    describe('events', () => {
      it('appends gap-free batches and reads them back in order', async () => {
        await tx(async (t) => {
          await t.appendEvents('r1', 1, [marker(1), marker(2), marker(3)]);
          await t.appendEvents('r1', 4, [marker(4)]);
          await t.appendEvents('r2', 1, [marker(100)]);
        });
        const events = await store.read((t) => t.readEvents('r1'));
        expect(events.map((e) => e.eventId)).toEqual([1, 2, 3, 4]);
        expect(events[2]).toEqual({ eventId: 3, ...marker(3) });
        expect(await store.read((t) => t.readEvents('r2'))).toEqual([{ eventId: 1, ...marker(100) }]);
      });

      it('refuses an existing event id (EVENT_CONFLICT) and writes none of the batch', async () => {
        await tx((t) => t.appendEvents('r1', 1, [marker(1), marker(2), marker(3)]));
        await txFails('EVENT_CONFLICT', (t) => t.appendEvents('r1', 3, [marker(30), marker(40)]));
        await txFails('EVENT_CONFLICT', (t) => t.appendEvents('r1', 1, [marker(10)]));
        const code = await tx(async (t) => {
          const c = await t.appendEvents('r1', 2, [marker(20), marker(21), marker(22)]).then(
            () => 'none',
            (e: StoreError) => e.code,
          );
          await t.appendEvents('r1', 4, [marker(4)]);
          return c;
        });
        expect(code).toBe('EVENT_CONFLICT');
        const events = await store.read((t) => t.readEvents('r1'));
        expect(events.map((e) => (e.attributes as { details: { n: number } }).details.n)).toEqual([
          1, 2, 3, 4,
        ]);
      });

      it('refuses a gap (EVENT_GAP)', async () => {
        await txFails('EVENT_GAP', (t) => t.appendEvents('r1', 2, [marker(2)]));
        await tx((t) => t.appendEvents('r1', 1, [marker(1)]));
        await txFails('EVENT_GAP', (t) => t.appendEvents('r1', 3, [marker(3)]));
        expect(await store.read((t) => t.readEvents('r1'))).toHaveLength(1);
      });

      it('readEvents honours fromEventId and limit', async () => {
        await tx((t) => t.appendEvents('r1', 1, [1, 2, 3, 4, 5].map(marker)));
        const ids = async (from?: number, limit?: number) =>
          (await store.read((t) => t.readEvents('r1', from, limit))).map((e) => e.eventId);
        expect(await ids()).toEqual([1, 2, 3, 4, 5]);
        expect(await ids(3)).toEqual([3, 4, 5]);
        expect(await ids(2, 2)).toEqual([2, 3]);
        expect(await ids(1, 0)).toEqual([]);
        expect(await ids(5, 10)).toEqual([5]);
        expect(await ids(6)).toEqual([]);
        expect(await store.read((t) => t.readEvents('unknown'))).toEqual([]);
      });

      it('attributes round-trip exactly: nested JSON, unicode, key order, numbers', async () => {
        const details = {
          zeta: 1,
          alpha: { deeper: [{ b: 2, a: 1 }, [], {}, null, true, false] },
          text: 'héllo wörld — 你好 — مرحبا — 👩‍👩‍👧‍👦 — e\u0301 — "quoted" \\ back\\slash \n\t',
          nul: 'a\u0000b',
          numbers: [
            0,
            -1,
            0.1,
            1e-7,
            1e21,
            Number.MAX_SAFE_INTEGER,
            -Number.MAX_SAFE_INTEGER,
            1234.5678901234567,
          ],
          empty: '',
        };
        const e: NewEvent = {
          type: 'MarkerRecorded',
          time: T0 + 0.0,
          attributes: { markerName: 'm', details },
        };
        await tx((t) => t.appendEvents('r1', 1, [e]));
        const [back] = await store.read((t) => t.readEvents('r1'));
        expect(back).toEqual({ eventId: 1, ...e });
        expect(JSON.stringify(back?.attributes)).toBe(JSON.stringify(e.attributes));
        expect(back?.time).toBe(T0);
      });

      it('round-trips a ~1 MB payload', async () => {
        const big = 'x'.repeat(512 * 1024);
        const rows = Array.from({ length: 10_000 }, (_, i) => ({ i, s: `row ${i} ✓`, f: i / 7 }));
        const e: NewEvent = {
          type: 'SignalReceived',
          time: T0,
          attributes: { signalName: 'big', input: [big, rows] },
        };
        expect(JSON.stringify(e.attributes).length).toBeGreaterThan(900_000);
        await tx((t) => t.appendEvents('r1', 1, [e]));
        const [back] = await store.read((t) => t.readEvents('r1'));
        expect(JSON.stringify(back?.attributes)).toBe(JSON.stringify(e.attributes));
      });
    });

    describe('buffer', () => {
      it('lists buffered events per run in increasing seq and deletes up to a seq', async () => {
        await tx(async (t) => {
          await t.addBuffered('r1', signal('a'));
          await t.addBuffered('r2', signal('other'));
          await t.addBuffered('r1', signal('b'));
          await t.addBuffered('r1', signal('c'));
        });
        const listed = await store.read((t) => t.listBuffered('r1'));
        expect(listed.map((b) => b.event)).toEqual([signal('a'), signal('b'), signal('c')]);
        const seqs = listed.map((b) => b.seq);
        expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
        expect(new Set(seqs).size).toBe(3);
        await tx((t) => t.deleteBuffered('r1', seqs[1]!));
        expect((await store.read((t) => t.listBuffered('r1'))).map((b) => b.seq)).toEqual([seqs[2]]);
        expect(await store.read((t) => t.listBuffered('r2'))).toHaveLength(1);
        await tx((t) => t.addBuffered('r1', signal('d')));
        const after = await store.read((t) => t.listBuffered('r1'));
        expect(after.map((b) => b.event)).toEqual([signal('c'), signal('d')]);
        expect(after[1]!.seq).toBeGreaterThan(seqs[2]!);
      });

      it('seq never repeats after the newest entries are deleted', async () => {
        await tx((t) => t.addBuffered('r1', signal('a')));
        const [first] = await store.read((t) => t.listBuffered('r1'));
        await tx((t) => t.deleteBuffered('r1', first!.seq));
        await tx((t) => t.addBuffered('r1', signal('b')));
        const [second] = await store.read((t) => t.listBuffered('r1'));
        expect(second!.seq).toBeGreaterThan(first!.seq);
      });
    });

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
        expect(await store.read((t) => t.getActivity('run-1', 9))).toEqual(a);
        const b2 = await store.read((t) => t.getActivity('run-1', 5));
        expect(b2).toEqual(b);
        expect(b2?.heartbeatDetails).toBeNull();
        expect((await store.read((t) => t.getActivity('run-1', 5)))?.cancelRequested).toBe(false);
        expect((await store.read((t) => t.listActivities('run-1'))).map((x) => x.scheduledEventId)).toEqual([
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
        expect(await store.read((t) => t.getActivity('run-1', 9))).toEqual({ ...a, ...patch });
        await txFails('ACTIVITY_NOT_FOUND', (t) => t.updateActivity('run-1', 77, { attempt: 2 }));
        await tx(async (t) => {
          await t.deleteActivity('run-1', 9);
          await t.deleteActivity('run-1', 12345);
        });
        expect(await store.read((t) => t.getActivity('run-1', 9))).toBeUndefined();
        expect(await store.read((t) => t.listActivities('r2'))).toHaveLength(1);
      });

      it('keeps undefined heartbeat details undefined and refuses a duplicate key', async () => {
        await tx((t) => t.insertActivity(activity()));
        const got = await store.read((t) => t.getActivity('run-1', 5));
        expect(got?.heartbeatDetails).toBeUndefined();
        expect(got?.lastFailure).toBeNull();
        await txFails('DUPLICATE_KEY', (t) => t.insertActivity(activity()));
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
        expect(await store.read((t) => t.listTimers('run-1'))).toEqual([t2, t1]);
        await txFails('DUPLICATE_KEY', (t) => t.insertTimer(t1));
        await tx(async (t) => {
          await t.deleteTimer('run-1', 'a');
          await t.deleteTimer('run-1', 'never');
        });
        expect(await store.read((t) => t.listTimers('run-1'))).toEqual([t1]);
        expect(await store.read((t) => t.listTimers('r2'))).toHaveLength(1);
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
        await store.read(async (t) => {
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
        expect(await store.read((t) => t.getRequest('default', 'q'))).toEqual({
          namespace: 'default',
          requestId: 'q',
          kind: 'start',
          runId: 'r1',
          createdAt: T0,
        });
        expect((await store.read((t) => t.getRequest('other', 'q')))?.runId).toBe('r9');
        expect(await store.read((t) => t.getRequest('default', 'missing'))).toBeUndefined();
        await tx((t) =>
          t.putRequest({
            namespace: 'default',
            requestId: 'q',
            kind: 'cancel',
            runId: 'r2',
            createdAt: T0 + 1,
          }),
        );
        expect(await store.read((t) => t.getRequest('default', 'q'))).toMatchObject({
          kind: 'cancel',
          runId: 'r2',
        });
      });

      it('queries: insert, get, update, delete; absent failure reads back as null', async () => {
        const q = query({ id: 'q1', args: [{ deep: ['x'] }] });
        await tx((t) => t.insertQuery(q));
        const got = await store.read((t) => t.getQuery('q1'));
        expect(got).toEqual({ ...q, failure: null });
        expect(got?.failure).toBeNull();
        expect(got?.result).toBeUndefined();
        await tx((t) => t.updateQuery('q1', { phase: 'claimed', leaseExpiresAt: T0 + 5 }));
        await tx((t) => t.updateQuery('q1', { phase: 'answered', result: null }));
        const answered = await store.read((t) => t.getQuery('q1'));
        expect(answered).toEqual({
          ...q,
          phase: 'answered',
          leaseExpiresAt: T0 + 5,
          result: null,
          failure: null,
        });
        expect(answered?.result).toBeNull();
        await tx((t) => t.updateQuery('q1', { result: { ok: [1] }, failure: FAILURE }));
        expect(await store.read((t) => t.getQuery('q1'))).toMatchObject({
          result: { ok: [1] },
          failure: FAILURE,
        });
        await txFails('QUERY_NOT_FOUND', (t) => t.updateQuery('missing', { phase: 'claimed' }));
        await tx((t) => t.deleteQuery('q1'));
        expect(await store.read((t) => t.getQuery('q1'))).toBeUndefined();
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
      await store.read(async (t) => {
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

    describe('claim and sweep queries', () => {
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
      const wake = () => store.read((t) => t.nextWakeTime());

      it('is null when nothing can become due', async () => {
        expect(await wake()).toBeNull();
        await tx(async (t) => {
          await t.insertRun(
            run({ runId: 'idle', wftPhase: 'idle', wftVisibleAt: T0, wftLeaseExpiresAt: T0 }),
          );
          await t.insertRun(
            run({ runId: 'c', workflowId: 'w2', status: 'completed', wftPhase: 'scheduled' }),
          );
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
      const sweep = () => store.read((t) => t.nextSweepTime());

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
          t.insertRun(
            run({ runId: 'r2', workflowId: 'w2', wftPhase: 'started', wftLeaseExpiresAt: T0 + 10 }),
          ),
        );
        expect(await sweep()).toBe(T0 + 10);
        await tx((t) => t.updateRun('r2', { status: 'completed' }));
        expect(await sweep()).toBe(T0 + 20);
      });
    });

    describe('transactions', () => {
      it('return the callback value and commit', async () => {
        const value = await tx(async (t) => {
          await t.insertRun(run());
          return 'done';
        });
        expect(value).toBe('done');
        expect(await store.read((t) => t.getRun('run-1'))).toBeDefined();
      });

      it('a throw rolls back every write and rethrows the same error', async () => {
        const boom = new Error('boom');
        const err = await tx(async (t) => {
          await t.insertRun(run());
          await t.appendEvents('run-1', 1, [marker(1)]);
          await t.addBuffered('run-1', signal('s'));
          await t.insertActivity(activity());
          await t.insertTimer(timer());
          await t.putRequest({
            namespace: 'default',
            requestId: 'x',
            kind: 'start',
            runId: 'run-1',
            createdAt: T0,
          });
          await t.insertQuery(query());
          throw boom;
        }).catch((e: unknown) => e);
        expect(err).toBe(boom);
        await store.read(async (t) => {
          expect(await t.getRun('run-1')).toBeUndefined();
          expect(await t.readEvents('run-1')).toEqual([]);
          expect(await t.listBuffered('run-1')).toEqual([]);
          expect(await t.listActivities('run-1')).toEqual([]);
          expect(await t.listTimers('run-1')).toEqual([]);
          expect(await t.getRequest('default', 'x')).toBeUndefined();
          expect(await t.getQuery('query-1')).toBeUndefined();
          expect(await t.nextWakeTime()).toBeNull();
        });
      });

      it('an uncaught store error rolls back the earlier writes of its transaction', async () => {
        await tx((t) => t.appendEvents('r1', 1, [marker(1)]));
        await txFails('EVENT_CONFLICT', async (t) => {
          await t.insertRun(run());
          await t.appendEvents('r1', 1, [marker(2)]);
        });
        expect(await store.read((t) => t.getRun('run-1'))).toBeUndefined();
      });

      it('concurrent read-modify-write transactions are serialised (50 increments are exact)', async () => {
        await tx((t) => t.insertRun(run()));
        await Promise.all(Array.from({ length: 50 }, () => increment(store, 'run-1')));
        expect((await store.read((t) => t.getRun('run-1')))?.nextEventId).toBe(51);
      });

      it('a handle fails after its callback settled (TX_ENDED)', async () => {
        let leaked: StoreTx | undefined;
        await tx(async (t) => {
          leaked = t;
        });
        await expectStoreError(leaked!.insertRun(run()), 'TX_ENDED');
        await expectStoreError(leaked!.getRun('run-1'), 'TX_ENDED');
      });

      it('close is idempotent and later calls fail with STORE_CLOSED', async () => {
        await tx((t) => t.insertRun(run()));
        await store.close();
        await store.close();
        await expectStoreError(
          store.read((t) => t.getRun('run-1')),
          'STORE_CLOSED',
        );
        await txFails('STORE_CLOSED', (t) => t.getRun('run-1'));
      });
    });

    // An in-memory store cannot be opened twice, so these tests do not apply to it.
    if (options.shared) describeTwoInstances();
    function describeTwoInstances(): void {
      describe('two Store instances on one database', () => {
        let other: Store | undefined;
        const second = async (): Promise<Store> => {
          if (!fixture.openAnother) throw new Error('a shared store must give its fixture openAnother()');
          other = await fixture.openAnother();
          return other;
        };
        afterEach(async () => {
          await other?.close();
          other = undefined;
        });

        it('see each other’s commits but not uncommitted writes; increments from both are exact', async () => {
          const b = await second();
          await tx((t) => t.insertRun(run()));
          expect((await b.read((t) => t.getRun('run-1')))?.runId).toBe('run-1');

          let release!: () => void;
          const gate = new Promise<void>((r) => {
            release = r;
          });
          let inserted!: () => void;
          const insertedSignal = new Promise<void>((r) => {
            inserted = r;
          });
          const pending = tx(async (t) => {
            await t.insertRun(run({ runId: 'r2', workflowId: 'w2' }));
            inserted();
            await gate;
          });
          await insertedSignal;
          expect(await b.read((t) => t.getRun('r2'))).toBeUndefined();
          release();
          await pending;
          expect(await b.read((t) => t.getRun('r2'))).toBeDefined();

          await Promise.all(
            Array.from({ length: 40 }, (_, i) => increment(i % 2 === 0 ? store : b, 'run-1')),
          );
          expect((await b.read((t) => t.getRun('run-1')))?.nextEventId).toBe(41);
          await expectStoreError(
            b.transaction((t) => t.insertRun(run({ runId: 'r3' }))),
            'DUPLICATE_OPEN_RUN',
          );
        });
      });
    }
  });
}

// ---- records used by the suite ----

const T0 = 1_700_000_000_000;

const FAILURE: FailureInfo = {
  kind: 'application',
  type: 'CardDeclined',
  message: 'card declined ✗',
  nonRetryable: true,
  details: [{ code: 51, nested: { ok: false } }],
};

const RETRY = {
  initialIntervalMs: 1000,
  backoffCoefficient: 2,
  maximumIntervalMs: 60_000,
  maximumAttempts: 5,
  nonRetryableErrorTypes: ['CardDeclined'],
};

function run(o: Partial<RunRecord> = {}): RunRecord {
  return {
    namespace: 'default',
    workflowId: 'wf-1',
    runId: 'run-1',
    workflowType: 'order',
    taskQueue: 'q1',
    status: 'running',
    nextEventId: 1,
    startTime: T0,
    closeTime: null,
    requestId: null,
    workflowTaskTimeoutMs: 10_000,
    cancelRequested: false,
    memo: null,
    searchAttributes: null,
    lastCompletedTaskEventId: 0,
    wftPhase: 'idle',
    wftAttempt: 1,
    wftScheduledEventId: 0,
    wftStartedEventId: 0,
    wftVisibleAt: T0,
    wftStartedTime: 0,
    wftLeaseOwner: null,
    wftLeaseExpiresAt: 0,
    wftToken: 0,
    wftFailure: null,
    ...o,
  };
}

function activity(o: Partial<ActivityRecord> = {}): ActivityRecord {
  return {
    namespace: 'default',
    workflowId: 'wf-1',
    runId: 'run-1',
    scheduledEventId: 5,
    activityId: '1',
    activityType: 'charge',
    taskQueue: 'q1',
    input: ['order-42', { amount: 12.5 }],
    options: { startToCloseTimeoutMs: 60_000, heartbeatTimeoutMs: 5000, retry: RETRY },
    phase: 'scheduled',
    attempt: 1,
    scheduledTime: T0,
    visibleAt: T0,
    startedTime: null,
    lastHeartbeatTime: null,
    heartbeatDetails: undefined,
    lastFailure: null,
    cancelRequested: false,
    leaseOwner: null,
    token: 0,
    deadline: null,
    ...o,
  };
}

function timer(o: Partial<TimerRecord> = {}): TimerRecord {
  return {
    namespace: 'default',
    runId: 'run-1',
    timerKey: 't1',
    kind: 'user',
    fireAt: T0,
    startedEventId: 3,
    ...o,
  };
}

function query(o: Partial<QueryRecord> = {}): QueryRecord {
  return {
    id: 'query-1',
    namespace: 'default',
    runId: 'run-1',
    taskQueue: 'q1',
    queryType: 'status',
    args: [],
    phase: 'pending',
    createdAt: T0,
    leaseExpiresAt: 0,
    ...o,
  };
}

function marker(n: number): NewEvent {
  return { type: 'MarkerRecorded', time: T0 + n, attributes: { markerName: 'm', details: { n } } };
}

function signal(name: string): NewEvent {
  return { type: 'SignalReceived', time: T0, attributes: { signalName: name, input: [name, { x: [1] }] } };
}

/** A read-modify-write that loses updates unless transactions are serialised. */
function increment(store: Store, runId: string): Promise<void> {
  return store.transaction(async (t) => {
    const current = await t.getRun(runId);
    await new Promise((r) => setImmediate(r));
    await t.updateRun(runId, { nextEventId: current!.nextEventId + 1 });
  });
}

async function expectStoreError(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a StoreError with code ${code}`).toBeInstanceOf(StoreError);
  expect((err as StoreError).code).toBe(code);
}
