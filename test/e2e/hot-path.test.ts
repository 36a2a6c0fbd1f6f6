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
});
