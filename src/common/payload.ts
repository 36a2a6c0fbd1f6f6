import { ValidationError } from './errors.js';
import { LIMITS } from './ids.js';

/**
 * The default payload converter: JSON. A `Date` arrives as an ISO string and `undefined` in an array as
 * `null` (JSON's own rules). Values JSON cannot represent (BigInt, cycles, functions, symbols) are rejected
 * with a ValidationError naming the field, before anything is written.
 */
export function toPayload(value: unknown, field: string): unknown {
  if (value === undefined) return undefined;
  const text = encodePayloadText(value, field);
  return JSON.parse(text) as unknown;
}

/** Converts a list of arguments; each keeps its position in the error's field name. */
export function toPayloads(values: readonly unknown[], field: string): unknown[] {
  if (!Array.isArray(values)) throw new ValidationError(field, 'must be an array of arguments');
  checkSize(encodePayloadText(values, field), field);
  return values.map((v, i) => (v === undefined ? null : toPayload(v, `${field}[${i}]`)));
}

/** JSON text of `value`, with clear errors for what JSON cannot hold. */
export function encodePayloadText(value: unknown, field: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value, (_k, v: unknown) => {
      if (typeof v === 'function') throw new ValidationError(field, 'a function is not serialisable');
      if (typeof v === 'symbol') throw new ValidationError(field, 'a symbol is not serialisable');
      return v;
    });
  } catch (err) {
    if (err instanceof ValidationError) throw err;
    const why = err instanceof Error ? err.message : String(err);
    throw new ValidationError(field, `value is not serialisable as JSON (${why})`);
  }
  if (text === undefined) throw new ValidationError(field, 'value is not serialisable as JSON');
  checkSize(text, field);
  return text;
}

function checkSize(text: string, field: string): void {
  // UTF-16 length is a lower bound of UTF-8 bytes; measure exactly only when near the limit.
  if (text.length * 3 < LIMITS.payloadBytes) return;
  const bytes = utf8Length(text);
  if (bytes > LIMITS.payloadBytes) {
    throw new ValidationError(
      field,
      `payload is ${bytes} bytes; the limit is ${LIMITS.payloadBytes} bytes. Store large data elsewhere and pass a reference`,
    );
  }
}

function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
