/**
 * Runs the file-processing example in one process: generates a 200 000-line input file in a temporary
 * directory, processes it with a worker and a client on a SQLite store next to it, prints the result,
 * and cleans up. Run it with `npm run example:file-processing`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import { Worker } from 'longhaul/worker';
import * as activities from './activities.js';
import { generateInputFile } from './input-file.js';
import { TASK_QUEUE } from './task-queue.js';
import { fileProcessing } from './workflows.js';

const LINES = 200_000;
const dir = mkdtempSync(path.join(tmpdir(), 'longhaul-file-processing-'));
try {
  const input = path.join(dir, 'amounts.csv');
  const expected = await generateInputFile(input, LINES);
  console.log(`generated ${input}: ${expected.lines} lines, ${expected.bytes} bytes`);

  const url = `sqlite:${path.join(dir, 'file-processing.db')}`;
  const worker = await Worker.create({
    connection: url,
    taskQueue: TASK_QUEUE,
    workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)),
    activities,
  });
  const running = worker.run();
  const client = await Client.connect(url);
  try {
    const started = Date.now();
    const result = await client.workflow.execute(fileProcessing, {
      workflowId: 'process-amounts',
      taskQueue: TASK_QUEUE,
      args: [{ path: input, linesPerBatch: 10_000 }],
    });
    console.log(`processed in ${Date.now() - started} ms:`, result);
    const ok =
      result.lines === expected.lines && result.sum === expected.sum && result.bytes === expected.bytes;
    console.log(
      ok
        ? `check: OK (sum of amounts ${expected.sum})`
        : `check: MISMATCH, expected ${JSON.stringify(expected)}`,
    );
    process.exitCode = ok ? 0 : 1;
  } finally {
    await client.close();
    await worker.shutdown();
    await running;
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
