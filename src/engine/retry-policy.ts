import type { FailureInfo, RetryState } from '../common/errors.js';
import type { RetryPolicyMs } from '../common/events.js';

export type RetryDecision =
  | { readonly retry: true; readonly delayMs: number }
  | { readonly retry: false; readonly retryState: RetryState };

/**
 * Decides whether the activity attempt `attempt` (1-based) that just failed with `failure` is retried,
 * and after how long. Rules, in order:
 *   - a cancellation is never retried ('cancelRequested');
 *   - a failure marked nonRetryable, or whose type is listed in nonRetryableErrorTypes, is final;
 *   - once `maximumAttempts` (0 = unlimited) attempts ran, the scheduling fails;
 *   - the delay is initialInterval × backoffCoefficient^(attempt-1), capped at maximumInterval;
 *   - a retry that could not start before the schedule-to-close deadline is not made ('timeout').
 */
export function decideRetry(
  policy: RetryPolicyMs,
  attempt: number,
  failure: FailureInfo,
  now: number,
  scheduleToCloseDeadline: number | null,
): RetryDecision {
  if (failure.kind === 'cancelled') return { retry: false, retryState: 'cancelRequested' };
  if (failure.nonRetryable || policy.nonRetryableErrorTypes.includes(failure.type)) {
    return { retry: false, retryState: 'nonRetryableFailure' };
  }
  if (policy.maximumAttempts > 0 && attempt >= policy.maximumAttempts) {
    return { retry: false, retryState: 'maximumAttemptsReached' };
  }
  const delayMs = retryDelayMs(policy, attempt);
  if (scheduleToCloseDeadline !== null && now + delayMs >= scheduleToCloseDeadline) {
    return { retry: false, retryState: 'timeout' };
  }
  return { retry: true, delayMs };
}

/** Backoff before attempt `failedAttempt + 1`. */
export function retryDelayMs(policy: RetryPolicyMs, failedAttempt: number): number {
  const raw = policy.initialIntervalMs * policy.backoffCoefficient ** Math.max(0, failedAttempt - 1);
  return Math.round(Math.min(raw, policy.maximumIntervalMs));
}

/** Backoff schedule of failing workflow tasks: attempt 2 after `initialMs`, doubling, capped at `maxMs`. */
export interface WorkflowTaskRetry {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_WORKFLOW_TASK_RETRY: WorkflowTaskRetry = { initialMs: 1000, maxMs: 10_000 };

/** Delay before workflow-task attempt `nextAttempt` (>= 2) becomes claimable. */
export function workflowTaskBackoffMs(retry: WorkflowTaskRetry, nextAttempt: number): number {
  return Math.min(retry.initialMs * 2 ** Math.max(0, nextAttempt - 2), retry.maxMs);
}
