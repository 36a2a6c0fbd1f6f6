import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  entriesOf,
  eventsOfType,
  expectNoCompletedActivityRestarted,
  expectWellFormedHistory,
  timeOf,
} from './checks.js';
import { sleep, waitUntil, withTimeout } from './harness.js';
import { type CrashEnv, createCrashEnv, SWEEP_INTERVAL_MS } from './setup.js';

const SLEEP_MS = 2000;
/** Allowance for a worker process to start (TypeScript loading, workflow bundling) and for scheduling. */
const STARTUP_SLACK_MS = 2000;

describe('crash: kill -9 while a workflow sleeps', () => {
  let env: CrashEnv;
  beforeEach(() => {
    env = createCrashEnv();
  });
  afterEach(async () => {
    await env.dispose();
  });

  it('fires the timer right after a restart that comes after its due time, and never early', async () => {
    await env.worker.start();
    const client = await env.client();
    const handle = await client.workflow.start('sleeper', {
      workflowId: 'sleeper-1',
      taskQueue: env.taskQueue,
      args: [env.logPath, SLEEP_MS],
    });

    const timerStarted = await waitUntil(
      async () => eventsOfType(await handle.fetchHistory(), 'TimerStarted')[0],
      'TimerStarted',
      10_000,
    );
    await env.worker.kill9();

    // Stay down until a second past the due time.
    const dueAt = timeOf(timerStarted) + SLEEP_MS;
    await sleep(dueAt + 1000 - Date.now());
    expect(eventsOfType(await handle.fetchHistory(), 'TimerFired'), 'no node was up to fire it').toHaveLength(
      0,
    );

    const restarted = await env.worker.start();
    const slept = (await withTimeout(handle.result(), 15_000, 'the workflow result')) as number;

    const history = await handle.fetchHistory();
    const fired = eventsOfType(history, 'TimerFired');
    expect(fired).toHaveLength(1);
    const firedAt = timeOf(fired[0]!);
    expect(firedAt - timeOf(timerStarted), 'never early').toBeGreaterThanOrEqual(SLEEP_MS);
    expect(firedAt, 'fired by the restarted worker').toBeGreaterThanOrEqual(restarted.spawnedAt);
    expect(firedAt - restarted.spawnedAt, 'fired right after the restart').toBeLessThanOrEqual(
      SWEEP_INTERVAL_MS + STARTUP_SLACK_MS,
    );
    expect(slept, 'the sleep as the workflow measured it').toBeGreaterThanOrEqual(SLEEP_MS);

    const log = env.readLog();
    expect(entriesOf(log, { name: 'before' }).map((e) => e.event)).toEqual(['start', 'complete']);
    expect(entriesOf(log, { name: 'after' }).map((e) => e.event)).toEqual(['start', 'complete']);
    expectNoCompletedActivityRestarted(log);
    expectWellFormedHistory(history);
  });
});
