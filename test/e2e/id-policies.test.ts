import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from 'longhaul/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectsWith, resultWithin, TestEnv, uniqueId } from './env.js';

describe('workflow id conflict and reuse policies, request ids', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  const longSleep = (workflowId: string, extra: Record<string, unknown> = {}) =>
    env.client.workflow.start('sleeper', { workflowId, taskQueue: env.taskQueue, args: [60_000], ...extra });

  it('a second start with the same id while the first runs fails with WorkflowExecutionAlreadyStartedError', async () => {
    const workflowId = uniqueId('conflict');
    const first = await longSleep(workflowId);
    const err = await rejectsWith(longSleep(workflowId), WorkflowExecutionAlreadyStartedError);
    expect(err.workflowId).toBe(workflowId);
    expect(err.runId).toBe(first.runId);
    expect(await env.countRuns(workflowId)).toBe(1);
    expect((await first.describe()).status).toBe('running');
    await first.terminate('done with the test');
  });

  it("idConflictPolicy 'useExisting' returns the open run", async () => {
    const workflowId = uniqueId('use-existing');
    const first = await longSleep(workflowId);
    const second = await longSleep(workflowId, { idConflictPolicy: 'useExisting' });
    expect(second.runId).toBe(first.runId);
    expect(await env.countRuns(workflowId)).toBe(1);
    await first.terminate('done with the test');
  });

  it("idConflictPolicy 'terminateExisting' terminates the open run and starts a new one", async () => {
    const workflowId = uniqueId('terminate-existing');
    const first = await longSleep(workflowId);
    const second = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['new'],
      idConflictPolicy: 'terminateExisting',
    });
    expect(second.runId).not.toBe(first.runId);
    const err = await rejectsWith(first.result(), WorkflowFailedError);
    expect(err.status).toBe('terminated');
    expect((await first.describe()).status).toBe('terminated');
    expect(await resultWithin(second)).toBe('hello new');
    expect(await env.countRuns(workflowId)).toBe(2);
  });

  it('after a run completes, a new start with the same id works by default', async () => {
    const workflowId = uniqueId('reuse');
    const first = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['1'],
    });
    await resultWithin(first);
    const second = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['2'],
    });
    expect(second.runId).not.toBe(first.runId);
    expect(await resultWithin(second)).toBe('hello 2');
    expect(await env.countRuns(workflowId)).toBe(2);
  });

  it("idReusePolicy 'rejectDuplicate' rejects a start after the run completed", async () => {
    const workflowId = uniqueId('reject-dup');
    const first = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['1'],
    });
    await resultWithin(first);
    const err = await rejectsWith(
      env.client.workflow.start('hello', {
        workflowId,
        taskQueue: env.taskQueue,
        args: ['2'],
        idReusePolicy: 'rejectDuplicate',
      }),
      WorkflowExecutionAlreadyStartedError,
    );
    expect(err.runId).toBe(first.runId);
    expect(await env.countRuns(workflowId)).toBe(1);
  });

  it("idReusePolicy 'allowDuplicateFailedOnly' rejects after success and allows after failure", async () => {
    const okId = uniqueId('failed-only-ok');
    await resultWithin(
      await env.client.workflow.start('hello', { workflowId: okId, taskQueue: env.taskQueue, args: ['x'] }),
    );
    await rejectsWith(
      env.client.workflow.start('hello', {
        workflowId: okId,
        taskQueue: env.taskQueue,
        args: ['y'],
        idReusePolicy: 'allowDuplicateFailedOnly',
      }),
      WorkflowExecutionAlreadyStartedError,
    );
    const failedId = uniqueId('failed-only-failed');
    const failed = await env.client.workflow.start('throwsApplicationFailure', {
      workflowId: failedId,
      taskQueue: env.taskQueue,
    });
    await rejectsWith(failed.result(), WorkflowFailedError);
    const again = await env.client.workflow.start('hello', {
      workflowId: failedId,
      taskQueue: env.taskQueue,
      args: ['z'],
      idReusePolicy: 'allowDuplicateFailedOnly',
    });
    expect(await resultWithin(again)).toBe('hello z');
  });

  it('the same requestId twice returns the same run and starts exactly one', async () => {
    const workflowId = uniqueId('request-id');
    const requestId = `req-${workflowId}`;
    const first = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['r'],
      requestId,
    });
    const retried = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['r'],
      requestId,
    });
    expect(retried.runId).toBe(first.runId);
    expect(await resultWithin(first)).toBe('hello r');
    // Still a no-op after the run closed: a retried start never makes a second run.
    const late = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['r'],
      requestId,
    });
    expect(late.runId).toBe(first.runId);
    expect(await env.countRuns(workflowId)).toBe(1);
  });
});
