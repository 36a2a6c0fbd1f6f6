/**
 * Records the saved histories of this folder: `node --conditions=source --import tsx test/histories/record.ts`.
 * Run it only when the history format itself changes (and say so in the CHANGELOG); the point of the saved
 * files is that they were written by an earlier engine.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import { Worker } from 'longhaul/worker';
import * as activities from './activities.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'longhaul-record-'));
const url = `sqlite:${join(dir, 'db.sqlite')}`;
const worker = await Worker.create({
  connection: url,
  taskQueue: 'histories',
  workflowsPath: join(here, 'workflows.ts'),
  activities,
  sweepInterval: 20,
});
const running = worker.run();
const client = await Client.connect(url);

const order = await client.workflow.start('order', {
  workflowId: 'order-1',
  taskQueue: 'histories',
  args: ['A7'],
});
await order.signal('item', 3);
await order.signal('item', 4);
await new Promise((r) => setTimeout(r, 200));
await order.signal('approve', 'alice');
console.log('order:', await order.result());
writeFileSync(join(here, 'order.json'), `${JSON.stringify(await order.fetchHistory(), null, 2)}\n`);

const cancellable = await client.workflow.start('cancellable', {
  workflowId: 'cancel-1',
  taskQueue: 'histories',
});
await new Promise((r) => setTimeout(r, 300));
await cancellable.cancel();
console.log('cancellable:', await cancellable.result());
writeFileSync(
  join(here, 'cancellable.json'),
  `${JSON.stringify(await cancellable.fetchHistory(), null, 2)}\n`,
);

await client.close();
await worker.shutdown();
await running;
rmSync(dir, { recursive: true, force: true });
