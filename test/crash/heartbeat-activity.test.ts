import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CountResult } from '../fixtures/crash/activities.js';
import { HEARTBEAT_TIMEOUT_MS, RETRY_INITIAL_INTERVAL_MS } from '../fixtures/crash/workflows.js';
import { expectNoCompletedActivityRestarted, expectWellFormedHistory } from './checks.js';
import { waitUntil, withTimeout } from './harness.js';
import { type CrashEnv, createCrashEnv, SWEEP_INTERVAL_MS } from './setup.js';

/** Allowance for a worker process to start (TypeScript loading, workflow bundling) and for scheduling. */
const STARTUP_SLACK_MS = 2000;
/** The executor sends heartbeats at most every 80% of the heartbeat timeout (src/worker/activity-executor.ts). */
const THROTTLE_MS = HEARTBEAT_TIMEOUT_MS * 0.8;
const STEP_MS = 50;
const TOTAL_STEPS = 60;

describe('crash: kill -9 in the middle of a heartbeating activity', () => {
  let env: CrashEnv;
  beforeEach(() => {
    env = createCrashEnv();
  });
  afterEach(async () => {
    await env.dispose();
  });

  it('retries the attempt within heartbeat timeout + sweep interval + retry interval, resuming from the last heartbeat', async () => {
    await env.worker.start();
    const client = await env.client();
    const handle = await client.workflow.start('heartbeating', {
      workflowId: 'heartbeating-1',
      taskQueue: env.taskQueue,
      args: [env.logPath, TOTAL_STEPS, STEP_MS],
    });

    // Past the first throttle interval, so at least two heartbeats were sent (at once, then ~800 ms later).
    await waitUntil(
      () => env.readLog().some((e) => e.event === 'progress' && (e.progress ?? 0) >= 25),
      'the first attempt to reach progress 25',
      15_000,
    );
    const killedAt = await env.worker.kill9();

    const firstAttempt = env.readLog().filter((e) => e.activityType === 'countWithHeartbeats');
    const progress = firstAttempt.filter((e) => e.event === 'progress');
    const lastLogged = progress.at(-1)!;
    expect(
      firstAttempt.some((e) => e.event === 'complete'),
      'the first attempt did not finish before the kill',
    ).toBe(false);
    // What the store holds for the dead attempt: its last committed heartbeat.
    const pending = (await handle.describe()).pendingActivities.find(
      (a) => a.activityType === 'countWithHeartbeats',
    );
    expect(pending?.state).toBe('started');
    expect(pending?.attempt).toBe(1);
    const checkpoint = pending!.heartbeatDetails as number;
    const lastHeartbeatAt = pending!.lastHeartbeatTime!.getTime();

    await env.worker.start();
    const result = (await withTimeout(handle.result(), 20_000, 'the workflow result')) as CountResult;

    const log = env.readLog();
    const starts = log.filter((e) => e.activityType === 'countWithHeartbeats' && e.event === 'start');
    expect(starts.map((e) => e.attempt)).toEqual([1, 2]);
    const second = starts[1]!;

    // Detected and retried in time, and not before the heartbeat timeout had passed.
    const bound = HEARTBEAT_TIMEOUT_MS + SWEEP_INTERVAL_MS + RETRY_INITIAL_INTERVAL_MS + STARTUP_SLACK_MS;
    expect(
      second.time - killedAt,
      `attempt 2 started ${second.time - killedAt} ms after the kill`,
    ).toBeLessThanOrEqual(bound);
    expect(second.time).toBeGreaterThanOrEqual(lastHeartbeatAt + HEARTBEAT_TIMEOUT_MS);

    // Resumed from exactly the last recorded heartbeat, which lags the logged progress by at most one
    // throttle interval (plus 100 ms for the heartbeat's own write).
    expect(second.resumedFrom).toBe(checkpoint);
    const floor = Math.max(
      0,
      ...progress.filter((e) => e.time <= lastLogged.time - THROTTLE_MS - 100).map((e) => e.progress!),
    );
    expect(checkpoint).toBeGreaterThan(0);
    expect(checkpoint).toBeGreaterThanOrEqual(floor);
    expect(checkpoint).toBeLessThanOrEqual(lastLogged.progress!);
    const secondProgress = log
      .filter((e) => e.event === 'progress' && e.attempt === 2)
      .map((e) => e.progress);
    expect(secondProgress[0]).toBe(checkpoint + 1);
    expect(secondProgress.at(-1)).toBe(TOTAL_STEPS);

    expect(result).toEqual({ resumedFrom: checkpoint, attempt: 2, reached: TOTAL_STEPS });
    expectNoCompletedActivityRestarted(log);
    expectWellFormedHistory(await handle.fetchHistory());
  });
});
