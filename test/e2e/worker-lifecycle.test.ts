import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BundleError, ValidationError, Worker } from 'longhaul/worker';
import { afterEach, describe, expect, it } from 'vitest';
import { probe } from '../fixtures/e2e/engine-activities.js';
import { manyConcurrent } from '../fixtures/e2e/engine-workflows.js';
import {
  activities,
  eventsOf,
  eventually,
  fixture,
  historyTypes,
  rejectsWith,
  resultWithin,
  TestEnv,
  throwsWith,
  uniqueId,
} from './env.js';

describe('worker lifecycle and options', () => {
  let env: TestEnv | undefined;
  const dirs: string[] = [];
  afterEach(async () => {
    await env?.close();
    env = undefined;
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  async function tempUrl(): Promise<{ url: string; file: string }> {
    const dir = await mkdtemp(path.join(tmpdir(), 'longhaul-e2e-worker-'));
    dirs.push(dir);
    const file = path.join(dir, 'db.sqlite');
    return { url: `sqlite:${file}`, file };
  }

  it('Worker.create rejects a workflows module importing node:fs through a helper, naming the import chain', async () => {
    const { url, file } = await tempUrl();
    const err = await rejectsWith(
      Worker.create({
        connection: url,
        taskQueue: 'q',
        workflowsPath: fixture('forbidden-import.ts'),
        activities,
      }),
      BundleError,
    );
    expect(err.message).toContain('forbidden-import.ts → forbidden-helper.ts → node:fs');
    expect(err.message).toContain('Move this into an activity');
    expect(existsSync(file)).toBe(false);
  });

  it('Worker.create rejects a workflows module importing node:fs directly', async () => {
    const { url } = await tempUrl();
    const err = await rejectsWith(
      Worker.create({ connection: url, taskQueue: 'q', workflowsPath: fixture('forbidden-direct.ts') }),
      BundleError,
    );
    expect(err.message).toContain('forbidden-direct.ts → node:fs');
  });

  it('Worker.create rejects a missing workflows module and invalid options', async () => {
    const { url } = await tempUrl();
    const missing = await rejectsWith(
      Worker.create({ connection: url, taskQueue: 'q', workflowsPath: fixture('does-not-exist.ts') }),
      BundleError,
    );
    expect(missing.message).toContain('does-not-exist.ts');
    const bad = await throwsWith(
      () => Worker.create({ connection: url, taskQueue: 'q', activities, sweepInterval: 'soon' }),
      ValidationError,
    );
    expect(bad.field).toBe('sweepInterval');
    const none = await throwsWith(() => Worker.create({ connection: url, taskQueue: 'q' }), ValidationError);
    expect(none.field).toBe('workflowsPath');
  });

  it('shutdown() lets an in-flight activity finish within the grace time and records its result', async () => {
    env = await TestEnv.create({ worker: { shutdownGraceTime: '5s' } });
    const workflowId = uniqueId('graceful');
    const handle = await env.client.workflow.start('slowActivity', {
      workflowId,
      taskQueue: env.taskQueue,
      args: [300],
    });
    await eventually(() => expect(probe.started.has(workflowId)).toBe(true));
    const worker = env.worker;
    await env.stopWorker(worker);
    expect(worker.state).toBe('stopped');
    expect(probe.finished.has(workflowId)).toBe(true);
    const [completed] = await eventsOf(handle, 'ActivityCompleted');
    expect(completed!.attributes.result).toBe('finished');
    expect((await handle.describe()).status).toBe('running');

    await env.startWorker();
    expect(await resultWithin(handle)).toBe('finished');
  });

  it('shutdown() aborts an activity that outlives the grace time', async () => {
    env = await TestEnv.create({ worker: { shutdownGraceTime: '100ms' } });
    const workflowId = uniqueId('grace-over');
    const handle = await env.client.workflow.start('cancellableActivity', {
      workflowId,
      taskQueue: env.taskQueue,
    });
    await eventually(() => expect(probe.started.has(workflowId)).toBe(true));
    const t0 = Date.now();
    await env.stopWorker();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    expect(probe.aborted.get(workflowId)?.aborted).toBe(true);
    expect(await historyTypes(handle)).not.toContain('ActivityCompleted');
    await handle.terminate('done with the test');
  });

  it('maxConcurrentActivityTaskExecutions: 2 runs at most 2 activities at once', async () => {
    env = await TestEnv.create({ worker: { maxConcurrentActivityTaskExecutions: 2 } });
    probe.maxRunning = 0;
    probe.concurrentRuns = 0;
    const handle = await env.client.workflow.start(manyConcurrent, {
      workflowId: uniqueId('concurrency'),
      taskQueue: env.taskQueue,
      args: [6, 100],
    });
    const seen = await resultWithin(handle);
    expect(seen).toHaveLength(6);
    expect(probe.concurrentRuns).toBe(6);
    expect(probe.maxRunning).toBeGreaterThanOrEqual(1);
    expect(probe.maxRunning).toBeLessThanOrEqual(2);
    expect(Math.max(...seen)).toBeLessThanOrEqual(2);
  });

  it('a worker whose slots are all busy claims waiting work as soon as a slot frees, not at its next poll', async () => {
    // One slot and a 10 s poll: two of the three activities wait in the store, and the wake-ups for
    // them arrive while the slot is busy. Each must start when the slot frees, well before a poll.
    env = await TestEnv.create({
      worker: { maxConcurrentActivityTaskExecutions: 1, pollInterval: '10s' },
    });
    probe.maxRunning = 0;
    probe.concurrentRuns = 0;
    const started = Date.now();
    const handle = await env.client.workflow.start(manyConcurrent, {
      workflowId: uniqueId('slot-frees'),
      taskQueue: env.taskQueue,
      args: [3, 100],
    });
    expect(await resultWithin(handle, 8000)).toHaveLength(3);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(probe.concurrentRuns).toBe(3);
    expect(probe.maxRunning).toBe(1);
  });

  it('a worker with maxCachedWorkflows: 0 still completes multi-step workflows (replaying every task)', async () => {
    env = await TestEnv.create({ worker: { maxCachedWorkflows: 0 } });
    const handle = await env.client.workflow.start('multiStep', {
      workflowId: uniqueId('no-cache'),
      taskQueue: env.taskQueue,
      args: [4],
    });
    expect(await resultWithin(handle)).toEqual(['hello 0', 'hello 1', 'hello 2', 'hello 3']);
    expect(await eventsOf(handle, 'WorkflowTaskFailed')).toHaveLength(0);
    expect(await eventsOf(handle, 'TimerFired')).toHaveLength(4);
    const signalled = await env.client.workflow.start('collector', {
      workflowId: uniqueId('no-cache-signals'),
      taskQueue: env.taskQueue,
    });
    for (const s of ['a', 'b', 'c']) await signalled.signal('item', s);
    expect(await signalled.query('items')).toEqual(['a', 'b', 'c']);
    await signalled.signal('done');
    expect(await resultWithin(signalled)).toEqual(['a', 'b', 'c']);
  });

  it('run() resolves after shutdown(); calling run() again does not restart a stopped worker', async () => {
    env = await TestEnv.create({ worker: false });
    const worker = await Worker.create({ connection: env.url, taskQueue: 'lifecycle', activities });
    expect(worker.state).toBe('created');
    const running = worker.run();
    expect(worker.state).toBe('running');
    await worker.shutdown();
    await running;
    expect(worker.state).toBe('stopped');
    await worker.run();
    expect(worker.state).toBe('stopped');
  });
});
