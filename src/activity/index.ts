/**
 * The API used inside activity code (`longhaul/activity`). Activities are ordinary async functions that
 * do I/O; they run at least once per scheduling (unless cancelled before they start), so make their
 * effects idempotent, e.g. keyed by `activityInfo().idempotencyKey`.
 */
import { CancelledFailure } from '../common/errors.js';
import { type ActivityInfo, currentActivity } from './context.js';

export {
  ApplicationFailure,
  type ApplicationFailureOptions,
  CancelledFailure,
} from '../common/errors.js';
export type { ActivityInfo } from './context.js';

/** Facts about the current attempt, including the previous attempt's last heartbeat details. */
export function activityInfo(): ActivityInfo {
  return currentActivity('activityInfo').info;
}

/**
 * Records progress. Details are throttled (sent at most about every 80% of the heartbeat timeout; the
 * latest details win) and flushed when the attempt fails, so the next attempt sees them in
 * `activityInfo().heartbeatDetails`. A heartbeat is also how a running activity learns it was cancelled.
 */
export function heartbeat(details?: unknown): void {
  currentActivity('heartbeat').heartbeat(details);
}

/** Aborted when the workflow requests cancellation, the run closes, or the worker shuts down. */
export function cancellationSignal(): AbortSignal {
  return currentActivity('cancellationSignal').signal;
}

/** Sleeps `ms` milliseconds, rejecting with CancelledFailure as soon as the activity is cancelled. */
export function sleep(ms: number): Promise<void> {
  const signal = cancellationSignal();
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new CancelledFailure('activity cancelled'));
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new CancelledFailure('activity cancelled'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
