import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  Client,
  StoreError,
  ValidationError,
  WorkflowNotFoundError,
  type WorkflowStartOptions,
} from 'longhaul/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsOf, eventually, rejectsWith, TestEnv, throwsWith, uniqueId } from './env.js';

describe('bad input is rejected with a ValidationError naming the field, and nothing is written', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  /** Starts with `options` merged over valid ones; expects a ValidationError on `field` and no run written. */
  async function rejectsStart(field: string, options: Record<string, unknown>): Promise<ValidationError> {
    const workflowId = uniqueId('bad');
    const runsBefore = await env.countRuns();
    const err = await throwsWith(
      () =>
        env.client.workflow.start('hello', {
          workflowId,
          taskQueue: env.taskQueue,
          args: ['x'],
          ...options,
        } as WorkflowStartOptions),
      ValidationError,
    );
    expect(err.field).toBe(field);
    expect(err.code).toBe('VALIDATION');
    expect(err.message).toContain(field);
    expect(await env.countRuns()).toBe(runsBefore);
    const id = (options.workflowId as string | undefined) ?? workflowId;
    if (id === workflowId)
      await rejectsWith(env.client.workflow.getHandle(id).describe(), WorkflowNotFoundError);
    return err;
  }

  it.each([
    ['workflowExecutionTimeout', 'abc'],
    ['workflowExecutionTimeout', -1],
    ['workflowRunTimeout', '5 parsecs'],
    ['workflowTaskTimeout', Number.NaN],
    ['expectedMaxDuration', '10'],
  ])('an invalid duration: %s = %s', async (field, value) => {
    const err = await rejectsStart(field, { [field]: value });
    expect(err.message).toMatch(/duration/);
  });

  it('a workflowId of 1001 characters', async () => {
    const err = await rejectsStart('workflowId', { workflowId: 'w'.repeat(1001) });
    expect(err.message).toContain('1000');
  });

  it('a workflowId with a control character', async () => {
    const err = await rejectsStart('workflowId', { workflowId: 'a\u0007b' });
    expect(err.message).toContain('U+0007');
  });

  it('an empty workflowId and a missing taskQueue', async () => {
    await rejectsStart('workflowId', { workflowId: '' });
    await rejectsStart('taskQueue', { taskQueue: undefined });
  });

  it('args with a BigInt', async () => {
    await rejectsStart('args', { args: [1n] });
  });

  it('args with a function', async () => {
    const err = await rejectsStart('args', { args: [{ f: () => 1 }] });
    expect(err.message).toContain('function');
  });

  it('args with a cycle', async () => {
    const cyclic: Record<string, unknown> = { name: 'loop' };
    cyclic.self = cyclic;
    await rejectsStart('args', { args: [cyclic] });
  });

  it('args with a 3 MB string', async () => {
    const err = await rejectsStart('args', { args: ['x'.repeat(3 * 1024 * 1024)] });
    expect(err.message).toContain('limit');
  });

  it('an unknown idConflictPolicy and idReusePolicy', async () => {
    await rejectsStart('idConflictPolicy', { idConflictPolicy: 'replaceIt' });
    await rejectsStart('idReusePolicy', { idReusePolicy: 'sometimes' });
  });

  it('signal args that JSON cannot hold are rejected before anything is recorded', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('bad-signal'),
      taskQueue: env.taskQueue,
    });
    const err = await throwsWith(() => handle.signal('item', 2n as unknown as string), ValidationError);
    expect(err.field).toMatch(/signal args/);
    expect(await eventsOf(handle, 'SignalReceived')).toHaveLength(0);
    await handle.terminate('done with the test');
  });

  it('getHandle with an invalid workflow id is a ValidationError', async () => {
    const err = await throwsWith(() => env.client.workflow.getHandle('a\u0000b'), ValidationError);
    expect(err.field).toBe('workflowId');
  });

  it('Client.connect to a missing sqlite file fails with STORE_NOT_FOUND and does not create the file', async () => {
    const missing = path.join(env.dir, 'missing', 'nothing.sqlite');
    const err = await rejectsWith(Client.connect(`sqlite:${missing}`), StoreError);
    expect(err.code).toBe('STORE_NOT_FOUND');
    expect(err.message).toContain(missing);
    expect(existsSync(missing)).toBe(false);

    const sibling = path.join(env.dir, 'nothing-here.sqlite');
    const err2 = await rejectsWith(Client.connect(`sqlite:${sibling}`), StoreError);
    expect(err2.code).toBe('STORE_NOT_FOUND');
    expect(existsSync(sibling)).toBe(false);
  });

  it('a malformed connection string is a ValidationError on connection', async () => {
    const err = await rejectsWith(Client.connect('mysql://nope'), ValidationError);
    expect(err.field).toBe('connection');
  });

  it('a malformed retry policy in proxyActivities fails the workflow task naming the field; no activity is scheduled', async () => {
    const handle = await env.client.workflow.start('badRetryPolicy', {
      workflowId: uniqueId('bad-retry'),
      taskQueue: env.taskQueue,
    });
    const failure = await eventually(async () => {
      const d = await handle.describe();
      expect(d.workflowTaskFailure).not.toBeNull();
      return d.workflowTaskFailure!;
    });
    expect(failure.type).toBe('ValidationError');
    expect(failure.message).toContain('retry.backoffCoefficient');
    expect((await handle.describe()).status).toBe('running');
    const [taskFailed] = await eventsOf(handle, 'WorkflowTaskFailed');
    expect(taskFailed!.attributes.cause).toBe('WorkflowError');
    expect((taskFailed!.attributes.failure as { message: string }).message).toContain('backoffCoefficient');
    expect(await eventsOf(handle, 'ActivityScheduled')).toHaveLength(0);
    await handle.terminate('done with the test');
  });
});
