import { fileURLToPath } from 'node:url';
import {
  ActivityFailure,
  ApplicationFailure,
  Client,
  WorkflowFailedError,
  type WorkflowHandle,
} from 'longhaul/client';
import { Worker } from 'longhaul/worker';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createActivities, inMemoryAccessSystem, type Notification } from './activities.js';
import {
  type AccessRequest,
  type AccessRequestResult,
  type AccessRequestStatus,
  accessRequest,
  approve,
  reject,
  status,
} from './workflows.js';

const url = 'sqlite::memory:';
const taskQueue = 'access-requests';
const request: AccessRequest = {
  requester: 'dana@example.com',
  manager: 'maria@example.com',
  managersManager: 'omar@example.com',
  resource: 'prod-db:read',
  justification: 'investigate the failed nightly export',
};

/** Polls the `status` query until `accept` holds; bounded. */
async function waitForStatus(
  handle: WorkflowHandle<unknown>,
  accept: (s: AccessRequestStatus) => boolean,
  timeoutMs = 10_000,
): Promise<AccessRequestStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await handle.query(status);
    if (accept(s)) return s;
    if (Date.now() > deadline)
      throw new Error(`status never matched within ${timeoutMs} ms; last: ${JSON.stringify(s)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('access-request example', () => {
  const sent: Notification[] = [];
  const accessSystem = inMemoryAccessSystem();
  let worker: Worker;
  let running: Promise<void>;
  let client: Client;
  let nextId = 1;

  beforeAll(async () => {
    worker = await Worker.create({
      connection: url,
      taskQueue,
      workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)),
      activities: createActivities({
        resources: ['prod-db:read', 'billing-dashboard'],
        notify: (n) => {
          sent.push(n);
        },
        accessSystem,
      }),
    });
    running = worker.run();
    client = await Client.connect(url);
  });
  afterAll(async () => {
    await client.close();
    await worker.shutdown();
    await running;
  });
  beforeEach(() => {
    sent.length = 0;
    accessSystem.grants.clear();
  });

  const start = (input: AccessRequest = request) =>
    client.workflow.start(accessRequest, {
      workflowId: `access-request-${nextId++}`,
      taskQueue,
      args: [input],
    });

  it('grants access and tells the requester when the manager approves', async () => {
    const handle = await start();
    expect(await waitForStatus(handle, (s) => s.stage === 'awaiting-approval')).toEqual({
      stage: 'awaiting-approval',
      escalated: false,
      decision: null,
    });
    await handle.signal(approve, 'maria@example.com');

    const result = await handle.result();
    expect(result).toEqual({
      outcome: 'approved',
      decidedBy: 'maria@example.com',
      escalated: false,
      grantId: 'grant-1',
    });
    expect([...accessSystem.grants.values()]).toEqual([
      { user: 'dana@example.com', resource: 'prod-db:read', grantId: 'grant-1' },
    ]);
    expect(sent).toEqual([
      {
        to: 'dana@example.com',
        subject: 'Access to prod-db:read granted',
        body: 'Your request was approved by maria@example.com.',
      },
    ]);
    expect(await handle.query(status)).toMatchObject({ stage: 'done', decision: { approved: true } });
  });

  it('grants nothing and tells the requester when the manager rejects', async () => {
    const handle = await start();
    await handle.signal(reject, 'maria@example.com', 'use the read replica');

    const result = await handle.result();
    expect(result).toEqual({
      outcome: 'rejected',
      decidedBy: 'maria@example.com',
      reason: 'use the read replica',
      escalated: false,
    });
    expect(accessSystem.grants.size).toBe(0);
    expect(sent).toEqual([
      {
        to: 'dana@example.com',
        subject: 'Access to prod-db:read rejected',
        body: 'Your request was rejected by maria@example.com: use the read replica.',
      },
    ]);
  });

  it('escalates to the manager’s manager when the manager is silent, who can then approve', async () => {
    const handle = await start({ ...request, escalateAfterMs: 300, decisionTimeoutMs: 20_000 });
    const escalated = await waitForStatus(handle, (s) => s.escalated);
    expect(escalated).toEqual({ stage: 'escalated', escalated: true, decision: null });
    // The escalation activity may still be running when the stage changes; wait for its mail.
    const deadline = Date.now() + 5000;
    while (!sent.some((n) => n.to === 'omar@example.com') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(sent).toEqual([
      {
        to: 'omar@example.com',
        subject: 'Escalated: dana@example.com requests prod-db:read',
        body: 'maria@example.com has not decided within 300 ms. Please approve or reject.',
      },
    ]);

    await handle.signal(approve, 'omar@example.com');
    const result = await handle.result();
    expect(result).toEqual({
      outcome: 'approved',
      decidedBy: 'omar@example.com',
      escalated: true,
      grantId: 'grant-1',
    });
    expect(sent.map((n) => n.to)).toEqual(['omar@example.com', 'dana@example.com']);
  });

  it('denies the request with a reason when nobody decides before the timeout', async () => {
    const started = Date.now();
    const handle = await start({ ...request, escalateAfterMs: 200, decisionTimeoutMs: 600 });

    const result = (await handle.result()) as AccessRequestResult;
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
    expect(result).toEqual({ outcome: 'denied', reason: 'no decision within 600 ms', escalated: true });
    expect(accessSystem.grants.size).toBe(0);
    expect(sent.map((n) => [n.to, n.subject])).toEqual([
      ['omar@example.com', 'Escalated: dana@example.com requests prod-db:read'],
      ['dana@example.com', 'Access to prod-db:read denied'],
    ]);
    expect(sent[1]!.body).toBe('Your request was denied: no decision within 600 ms.');
    // Both timers are in the history: the escalation after 200 ms, the denial 400 ms later.
    const timers = (await handle.fetchHistory()).events
      .filter((e) => e.type === 'TimerStarted')
      .map((e) => (e.attributes as { durationMs: number }).durationMs);
    expect(timers).toEqual([200, 400]);
  });

  it('fails the workflow without retrying when the request is invalid', async () => {
    const handle = await start({ ...request, resource: 'root-shell' });
    const error = await handle.result().then(
      () => null,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(WorkflowFailedError);
    const cause = (error as WorkflowFailedError).cause;
    expect(cause).toBeInstanceOf(ActivityFailure);
    expect((cause as ActivityFailure).cause).toBeInstanceOf(ApplicationFailure);
    expect(((cause as ActivityFailure).cause as ApplicationFailure).type).toBe('InvalidRequest');
    expect((await handle.fetchHistory()).events.filter((e) => e.type === 'ActivityStarted')).toEqual([
      expect.objectContaining({ attributes: expect.objectContaining({ attempt: 1 }) }),
    ]);
    expect(sent).toEqual([]);
  });
});
