import { ValidationError } from './errors.js';

/** A duration: milliseconds as a number, or a string such as '30s', '48h', '1 day', '250ms'. */
export type Duration = number | string;

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  msec: 1,
  millisecond: 1,
  milliseconds: 1,
  s: 1000,
  sec: 1000,
  secs: 1000,
  second: 1000,
  seconds: 1000,
  m: 60_000,
  min: 60_000,
  mins: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hrs: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000,
  w: 604_800_000,
  week: 604_800_000,
  weeks: 604_800_000,
};

/** Longest duration the platform's timers and our arithmetic handle exactly: about 285 years. */
export const MAX_DURATION_MS = 2 ** 53 / 1000;

const PATTERN = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$/i;

/**
 * Parses a duration to milliseconds, or throws a ValidationError naming `field`.
 * Negative, non-finite, unitless-string and unknown-unit values are rejected.
 */
export function parseDuration(value: unknown, field: string): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) {
      throw new ValidationError(
        field,
        `duration must be a finite, non-negative number of milliseconds, got ${value}`,
      );
    }
    if (value > MAX_DURATION_MS)
      throw new ValidationError(field, `duration ${value} ms is longer than the maximum`);
    return Math.round(value);
  }
  if (typeof value !== 'string') {
    throw new ValidationError(
      field,
      `duration must be milliseconds or a string like '30s', '48h', '1 day', got ${typeof value}`,
    );
  }
  const m = PATTERN.exec(value);
  const unit = m?.[2]?.toLowerCase() ?? '';
  // A string needs a unit ('10' is ambiguous: write 10 or '10ms'); see the doc comment above.
  const perUnit = unit === '' ? undefined : UNIT_MS[unit];
  if (!m || perUnit === undefined) {
    throw new ValidationError(
      field,
      `'${value}' is not a duration; use milliseconds or a number with a unit (ms, s, m, h, d, w), e.g. '30s', '48h', '1 day'`,
    );
  }
  const ms = Math.round(Number(m[1]) * perUnit);
  if (ms > MAX_DURATION_MS)
    throw new ValidationError(field, `duration '${value}' is longer than the maximum`);
  return ms;
}

/** Like parseDuration, but `undefined` stays `undefined`. */
export function parseOptionalDuration(value: unknown, field: string): number | undefined {
  return value === undefined ? undefined : parseDuration(value, field);
}
