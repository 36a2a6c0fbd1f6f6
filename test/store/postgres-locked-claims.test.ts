/**
 * Claims on PostgreSQL skip rows another transaction holds (`FOR UPDATE SKIP LOCKED`). A transaction
 * that locks due work without taking it (a step's commit locks its run's other activities, a sweep locks
 * runs) wakes no one when it ends, so a claim that passed such rows over says so (`lockedDue`), and the
 * worker looks again soon instead of at its next poll.
 */
import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import { Worker } from 'longhaul/worker';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { activity, run, T0 } from '../../src/store/conformance/records.js';
import { openStore } from '../../src/store/open-store.js';
import type { Store } from '../../src/store/store.js';
import { delay, eventually, resultWithin } from '../e2e/env.js';
import * as activities from '../fixtures/e2e/activities.js';
import { adminClient, adminQuery, dropSchema, storeUrl, testSchema } from './fixtures/postgres.js';

const workflowsPath = fileURLToPath(new URL('../fixtures/e2e/workflows.ts', import.meta.url));
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function newSchema(): Promise<string> {
  const schema = testSchema();
  cleanups.push(() => dropSchema(schema));
  return schema;
}

/** Holds a row lock on every activity of `schema` until the returned function is called (no change). */
async function lockActivities(schema: string): Promise<{ locked: number; release: () => Promise<void> }> {
  const admin = await adminClient();
  await admin.query('BEGIN');
  const { rowCount } = await admin.query(`SELECT 1 FROM "${schema}".activities FOR UPDATE`);
  let released = false;
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    await admin.query('ROLLBACK');
    await admin.end();
  };
  cleanups.push(release);
  return { locked: rowCount ?? 0, release };
}

describe('claims that pass over locked work', () => {
  it('count the due rows another transaction holds, and none once it let go', async () => {
    const schema = await newSchema();
    const store: Store = await openStore(storeUrl(schema), { mode: 'node' });
    cleanups.push(() => store.close());
    await store.transaction(async (tx) => {
      await tx.insertRun(run());
      await tx.insertActivity(activity({ scheduledEventId: 2, activityId: '1', visibleAt: T0 }));
      await tx.insertActivity(activity({ scheduledEventId: 3, activityId: '2', visibleAt: T0 }));
    });
    const claim = () =>
      store.transaction(async (tx) => {
        const found = await tx.findClaimableActivities('default', 'q1', Date.now(), 10);
        return { found: found.map((a) => a.scheduledEventId), lockedDue: tx.lockedDue() };
      });
    const held = await lockActivities(schema);
    expect(held.locked).toBe(2);
    expect(await claim()).toEqual({ found: [], lockedDue: 2 });
    await held.release();
    expect(await claim()).toEqual({ found: [2, 3], lockedDue: 0 });
  });

  it('a worker whose claim passed over a locked activity claims it soon after the lock goes, not at its next poll', async () => {
    const schema = await newSchema();
    const url = storeUrl(schema);
    const taskQueue = 'locked-claims';
    // The workflow's worker has no activities, so its activity waits in the store for another worker.
    const workflows = await Worker.create({
      connection: url,
      taskQueue,
      workflowsPath,
      logger: silentLogger,
    });
    const workflowsRunning = workflows.run();
    cleanups.push(async () => {
      await workflows.shutdown();
      await workflowsRunning;
    });
    const client = await Client.connect(url);
    cleanups.push(() => client.close());
    const handle = await client.workflow.start('hello', {
      workflowId: 'locked-1',
      taskQueue,
      args: ['lock'],
    });
    await eventually(async () => {
      const rows = await adminQuery(`SELECT 1 FROM "${schema}".activities WHERE phase = 'scheduled'`);
      expect(rows).toHaveLength(1);
    });
    const held = await lockActivities(schema);
    expect(held.locked).toBe(1);
    // Its first claim (at start) finds the activity locked; the next poll would be 10 s later.
    const started = Date.now();
    const runner = await Worker.create({
      connection: url,
      taskQueue,
      activities,
      pollInterval: '10s',
      logger: silentLogger,
    });
    const running = runner.run();
    cleanups.push(async () => {
      await runner.shutdown();
      await running;
    });
    await delay(300);
    await held.release();
    const result = await resultWithin(handle, 5000);
    expect(result).toBe('hello lock');
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
