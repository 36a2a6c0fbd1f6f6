import type { Duration } from '../common/duration.js';
import { parseDuration } from '../common/duration.js';
import { currentActivator } from './run-context.js';

/**
 * Sleeps for `duration` of workflow time with a durable timer (command `startTimer`), so the sleep
 * survives restarts. `sleep(0)` is a real 0 ms timer: it still records TimerStarted/TimerFired and
 * resumes in a later workflow task. Rejects with a CancelledFailure when the workflow is cancelled.
 */
export function sleep(duration: Duration): Promise<void> {
  const activator = currentActivator('sleep()');
  let ms: number;
  try {
    ms = parseDuration(duration, 'sleep duration');
  } catch (err) {
    return Promise.reject(err);
  }
  return activator.sleep(ms);
}

/**
 * Waits until `fn()` returns true. `fn` is evaluated now, after every job of an activation, and again
 * whenever the workflow's pending promise callbacks have run, until no condition changes.
 *
 * With `timeout`, resolves `true` when `fn()` became true, or `false` when the timeout (a durable timer)
 * fired first; when the condition wins, the timer is cancelled (command `cancelTimer`). If `fn()` is
 * already true, resolves at once and starts no timer. Rejects with a CancelledFailure when the workflow
 * is cancelled.
 */
export function condition(fn: () => boolean): Promise<void>;
export function condition(fn: () => boolean, timeout: Duration): Promise<boolean>;
export function condition(fn: () => boolean, timeout?: Duration): Promise<unknown> {
  const activator = currentActivator('condition()');
  let ms: number | undefined;
  try {
    ms = timeout === undefined ? undefined : parseDuration(timeout, 'condition timeout');
  } catch (err) {
    return Promise.reject(err);
  }
  const settled = activator.addCondition(fn, ms);
  return timeout === undefined ? settled.then(() => {}) : settled;
}
