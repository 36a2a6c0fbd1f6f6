/**
 * A large-file processing activity that survives crashes: it reads the file in batches of lines,
 * heartbeats a checkpoint (byte offset, lines done, running sum) after every batch, and a retry
 * resumes from the last checkpoint in `activityInfo().heartbeatDetails` instead of from the start.
 *
 * The checkpoint is consistent by construction: it covers exactly the complete lines before `offset`.
 * Heartbeats are throttled by the worker (at most one per 80% of the heartbeat timeout), so after a
 * crash up to that much work is done again; the result is still exact, because the checkpoint's sum
 * and line count belong to its offset.
 */
import { appendFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { ApplicationFailure, activityInfo, heartbeat, sleep } from 'longhaul/activity';

export interface FileCheckpoint {
  /** Bytes consumed: every line before this offset is counted. */
  readonly offset: number;
  readonly lines: number;
  readonly sum: number;
}

export interface ProcessFileInput {
  readonly path: string;
  /** Lines per batch; a checkpoint is heartbeated after each batch (default 10 000). */
  readonly linesPerBatch?: number;
  /** Pause after each batch, ms (default 0). Slows the activity down, e.g. to crash it mid-file. */
  readonly pauseMsPerBatch?: number;
  /** If set, each attempt appends one JSON line here with the checkpoint it started from. */
  readonly attemptsLogPath?: string;
}

export interface FileSummary {
  readonly lines: number;
  readonly sum: number;
  readonly bytes: number;
  /** The attempt that finished, and the checkpoint it started from. */
  readonly attempt: number;
  readonly startedFrom: FileCheckpoint;
}

export interface AttemptRecord {
  readonly attempt: number;
  readonly startedFrom: FileCheckpoint;
  readonly pid: number;
  readonly time: number;
}

const START: FileCheckpoint = { offset: 0, lines: 0, sum: 0 };
const NEWLINE = 0x0a;

/** Counts the lines of a file of `<id>,<amount>` lines and sums the amounts. */
export async function processFile(input: ProcessFileInput): Promise<FileSummary> {
  const { attempt, heartbeatDetails } = activityInfo();
  const startedFrom = (heartbeatDetails as FileCheckpoint | undefined) ?? START;
  if (input.attemptsLogPath) {
    const record: AttemptRecord = { attempt, startedFrom, pid: process.pid, time: Date.now() };
    appendFileSync(input.attemptsLogPath, `${JSON.stringify(record)}\n`);
  }
  const linesPerBatch = input.linesPerBatch ?? 10_000;
  const pauseMs = input.pauseMsPerBatch ?? 0;

  let { offset, lines, sum } = startedFrom;
  let inBatch = 0;
  const countLine = (bytes: Buffer, from: number, to: number): void => {
    const text = bytes.toString('utf8', from, to);
    const comma = text.indexOf(',');
    const amount = Number(text.slice(comma + 1));
    if (comma < 0 || !Number.isFinite(amount)) {
      throw ApplicationFailure.nonRetryable(
        `line ${lines + 1} is not '<id>,<amount>': ${text}`,
        'MalformedLine',
      );
    }
    sum += amount;
    lines++;
  };

  const file = await open(input.path, 'r');
  try {
    const buffer = Buffer.alloc(256 * 1024);
    let readAt = offset;
    let rest = Buffer.alloc(0);
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, readAt);
      if (bytesRead === 0) break;
      readAt += bytesRead;
      const data =
        rest.length > 0
          ? Buffer.concat([rest, buffer.subarray(0, bytesRead)])
          : buffer.subarray(0, bytesRead);
      let lineStart = 0;
      for (let nl = data.indexOf(NEWLINE); nl !== -1; nl = data.indexOf(NEWLINE, lineStart)) {
        countLine(data, lineStart, nl);
        offset += nl + 1 - lineStart;
        lineStart = nl + 1;
        if (++inBatch === linesPerBatch) {
          inBatch = 0;
          heartbeat({ offset, lines, sum } satisfies FileCheckpoint);
          if (pauseMs > 0) await sleep(pauseMs);
        }
      }
      rest = Buffer.from(data.subarray(lineStart));
    }
    if (rest.length > 0) {
      countLine(rest, 0, rest.length); // a last line without a newline
      offset += rest.length;
    }
  } finally {
    await file.close();
  }
  return { lines, sum, bytes: offset, attempt, startedFrom };
}
