import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import { Worker } from 'longhaul/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as activities from '../fixtures/e2e/activities.js';

const workflowsPath = fileURLToPath(new URL('../fixtures/e2e/workflows.ts', import.meta.url));
const url = 'sqlite::memory:';

describe('smoke', () => {
  let worker: Worker;
  let client: Client;
  let running: Promise<void>;
  beforeAll(async () => {
    worker = await Worker.create({ connection: url, taskQueue: 'q', workflowsPath, activities });
    running = worker.run();
    client = await Client.connect(url);
  });
  afterAll(async () => {
    await client.close();
    await worker.shutdown();
    await running;
  });

  it('runs a workflow with an activity', async () => {
    const result = await client.workflow.execute('hello', {
      workflowId: 'h1',
      taskQueue: 'q',
      args: ['bob'],
    });
    expect(result).toBe('hello bob');
  });
});
