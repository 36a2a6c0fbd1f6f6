/** The NOTIFY channel of a schema, and the packing of wake-up topics into notification payloads. */
import { createHash } from 'node:crypto';

const CHANNEL_PREFIX = 'longhaul_wake_';
/** PostgreSQL identifiers (channel names) are at most 63 bytes (NAMEDATALEN - 1). */
const MAX_IDENTIFIER_BYTES = 63;
const CHANNEL_HASH_CHARS = 16;

/**
 * The NOTIFY channel of a schema: `longhaul_wake_<schema>`, or, when that exceeds 63 bytes,
 * `longhaul_wake_<schema prefix>_<first 16 hex digits of the schema's SHA-256>` (exactly 63 bytes).
 */
export function notificationChannel(schema: string): string {
  const plain = `${CHANNEL_PREFIX}${schema}`;
  if (Buffer.byteLength(plain) <= MAX_IDENTIFIER_BYTES) return plain;
  const hash = createHash('sha256').update(schema).digest('hex').slice(0, CHANNEL_HASH_CHARS);
  // Schema names are ASCII identifiers (validated when the connection string is parsed).
  const prefix = schema.slice(0, MAX_IDENTIFIER_BYTES - CHANNEL_PREFIX.length - 1 - CHANNEL_HASH_CHARS);
  return `${CHANNEL_PREFIX}${prefix}_${hash}`;
}

/** PostgreSQL rejects payloads of 8000 bytes or more (with the default 8 kB block size). */
export const MAX_PAYLOAD_BYTES = 7999;

/**
 * Packs topics into JSON-array payloads of at most MAX_PAYLOAD_BYTES bytes each, in order. A topic that
 * does not fit in a payload on its own is counted in `tooLong` and left out.
 */
export function packPayloads(topics: readonly string[]): { payloads: Payload[]; tooLong: number } {
  const payloads: Payload[] = [];
  let tooLong = 0;
  let current: string[] = [];
  // Bytes of `[` + the topics' JSON joined by commas + `]`.
  let currentBytes = 2;
  for (const topic of topics) {
    const bytes = Buffer.byteLength(JSON.stringify(topic));
    if (bytes + 2 > MAX_PAYLOAD_BYTES) {
      tooLong++;
      continue;
    }
    const added = current.length === 0 ? bytes : bytes + 1;
    if (currentBytes + added > MAX_PAYLOAD_BYTES) {
      payloads.push({ text: JSON.stringify(current), topics: current.length });
      current = [];
      currentBytes = 2 + bytes;
    } else {
      currentBytes += added;
    }
    current.push(topic);
  }
  if (current.length > 0) payloads.push({ text: JSON.stringify(current), topics: current.length });
  return { payloads, tooLong };
}

/** One notification's payload: a JSON array of `topics` topics. */
export interface Payload {
  readonly text: string;
  readonly topics: number;
}

export function countTopics(payloads: readonly Payload[]): number {
  let n = 0;
  for (const p of payloads) n += p.topics;
  return n;
}
