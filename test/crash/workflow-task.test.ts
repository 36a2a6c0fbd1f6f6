import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { busyLoop } from '../fixtures/crash/busy-loop.js';
import {
  attr,
  entriesOf,
  eventsOfType,
  expectNoCompletedActivityRestarted,
  expectWellFormedHistory,
  timeOf,
} from './checks.js';
import { waitUntil, withTimeout } from './harness.js';
import { type CrashEnv, createCrashEnv } from './setup.js';

/**
 * How long the slow workflow task should compute. It must stay well below the task timeout, or the
 * retried task could never commit either; the timeout leaves room for a loaded machine.
 */
const TARGET_TASK_MS = 800;
const WORKFLOW_TASK_TIMEOUT_MS = 3000;

/** Iterations of busyLoop that take about `targetMs` on this machine (median of five samples). */
function calibrate(targetMs: number): number {
  busyLoop(1_000_000); // warm up the JIT
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    const iterations = 5_000_000;
    const started = performance.now();
    busyLoop(iterations);
    samples.push(iterations / (performance.now() - started));
  }
  const perMs = samples.sort((a, b) => a - b)[2]!;
  return Math.round(perMs * targetMs);
}

describe('crash: kill -9 in the middle of a workflow task', () => {
  let env: CrashEnv;
  beforeEach(() => {
    env = createCrashEnv({ deadlockTimeout: 20_000, workflowTaskRetry: { initialInterval: 100 } });
  });
  afterEach(async () => {
    await env.dispose();
  });

  it('times the task out, retries it on the restarted worker, and the history has no gaps or duplicates', async () => {
    const iterations = calibrate(TARGET_TASK_MS);
    await env.worker.start();
    const client = await env.client();
    const handle = await client.workflow.start('slowTask', {
      workflowId: 'slow-task-1',
      taskQueue: env.taskQueue,
      args: [env.logPath, iterations],
      workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT_MS,
    });

    // The slow task is the one that starts after the timer fired.
    const slowStarted = await waitUntil(
      async () => {
        const events = (await handle.fetchHistory()).events;
        const fired = events.find((e) => e.type === 'TimerFired');
        return fired && events.find((e) => e.type === 'WorkflowTaskStarted' && e.eventId > fired.eventId);
      },
      'the slow workflow task to start',
      10_000,
    );
    await env.worker.kill9();
    const afterKill = (await handle.fetchHistory()).events;
    expect(
      afterKill.filter((e) => e.eventId > slowStarted.eventId).map((e) => e.type),
      'the kill landed while the slow task was running',
    ).toEqual([]);

    await env.worker.start();
    const checksum = await withTimeout(handle.result(), 20_000, 'the workflow result');
    expect(checksum).toBe(busyLoop(iterations));

    const history = await handle.fetchHistory();
    expectWellFormedHistory(history);
    const timedOut = eventsOfType(history, 'WorkflowTaskTimedOut');
    expect(timedOut).toHaveLength(1);
    expect(attr<{ startedEventId: number }>(timedOut[0]!).startedEventId).toBe(slowStarted.eventId);
    expect(timeOf(timedOut[0]!) - timeOf(slowStarted)).toBeGreaterThanOrEqual(WORKFLOW_TASK_TIMEOUT_MS);
    expect(
      eventsOfType(history, 'ActivityScheduled').map((e) => attr<{ activityId: string }>(e).activityId),
    ).toEqual(['1', '2']);
    expect(eventsOfType(history, 'ActivityCompleted')).toHaveLength(2);
    expect(eventsOfType(history, 'WorkflowCompleted')).toHaveLength(1);
    // The timed-out task belonged to the killed worker; the retry ran on the new one.
    const workerOf = (e: (typeof history.events)[number]): string => attr<{ workerId: string }>(e).workerId;
    const retried = eventsOfType(history, 'WorkflowTaskStarted').find(
      (e) => e.eventId > timedOut[0]!.eventId,
    )!;
    expect(workerOf(retried)).not.toBe(workerOf(slowStarted));

    const log = env.readLog();
    expect(entriesOf(log, { name: 'before' }).map((e) => e.event)).toEqual(['start', 'complete']);
    expect(entriesOf(log, { name: 'after' }).map((e) => e.event)).toEqual(['start', 'complete']);
    expectNoCompletedActivityRestarted(log);
  });
});
