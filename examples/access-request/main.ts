/**
 * Runs the access-request example end to end in one process: a worker and a client on
 * `sqlite:./access-request.db`. Run it with `npm run example:approval`.
 */
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import { Worker } from 'longhaul/worker';
import { createActivities, inMemoryAccessSystem, type Notification } from './activities.js';
import { type AccessRequestStatus, accessRequest, approve, status } from './workflows.js';

const DB_FILE = './access-request.db';
const url = `sqlite:${DB_FILE}`;
const taskQueue = 'access-requests';

// Start from an empty store so the example can run again and again with the same workflow id.
for (const suffix of ['', '-wal', '-shm']) rmSync(`${DB_FILE}${suffix}`, { force: true });

const printEmail = (n: Notification): void => {
  console.log(`  [mail to ${n.to}] ${n.subject}: ${n.body}`);
};

const worker = await Worker.create({
  connection: url,
  taskQueue,
  workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)),
  activities: createActivities({
    resources: ['prod-db:read', 'prod-db:write', 'billing-dashboard'],
    notify: printEmail,
    accessSystem: inMemoryAccessSystem(),
  }),
});
const running = worker.run();
const client = await Client.connect(url);

try {
  const handle = await client.workflow.start(accessRequest, {
    workflowId: 'access-request-1',
    taskQueue,
    args: [
      {
        requester: 'dana@example.com',
        manager: 'maria@example.com',
        managersManager: 'omar@example.com',
        resource: 'prod-db:read',
        justification: 'investigate the failed nightly export',
      },
    ],
  });
  console.log(`started ${handle.workflowId}`);

  // Wait (at most 10 s) until the request has been validated and waits for the manager.
  let current: AccessRequestStatus = await handle.query(status);
  for (const deadline = Date.now() + 10_000; current.stage === 'validating' && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    current = await handle.query(status);
  }
  console.log('status:', current);

  await handle.signal(approve, 'maria@example.com');
  console.log('approved by maria@example.com');

  const result = await handle.result();
  console.log('status:', await handle.query(status));
  console.log('result:', result);
} finally {
  await client.close();
  await worker.shutdown();
  await running;
}
