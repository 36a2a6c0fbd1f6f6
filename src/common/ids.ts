import { ValidationError } from './errors.js';

/** Default limits of DESIGN section 7. */
export const LIMITS = {
  idLength: 1000,
  payloadBytes: 2 * 1024 * 1024,
  payloadWarnBytes: 256 * 1024,
  pendingActivities: 2000,
  pendingSignals: 2000,
  historyWarnEvents: 10_240,
  historyMaxEvents: 51_200,
} as const;

// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find control characters.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Validates a workflow id, activity id, task queue, namespace or type name. */
export function validateId(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new ValidationError(field, `must be a string, got ${typeof value}`);
  if (value.length === 0) throw new ValidationError(field, 'must not be empty');
  if (value.length > LIMITS.idLength) {
    throw new ValidationError(field, `is ${value.length} characters long; the limit is ${LIMITS.idLength}`);
  }
  const bad = CONTROL.exec(value);
  if (bad) {
    const code = bad[0].charCodeAt(0).toString(16).padStart(4, '0');
    throw new ValidationError(field, `contains control character U+${code} at index ${bad.index}; remove it`);
  }
  return value;
}
