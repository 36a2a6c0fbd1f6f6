import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flag, multiStep, sleeper, waitForFlag } from '../fixtures/e2e/engine-workflows.js';
import { eventsOf, holdBackTimerStarts, recordStoreReads, resultWithin, TestEnv, uniqueId } from './env.js';

describe('timers: sleep and condition', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  it('sleep resolves no earlier than its duration, in workflow time and in real time', async () => {
    const t0 = Date.now();
    const handle = await env.client.workflow.start(sleeper, {
      workflowId: uniqueId('sleep'),
      taskQueue: env.taskQueue,
      args: [200],
    });
    const workflowElapsed = await resultWithin(handle);
    const realElapsed = Date.now() - t0;
    expect(workflowElapsed).toBeGreaterThanOrEqual(200);
    expect(realElapsed).toBeGreaterThanOrEqual(200);
    const [started] = await eventsOf(handle, 'TimerStarted');
    const [fired] = await eventsOf(handle, 'TimerFired');
    expect(started!.attributes.durationMs).toBe(200);
    expect(fired!.attributes.startedEventId).toBe(started!.eventId);
    expect(Date.parse(fired!.time) - Date.parse(started!.time)).toBeGreaterThanOrEqual(200);
  });

  it('the worker caching a sleeping run gets the events of its timer with the task: it reads no history', async () => {
    const { reads, stop } = await recordStoreReads(env.url);
    try {
      const handle = await env.client.workflow.start(multiStep, {
        workflowId: uniqueId('handed'),
        taskQueue: env.taskQueue,
        // Sleeps of 100 ms: wake-ups of a run the worker has settled. A timer fired before the worker has
        // recorded the commit that started it is the next test's case.
        args: [3, 100],
      });
      expect(await resultWithin(handle)).toEqual(['hello 0', 'hello 1', 'hello 2']);
      const runId = handle.runId!;
      const whileRunning = reads.filter((calls) => calls.some((c) => c.includes(runId)));
      expect(await eventsOf(handle, 'TimerFired')).toHaveLength(3);
      // Its first task came with the start, each wake with its timer's fire, each step by the hot path.
      const historyReads = whileRunning.filter((calls) =>
        calls.some((c) => c.startsWith(`readEvents ${runId}`)),
      );
      expect(historyReads, `reads of the run: ${JSON.stringify(whileRunning)}`).toEqual([]);
    } finally {
      await stop();
    }
  });

  it('a timer fired before the worker has recorded the commit that started it waits for that: no replay', async () => {
    const { reads, stop } = await recordStoreReads(env.url);
    const held = await holdBackTimerStarts(env.url, 300);
    try {
      const handle = await env.client.workflow.start(multiStep, {
        workflowId: uniqueId('held'),
        taskQueue: env.taskQueue,
        args: [2, 5],
      });
      expect(await resultWithin(handle)).toEqual(['hello 0', 'hello 1']);
      // The race happened: each 5 ms timer was fired while the commit that started it was held back.
      expect(held.heldBack).toBe(2);
      expect(held.firedMeanwhile).toBe(2);
      const runId = handle.runId!;
      const historyReads = reads.filter((calls) => calls.some((c) => c.startsWith(`readEvents ${runId}`)));
      expect(
        historyReads,
        'the woken task replayed the history instead of waiting for the cached run',
      ).toEqual([]);
    } finally {
      await held.stop();
      await stop();
    }
  });

  it('sleep(0) still records a timer and resumes', async () => {
    const handle = await env.client.workflow.start(sleeper, {
      workflowId: uniqueId('sleep0'),
      taskQueue: env.taskQueue,
      args: [0],
    });
    expect(await resultWithin(handle)).toBeGreaterThanOrEqual(0);
    expect(await eventsOf(handle, 'TimerFired')).toHaveLength(1);
  });

  it('condition(fn, timeout) returns false after the timeout when nothing satisfies it', async () => {
    const t0 = Date.now();
    const handle = await env.client.workflow.start(waitForFlag, {
      workflowId: uniqueId('cond-timeout'),
      taskQueue: env.taskQueue,
      args: [250],
    });
    const result = await resultWithin(handle);
    expect(result.satisfied).toBe(false);
    expect(result.waitedMs).toBeGreaterThanOrEqual(250);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(await eventsOf(handle, 'TimerFired')).toHaveLength(1);
    expect(await eventsOf(handle, 'TimerCanceled')).toHaveLength(0);
  });

  it('condition(fn, timeout) returns true when a signal satisfies it first, and cancels its timer', async () => {
    const handle = await env.client.workflow.start(waitForFlag, {
      workflowId: uniqueId('cond-signal'),
      taskQueue: env.taskQueue,
      args: [60_000],
    });
    await handle.signal(flag);
    const result = await resultWithin(handle);
    expect(result.satisfied).toBe(true);
    expect(result.waitedMs).toBeLessThan(60_000);
    expect(await eventsOf(handle, 'TimerFired')).toHaveLength(0);
    const [canceled] = await eventsOf(handle, 'TimerCanceled');
    const [started] = await eventsOf(handle, 'TimerStarted');
    expect(canceled!.attributes.startedEventId).toBe(started!.eventId);
  });
});
