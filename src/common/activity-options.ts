import { parseDuration } from './duration.js';
import { ValidationError } from './errors.js';
import type { ActivityOptionsMs, RetryPolicyMs } from './events.js';
import { validateId } from './ids.js';

/** Durations are strings like '30s' or milliseconds (see duration.ts). */
type DurationInput = number | string;

/** Retry policy as users write it (durations as strings or milliseconds). */
export interface RetryPolicy {
  /** Delay before the first retry. Default 1 s; must be positive. */
  readonly initialInterval?: DurationInput;
  /** Each delay is the previous one times this. Default 2.0; must be >= 1. */
  readonly backoffCoefficient?: number;
  /** Upper bound of a delay. Default 100 × initialInterval; must be >= initialInterval. */
  readonly maximumInterval?: DurationInput;
  /** Attempts in total including the first; 0 (the default) means unlimited. */
  readonly maximumAttempts?: number;
  /** Failure types (ApplicationFailure.type or error name) that are never retried. Default []. */
  readonly nonRetryableErrorTypes?: readonly string[];
}

/** Activity options as users write them in `proxyActivities`. */
export interface ActivityOptions {
  readonly startToCloseTimeout?: DurationInput;
  readonly scheduleToCloseTimeout?: DurationInput;
  readonly scheduleToStartTimeout?: DurationInput;
  readonly heartbeatTimeout?: DurationInput;
  /** Task queue of the activity; default: the workflow's task queue. */
  readonly taskQueue?: string;
  readonly retry?: RetryPolicy;
}

const RETRY_KEYS = new Set([
  'initialInterval',
  'backoffCoefficient',
  'maximumInterval',
  'maximumAttempts',
  'nonRetryableErrorTypes',
]);
const OPTION_KEYS = new Set([
  'startToCloseTimeout',
  'scheduleToCloseTimeout',
  'scheduleToStartTimeout',
  'heartbeatTimeout',
  'taskQueue',
  'retry',
]);

function asRecord(value: unknown, field: string, known: ReadonlySet<string>): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError(field, `must be an object, got ${value === null ? 'null' : typeof value}`);
  }
  for (const key of Object.keys(value)) {
    if (!known.has(key)) {
      throw new ValidationError(`${field}.${key}`, `unknown option; known: ${[...known].join(', ')}`);
    }
  }
  return value as Record<string, unknown>;
}

function positiveDuration(value: unknown, field: string): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(value, field);
  if (ms <= 0) throw new ValidationError(field, 'must be longer than 0 ms');
  return ms;
}

/**
 * Validates a retry policy and fills in defaults. Throws a ValidationError naming the offending field
 * (`${field}.backoffCoefficient`, ...). `undefined` gives the default policy.
 */
export function compileRetryPolicy(retry: unknown, field: string): RetryPolicyMs {
  const r = retry === undefined ? {} : asRecord(retry, field, RETRY_KEYS);
  const initialIntervalMs = positiveDuration(r.initialInterval, `${field}.initialInterval`) ?? 1000;

  const backoffCoefficient = r.backoffCoefficient ?? 2;
  if (
    typeof backoffCoefficient !== 'number' ||
    !Number.isFinite(backoffCoefficient) ||
    backoffCoefficient < 1
  ) {
    throw new ValidationError(
      `${field}.backoffCoefficient`,
      `must be a finite number >= 1, got ${String(backoffCoefficient)}`,
    );
  }

  const maximumIntervalMs =
    positiveDuration(r.maximumInterval, `${field}.maximumInterval`) ?? 100 * initialIntervalMs;
  if (maximumIntervalMs < initialIntervalMs) {
    throw new ValidationError(
      `${field}.maximumInterval`,
      `(${maximumIntervalMs} ms) must be >= initialInterval (${initialIntervalMs} ms)`,
    );
  }

  const maximumAttempts = r.maximumAttempts ?? 0;
  if (typeof maximumAttempts !== 'number' || !Number.isSafeInteger(maximumAttempts) || maximumAttempts < 0) {
    throw new ValidationError(
      `${field}.maximumAttempts`,
      `must be a non-negative integer (0 = unlimited), got ${String(maximumAttempts)}`,
    );
  }

  const types = r.nonRetryableErrorTypes ?? [];
  if (!Array.isArray(types) || types.some((t) => typeof t !== 'string')) {
    throw new ValidationError(`${field}.nonRetryableErrorTypes`, 'must be an array of strings');
  }

  return {
    initialIntervalMs,
    backoffCoefficient,
    maximumIntervalMs,
    maximumAttempts,
    nonRetryableErrorTypes: [...(types as string[])],
  };
}

/**
 * Validates activity options and compiles them to milliseconds. At least one of `startToCloseTimeout`
 * and `scheduleToCloseTimeout` is required; timeouts must be longer than 0 ms. `taskQueue` is validated
 * but not part of the result (it travels on the command).
 */
export function compileActivityOptions(options: unknown, field: string): ActivityOptionsMs {
  const o = asRecord(options, field, OPTION_KEYS);
  if (o.taskQueue !== undefined) validateId(o.taskQueue, `${field}.taskQueue`);
  const startToCloseTimeoutMs = positiveDuration(o.startToCloseTimeout, `${field}.startToCloseTimeout`);
  const scheduleToCloseTimeoutMs = positiveDuration(
    o.scheduleToCloseTimeout,
    `${field}.scheduleToCloseTimeout`,
  );
  if (startToCloseTimeoutMs === undefined && scheduleToCloseTimeoutMs === undefined) {
    throw new ValidationError(
      `${field}.startToCloseTimeout`,
      'at least one of startToCloseTimeout and scheduleToCloseTimeout is required',
    );
  }
  const compiled: ActivityOptionsMs = { retry: compileRetryPolicy(o.retry, `${field}.retry`) };
  const scheduleToStartTimeoutMs = positiveDuration(
    o.scheduleToStartTimeout,
    `${field}.scheduleToStartTimeout`,
  );
  const heartbeatTimeoutMs = positiveDuration(o.heartbeatTimeout, `${field}.heartbeatTimeout`);
  if (startToCloseTimeoutMs !== undefined) compiled.startToCloseTimeoutMs = startToCloseTimeoutMs;
  if (scheduleToCloseTimeoutMs !== undefined) compiled.scheduleToCloseTimeoutMs = scheduleToCloseTimeoutMs;
  if (scheduleToStartTimeoutMs !== undefined) compiled.scheduleToStartTimeoutMs = scheduleToStartTimeoutMs;
  if (heartbeatTimeoutMs !== undefined) compiled.heartbeatTimeoutMs = heartbeatTimeoutMs;
  return compiled;
}
