import { afterEach, describe, expect, it } from 'vitest';
import { claimActivityTasks } from '../../src/runtime/activity-tasks.js';
import { Runtime } from '../../src/runtime/runtime.js';
import { sweepOnce } from '../../src/runtime/sweeper.js';
import { startWorkflow } from '../../src/runtime/workflow-ops.js';
import { claimWorkflowTasks, completeWorkflowTask } from '../../src/runtime/workflow-tasks.js';
import type { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import { adminClient, dropSchema, storeUrl, testSchema } from '../store/fixtures/postgres.js';
import { ManualClock, startRequest } from './runtime-env.js';

const options = {
  startToCloseTimeoutMs: 1000,
  retry: {
    initialIntervalMs: 100,
    backoffCoefficient: 2,
    maximumIntervalMs: 1000,
    maximumAttempts: 0,
    nonRetryableErrorTypes: [],
  },
};

describe('activity deadline sweep on PostgreSQL: locks a run before its activities', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('does not deadlock with a transaction that holds the run and then locks its activities', async () => {
    const schema = testSchema();
    const app = `lh_sweep_${schema.slice(-6)}`;
    const clock = new ManualClock();
    const runtime = await Runtime.acquire(storeUrl(schema, { application_name: app }), {
      mode: 'node',
      clock,
    });
    cleanups.push(() => dropSchema(schema));
    cleanups.push(() => runtime.release());
    const ctx = runtime.ctx;
    const { runId } = await startWorkflow(ctx, startRequest());
    const [task] = await claimWorkflowTasks(ctx, 'default', 'q', 'w1', 1);
    await completeWorkflowTask(
      ctx,
      runId,
      task!.token,
      [{ type: 'scheduleActivity', seq: 1, activityType: 'a', input: [], options }],
      'hash',
      'w1',
    );
    const [attempt] = await claimActivityTasks(ctx, 'default', 'q', 'w1', 1);
    expect(attempt).toBeDefined();
    clock.advance(5000); // past the attempt's start-to-close deadline

    // Another node's completion of this run: it holds the run's row lock.
    const other = await adminClient();
    cleanups.push(() => other.end());
    await other.query("SET lock_timeout = '5s'");
    await other.query('BEGIN');
    await other.query(`SELECT 1 FROM "${schema}".runs WHERE run_id = $1 FOR UPDATE`, [runId]);

    const sweep = sweepOnce(ctx, 'sweeper-1');
    // Wait until the sweep is blocked on the run's lock.
    const admin = await adminClient();
    cleanups.push(() => admin.end());
    for (let i = 0; ; i++) {
      const { rows } = await admin.query(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        [app],
      );
      if (rows.length > 0) break;
      if (i > 500) throw new Error('the sweep never waited for the run lock');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    // Now the completion locks the run's activities. Had the sweep kept the due activity locked while
    // waiting for the run, this would be a deadlock (PostgreSQL aborts one side after deadlock_timeout).
    const { rows } = await other.query(
      `SELECT scheduled_event_id FROM "${schema}".activities WHERE run_id = $1 FOR UPDATE`,
      [runId],
    );
    expect(rows).toHaveLength(1);
    await other.query('COMMIT');

    expect(await sweep).toBeGreaterThanOrEqual(1);
    // No transaction of the sweep was aborted as a deadlock victim and re-run.
    expect((runtime.ctx.store as PostgresStore).stats().retries).toBe(0);
    // The attempt timed out and was retried (attempts are not history events): attempt 2 is scheduled.
    const activity = await ctx.store.read((tx) => tx.getActivity(runId, attempt!.scheduledEventId));
    expect(activity).toMatchObject({ attempt: 2, phase: 'scheduled' });
  });
});
