import type { TimeoutType } from '../common/errors.js';
import type { ActivityOptionsMs } from '../common/events.js';

/** The timing facts of one activity scheduling that its four timeouts are judged on. */
export interface ActivityTiming {
  readonly options: ActivityOptionsMs;
  readonly phase: 'scheduled' | 'started';
  /** When the scheduling was recorded: schedule-to-close counts from here. */
  readonly scheduledTime: number;
  /** When the current attempt became claimable: schedule-to-start counts from here. */
  readonly visibleAt: number;
  readonly startedTime: number | null;
  readonly lastHeartbeatTime: number | null;
}

/**
 * The moment each timeout of the scheduling's current state would fire, or null where it does not apply:
 *   - scheduleToClose: scheduledTime + timeout, across all attempts;
 *   - scheduleToStart: while waiting to be claimed, visibleAt + timeout (each attempt's wait);
 *   - startToClose: while started, startedTime + timeout;
 *   - heartbeat: while started, (last heartbeat, else start) + timeout.
 */
export function activityTimeoutDeadlines(a: ActivityTiming): Record<TimeoutType, number | null> {
  const o = a.options;
  const started = a.phase === 'started' && a.startedTime !== null;
  return {
    scheduleToClose:
      o.scheduleToCloseTimeoutMs !== undefined ? a.scheduledTime + o.scheduleToCloseTimeoutMs : null,
    scheduleToStart:
      !started && o.scheduleToStartTimeoutMs !== undefined ? a.visibleAt + o.scheduleToStartTimeoutMs : null,
    startToClose:
      started && o.startToCloseTimeoutMs !== undefined ? a.startedTime! + o.startToCloseTimeoutMs : null,
    heartbeat:
      started && o.heartbeatTimeoutMs !== undefined
        ? (a.lastHeartbeatTime ?? a.startedTime!) + o.heartbeatTimeoutMs
        : null,
  };
}

/** The earliest moment any timeout of the current state fires; where the sweeper looks next. */
export function activityDeadline(a: ActivityTiming): number | null {
  let min: number | null = null;
  for (const t of Object.values(activityTimeoutDeadlines(a))) {
    if (t !== null && (min === null || t < min)) min = t;
  }
  return min;
}

/** Which timeout fired by `now`, if any; the earliest deadline wins when several passed. */
export function expiredActivityTimeout(a: ActivityTiming, now: number): TimeoutType | null {
  let found: TimeoutType | null = null;
  let at = Number.POSITIVE_INFINITY;
  for (const [type, t] of Object.entries(activityTimeoutDeadlines(a)) as [TimeoutType, number | null][]) {
    if (t !== null && t <= now && t < at) {
      found = type;
      at = t;
    }
  }
  return found;
}

/** Timeouts after which the scheduling may be retried (the others end it). */
export function isRetryableTimeout(t: TimeoutType): boolean {
  return t === 'startToClose' || t === 'heartbeat';
}
