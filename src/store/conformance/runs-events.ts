import { describe, expect, it } from 'vitest';
import type { StoreError } from '../../common/errors.js';
import type { NewEvent } from '../../common/events.js';
import { FAILURE, marker, run, signal, T0 } from './records.js';
import type { SuiteContext } from './suite-context.js';

/** Runs, history events and the per-run buffer. */
export function describeRunsEventsAndBuffer(s: SuiteContext): void {
  const { tx, txFails } = s;
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
      expect(await s.store.read((t) => t.getRun(r.runId))).toEqual(r);
      expect(await s.store.read((t) => t.getRun('nope'))).toBeUndefined();
    });

    it('findRun with a runId matches namespace, workflow id and run id together', async () => {
      await tx(async (t) => {
        await t.insertRun(run({ runId: 'r1', workflowId: 'a' }));
        await t.insertRun(run({ runId: 'r2', workflowId: 'b' }));
      });
      await s.store.read(async (t) => {
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
      expect((await s.store.read((t) => t.findRun('default', 'wf-1')))?.runId).toBe('new');
      await tx((t) => t.insertRun(run({ runId: 'tie', startTime: T0 + 100 })));
      expect((await s.store.read((t) => t.findRun('default', 'wf-1')))?.runId).toBe('tie');
    });

    it('findOpenRun returns the running run only', async () => {
      await tx(async (t) => {
        await t.insertRun(run({ runId: 'closed', status: 'failed', startTime: T0 + 5 }));
        await t.insertRun(run({ runId: 'open', startTime: T0 }));
      });
      expect((await s.store.read((t) => t.findOpenRun('default', 'wf-1')))?.runId).toBe('open');
      await tx((t) => t.updateRun('open', { status: 'completed', closeTime: T0 + 9 }));
      expect(await s.store.read((t) => t.findOpenRun('default', 'wf-1'))).toBeUndefined();
    });

    it('allows one running run per namespace and workflow id (DUPLICATE_OPEN_RUN)', async () => {
      await tx((t) => t.insertRun(run({ runId: 'r1' })));
      await txFails('DUPLICATE_OPEN_RUN', (t) => t.insertRun(run({ runId: 'r2' })));
      expect(await s.store.read((t) => t.getRun('r2'))).toBeUndefined();
      await tx(async (t) => {
        await t.insertRun(run({ runId: 'r3', status: 'completed' }));
        await t.insertRun(run({ runId: 'r4', status: 'terminated' }));
        await t.insertRun(run({ runId: 'r5', namespace: 'other' }));
      });
      await tx((t) => t.updateRun('r1', { status: 'completed' }));
      await tx((t) => t.insertRun(run({ runId: 'r6' })));
      await txFails('DUPLICATE_OPEN_RUN', (t) => t.updateRun('r3', { status: 'running' }));
      expect((await s.store.read((t) => t.findOpenRun('default', 'wf-1')))?.runId).toBe('r6');
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
      expect((await s.store.read((t) => t.getRun('other')))?.nextEventId).toBe(7);
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
      expect(await s.store.read((t) => t.getRun(r.runId))).toEqual({ ...r, ...patch });
      await tx((t) => t.updateRun(r.runId, { nextEventId: 43, wftFailure: undefined, closeTime: undefined }));
      expect(await s.store.read((t) => t.getRun(r.runId))).toEqual({ ...r, ...patch, nextEventId: 43 });
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
      const events = await s.store.read((t) => t.readEvents('r1'));
      expect(events.map((e) => e.eventId)).toEqual([1, 2, 3, 4]);
      expect(events[2]).toEqual({ eventId: 3, ...marker(3) });
      expect(await s.store.read((t) => t.readEvents('r2'))).toEqual([{ eventId: 1, ...marker(100) }]);
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
      const events = await s.store.read((t) => t.readEvents('r1'));
      expect(events.map((e) => (e.attributes as { details: { n: number } }).details.n)).toEqual([1, 2, 3, 4]);
    });

    it('refuses a gap (EVENT_GAP)', async () => {
      await txFails('EVENT_GAP', (t) => t.appendEvents('r1', 2, [marker(2)]));
      await tx((t) => t.appendEvents('r1', 1, [marker(1)]));
      await txFails('EVENT_GAP', (t) => t.appendEvents('r1', 3, [marker(3)]));
      expect(await s.store.read((t) => t.readEvents('r1'))).toHaveLength(1);
    });

    it('lastEvent is the event with the highest id, in a transaction its own append', async () => {
      expect(await s.store.read((t) => t.lastEvent('r1'))).toBeUndefined();
      expect(await s.store.read((t) => t.lastEvent('unknown'))).toBeUndefined();
      await tx((t) => t.appendEvents('r1', 1, [1, 2, 3].map(marker)));
      await tx((t) => t.appendEvents('r1', 4, [marker(4)]));
      await tx((t) => t.appendEvents('r2', 1, [marker(100)]));
      expect(await s.store.read((t) => t.lastEvent('r1'))).toEqual({ eventId: 4, ...marker(4) });
      const own = await s.store.transaction(async (t) => {
        await t.appendEvents('r1', 5, [marker(5), marker(6)]);
        return t.lastEvent('r1');
      });
      expect(own).toEqual({ eventId: 6, ...marker(6) });
      expect(await s.store.read((t) => t.lastEvent('r2'))).toEqual({ eventId: 1, ...marker(100) });
    });

    it('readEvents honours fromEventId and limit', async () => {
      await tx((t) => t.appendEvents('r1', 1, [1, 2, 3, 4, 5].map(marker)));
      const ids = async (from?: number, limit?: number) =>
        (await s.store.read((t) => t.readEvents('r1', from, limit))).map((e) => e.eventId);
      expect(await ids()).toEqual([1, 2, 3, 4, 5]);
      expect(await ids(3)).toEqual([3, 4, 5]);
      expect(await ids(2, 2)).toEqual([2, 3]);
      expect(await ids(1, 0)).toEqual([]);
      expect(await ids(5, 10)).toEqual([5]);
      expect(await ids(6)).toEqual([]);
      expect(await s.store.read((t) => t.readEvents('unknown'))).toEqual([]);
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
      const [back] = await s.store.read((t) => t.readEvents('r1'));
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
      const [back] = await s.store.read((t) => t.readEvents('r1'));
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
      const listed = await s.store.read((t) => t.listBuffered('r1'));
      expect(listed.map((b) => b.event)).toEqual([signal('a'), signal('b'), signal('c')]);
      const seqs = listed.map((b) => b.seq);
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
      expect(new Set(seqs).size).toBe(3);
      await tx((t) => t.deleteBuffered('r1', seqs[1]!));
      expect((await s.store.read((t) => t.listBuffered('r1'))).map((b) => b.seq)).toEqual([seqs[2]]);
      expect(await s.store.read((t) => t.listBuffered('r2'))).toHaveLength(1);
      await tx((t) => t.addBuffered('r1', signal('d')));
      const after = await s.store.read((t) => t.listBuffered('r1'));
      expect(after.map((b) => b.event)).toEqual([signal('c'), signal('d')]);
      expect(after[1]!.seq).toBeGreaterThan(seqs[2]!);
    });

    it('seq never repeats after the newest entries are deleted', async () => {
      await tx((t) => t.addBuffered('r1', signal('a')));
      const [first] = await s.store.read((t) => t.listBuffered('r1'));
      await tx((t) => t.deleteBuffered('r1', first!.seq));
      await tx((t) => t.addBuffered('r1', signal('b')));
      const [second] = await s.store.read((t) => t.listBuffered('r1'));
      expect(second!.seq).toBeGreaterThan(first!.seq);
    });
  });
}
