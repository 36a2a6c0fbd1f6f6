import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openGate, probe } from '../fixtures/e2e/engine-activities.js';
import { eventually, TestEnv, uniqueId } from './env.js';

describe('hot path under concurrent signals', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(() => env.close());

  it('a signal racing an activity result is delivered once and no event is duplicated (20 rounds)', async () => {
    const client = env.client;
    for (let round = 0; round < 20; round++) {
      const key = uniqueId('gated');
      const handle = await client.workflow.start('gatedSteps', {
        workflowId: key,
        taskQueue: env.taskQueue,
        args: [key],
      });
      await eventually(() => probe.started.has(`${key}-1`), 5000);
      // The signal lands, then the activity finishes at once: its result races the signal's task.
      await handle.signal('item', `a${round}`);
      openGate(`${key}-1`);
      await eventually(() => probe.started.has(`${key}-2`), 5000);
      openGate(`${key}-2`);
      expect(await handle.result()).toEqual([`signal:a${round}`, `opened:${key}-1`, `opened:${key}-2`]);
      const { events } = await handle.fetchHistory();
      expect(events.map((e) => e.eventId)).toEqual(events.map((_, i) => i + 1));
      expect(events.filter((e) => e.type === 'SignalReceived')).toHaveLength(1);
      expect(events.filter((e) => e.type === 'ActivityCompleted')).toHaveLength(2);
      expect(events.filter((e) => e.type === 'ActivityScheduled')).toHaveLength(2);
      const started = events.filter((e) => e.type === 'WorkflowTaskStarted').length;
      expect(events.filter((e) => e.type === 'WorkflowTaskCompleted')).toHaveLength(started);
    }
  });

  it('a workflow that sleeps for long leaves the worker cache: it costs rows, not memory', async () => {
    const client = env.client;
    const handles = [];
    for (let i = 0; i < 5; i++) {
      handles.push(
        await client.workflow.start('longSleeper', {
          workflowId: uniqueId('sleeper'),
          taskQueue: env.taskQueue,
        }),
      );
    }
    for (const h of handles) {
      await eventually(
        async () => (await h.fetchHistory()).events.some((e) => e.type === 'TimerStarted'),
        5000,
      );
    }
    expect(env.worker.cachedWorkflows).toBe(0);
    await handles[0]!.signal('item', 'still works');
    await handles[0]!.terminate('done');
  });

  it('with two workers on the queue, a workflow’s tasks stay with the worker that caches it (sticky routing)', async () => {
    const second = await env.startWorker();
    try {
      const handle = await env.client.workflow.start('collector', {
        workflowId: uniqueId('sticky'),
        taskQueue: env.taskQueue,
      });
      for (let i = 0; i < 10; i++) {
        await handle.signal('item', `x${i}`);
        await eventually(async () => {
          const { events } = await handle.fetchHistory();
          expect(events.filter((e) => e.type === 'WorkflowTaskCompleted').length).toBeGreaterThan(i + 1);
        }, 5000);
      }
      await handle.signal('done');
      expect(await handle.result()).toHaveLength(10);
      const { events } = await handle.fetchHistory();
      const workers = new Set(
        events
          .filter((e) => e.type === 'WorkflowTaskStarted')
          .map((e) => (e.attributes as { workerId: string }).workerId),
      );
      expect(workers.size).toBe(1);
    } finally {
      await env.stopWorker(second);
    }
  });
});
