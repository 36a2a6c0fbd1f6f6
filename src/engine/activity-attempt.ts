import type { FailureInfo, TimeoutType } from '../common/errors.js';
import type { NewEvent } from '../common/events.js';
import type { ActivityPatch, ActivityRecord } from '../store/store.js';
import { activityDeadline, isRetryableTimeout } from './activity-timeouts.js';
import { decideRetry } from './retry-policy.js';

/**
 * How one attempt of an activity scheduling ends (DESIGN section 4). Retries add no events: a scheduling
 * has one ActivityScheduled and, when it ends, one ActivityStarted (for the attempt that ended it, if it
 * started) plus its ActivityCompleted / ActivityFailed / ActivityTimedOut / ActivityCanceled. The attempt
 * counter, the last failure and the heartbeat details live in the activity row until then.
 */
export type AttemptOutcome =
  | { readonly kind: 'retry'; readonly patch: ActivityPatch }
  | { readonly kind: 'closed'; readonly events: NewEvent[] };

/** A claim of a scheduled attempt: the row's new state. */
export function planActivityStart(a: ActivityRecord, now: number, workerId: string): ActivityPatch {
  const started = { ...a, phase: 'started' as const, startedTime: now, lastHeartbeatTime: null };
  return {
    phase: 'started',
    startedTime: now,
    lastHeartbeatTime: null,
    leaseOwner: workerId,
    token: a.token + 1,
    deadline: activityDeadline(started),
  };
}

/** A heartbeat of the current attempt: records details and pushes out the heartbeat deadline. */
export function planHeartbeat(a: ActivityRecord, details: unknown, now: number): ActivityPatch {
  const next = { ...a, lastHeartbeatTime: now };
  return { lastHeartbeatTime: now, heartbeatDetails: details, deadline: activityDeadline(next) };
}

export function planActivityCompleted(a: ActivityRecord, result: unknown, now: number): AttemptOutcome {
  return {
    kind: 'closed',
    events: [
      startedEvent(a),
      {
        type: 'ActivityCompleted',
        time: now,
        attributes: { scheduledEventId: a.scheduledEventId, startedEventId: 0, result },
      },
    ],
  };
}

export function planActivityCanceled(a: ActivityRecord, details: unknown, now: number): AttemptOutcome {
  const events: NewEvent[] = a.phase === 'started' ? [startedEvent(a)] : [];
  events.push({
    type: 'ActivityCanceled',
    time: now,
    attributes: { scheduledEventId: a.scheduledEventId, startedEventId: 0, details },
  });
  return { kind: 'closed', events };
}

/** The attempt failed with `failure`: retry per policy, or close the scheduling with ActivityFailed. */
export function planActivityFailed(
  a: ActivityRecord,
  failure: FailureInfo,
  now: number,
  heartbeatDetails: unknown,
): AttemptOutcome {
  const decision = decideRetry(a.options.retry, a.attempt, failure, now, scheduleToCloseDeadline(a));
  if (decision.retry)
    return { kind: 'retry', patch: retryPatch(a, failure, now + decision.delayMs, heartbeatDetails) };
  return {
    kind: 'closed',
    events: [
      startedEvent(a),
      {
        type: 'ActivityFailed',
        time: now,
        attributes: {
          scheduledEventId: a.scheduledEventId,
          startedEventId: 0,
          failure,
          retryState: decision.retryState,
        },
      },
    ],
  };
}

/**
 * A timeout fired. Start-to-close and heartbeat timeouts fail the attempt and are retried per policy;
 * schedule-to-start and schedule-to-close timeouts end the scheduling.
 */
export function planActivityTimedOut(
  a: ActivityRecord,
  timeoutType: TimeoutType,
  now: number,
): AttemptOutcome {
  const failure: FailureInfo = {
    kind: 'timeout',
    type: 'TimeoutFailure',
    message: `activity ${a.activityType} timed out (${timeoutType}) on attempt ${a.attempt}`,
    timeoutType,
    lastHeartbeatDetails: a.heartbeatDetails ?? undefined,
    cause: a.lastFailure ?? undefined,
  };
  if (isRetryableTimeout(timeoutType)) {
    const decision = decideRetry(a.options.retry, a.attempt, failure, now, scheduleToCloseDeadline(a));
    if (decision.retry) {
      return { kind: 'retry', patch: retryPatch(a, failure, now + decision.delayMs, a.heartbeatDetails) };
    }
    return { kind: 'closed', events: timedOutEvents(a, timeoutType, failure, decision.retryState, now) };
  }
  return { kind: 'closed', events: timedOutEvents(a, timeoutType, failure, 'timeout', now) };
}

function timedOutEvents(
  a: ActivityRecord,
  timeoutType: TimeoutType,
  failure: FailureInfo,
  retryState: 'timeout' | 'maximumAttemptsReached' | 'nonRetryableFailure' | 'cancelRequested' | 'inProgress',
  now: number,
): NewEvent[] {
  const events: NewEvent[] = a.phase === 'started' ? [startedEvent(a)] : [];
  events.push({
    type: 'ActivityTimedOut',
    time: now,
    attributes: { scheduledEventId: a.scheduledEventId, startedEventId: 0, timeoutType, failure, retryState },
  });
  return events;
}

function retryPatch(
  a: ActivityRecord,
  failure: FailureInfo,
  visibleAt: number,
  details: unknown,
): ActivityPatch {
  const next = {
    ...a,
    phase: 'scheduled' as const,
    visibleAt,
    startedTime: null,
    lastHeartbeatTime: null,
  };
  return {
    phase: 'scheduled',
    attempt: a.attempt + 1,
    visibleAt,
    startedTime: null,
    lastHeartbeatTime: null,
    heartbeatDetails: details,
    lastFailure: failure,
    leaseOwner: null,
    deadline: activityDeadline(next),
  };
}

function scheduleToCloseDeadline(a: ActivityRecord): number | null {
  const t = a.options.scheduleToCloseTimeoutMs;
  return t === undefined ? null : a.scheduledTime + t;
}

/** ActivityStarted for the attempt that ended the scheduling; `startedEventId` of the next event points here. */
function startedEvent(a: ActivityRecord): NewEvent {
  return {
    type: 'ActivityStarted',
    time: a.startedTime ?? a.visibleAt,
    attributes: { scheduledEventId: a.scheduledEventId, attempt: a.attempt, workerId: a.leaseOwner ?? '' },
  };
}

/**
 * Fills `startedEventId` of activity-closing events from the ActivityStarted right before them. Ids are
 * known only when events are appended (buffered events get theirs when the buffer is flushed).
 */
export function linkStartedEventIds(events: readonly NewEvent[], firstEventId: number): NewEvent[] {
  return events.map((e, i) => {
    if (
      e.type !== 'ActivityCompleted' &&
      e.type !== 'ActivityFailed' &&
      e.type !== 'ActivityTimedOut' &&
      e.type !== 'ActivityCanceled'
    ) {
      return e;
    }
    const prev = events[i - 1];
    const startedEventId =
      prev?.type === 'ActivityStarted' && prev.attributes.scheduledEventId === e.attributes.scheduledEventId
        ? firstEventId + i - 1
        : 0;
    return { ...e, attributes: { ...e.attributes, startedEventId } } as NewEvent;
  });
}
