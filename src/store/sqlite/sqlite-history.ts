import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { HistoryEvent, NewEvent } from '../../common/events.js';

/**
 * The encoding of a run's history: compressed chunks (rows of `history`) and one raw tail (a row of
 * `history_tail`) that new events are appended to.
 *
 * A chunk holds consecutive events of one run. Its text is the JSON array `[[type, dt, attributes], ...]`,
 * one entry per event, where `dt` is the event's time minus the row's `base_time`. `JSON.stringify` of
 * the array embeds exactly `JSON.stringify(attributes)` of each event, so attributes read back exactly
 * as they were written. The stored BLOB is one format byte and the payload:
 * - `0`: the text as UTF-8;
 * - `1`: the text compressed with raw DEFLATE and the preset dictionary `DICTIONARY_1` (below), which
 *   holds the attribute keys and event types every history repeats. A dictionary is part of the file
 *   format: never edit it; add format `2` with a new one, and keep decoding `1`.
 *
 * A tail holds the events appended since the run's chunks were last compacted, uncompressed, as TEXT: the
 * same entries, each preceded by a comma (`,[type, dt, attributes],[...]`), relative to the tail's own
 * `base_time`, so appending is string concatenation in SQL (no read, no zlib). Its chunk text is `[` +
 * the tail without its first comma + `]`. The compactor (`sqlite-history-log.ts`) turns idle tails into
 * chunks; readers decode both, so every event reads back the same whichever form holds it.
 */

/** Counters of zlib work, per store (see `SqliteStore.stats`). */
export interface ZlibCounters {
  /** `deflateRawSync` calls (chunks compressed). */
  deflates: number;
  /** `inflateRawSync` calls (compressed chunks decoded). */
  inflates: number;
}

const RAW = 0;
const DEFLATE_DICTIONARY_1 = 1;

/** Strings every history repeats; deflate finds matches cheapest near the end, so frequent ones go last. */
const DICTIONARY_1 = Buffer.from(
  [
    '"stack":"Error: \\n    at ',
    '"failure":{"kind":"application","type":"Error","message":"","nonRetryable":false,"details":[]',
    '"cause":{"kind":"',
    '"retryState":"maximumAttemptsReached"',
    '"retryState":"nonRetryableFailure"',
    '"timeoutType":"startToClose"',
    '"timeoutType":"heartbeat"',
    '"lastHeartbeatDetails":',
    '["WorkflowTaskFailed",',
    '"cause":"WorkflowError"',
    '"cause":"NonDeterminism"',
    '["WorkflowTaskTimedOut",',
    '["ActivityFailed",',
    '["ActivityTimedOut",',
    '["ActivityCancelRequested",',
    '["ActivityCanceled",',
    '["TimerCanceled",',
    '["WorkflowCancelRequested",',
    '{"reason":"',
    '["WorkflowCanceled",',
    '["WorkflowTerminated",',
    '["WorkflowTimedOut",',
    '["WorkflowFailed",',
    '["MarkerRecorded",',
    '{"markerName":"',
    '"details":{',
    '["SignalReceived",',
    '{"signalName":"',
    '"requestId":"',
    '["WorkflowCompleted",',
    '{"result":',
    '["TimerFired",',
    '"memo":{',
    '"searchAttributes":{',
    '"workflowExecutionTimeoutMs":',
    '"workflowRunTimeoutMs":',
    '"expectedMaxDurationMs":',
    '[["WorkflowStarted",0,{"workflowType":"',
    '","taskQueue":"',
    '","input":[',
    '],"randomnessSeed":"',
    '","workflowTaskTimeoutMs":10000}]',
    '"heartbeatTimeoutMs":',
    '"scheduleToCloseTimeoutMs":',
    '"scheduleToStartTimeoutMs":',
    '"options":{"retry":{"initialIntervalMs":1000,"backoffCoefficient":2,"maximumIntervalMs":100000,' +
      '"maximumAttempts":0,"nonRetryableErrorTypes":[]},"startToCloseTimeoutMs":',
    '["ActivityScheduled",',
    '{"activityId":"',
    '","activityType":"',
    '"workflowTaskCompletedEventId":',
    '["TimerStarted",',
    '{"timerId":"',
    '","durationMs":',
    '["ActivityCompleted",',
    '["ActivityStarted",',
    '"attempt":1,"workerId":"',
    '["WorkflowTaskCompleted",',
    '"bundleHash":"',
    '["WorkflowTaskStarted",',
    '"workerId":"',
    '["WorkflowTaskScheduled",',
    '{"taskQueue":"',
    '","attempt":1}]',
    '{"scheduledEventId":',
    '"startedEventId":',
  ].join(''),
);

/**
 * A small window and hash table (8 KiB + 16 KiB of zlib state instead of the default ~384 KiB per call)
 * keep memory flat when thousands of chunks are written per second; chunks are small, so little is lost.
 */
const DEFLATE_OPTIONS = { dictionary: DICTIONARY_1, windowBits: 13, memLevel: 5, level: 9 } as const;

/** Texts shorter than this are stored raw: deflate's fixed cost outweighs what it saves. */
const MIN_COMPRESS_CHARS = 48;

/**
 * The tail text of `events` (entries each preceded by a comma), times relative to `baseTime`; undefined
 * if a time would not round-trip (never for base 0).
 */
export function tailText(events: readonly NewEvent[], baseTime: number): string | undefined {
  let text = '';
  for (const e of events) {
    const dt = e.time - baseTime;
    if (baseTime !== 0 && baseTime + dt !== e.time) return undefined;
    text += `,${JSON.stringify([e.type, dt, e.attributes])}`;
  }
  return text;
}

/** The chunk text holding the events of a (non-empty) tail text. */
export function tailToChunkText(tail: string): string {
  return `[${tail.slice(1)}]`;
}

/** The chunk text `head` followed by the events of tail text `tail` (both with the same base time). */
export function appendTailToChunkText(head: string, tail: string): string {
  return `${head.slice(0, -1)}${tail}]`;
}

export function encodeChunk(text: string, counters?: ZlibCounters): Buffer {
  const raw = Buffer.from(text, 'utf8');
  if (text.length >= MIN_COMPRESS_CHARS) {
    if (counters) counters.deflates++;
    const packed = deflateRawSync(raw, DEFLATE_OPTIONS);
    if (packed.length < raw.length) return Buffer.concat([Buffer.of(DEFLATE_DICTIONARY_1), packed]);
  }
  return Buffer.concat([Buffer.of(RAW), raw]);
}

export function decodeChunk(chunk: Uint8Array, counters?: ZlibCounters): string {
  const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const payload = buf.subarray(1);
  switch (buf[0]) {
    case RAW:
      return payload.toString('utf8');
    case DEFLATE_DICTIONARY_1:
      if (counters) counters.inflates++;
      return inflateRawSync(payload, { dictionary: DICTIONARY_1, windowBits: 15 }).toString('utf8');
    default:
      throw new Error(`history chunk has unknown format ${buf[0]}; a newer longhaul wrote it`);
  }
}

/**
 * The events of a chunk text whose first event has id `firstEventId`, keeping those with ids in
 * [fromEventId, fromEventId + max) and appending them to `out`.
 */
export function readChunk(
  text: string,
  firstEventId: number,
  baseTime: number,
  fromEventId: number,
  max: number,
  out: HistoryEvent[],
): void {
  const entries = JSON.parse(text) as [string, number, unknown][];
  const start = Math.max(0, fromEventId - firstEventId);
  for (let i = start; i < entries.length && out.length < max; i++) {
    const [type, dt, attributes] = entries[i]!;
    out.push({ eventId: firstEventId + i, type, time: baseTime + dt, attributes } as HistoryEvent);
  }
}
