import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StaleTokenError } from '../../src/common/errors.js';
import { claimActivityTasks, completeActivity, heartbeatActivity } from '../../src/runtime/activity-tasks.js';
import type { Runtime } from '../../src/runtime/runtime.js';
import { sweepOnce } from '../../src/runtime/sweeper.js';
import { signalWorkflow, startWorkflow } from '../../src/runtime/workflow-ops.js';
import { claimWorkflowTasks, completeWorkflowTask, readEvents } from '../../src/runtime/workflow-tasks.js';
import { type ManualClock, openRuntime, startRequest } from './runtime-env.js';

const activityOptions = {
  startToCloseTimeoutMs: 1000,
  retry: {
    initialIntervalMs: 100,
    backoffCoefficient: 2,
    maximumIntervalMs: 1000,
    maximumAttempts: 0,
    nonRetryableErrorTypes: [],
  },
};

describe('fencing and buffering through the runtime', () => {
  let env: Awaited<ReturnType<typeof openRuntime>>;
  let runtime: Runtime;
  let clock: ManualClock;
  beforeEach(async () => {
    env = await openRuntime();
    runtime = env.runtime;
    clock = env.clock;
  });
  afterEach(() => env.close());

  const types = async (runId: string) => (await readEvents(runtime.ctx, runId, 1)).map((e) => e.type);

  it('rejects a workflow task result from a zombie whose lease expired and was re-claimed', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest({ workflowTaskTimeoutMs: 1000 }));
    const [zombie] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    clock.advance(1001);
    await sweepOnce(runtime.ctx, 'sweeper'); // lease expired: the task timed out and is retried at once
    const [fresh] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w2', 1);
    expect(fresh!.token).toBeGreaterThan(zombie!.token);
    const before = await types(runId);
    await expect(
      completeWorkflowTask(
        runtime.ctx,
        runId,
        zombie!.token,
        [{ type: 'completeWorkflow', result: 'zombie' }],
        'h',
        'w1',
      ),
    ).rejects.toBeInstanceOf(StaleTokenError);
    expect(await types(runId)).toEqual(before);
    const done = await completeWorkflowTask(
      runtime.ctx,
      runId,
      fresh!.token,
      [{ type: 'completeWorkflow', result: 'ok' }],
      'h',
      'w2',
    );
    expect(done.outcome).toBe('committed');
    expect(await types(runId)).toEqual([
      'WorkflowStarted',
      'WorkflowTaskScheduled',
      'WorkflowTaskStarted',
      'WorkflowTaskTimedOut',
      'WorkflowTaskScheduled',
      'WorkflowTaskStarted',
      'WorkflowTaskCompleted',
      'WorkflowCompleted',
    ]);
  });

  it('rejects completion and heartbeat of an activity attempt that timed out and was retried', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest());
    const [task] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    await completeWorkflowTask(
      runtime.ctx,
      runId,
      task!.token,
      [{ type: 'scheduleActivity', seq: 1, activityType: 'a', input: [], options: activityOptions }],
      'h',
      'w1',
    );
    const [first] = await claimActivityTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    clock.advance(1001);
    await sweepOnce(runtime.ctx, 'sweeper'); // start-to-close timeout: retried
    clock.advance(100);
    const [second] = await claimActivityTasks(runtime.ctx, 'default', 'q', 'w2', 1);
    expect(second!.attempt).toBe(2);
    const ref = (t: typeof first) => ({ runId, scheduledEventId: t!.scheduledEventId, token: t!.token });
    await expect(heartbeatActivity(runtime.ctx, ref(first), 1)).rejects.toBeInstanceOf(StaleTokenError);
    await expect(completeActivity(runtime.ctx, ref(first), 'stale')).rejects.toBeInstanceOf(StaleTokenError);
    await completeActivity(runtime.ctx, ref(second), 'fresh');
    const events = await readEvents(runtime.ctx, runId, 1);
    const completed = events.filter((e) => e.type === 'ActivityCompleted');
    expect(completed).toHaveLength(1);
    expect(completed[0]!.attributes).toMatchObject({ result: 'fresh' });
    expect(events.find((e) => e.type === 'ActivityStarted')!.attributes).toMatchObject({ attempt: 2 });
  });

  it('falls back when a signal lands while a closing task is in flight: the task is discarded, the signal kept', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest());
    const [task] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    await signalWorkflow(runtime.ctx, 'default', 'wf-1', undefined, 'late', ['x']);
    const result = await completeWorkflowTask(
      runtime.ctx,
      runId,
      task!.token,
      [{ type: 'completeWorkflow' }],
      'h',
      'w1',
    );
    expect(result.outcome).toBe('discarded');
    expect(await types(runId)).toEqual([
      'WorkflowStarted',
      'WorkflowTaskScheduled',
      'WorkflowTaskStarted',
      'WorkflowTaskFailed',
      'SignalReceived',
      'WorkflowTaskScheduled',
    ]);
    const [next] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    expect(next).toBeDefined();
    const run = await runtime.ctx.store.read((tx) => tx.getRun(runId));
    expect(run!.status).toBe('running');
  });

  it('makes a retried signal with the same request id a no-op', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest());
    await signalWorkflow(runtime.ctx, 'default', 'wf-1', undefined, 's', [1], 'req-1');
    await signalWorkflow(runtime.ctx, 'default', 'wf-1', undefined, 's', [1], 'req-1');
    await signalWorkflow(runtime.ctx, 'default', 'wf-1', undefined, 's', [2], 'req-2');
    const signals = (await readEvents(runtime.ctx, runId, 1)).filter((e) => e.type === 'SignalReceived');
    expect(signals.map((e) => e.attributes)).toMatchObject([{ input: [1] }, { input: [2] }]);
  });

  it('makes a retried start with the same request id return the same run', async () => {
    const a = await startWorkflow(runtime.ctx, startRequest({ requestId: 'start-1' }));
    const b = await startWorkflow(runtime.ctx, startRequest({ requestId: 'start-1' }));
    expect(b).toEqual({ runId: a.runId, created: false });
  });

  it('fires a timer once and never before its due time', async () => {
    const { runId } = await startWorkflow(runtime.ctx, startRequest());
    const [task] = await claimWorkflowTasks(runtime.ctx, 'default', 'q', 'w1', 1);
    await completeWorkflowTask(
      runtime.ctx,
      runId,
      task!.token,
      [{ type: 'startTimer', seq: 1, durationMs: 5000 }],
      'h',
      'w1',
    );
    clock.advance(4999);
    await sweepOnce(runtime.ctx, 's1');
    expect(await types(runId)).not.toContain('TimerFired');
    clock.advance(1);
    await Promise.all([sweepOnce(runtime.ctx, 's1'), sweepOnce(runtime.ctx, 's2')]);
    expect((await types(runId)).filter((t) => t === 'TimerFired')).toHaveLength(1);
  });
});
