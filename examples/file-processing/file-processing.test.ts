import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'longhaul/client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  makeTempDir,
  ProcessGroup,
  removeTempDirs,
  waitUntil,
  withTimeout,
} from '../../test/crash/harness.js';
import type { AttemptRecord, FileCheckpoint, FileSummary } from './activities.js';
import { amountOf, generateInputFile, lineOf } from './input-file.js';
import { TASK_QUEUE } from './task-queue.js';
import { fileProcessing } from './workflows.js';

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.ts', import.meta.url));
const LINES = 200_000;

/** Bytes and sum of the first `lines` lines, recomputed independently of the activity. */
function prefixOf(lines: number): FileCheckpoint {
  let offset = 0;
  let sum = 0;
  for (let i = 0; i < lines; i++) {
    offset += lineOf(i).length + 1;
    sum += amountOf(i);
  }
  return { offset, lines, sum };
}

describe('file-processing example', () => {
  let group: ProcessGroup;
  let client: Client | null;
  beforeEach(() => {
    group = new ProcessGroup();
    client = null;
  });
  afterEach(async () => {
    try {
      await group.killAll();
    } finally {
      await client?.close();
      removeTempDirs();
    }
  });

  it('resumes from the last checkpoint after the worker is killed with SIGKILL mid-file, with an exact result', async () => {
    const dir = makeTempDir('longhaul-file-processing-');
    const input = path.join(dir, 'amounts.csv');
    const attemptsLogPath = path.join(dir, 'attempts.log');
    const url = `sqlite:${path.join(dir, 'store.db')}`;
    const expected = await generateInputFile(input, LINES);

    const first = await group.start('worker #1', WORKER_SCRIPT, [url]);
    client = await Client.connect(url);
    // Slowed down to about 5 s for the whole file, so the kill lands mid-file.
    const handle = await client.workflow.start(fileProcessing, {
      workflowId: 'process-amounts',
      taskQueue: TASK_QUEUE,
      args: [{ path: input, linesPerBatch: 1000, pauseMsPerBatch: 25, attemptsLogPath }],
    });

    // Kill once a checkpoint past the first batch is committed to the store.
    const committed = await waitUntil(
      async () => {
        const details = (await handle.describe()).pendingActivities[0]?.heartbeatDetails as
          | FileCheckpoint
          | undefined;
        return details && details.lines > 1000 ? details : undefined;
      },
      'a checkpoint past the first batch',
      20_000,
    );
    await first.kill9();
    expect(committed.lines).toBeLessThan(LINES);

    await group.start('worker #2', WORKER_SCRIPT, [url]);
    const result: FileSummary = await withTimeout(handle.result(), 30_000, 'the workflow result');

    expect({ lines: result.lines, sum: result.sum, bytes: result.bytes }).toEqual(expected);
    const attempts = readFileSync(attemptsLogPath, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AttemptRecord);
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2]);
    expect(attempts[0]!.startedFrom).toEqual({ offset: 0, lines: 0, sum: 0 });
    // The second attempt started from the checkpoint the store held at the kill (or a later one),
    // not from the beginning, and that checkpoint is exact for its offset.
    const resumed = attempts[1]!.startedFrom;
    expect(resumed.lines).toBeGreaterThanOrEqual(committed.lines);
    expect(resumed.lines).toBeLessThan(LINES);
    expect(resumed).toEqual(prefixOf(resumed.lines));
    expect(attempts[1]!.pid).not.toBe(attempts[0]!.pid);
    expect(result.attempt).toBe(2);
    expect(result.startedFrom).toEqual(resumed);
  });
});
