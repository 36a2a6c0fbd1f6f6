import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StaleTokenError } from '../../src/common/errors.js';
import { claimActivityTasks } from '../../src/runtime/activity-tasks.js';
import { completeActivityWithTask, type Speculation } from '../../src/runtime/hot-path.js';
import type { Runtime } from '../../src/runtime/runtime.js';
import { sweepOnce } from '../../src/runtime/sweeper.js';
import { signalWorkflow, startWorkflow } from '../../src/runtime/workflow-ops.js';
import { claimWorkflowTasks, completeWorkflowTask, readEvents } from '../../src/runtime/workflow-tasks.js';
import { openRuntime, startRequest } from './runtime-env.js';

const options = {
  startToCloseTimeoutMs: 10_000,
  retry: {
    initialIntervalMs: 100,
    backoffCoefficient: 2,
    maximumIntervalMs: 1000,
    maximumAttempts: 0,
    nonRetryableErrorTypes: [],
  },
};

describe('hot path: activity result, next task and its commands in one transaction', () => {
  let env: Awaited<ReturnType<typeof openRuntime>>;
  let runtime: Runtime;
  beforeEach(async () => {
    env = await openRuntime();
    runtime = env.runtime;
  });
  afterEach(() => env.close());

  /** A run whose first task scheduled activity 1, and that activity's claimed attempt. */
  async function runningActivity() {
    const { runId } = await startWorkflow(runtime.ctx, startRequest());
    const [task] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    const first = await completeWorkflowTask(
      runtime.ctx,
      runId,
      task!.token,
      [{ type: 'scheduleActivity', seq: 1, activityType: 'a', input: [], options }],
      'hash',
      'w1',
    );
    const [activity] = await claimActivityTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    return { runId, first, activity: activity! };
  }

  const speculation = (nextEventId: number, lastCompleted: number): Speculation => ({
    expectedNextEventId: nextEventId,
    expectedLastCompletedTaskEventId: lastCompleted,
    taskTime: env.clock.now(),
    commands: [{ type: 'completeWorkflow', result: 'done' }],
    bundleHash: 'hash',
  });

  it('commits the result, the task and its commands together when the run did not move', async () => {
    const { runId, first, activity } = await runningActivity();
    const tx0 = runtime.ctx.stats.transactions;
    const outcome = await completeActivityWithTask(
      runtime.ctx,
      activity,
      42,
      speculation(first.nextEventId, first.completedEventId),
      'w1',
      undefined,
    );
    expect(runtime.ctx.stats.transactions - tx0).toBe(1);
    expect(outcome.kind).toBe('committed');
    const events = await readEvents(runtime.ctx, runId, first.nextEventId);
    expect(events.map((e) => e.type)).toEqual([
      'ActivityStarted',
      'ActivityCompleted',
      'WorkflowTaskScheduled',
      'WorkflowTaskStarted',
      'WorkflowTaskCompleted',
      'WorkflowCompleted',
    ]);
    expect(events[1]!.attributes).toMatchObject({ result: 42, startedEventId: events[0]!.eventId });
    const run = await runtime.ctx.store.read((tx) => tx.getRun(runId));
    expect(run).toMatchObject({ status: 'completed', wftPhase: 'idle' });
  });

  it('falls back to the ordinary path when a signal arrived meanwhile: nothing speculative is written', async () => {
    const { runId, first, activity } = await runningActivity();
    await signalWorkflow(runtime.ctx, 'default', 'wf-1', undefined, 'poke', ['x']);
    const outcome = await completeActivityWithTask(
      runtime.ctx,
      activity,
      42,
      speculation(first.nextEventId, first.completedEventId),
      'w1',
      undefined,
    );
    expect(outcome.kind).toBe('fallback');
    const events = await readEvents(runtime.ctx, runId, first.nextEventId);
    // The signal scheduled a task; the result joined it; the speculative close did not happen.
    expect(events.map((e) => e.type)).toEqual([
      'SignalReceived',
      'WorkflowTaskScheduled',
      'ActivityStarted',
      'ActivityCompleted',
    ]);
    const run = await runtime.ctx.store.read((tx) => tx.getRun(runId));
    expect(run).toMatchObject({ status: 'running', wftPhase: 'scheduled' });
    const [next] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w2', 1);
    expect(next?.runId).toBe(runId);
  });

  it('rejects a stale attempt without writing anything', async () => {
    const { runId, first, activity } = await runningActivity();
    const before = await readEvents(runtime.ctx, runId, 1);
    await expect(
      completeActivityWithTask(
        runtime.ctx,
        { ...activity, token: activity.token + 1 },
        42,
        speculation(first.nextEventId, first.completedEventId),
        'w1',
        undefined,
      ),
    ).rejects.toBeInstanceOf(StaleTokenError);
    expect(await readEvents(runtime.ctx, runId, 1)).toEqual(before);
  });

  it('starts activities for the completing worker in the same commit (eager dispatch)', async () => {
    const { runId, first, activity } = await runningActivity();
    const outcome = await completeActivityWithTask(
      runtime.ctx,
      activity,
      1,
      {
        ...speculation(first.nextEventId, first.completedEventId),
        commands: [{ type: 'scheduleActivity', seq: 2, activityType: 'b', input: [], options }],
      },
      'w1',
      { namespace: 'default', taskQueue: 'q', workerId: 'w1', slots: 1 },
    );
    expect(outcome.kind).toBe('committed');
    if (outcome.kind !== 'committed') return;
    expect(outcome.eagerActivities).toHaveLength(1);
    expect(outcome.eagerActivities[0]).toMatchObject({ activityId: '2', attempt: 1, token: 1 });
    // Nobody else can claim it: it is already started.
    expect(await claimActivityTasks(runtime.ctx, 'default', 'q', 'w2', 10)).toEqual([]);
    const pending = await runtime.ctx.store.read((tx) => tx.listActivities(runId));
    expect(pending).toMatchObject([{ activityId: '2', phase: 'started', leaseOwner: 'w1' }]);
  });

  it('claims the first task for a worker of this process in the start commit (eager start)', async () => {
    const ran: string[] = [];
    let reserved = 0;
    const unregister = runtime.ctx.localWorkers.register('default', 'q', {
      workerId: 'local',
      reserve: () => {
        reserved++;
        return true;
      },
      release: () => {
        reserved--;
      },
      run: (task) => {
        reserved--;
        ran.push(`${task.runId}:${task.token}`);
        handed.push(task.history);
      },
    });
    const handed: unknown[] = [];
    try {
      const tx0 = runtime.ctx.stats.transactions;
      // Input that JSON changes: the task must carry it as stored, not as given.
      const args = [{ b: 1, a: undefined, z: -0, when: new Date(0), list: [undefined] }];
      const { runId } = await startWorkflow(runtime.ctx, startRequest({ workflowId: 'eager-1', args }));
      expect(runtime.ctx.stats.transactions - tx0).toBe(1);
      expect(ran).toEqual([`${runId}:1`]);
      expect(reserved).toBe(0);
      const stored = await readEvents(runtime.ctx, runId, 1);
      expect(stored.map((e) => e.type)).toEqual([
        'WorkflowStarted',
        'WorkflowTaskScheduled',
        'WorkflowTaskStarted',
      ]);
      // The worker gets the history in hand (no read), exactly as a read returns it.
      expect(handed).toEqual([stored]);
      const input = (handed[0] as typeof stored)[0]!.attributes as { input: unknown[] };
      expect(input.input).toStrictEqual([{ b: 1, z: 0, when: '1970-01-01T00:00:00.000Z', list: [null] }]);
      // A start that creates nothing gives the reservation back.
      await expect(startWorkflow(runtime.ctx, startRequest({ workflowId: 'eager-1' }))).rejects.toThrow();
      expect(reserved).toBe(0);
      expect(ran).toHaveLength(1);
    } finally {
      unregister();
    }
  });

  it('claims the task a timer schedules for a worker of this process in the firing commit', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest({ workflowId: 'timer-1' }));
    const [task] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    await completeWorkflowTask(
      runtime.ctx,
      runId,
      task!.token,
      [{ type: 'startTimer', seq: 1, durationMs: 1000 }],
      'h',
      'w1',
    );
    const ran: number[] = [];
    const handed: unknown[] = [];
    const unregister = runtime.ctx.localWorkers.register('default', 'q', {
      workerId: 'local',
      reserve: () => true,
      release: () => undefined,
      run: (t) => {
        ran.push(t.token);
        handed.push(t.history);
      },
    });
    try {
      env.clock.advance(1000);
      const tx0 = runtime.ctx.stats.transactions;
      await sweepOnce(runtime.ctx, 's');
      expect(runtime.ctx.stats.transactions - tx0).toBeLessThanOrEqual(3); // one per sweep category
      expect(ran).toEqual([2]);
      const events = await readEvents(runtime.ctx, runId, 1);
      expect(events.slice(-3).map((e) => e.type)).toEqual([
        'TimerFired',
        'WorkflowTaskScheduled',
        'WorkflowTaskStarted',
      ]);
      // The worker gets the events of the fire with the task, exactly as a read returns them.
      expect(handed).toEqual([events.slice(-3)]);
    } finally {
      unregister();
    }
  });

  it('tells when the run next wakes by itself: now with an activity pending, else its earliest timer', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest({ workflowId: 'wake-1' }));
    const [task] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    const now = env.clock.now();
    const sleeping = await completeWorkflowTask(
      runtime.ctx,
      runId,
      task!.token,
      [
        { type: 'startTimer', seq: 1, durationMs: 3_600_000 },
        { type: 'startTimer', seq: 2, durationMs: 60_000 },
      ],
      'h',
      'w1',
    );
    expect(sleeping.nextWakeAt).toBe(now + 60_000);
    const { first } = await runningActivity();
    expect(first.nextWakeAt).toBe(env.clock.now());
  });

  it('routes a cached run’s next task to its worker, and to others only after the sticky fallback', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest({ workflowId: 'sticky-1' }));
    const [task] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1, 5000);
    await completeWorkflowTask(runtime.ctx, runId, task!.token, [], 'h', 'w1', undefined, 'w1');
    await signalWorkflow(runtime.ctx, 'default', 'sticky-1', undefined, 's', []);
    expect(await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w2', 1, 5000)).toEqual([]);
    env.clock.advance(4999);
    expect(await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w2', 1, 5000)).toEqual([]);
    const [mine] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1, 5000);
    expect(mine?.runId).toBe(runId);
    await completeWorkflowTask(runtime.ctx, runId, mine!.token, [], 'h', 'w1', undefined, 'w1');
    await signalWorkflow(runtime.ctx, 'default', 'sticky-1', undefined, 's', []);
    env.clock.advance(5000); // w1 did not come for it: anyone may take it now
    const [theirs] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w2', 1, 5000);
    expect(theirs?.runId).toBe(runId);
  });
});
