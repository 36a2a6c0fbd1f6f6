import { TimeoutFailure, WorkflowFailedError, WorkflowNotFoundError } from 'longhaul/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsOf, historyTypes, rejectsWith, TestEnv, uniqueId } from './env.js';

describe('workflow execution and run timeouts', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  it('workflowExecutionTimeout closes a run that sleeps longer as timedOut', async () => {
    const t0 = Date.now();
    const handle = await env.client.workflow.start('sleeper', {
      workflowId: uniqueId('exec-timeout'),
      taskQueue: env.taskQueue,
      args: [60_000],
      workflowExecutionTimeout: '300ms',
    });
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(err.status).toBe('timedOut');
    expect(err.cause).toBeInstanceOf(TimeoutFailure);
    const d = await handle.describe();
    expect(d.status).toBe('timedOut');
    expect(d.closeTime).toBeInstanceOf(Date);
    const [timedOut] = await eventsOf(handle, 'WorkflowTimedOut');
    expect(timedOut!.attributes.timeoutType).toBe('workflowExecution');
    const types = await historyTypes(handle);
    expect(types[types.length - 1]).toBe('WorkflowTimedOut');
    // A closed run takes no more signals.
    await rejectsWith(handle.signal('anything'), WorkflowNotFoundError);
  });

  it('workflowRunTimeout closes the run as timedOut (workflowRun)', async () => {
    const handle = await env.client.workflow.start('sleeper', {
      workflowId: uniqueId('run-timeout'),
      taskQueue: env.taskQueue,
      args: [60_000],
      workflowRunTimeout: 300,
    });
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(err.status).toBe('timedOut');
    expect((await handle.describe()).status).toBe('timedOut');
    const [timedOut] = await eventsOf(handle, 'WorkflowTimedOut');
    expect(timedOut!.attributes.timeoutType).toBe('workflowRun');
  });

  it('a workflow that finishes within its execution timeout completes normally', async () => {
    const handle = await env.client.workflow.start('hello', {
      workflowId: uniqueId('in-time'),
      taskQueue: env.taskQueue,
      args: ['t'],
      workflowExecutionTimeout: '10s',
    });
    expect(await handle.result()).toBe('hello t');
    expect((await handle.describe()).status).toBe('completed');
  });
});
