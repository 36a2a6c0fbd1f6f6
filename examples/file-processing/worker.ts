/**
 * A worker for the file-processing example in a process of its own:
 *   node --conditions=source --import tsx examples/file-processing/worker.ts sqlite:./file-processing.db
 * Prints `ready` once it polls; SIGTERM (or Ctrl-C) shuts it down cleanly, letting running activities
 * finish within the grace time.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from 'longhaul/worker';
import * as activities from './activities.js';
import { TASK_QUEUE } from './task-queue.js';

const connection = process.argv[2];
if (!connection) {
  console.error('usage: worker.ts <connection>, e.g. sqlite:./file-processing.db');
  process.exit(2);
}

const worker = await Worker.create({
  connection,
  taskQueue: TASK_QUEUE,
  workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)),
  activities,
});
const running = worker.run();
console.log(`ready ${process.pid}`);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    void worker.shutdown();
  });
}
await running;
