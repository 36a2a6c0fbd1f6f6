import {
  CancelledFailure,
  isCancellation,
  TerminatedFailure,
  WorkflowFailedError,
  WorkflowNotFoundError,
} from 'longhaul/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probe } from '../fixtures/e2e/engine-activities.js';
import { eventsOf, eventually, historyTypes, rejectsWith, resultWithin, TestEnv, uniqueId } from './env.js';

describe('cancellation and termination', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  it('cancel() aborts a running activity and the workflow ends cancelled', async () => {
    const workflowId = uniqueId('cancel-activity');
    const handle = await env.client.workflow.start('cancellableActivity', {
      workflowId,
      taskQueue: env.taskQueue,
    });
    await eventually(() => expect(probe.started.has(workflowId)).toBe(true));
    await handle.cancel('user asked');
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(err.status).toBe('canceled');
    expect(err.cause).toBeInstanceOf(CancelledFailure);
    expect(isCancellation(err.cause)).toBe(true);
    expect(probe.aborted.get(workflowId)?.aborted).toBe(true);
    expect(probe.aborted.get(workflowId)?.reason).toContain('CancelledFailure');
    const d = await handle.describe();
    expect(d.status).toBe('canceled');
    expect(d.cancelRequested).toBe(true);
    expect(d.pendingActivities).toEqual([]);
    const types = await historyTypes(handle);
    expect(types).toContain('WorkflowCancelRequested');
    expect(types).toContain('ActivityCancelRequested');
    expect(types).toContain('ActivityCanceled');
    expect(types[types.length - 1]).toBe('WorkflowCanceled');
    const [requested] = await eventsOf(handle, 'WorkflowCancelRequested');
    expect(requested!.attributes.reason).toBe('user asked');
  });

  it('cancel() of a sleeping workflow cancels its timer and ends it cancelled', async () => {
    const handle = await env.client.workflow.start('sleeper', {
      workflowId: uniqueId('cancel-sleep'),
      taskQueue: env.taskQueue,
      args: [60_000],
    });
    await eventually(async () => expect(await historyTypes(handle)).toContain('TimerStarted'));
    await handle.cancel();
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(err.status).toBe('canceled');
    expect(err.cause).toBeInstanceOf(CancelledFailure);
    expect((await handle.describe()).status).toBe('canceled');
    const types = await historyTypes(handle);
    expect(types).toContain('TimerCanceled');
    expect(types).not.toContain('TimerFired');
  });

  it('a workflow that catches the cancellation and returns normally completes', async () => {
    const handle = await env.client.workflow.start('cleanupOnCancel', {
      workflowId: uniqueId('cancel-caught'),
      taskQueue: env.taskQueue,
    });
    await eventually(async () => expect(await historyTypes(handle)).toContain('TimerStarted'));
    await handle.cancel();
    expect(await resultWithin(handle)).toBe('cleaned up');
    const d = await handle.describe();
    expect(d.status).toBe('completed');
    expect(d.cancelRequested).toBe(true);
  });

  it('a repeated cancel request is a no-op; cancelling a closed run fails with WorkflowNotFoundError', async () => {
    // No worker polls this queue, so the run stays open however long the test takes.
    const handle = await env.client.workflow.start('sleeper', {
      workflowId: uniqueId('cancel-twice'),
      taskQueue: 'queue-without-workers',
      args: [60_000],
    });
    await handle.cancel('first');
    await handle.cancel('second');
    const requested = await eventsOf(handle, 'WorkflowCancelRequested');
    expect(requested).toHaveLength(1);
    expect(requested[0]!.attributes.reason).toBe('first');
    expect((await handle.describe()).cancelRequested).toBe(true);
    await handle.terminate('done with the test');
    await rejectsWith(handle.cancel(), WorkflowNotFoundError);
  });

  it('terminate(reason) ends the run at once: result() throws with the reason, status terminated', async () => {
    const handle = await env.client.workflow.start('sleeper', {
      workflowId: uniqueId('terminate'),
      taskQueue: env.taskQueue,
      args: [60_000],
    });
    await eventually(async () => expect(await historyTypes(handle)).toContain('TimerStarted'));
    await handle.terminate('operator said so');
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(err.status).toBe('terminated');
    expect(err.message).toContain('operator said so');
    expect(err.cause).toBeInstanceOf(TerminatedFailure);
    expect((err.cause as TerminatedFailure).message).toBe('operator said so');
    expect((await handle.describe()).status).toBe('terminated');
    const [terminated] = await eventsOf(handle, 'WorkflowTerminated');
    expect(terminated!.attributes.reason).toBe('operator said so');
  });

  it('terminate() aborts a running activity of that run', async () => {
    const workflowId = uniqueId('terminate-activity');
    const handle = await env.client.workflow.start('cancellableActivity', {
      workflowId,
      taskQueue: env.taskQueue,
    });
    await eventually(() => expect(probe.started.has(workflowId)).toBe(true));
    await handle.terminate('stop now');
    await eventually(() => expect(probe.aborted.get(workflowId)?.aborted).toBe(true));
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(err.status).toBe('terminated');
    const d = await handle.describe();
    expect(d.status).toBe('terminated');
    expect(d.pendingActivities).toEqual([]);
    const types = await historyTypes(handle);
    expect(types[types.length - 1]).toBe('WorkflowTerminated');
    expect(types).not.toContain('ActivityCompleted');
  });
});
