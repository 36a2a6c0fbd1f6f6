import { describe, expect, it } from 'vitest';
import type { FailureInfo } from '../../src/common/errors.js';
import {
  DEFAULT_WORKFLOW_TASK_RETRY,
  decideRetry,
  retryDelayMs,
  workflowTaskBackoffMs,
} from '../../src/engine/retry-policy.js';
import { retry, T0 } from './fixtures.js';

const boom: FailureInfo = { kind: 'application', type: 'Error', message: 'boom' };

describe('activity retry policy', () => {
  it('backs off exponentially from the initial interval and caps at the maximum interval', () => {
    const policy = { ...retry, initialIntervalMs: 1000, backoffCoefficient: 2, maximumIntervalMs: 10_000 };
    expect([1, 2, 3, 4, 5, 6].map((a) => retryDelayMs(policy, a))).toEqual([
      1000, 2000, 4000, 8000, 10_000, 10_000,
    ]);
  });

  it('retries without limit when maximumAttempts is 0', () => {
    const d = decideRetry(retry, 1000, boom, T0, null);
    expect(d).toEqual({ retry: true, delayMs: 100_000 });
  });

  it('stops after maximumAttempts attempts', () => {
    const policy = { ...retry, maximumAttempts: 3 };
    expect(decideRetry(policy, 2, boom, T0, null).retry).toBe(true);
    expect(decideRetry(policy, 3, boom, T0, null)).toEqual({
      retry: false,
      retryState: 'maximumAttemptsReached',
    });
  });

  it('does not retry failures marked non-retryable or whose type is listed', () => {
    expect(decideRetry(retry, 1, { ...boom, nonRetryable: true }, T0, null)).toEqual({
      retry: false,
      retryState: 'nonRetryableFailure',
    });
    const policy = { ...retry, nonRetryableErrorTypes: ['CardDeclined'] };
    expect(decideRetry(policy, 1, { ...boom, type: 'CardDeclined' }, T0, null).retry).toBe(false);
    expect(decideRetry(policy, 1, { ...boom, type: 'Other' }, T0, null).retry).toBe(true);
  });

  it('does not retry a cancellation', () => {
    expect(
      decideRetry(retry, 1, { kind: 'cancelled', type: 'CancelledFailure', message: 'x' }, T0, null),
    ).toEqual({
      retry: false,
      retryState: 'cancelRequested',
    });
  });

  it('gives up when the next attempt could not start before the schedule-to-close deadline', () => {
    expect(decideRetry(retry, 1, boom, T0, T0 + 500)).toEqual({ retry: false, retryState: 'timeout' });
    expect(decideRetry(retry, 1, boom, T0, T0 + 5000).retry).toBe(true);
  });
});

describe('workflow task retry backoff', () => {
  it('starts at the initial interval, doubles, and is capped', () => {
    const r = DEFAULT_WORKFLOW_TASK_RETRY;
    expect([2, 3, 4, 5, 6, 7].map((a) => workflowTaskBackoffMs(r, a))).toEqual([
      1000, 2000, 4000, 8000, 10_000, 10_000,
    ]);
  });
});
