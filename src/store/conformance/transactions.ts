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
