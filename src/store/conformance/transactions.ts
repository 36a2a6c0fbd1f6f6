import { afterEach, describe, expect, it } from 'vitest';
import type { Store, StoreTx } from '../store.js';
import { activity, expectStoreError, increment, marker, query, run, signal, T0, timer } from './records.js';
import type { SuiteContext } from './suite-context.js';

/** Transactions, and two Store instances on one database. */
export function describeTransactions(s: SuiteContext): void {
  const { tx, txFails } = s;
  describe('transactions', () => {
    it('return the callback value and commit', async () => {
      const value = await tx(async (t) => {
        await t.insertRun(run());
        return 'done';
      });
      expect(value).toBe('done');
      expect(await s.store.read((t) => t.getRun('run-1'))).toBeDefined();
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
      await s.store.read(async (t) => {
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

    it('an uncaught s.store error rolls back the earlier writes of its transaction', async () => {
      await tx((t) => t.appendEvents('r1', 1, [marker(1)]));
      await txFails('EVENT_CONFLICT', async (t) => {
        await t.insertRun(run());
        await t.appendEvents('r1', 1, [marker(2)]);
      });
      expect(await s.store.read((t) => t.getRun('run-1'))).toBeUndefined();
    });

    it('concurrent read-modify-write transactions are serialised (50 increments are exact)', async () => {
      await tx((t) => t.insertRun(run()));
      await Promise.all(Array.from({ length: 50 }, () => increment(s.store, 'run-1')));
      expect((await s.store.read((t) => t.getRun('run-1')))?.nextEventId).toBe(51);
    });

    it('many concurrent transactions: the throwing ones roll back completely, the others commit', async () => {
      await tx((t) => t.insertRun(run({ workflowId: 'shared' })));
      const count = 40;
      const fails = (i: number) => i % 3 === 1;
      const results = await Promise.allSettled(
        Array.from({ length: count }, (_, i) =>
          s.store.transaction(async (t) => {
            const runId = `c-${i}`;
            await t.insertRun(run({ runId, workflowId: `wf-c-${i}` }));
            await t.appendEvents(runId, 1, [marker(i)]);
            await t.insertTimer(timer({ runId, timerKey: `k${i}` }));
            await t.putRequest({
              namespace: 'default',
              requestId: `req-${i}`,
              kind: 'start',
              runId,
              createdAt: T0,
            });
            const shared = await t.getRun('run-1');
            await t.updateRun('run-1', { nextEventId: shared!.nextEventId + 1 });
            if (fails(i)) throw new Error(`fail ${i}`);
            return `value ${i}`;
          }),
        ),
      );
      results.forEach((r, i) => {
        if (fails(i)) {
          expect(r.status).toBe('rejected');
          expect(((r as PromiseRejectedResult).reason as Error).message).toBe(`fail ${i}`);
        } else {
          expect(r).toEqual({ status: 'fulfilled', value: `value ${i}` });
        }
      });
      const committed = Array.from({ length: count }, (_, i) => i).filter((i) => !fails(i));
      await s.store.read(async (t) => {
        for (let i = 0; i < count; i++) {
          const runId = `c-${i}`;
          if (fails(i)) {
            expect(await t.getRun(runId)).toBeUndefined();
            expect(await t.readEvents(runId)).toEqual([]);
            expect(await t.listTimers(runId)).toEqual([]);
            expect(await t.getRequest('default', `req-${i}`)).toBeUndefined();
          } else {
            expect((await t.getRun(runId))?.workflowId).toBe(`wf-c-${i}`);
            expect(await t.readEvents(runId)).toEqual([{ eventId: 1, ...marker(i) }]);
            expect((await t.listTimers(runId)).map((x) => x.timerKey)).toEqual([`k${i}`]);
            expect((await t.getRequest('default', `req-${i}`))?.runId).toBe(runId);
          }
        }
        expect((await t.getRun('run-1'))?.nextEventId).toBe(1 + committed.length);
      });
    });

    it('concurrent conflicting writes take effect in one serial order, each caller gets its own result', async () => {
      // Call order is not part of the contract (row locks grant in arrival order, which a connection
      // pool does not keep); the SQLite adapter's own tests pin its call order.
      await tx((t) => t.insertRun(run()));
      const count = 30;
      const values = await Promise.allSettled(
        Array.from({ length: count }, (_, i) =>
          s.store.transaction(async (t) => {
            const current = await t.getRun('run-1');
            const order = ((current!.memo?.order as number[] | undefined) ?? []).concat(i);
            await t.updateRun('run-1', { memo: { order }, nextEventId: current!.nextEventId + 1 });
            await t.appendEvents('run-1', current!.nextEventId, [marker(i)]);
            if (i % 7 === 3) throw new Error(`no ${i}`);
            return { i, sawBefore: current!.nextEventId - 1 };
          }),
        ),
      );
      const kept = Array.from({ length: count }, (_, i) => i).filter((i) => i % 7 !== 3);
      const r = await s.store.read((t) => t.getRun('run-1'));
      const order = r?.memo?.order as number[];
      expect([...order].sort((a, b) => a - b)).toEqual(kept);
      values.forEach((v, i) => {
        if (i % 7 === 3) {
          expect(v.status).toBe('rejected');
          return;
        }
        // Each caller gets its own value, computed after exactly the callers committed before it.
        expect(v).toEqual({ status: 'fulfilled', value: { i, sawBefore: order.indexOf(i) } });
      });
      await s.store.read(async (t) => {
        expect((await t.getRun('run-1'))?.nextEventId).toBe(kept.length + 1);
        const events = await t.readEvents('run-1');
        expect(events.map((e) => (e.attributes as { details: { n: number } }).details.n)).toEqual(order);
        expect(events.map((e) => e.eventId)).toEqual(kept.map((_, k) => k + 1));
      });
    });

    it('a transaction that fails with a store error among concurrent ones rejects only its caller', async () => {
      await tx((t) => t.insertRun(run({ runId: 'open', workflowId: 'dup' })));
      const outcomes = await Promise.allSettled([
        tx((t) => t.insertRun(run({ runId: 'a', workflowId: 'wa' }))),
        tx((t) => t.insertRun(run({ runId: 'b', workflowId: 'dup' }))),
        tx((t) => t.insertRun(run({ runId: 'c', workflowId: 'wc' }))),
      ]);
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      await expectStoreError(
        Promise.reject((outcomes[1] as PromiseRejectedResult).reason),
        'DUPLICATE_OPEN_RUN',
      );
      await s.store.read(async (t) => {
        expect(await t.getRun('a')).toBeDefined();
        expect(await t.getRun('b')).toBeUndefined();
        expect(await t.getRun('c')).toBeDefined();
      });
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
      await s.store.close();
      await s.store.close();
      await expectStoreError(
        s.store.read((t) => t.getRun('run-1')),
        'STORE_CLOSED',
      );
      await txFails('STORE_CLOSED', (t) => t.getRun('run-1'));
    });
  });

  // An in-memory s.store cannot be opened twice, so these tests do not apply to it.
  if (s.shared) describeTwoInstances();
  function describeTwoInstances(): void {
    describe('two Store instances on one database', () => {
      let other: Store | undefined;
      const second = async (): Promise<Store> => {
        if (!s.fixture.openAnother) throw new Error('a shared s.store must give its s.fixture openAnother()');
        other = await s.fixture.openAnother();
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
          Array.from({ length: 40 }, (_, i) => increment(i % 2 === 0 ? s.store : b, 'run-1')),
        );
        expect((await b.read((t) => t.getRun('run-1')))?.nextEventId).toBe(41);
        await expectStoreError(
          b.transaction((t) => t.insertRun(run({ runId: 'r3' }))),
          'DUPLICATE_OPEN_RUN',
        );
      });
    });
  }
}
