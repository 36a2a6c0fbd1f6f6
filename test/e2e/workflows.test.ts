import {
  ActivityFailure,
  ApplicationFailure,
  LonghaulError,
  WorkflowFailedError,
  WorkflowHandle,
  WorkflowNotFoundError,
} from 'longhaul/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flag, hello, sequence, voidOnFlag } from '../fixtures/e2e/engine-workflows.js';
import {
  eventually,
  historyTypes,
  recordStoreReads,
  rejectsWith,
  resultWithin,
  TestEnv,
  uniqueId,
} from './env.js';

describe('workflows: start, execute, result, handles, history', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  it('start returns a handle whose result() is the workflow return value', async () => {
    const workflowId = uniqueId('start');
    const handle = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['ann'],
    });
    expect(handle).toBeInstanceOf(WorkflowHandle);
    expect(handle.workflowId).toBe(workflowId);
    expect(handle.runId).toMatch(/\S+/);
    expect(await resultWithin(handle)).toBe('hello ann');
    const d = await handle.describe();
    expect(d.status).toBe('completed');
    expect(d.workflowType).toBe('hello');
    expect(d.runId).toBe(handle.runId);
    expect(d.closeTime).toBeInstanceOf(Date);
  });

  it('execute starts a run and resolves with its result', async () => {
    const result = await env.client.workflow.execute('sequence', {
      workflowId: uniqueId('execute'),
      taskQueue: env.taskQueue,
      args: [3],
    });
    // 'hello 0'.length + 'hello 1'.length + 'hello 2'.length
    expect(result).toBe(21);
  });

  it('accepts the workflow function itself as the workflow type (its name is used)', async () => {
    const workflowId = uniqueId('by-function');
    const handle = await env.client.workflow.start(hello, {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['fn'],
    });
    const result: string = await resultWithin(handle);
    expect(result).toBe('hello fn');
    expect((await handle.describe()).workflowType).toBe('hello');
    expect(
      await env.client.workflow.execute(sequence, {
        workflowId: uniqueId('by-fn'),
        taskQueue: env.taskQueue,
        args: [1],
      }),
    ).toBe(7);
  });

  it('getHandle(workflowId) addresses the latest run; getHandle(workflowId, runId) one run', async () => {
    const workflowId = uniqueId('get-handle');
    const first = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['one'],
    });
    await resultWithin(first);
    const second = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['two'],
    });
    await resultWithin(second);
    expect(second.runId).not.toBe(first.runId);

    const latest = env.client.workflow.getHandle<string>(workflowId);
    expect(latest.runId).toBeUndefined();
    expect(await resultWithin(latest)).toBe('hello two');
    expect((await latest.describe()).runId).toBe(second.runId);

    const byRun = env.client.workflow.getHandle<string>(workflowId, first.runId);
    expect(await resultWithin(byRun)).toBe('hello one');
    const d = await byRun.describe();
    expect(d.runId).toBe(first.runId);
    expect((await byRun.fetchHistory()).runId).toBe(first.runId);
  });

  it('result() of a latest-run handle, waiting before the close, resolves with a void result', async () => {
    const workflowId = uniqueId('void-result');
    const started = await env.client.workflow.start(voidOnFlag, { workflowId, taskQueue: env.taskQueue });
    const waiting = env.client.workflow.getHandle<void>(workflowId).result();
    let settled = false;
    void waiting.then(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(settled).toBe(false);
    await started.signal(flag);
    await expect(waiting).resolves.toBeUndefined();
    expect((await started.describe()).status).toBe('completed');
  });

  it('result() woken by the close reads the run and its closing event together, not one after the other', async () => {
    const { reads, stop } = await recordStoreReads(env.url);
    try {
      const workflowId = uniqueId('closing-read');
      const handle = await env.client.workflow.start(voidOnFlag, { workflowId, taskQueue: env.taskQueue });
      const runId = handle.runId!;
      const mine = () => reads.filter((r) => r[0]?.startsWith(`findRun default ${workflowId}`));
      const waiting = handle.result();
      await eventually(() => expect(mine()).toHaveLength(1)); // read once: running, so it waits
      await handle.signal(flag);
      await expect(waiting).resolves.toBeUndefined();
      // Reads while it ran (the first, and any a poll made) asked for the run alone; the read the close
      // woke asked for the run and its last event at once, and nothing after.
      const run = `findRun default ${workflowId} ${runId}`;
      expect(mine().at(-1)).toEqual([run, `lastEvent ${runId}`]);
      expect(mine().slice(0, -1)).toEqual(
        mine()
          .slice(0, -1)
          .map(() => [run]),
      );
    } finally {
      await stop();
    }
  });

  it('getHandle of an unknown workflow id rejects describe/result/fetchHistory with WorkflowNotFoundError', async () => {
    const handle = env.client.workflow.getHandle('no-such-workflow');
    const err = await rejectsWith(handle.describe(), WorkflowNotFoundError);
    expect(err).toBeInstanceOf(LonghaulError);
    expect(err.workflowId).toBe('no-such-workflow');
    await rejectsWith(handle.result(), WorkflowNotFoundError);
    await rejectsWith(handle.fetchHistory(), WorkflowNotFoundError);
    const wrongRun = env.client.workflow.getHandle('no-such-workflow', 'no-such-run');
    await rejectsWith(wrongRun.describe(), WorkflowNotFoundError);
  });

  it('a workflow throwing ApplicationFailure fails with WorkflowFailedError whose cause has that type', async () => {
    const handle = await env.client.workflow.start('throwsApplicationFailure', {
      workflowId: uniqueId('app-failure'),
      taskQueue: env.taskQueue,
    });
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(err.status).toBe('failed');
    expect(err.cause).toBeInstanceOf(ApplicationFailure);
    const cause = err.cause as ApplicationFailure;
    expect(cause.type).toBe('Rejected');
    expect(cause.message).toBe('not allowed');
    expect(cause.nonRetryable).toBe(true);
    expect((await handle.describe()).status).toBe('failed');
    const types = await historyTypes(handle);
    expect(types[types.length - 1]).toBe('WorkflowFailed');
  });

  it('an activity failing for good fails the workflow: WorkflowFailedError → ActivityFailure → ApplicationFailure', async () => {
    const handle = await env.client.workflow.start('failing', {
      workflowId: uniqueId('activity-fails'),
      taskQueue: env.taskQueue,
    });
    const err = await rejectsWith(handle.result(), WorkflowFailedError);
    expect(err.status).toBe('failed');
    expect(err.cause).toBeInstanceOf(ActivityFailure);
    const activityFailure = err.cause as ActivityFailure;
    expect(activityFailure.activityType).toBe('fail');
    expect(activityFailure.retryState).toBe('maximumAttemptsReached');
    expect(activityFailure.cause).toBeInstanceOf(ApplicationFailure);
    const appFailure = activityFailure.cause as ApplicationFailure;
    expect(appFailure.message).toBe('nope');
    expect(appFailure.type).toBe('Error');
    const { events } = await handle.fetchHistory();
    const failed = events.filter((e) => e.type === 'ActivityFailed');
    expect(failed).toHaveLength(1);
    const started = events.filter((e) => e.type === 'ActivityStarted');
    expect(started).toHaveLength(1);
    expect((started[0]!.attributes as { attempt: number }).attempt).toBe(3);
  });

  it('fetchHistory returns the versioned format with gap-free ids, ISO times and the expected event order', async () => {
    const workflowId = uniqueId('history');
    const handle = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['h'],
    });
    await resultWithin(handle);
    const history = await handle.fetchHistory();
    expect(history.formatVersion).toBe(1);
    expect(history.workflowId).toBe(workflowId);
    expect(history.runId).toBe(handle.runId);
    expect(history.events.map((e) => e.eventId)).toEqual(history.events.map((_e, i) => i + 1));
    for (const e of history.events) {
      expect(e.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      expect(new Date(e.time).toISOString()).toBe(e.time);
      expect(typeof e.attributes).toBe('object');
    }
    const times = history.events.map((e) => Date.parse(e.time));
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect(history.events.map((e) => e.type)).toEqual([
      'WorkflowStarted',
      'WorkflowTaskScheduled',
      'WorkflowTaskStarted',
      'WorkflowTaskCompleted',
      'ActivityScheduled',
      'ActivityStarted',
      'ActivityCompleted',
      'WorkflowTaskScheduled',
      'WorkflowTaskStarted',
      'WorkflowTaskCompleted',
      'WorkflowCompleted',
    ]);
    const started = history.events[0]!.attributes as { workflowType: string; input: unknown[] };
    expect(started.workflowType).toBe('hello');
    expect(started.input).toEqual(['h']);
    const scheduled = history.events[4]!.attributes as { activityType: string; input: unknown[] };
    expect(scheduled.activityType).toBe('greet');
    expect(scheduled.input).toEqual(['h']);
    expect((history.events[6]!.attributes as { result: unknown }).result).toBe('hello h');
    expect((history.events[10]!.attributes as { result: unknown }).result).toBe('hello h');
    expect((await handle.describe()).historyLength).toBe(11);
  });

  it('fetchHistory of a running workflow shows what happened so far', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('partial'),
      taskQueue: env.taskQueue,
    });
    await handle.signal('item', 'x');
    await eventually(async () => {
      const types = await historyTypes(handle);
      expect(types).toContain('SignalReceived');
      expect(types[types.length - 1]).toBe('WorkflowTaskCompleted');
    });
    const running = await historyTypes(handle);
    expect(running).not.toContain('WorkflowCompleted');
    expect((await handle.describe()).status).toBe('running');
    await handle.signal('done');
    expect(await resultWithin(handle)).toEqual(['x']);
    const signals = (await handle.fetchHistory()).events.filter((e) => e.type === 'SignalReceived');
    expect(signals.map((e) => (e.attributes as { signalName: string }).signalName)).toEqual(['item', 'done']);
  });
});
