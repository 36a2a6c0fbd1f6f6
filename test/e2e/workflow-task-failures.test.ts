import { QueryFailedError, type WorkflowHandle } from 'longhaul/client';
import { afterEach, describe, expect, it } from 'vitest';
import { eventsOf, eventually, fixture, rejectsWith, resultWithin, TestEnv, uniqueId } from './env.js';

/** Waits until the run's workflow task has failed at least `attempts` times; returns the description. */
async function failingFor(handle: WorkflowHandle<unknown>, attempts: number, timeoutMs = 8000) {
  return eventually(async () => {
    const d = await handle.describe();
    expect(d.workflowTaskFailure?.attempt ?? 0).toBeGreaterThanOrEqual(attempts);
    return d;
  }, timeoutMs);
}

describe('workflow-task failures: the run stays open, shows why, and heals when the code is fixed', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  it('a TypeError fails the task, not the workflow; retries do not grow history', async () => {
    env = await TestEnv.create();
    const handle = await env.client.workflow.start('buggy', {
      workflowId: uniqueId('type-error'),
      taskQueue: env.taskQueue,
    });
    const first = await failingFor(handle, 1);
    expect(first.status).toBe('running');
    expect(first.workflowTaskFailure!.type).toBe('TypeError');
    expect(first.workflowTaskFailure!.message).toMatch(/call/);
    const length = first.historyLength;

    const later = await failingFor(handle, first.workflowTaskFailure!.attempt + 3);
    expect(later.status).toBe('running');
    expect(later.historyLength).toBe(length);
    expect((await handle.fetchHistory()).events).toHaveLength(length);
    const failed = await eventsOf(handle, 'WorkflowTaskFailed');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.attributes.cause).toBe('WorkflowError');
    expect(await eventsOf(handle, 'WorkflowFailed')).toHaveLength(0);

    // A query reaches a run whose task is failing: it answers with that reason.
    const err = await rejectsWith(handle.query('anything'), QueryFailedError);
    expect(err.message).toContain('TypeError');
    await handle.terminate('done with the test');
  });

  it('a deadlock (a busy loop) fails the task with a Deadlock failure naming the workflow type', async () => {
    env = await TestEnv.create({ worker: { deadlockTimeout: '100ms' } });
    const handle = await env.client.workflow.start('spins', {
      workflowId: uniqueId('deadlock'),
      taskQueue: env.taskQueue,
    });
    const d = await failingFor(handle, 1);
    expect(d.status).toBe('running');
    expect(d.workflowTaskFailure!.type).toBe('DeadlockError');
    expect(d.workflowTaskFailure!.message).toContain("'spins'");
    expect(d.workflowTaskFailure!.message).toContain('100 ms');
    const [failed] = await eventsOf(handle, 'WorkflowTaskFailed');
    expect(failed!.attributes.cause).toBe('Deadlock');
    await handle.terminate('done with the test');
  });

  it('an unregistered workflow type shows UnknownWorkflowType; a worker that exports it completes the run', async () => {
    env = await TestEnv.create();
    const handle = await env.client.workflow.start('lateType', {
      workflowId: uniqueId('unknown-type'),
      taskQueue: env.taskQueue,
      args: ['zed'],
    });
    const d = await failingFor(handle, 1);
    expect(d.status).toBe('running');
    expect(d.workflowTaskFailure!.type).toBe('UnknownWorkflowType');
    expect(d.workflowTaskFailure!.message).toContain("'lateType'");
    const [failed] = await eventsOf(handle, 'WorkflowTaskFailed');
    expect(failed!.attributes.cause).toBe('UnknownWorkflowType');

    await env.stopWorker();
    await env.startWorker({ workflowsPath: fixture('late-workflows.ts') });
    expect(await resultWithin(handle)).toBe('late: hello zed');
    const done = await handle.describe();
    expect(done.status).toBe('completed');
    expect(done.workflowTaskFailure).toBeNull();
  });

  it('non-determinism is reported naming the event and both commands, without growing history, and heals with v1', async () => {
    env = await TestEnv.create({ worker: { workflowsPath: fixture('versioned-v1.ts') } });
    const handle = await env.client.workflow.start('versioned', {
      workflowId: uniqueId('nd'),
      taskQueue: env.taskQueue,
    });
    // v1 has greeted 'a' and now waits for the signal.
    await eventually(async () => {
      const { events } = await handle.fetchHistory();
      expect(events.map((e) => e.type)).toContain('ActivityCompleted');
      expect(events[events.length - 1]!.type).toBe('WorkflowTaskCompleted');
    });
    const [scheduled] = await eventsOf(handle, 'ActivityScheduled');
    expect(scheduled!.attributes.activityType).toBe('greet');

    await env.stopWorker();
    await env.startWorker({ workflowsPath: fixture('versioned-v2.ts') });
    await handle.signal('go');
    const d = await failingFor(handle, 1);
    expect(d.status).toBe('running');
    const failure = d.workflowTaskFailure!;
    expect(failure.type).toBe('NonDeterminismError');
    expect(failure.message).toContain(`event ${scheduled!.eventId}`);
    expect(failure.message).toContain("ActivityScheduled (activityType 'greet'");
    expect(failure.message).toContain("scheduleActivity (activityType 'shout'");
    const [failed] = await eventsOf(handle, 'WorkflowTaskFailed');
    expect(failed!.attributes.cause).toBe('NonDeterminism');

    const length = d.historyLength;
    const later = await failingFor(handle, failure.attempt + 2);
    expect(later.historyLength).toBe(length);
    expect(await eventsOf(handle, 'WorkflowTaskFailed')).toHaveLength(1);
    expect(await eventsOf(handle, 'ActivityScheduled')).toHaveLength(1);

    await env.stopWorker();
    await env.startWorker({ workflowsPath: fixture('versioned-v1.ts') });
    expect(await resultWithin(handle)).toBe('hello a|hello b');
    const healed = await handle.describe();
    expect(healed.status).toBe('completed');
    expect(healed.workflowTaskFailure).toBeNull();
    const activityTypes = (await eventsOf(handle, 'ActivityScheduled')).map((e) => e.attributes.activityType);
    expect(activityTypes).toEqual(['greet', 'greet']);
  });
});
