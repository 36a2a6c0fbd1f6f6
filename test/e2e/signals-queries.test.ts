import {
  QueryNotRegisteredError,
  QueryTimeoutError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
} from 'longhaul/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { done, item, items } from '../fixtures/e2e/engine-workflows.js';
import { eventsOf, eventually, rejectsWith, resultWithin, TestEnv, uniqueId } from './env.js';

describe('signals and queries', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  it('50 signals sent back to back are each delivered exactly once, in order', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('many'),
      taskQueue: env.taskQueue,
    });
    const sent = Array.from({ length: 50 }, (_v, i) => `s${i}`);
    for (const s of sent) await handle.signal(item, s);
    expect(await handle.query(items)).toEqual(sent);
    await handle.signal(done);
    expect(await resultWithin(handle)).toEqual(sent);
    const received = await eventsOf(handle, 'SignalReceived');
    expect(received).toHaveLength(51);
    expect(received.slice(0, 50).map((e) => (e.attributes.input as string[])[0])).toEqual(sent);
  });

  it('a query right after signal() returns sees that signal (read-your-writes), 20 times in a row', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('ryw'),
      taskQueue: env.taskQueue,
    });
    const sent: string[] = [];
    for (let i = 0; i < 20; i++) {
      const value = `v${i}`;
      await handle.signal(item, value);
      sent.push(value);
      expect(await handle.query(items)).toEqual(sent);
    }
    await handle.signal(done);
    expect(await resultWithin(handle)).toEqual(sent);
  });

  it('signals and queries may be given by name', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('by-name'),
      taskQueue: env.taskQueue,
    });
    await handle.signal('item', 'named');
    expect(await handle.query<string[]>('items')).toEqual(['named']);
    await handle.signal('done');
    expect(await resultWithin(handle)).toEqual(['named']);
  });

  it('a query leaves no trace in history', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('no-trace'),
      taskQueue: env.taskQueue,
    });
    await handle.signal(item, 'a');
    await eventually(async () => {
      const { events } = await handle.fetchHistory();
      expect(events[events.length - 1]!.type).toBe('WorkflowTaskCompleted');
    });
    const before = (await handle.fetchHistory()).events.length;
    for (let i = 0; i < 3; i++) expect(await handle.query(items)).toEqual(['a']);
    expect((await handle.fetchHistory()).events.length).toBe(before);
    await handle.terminate('done with the test');
  });

  it('an unknown query name fails with QueryNotRegisteredError naming the known queries', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('unknown-q'),
      taskQueue: env.taskQueue,
    });
    const err = await rejectsWith(handle.query('nope'), QueryNotRegisteredError);
    expect(err.queryType).toBe('nope');
    expect(err.knownQueries).toContain('items');
    await handle.terminate('done with the test');
  });

  it('a query with no worker for the queue fails with QueryTimeoutError within its timeout', async () => {
    const handle = await env.client.workflow.start('collector', {
      workflowId: uniqueId('no-worker'),
      taskQueue: 'queue-without-workers',
    });
    const t0 = Date.now();
    const err = await rejectsWith(handle.queryWithTimeout(items, 300), QueryTimeoutError, 5000);
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(err.message).toContain('queue-without-workers');
    await handle.terminate('done with the test');
  });

  it('signalling a closed workflow fails with WorkflowNotFoundError', async () => {
    const workflowId = uniqueId('closed');
    const handle = await env.client.workflow.start('hello', {
      workflowId,
      taskQueue: env.taskQueue,
      args: ['x'],
    });
    await resultWithin(handle);
    await rejectsWith(handle.signal(item, 'late'), WorkflowNotFoundError);
    await rejectsWith(env.client.workflow.getHandle(workflowId).signal(item, 'late'), WorkflowNotFoundError);
    await rejectsWith(
      env.client.workflow.getHandle('never-started').signal(item, 'x'),
      WorkflowNotFoundError,
    );
    expect(await eventsOf(handle, 'SignalReceived')).toHaveLength(0);
  });

  it('signalWithStart starts a run with the signal; a second one signals the open run without starting another', async () => {
    const workflowId = uniqueId('sws');
    const first = await env.client.workflow.signalWithStart('collector', {
      workflowId,
      taskQueue: env.taskQueue,
      signal: item,
      signalArgs: ['first'],
    });
    expect(await first.query(items)).toEqual(['first']);
    const second = await env.client.workflow.signalWithStart('collector', {
      workflowId,
      taskQueue: env.taskQueue,
      signal: 'item',
      signalArgs: ['second'],
    });
    expect(second.runId).toBe(first.runId);
    expect(await first.query(items)).toEqual(['first', 'second']);
    await first.signal(done);
    expect(await resultWithin(first)).toEqual(['first', 'second']);
    expect(await eventsOf(first, 'WorkflowStarted')).toHaveLength(1);
    expect(await env.countRuns(workflowId)).toBe(1);
  });

  it('a plain start on the id that signalWithStart opened fails with WorkflowExecutionAlreadyStartedError', async () => {
    const workflowId = uniqueId('sws-conflict');
    const handle = await env.client.workflow.signalWithStart('collector', {
      workflowId,
      taskQueue: env.taskQueue,
      signal: item,
      signalArgs: ['x'],
    });
    const err = await rejectsWith(
      env.client.workflow.start('collector', { workflowId, taskQueue: env.taskQueue }),
      WorkflowExecutionAlreadyStartedError,
    );
    expect(err.runId).toBe(handle.runId);
    await handle.terminate('done with the test');
  });
});
