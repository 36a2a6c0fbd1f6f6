/**
 * `handle.result()` on SQLite: a close committed through this process's store wakes the waiter, so while
 * no other connection commits (`Store.externalChanges`) the waiter's pauses cost no reads; a close
 * committed by another connection is still found by polling.
 */
import { Client, type WorkflowHandle } from 'longhaul/client';
import { afterEach, describe, expect, it } from 'vitest';
import type { Store } from '../../src/store/store.js';
import { fastWorkerOptions, TestEnv, uniqueId } from '../e2e/env.js';

/** The store behind a client (its runtime's), to count the reads it makes. */
function storeOf(client: Client): Store {
  return (client as unknown as { runtime: { ctx: { store: Store } } }).runtime.ctx.store;
}

function countReads(store: Store): { readonly count: number; stop(): void } {
  const read = store.read;
  const counter = {
    count: 0,
    stop: () => {
      store.read = read;
    },
  };
  store.read = ((...args: Parameters<Store['read']>) => {
    counter.count++;
    return read.apply(store, args);
  }) as Store['read'];
  return counter;
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not arrive within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('waiting for a result on SQLite', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  async function blockedRun(): Promise<{ env: TestEnv; handle: WorkflowHandle; workflowId: string }> {
    env = await TestEnv.create({ worker: fastWorkerOptions });
    expect(env.url.startsWith('sqlite:')).toBe(true);
    const workflowId = uniqueId('result-wait');
    const handle = await env.client.workflow.start('voidOnFlag', { workflowId, taskQueue: env.taskQueue });
    // Blocked on its signal once its first task committed.
    for (let i = 0; i < 250 && (await handle.describe()).historyLength < 3; i++) await sleep(20);
    return { env, handle, workflowId };
  }

  it('reads once, then waits without reading while nothing else commits; the close wakes it', async () => {
    const { env, handle } = await blockedRun();
    // Only the client is left on the store: every read counted below is the waiter's.
    await env.stopWorker();
    const reads = countReads(storeOf(env.client));
    try {
      const result = handle.result();
      await sleep(1200); // polling alone would have read about ten times by now (5, 10, 20 ... 200 ms)
      const idle = reads.count;
      await handle.signal('flag');
      await env.startWorker(fastWorkerOptions);
      await within(result, 10_000, 'the result');
      expect(idle).toBe(1);
    } finally {
      reads.stop();
    }
  });

  it('a close committed by another connection is found by polling', async () => {
    const { env, workflowId } = await blockedRun();
    // Its own clock gives this client a runtime and store of its own: no wake-up reaches it.
    const other = await Client.connect(env.url, { clock: { now: () => Date.now() } });
    try {
      expect(storeOf(other)).not.toBe(storeOf(env.client));
      const reads = countReads(storeOf(other));
      const result = other.workflow.getHandle(workflowId).result();
      await sleep(300);
      await env.client.workflow.getHandle(workflowId).signal('flag');
      await within(result, 10_000, 'the result seen from another connection');
      reads.stop();
      // The first read, and at least one after the other connection's commits.
      expect(reads.count).toBeGreaterThanOrEqual(2);
    } finally {
      await other.close();
    }
  });
});
