import { isClosingCommand, type WorkflowCommand } from '../common/commands.js';
import type { FailureInfo } from '../common/errors.js';
import type { NewEvent, WorkflowTaskFailedCause } from '../common/events.js';
import type {
  ActivityRecord,
  BufferedEvent,
  RunPatch,
  RunRecord,
  RunStatus,
  TimerRecord,
} from '../store/store.js';
import { activityDeadline } from './activity-timeouts.js';
import { type WorkflowTaskRetry, workflowTaskBackoffMs } from './retry-policy.js';

/**
 * The workflow-task state machine of one run (DESIGN section 4), as pure functions over stored state.
 *
 *   idle ──(new event)──▶ scheduled ──(claim)──▶ started ──(complete)──▶ idle | scheduled (buffer held events)
 *                          ▲                        │
 *                          └──(fail / time out: retry with backoff, attempt+1)─┘
 *
 * - Attempt 1 of a task is recorded (WorkflowTaskScheduled/Started, then Completed, Failed or TimedOut).
 *   Retries of a failing task are not recorded until one completes, so a task failing for days does not
 *   grow history; the attempt count and last failure live in the run row.
 * - While a task is started, events that arrive go to the run's durable buffer; they are appended after
 *   the task ends, and a new task is scheduled for them.
 * - A task whose commands would close the run while the buffer holds signals is discarded (recorded as
 *   WorkflowTaskFailed with cause UnhandledSignal) and the workflow is activated again with the signals.
 * - Every result carries the fencing token of its claim; the runtime rejects a stale one before planning.
 */

/** What claiming a scheduled task changes. */
export function planClaim(
  run: RunRecord,
  now: number,
  workerId: string,
): { readonly events: NewEvent[]; readonly patch: RunPatch & { wftToken: number; wftStartedTime: number } } {
  // Workflow time never goes backwards within a run, even if the clock does.
  const startedTime = Math.max(now, run.wftStartedTime);
  const recorded = run.wftAttempt === 1;
  const events: NewEvent[] = recorded
    ? [
        {
          type: 'WorkflowTaskStarted',
          time: startedTime,
          attributes: { scheduledEventId: run.wftScheduledEventId, workerId },
        },
      ]
    : [];
  return {
    events,
    patch: {
      wftPhase: 'started',
      wftStartedEventId: recorded ? run.nextEventId : 0,
      wftStartedTime: startedTime,
      wftLeaseOwner: workerId,
      wftLeaseExpiresAt: now + run.workflowTaskTimeoutMs,
      wftToken: run.wftToken + 1,
      nextEventId: run.nextEventId + events.length,
    },
  };
}

/**
 * Delivery of events from outside the task (signals, activity results, timer fires, cancel requests):
 * buffered while a task is started, else appended, scheduling a task if none is.
 */
export function planDelivery(
  run: RunRecord,
  incoming: readonly NewEvent[],
  now: number,
): { readonly buffer: readonly NewEvent[]; readonly events: NewEvent[]; readonly patch: RunPatch } {
  if (run.wftPhase === 'started') return { buffer: incoming, events: [], patch: {} };
  const events = [...incoming];
  let patch: RunPatch = {};
  if (run.wftPhase === 'idle') {
    const scheduledEventId = run.nextEventId + events.length;
    events.push(workflowTaskScheduled(run, now));
    patch = scheduledPatch(scheduledEventId, now);
  }
  return { buffer: [], events, patch: { ...patch, nextEventId: run.nextEventId + events.length } };
}

function workflowTaskScheduled(run: RunRecord, now: number): NewEvent {
  return { type: 'WorkflowTaskScheduled', time: now, attributes: { taskQueue: run.taskQueue, attempt: 1 } };
}

function scheduledPatch(scheduledEventId: number, now: number): RunPatch {
  return {
    wftPhase: 'scheduled',
    wftAttempt: 1,
    wftScheduledEventId: scheduledEventId,
    wftStartedEventId: 0,
    wftVisibleAt: now,
    wftLeaseOwner: null,
    wftLeaseExpiresAt: 0,
    wftFailure: null,
  };
}

export interface CompletionInput {
  readonly run: RunRecord;
  readonly commands: readonly WorkflowCommand[];
  readonly buffered: readonly BufferedEvent[];
  /** Pending activity schedulings of the run, by activity id. */
  readonly activities: ReadonlyMap<string, ActivityRecord>;
  /** Scheduled event ids of activities no longer pending (needed only to cancel them). */
  readonly closedActivityEventIds: ReadonlyMap<string, number>;
  readonly timers: ReadonlyMap<string, TimerRecord>;
  readonly now: number;
  readonly workerId: string;
  readonly bundleHash: string;
}

export interface CompletionPlan {
  readonly outcome: 'committed' | 'discarded';
  /** Events to append from run.nextEventId on. */
  readonly events: NewEvent[];
  readonly patch: RunPatch;
  readonly insertActivities: ActivityRecord[];
  readonly deleteActivities: number[];
  /** Started activities to mark cancel-requested (their worker learns at the next heartbeat). */
  readonly cancelActivities: number[];
  readonly insertTimers: TimerRecord[];
  readonly deleteTimers: string[];
  /** The run closed: its pending state (activities, timers, buffer) is deleted. */
  readonly closed: boolean;
  /** Id of the WorkflowTaskCompleted event (0 when discarded). */
  readonly completedEventId: number;
  /** Buffered events consumed: delete up to this seq. */
  readonly bufferedUpTo: number;
}

/** Plans the commit of a completed workflow task: its commands become events and pending state. */
export function planCompletion(input: CompletionInput): CompletionPlan {
  const { run, commands, buffered, now } = input;
  const events: NewEvent[] = [];
  let nextId = run.nextEventId;
  const push = (e: NewEvent): number => {
    events.push(e);
    return nextId++;
  };
  const bufferedUpTo = buffered.length > 0 ? buffered[buffered.length - 1]!.seq : 0;
  const taskIds = materialiseTask(run, push);

  const closing = commands.some(isClosingCommand);
  const signalsWaiting = buffered.some((b) => b.event.type === 'SignalReceived');
  if (closing && signalsWaiting) {
    push({
      type: 'WorkflowTaskFailed',
      time: now,
      attributes: {
        ...taskIds,
        workerId: input.workerId,
        cause: 'UnhandledSignal',
        failure: {
          kind: 'application',
          type: 'UnhandledSignal',
          message: 'the workflow tried to close while signals were waiting; it is activated again with them',
        },
      },
    });
    for (const b of buffered) push(b.event);
    const scheduledEventId = push(workflowTaskScheduled(run, now));
    return {
      outcome: 'discarded',
      events,
      patch: { ...scheduledPatch(scheduledEventId, now), nextEventId: nextId },
      insertActivities: [],
      deleteActivities: [],
      cancelActivities: [],
      insertTimers: [],
      deleteTimers: [],
      closed: false,
      completedEventId: 0,
      bufferedUpTo,
    };
  }

  const completedEventId = push({
    type: 'WorkflowTaskCompleted',
    time: now,
    attributes: { ...taskIds, workerId: input.workerId, bundleHash: input.bundleHash },
  });
  const insertActivities: ActivityRecord[] = [];
  const deleteActivities: number[] = [];
  const cancelActivities: number[] = [];
  const insertTimers: TimerRecord[] = [];
  const deleteTimers: string[] = [];
  /** Events caused by this task's commands that the workflow must see in its next activation. */
  const followUps: NewEvent[] = [];
  let closeStatus: RunStatus | null = null;

  for (const c of commands) {
    if (closeStatus) break; // nothing after a closing command takes effect
    switch (c.type) {
      case 'scheduleActivity': {
        const activityId = String(c.seq);
        const taskQueue = c.taskQueue ?? run.taskQueue;
        const scheduledEventId = push({
          type: 'ActivityScheduled',
          time: now,
          attributes: {
            activityId,
            activityType: c.activityType,
            taskQueue,
            input: c.input,
            options: c.options,
            workflowTaskCompletedEventId: completedEventId,
          },
        });
        const timing = {
          options: c.options,
          phase: 'scheduled' as const,
          scheduledTime: now,
          visibleAt: now,
        };
        insertActivities.push({
          namespace: run.namespace,
          workflowId: run.workflowId,
          runId: run.runId,
          scheduledEventId,
          activityId,
          activityType: c.activityType,
          taskQueue,
          input: c.input,
          options: c.options,
          phase: 'scheduled',
          attempt: 1,
          scheduledTime: now,
          visibleAt: now,
          startedTime: null,
          lastHeartbeatTime: null,
          heartbeatDetails: null,
          lastFailure: null,
          cancelRequested: false,
          leaseOwner: null,
          token: 0,
          deadline: activityDeadline({ ...timing, startedTime: null, lastHeartbeatTime: null }),
        });
        break;
      }
      case 'requestCancelActivity': {
        const activityId = String(c.seq);
        const fresh = insertActivities.findIndex((a) => a.activityId === activityId);
        const pending = input.activities.get(activityId);
        const scheduledEventId =
          fresh >= 0
            ? insertActivities[fresh]!.scheduledEventId
            : (pending?.scheduledEventId ?? input.closedActivityEventIds.get(activityId) ?? 0);
        push({ type: 'ActivityCancelRequested', time: now, attributes: { scheduledEventId } });
        if (fresh >= 0) {
          insertActivities.splice(fresh, 1);
          followUps.push(activityCanceled(scheduledEventId, now));
        } else if (pending?.phase === 'scheduled') {
          // Never started, so it never will: cancelled at once.
          deleteActivities.push(pending.scheduledEventId);
          followUps.push(activityCanceled(pending.scheduledEventId, now));
        } else if (pending) {
          cancelActivities.push(pending.scheduledEventId);
        }
        break;
      }
      case 'startTimer': {
        const timerId = String(c.seq);
        const startedEventId = push({
          type: 'TimerStarted',
          time: now,
          attributes: { timerId, durationMs: c.durationMs },
        });
        insertTimers.push({
          namespace: run.namespace,
          runId: run.runId,
          timerKey: timerId,
          kind: 'user',
          fireAt: now + c.durationMs,
          startedEventId,
        });
        break;
      }
      case 'cancelTimer': {
        const timerId = String(c.seq);
        const fresh = insertTimers.findIndex((t) => t.timerKey === timerId);
        const startedEventId =
          fresh >= 0 ? insertTimers[fresh]!.startedEventId : (input.timers.get(timerId)?.startedEventId ?? 0);
        push({ type: 'TimerCanceled', time: now, attributes: { timerId, startedEventId } });
        if (fresh >= 0) insertTimers.splice(fresh, 1);
        else deleteTimers.push(timerId);
        break;
      }
      case 'completeWorkflow':
        push({ type: 'WorkflowCompleted', time: now, attributes: { result: c.result } });
        closeStatus = 'completed';
        break;
      case 'failWorkflow':
        push({ type: 'WorkflowFailed', time: now, attributes: { failure: c.failure } });
        closeStatus = 'failed';
        break;
      case 'cancelWorkflow':
        push({ type: 'WorkflowCanceled', time: now, attributes: {} });
        closeStatus = 'canceled';
        break;
    }
  }

  const base = {
    wftAttempt: 1,
    wftScheduledEventId: 0,
    wftStartedEventId: 0,
    wftLeaseOwner: null,
    wftLeaseExpiresAt: 0,
    wftFailure: null,
    lastCompletedTaskEventId: completedEventId,
  } satisfies RunPatch;

  if (closeStatus) {
    return {
      outcome: 'committed',
      events,
      patch: { ...base, wftPhase: 'idle', status: closeStatus, closeTime: now, nextEventId: nextId },
      insertActivities: [],
      deleteActivities: [],
      cancelActivities: [],
      insertTimers: [],
      deleteTimers: [],
      closed: true,
      completedEventId,
      bufferedUpTo,
    };
  }

  for (const e of followUps) push(e);
  for (const b of buffered) push(b.event);
  let patch: RunPatch = { ...base, wftPhase: 'idle' };
  if (followUps.length > 0 || buffered.length > 0) {
    const scheduledEventId = push(workflowTaskScheduled(run, now));
    patch = { ...base, ...scheduledPatch(scheduledEventId, now) };
  }
  return {
    outcome: 'committed',
    events,
    patch: { ...patch, nextEventId: nextId },
    insertActivities,
    deleteActivities,
    cancelActivities,
    insertTimers,
    deleteTimers,
    closed: false,
    completedEventId,
    bufferedUpTo,
  };
}

/**
 * Plans a failed or timed-out workflow task: a failure is retried with backoff, a timeout at once; only
 * attempt 1 is recorded.
 */
export function planFailure(input: {
  readonly run: RunRecord;
  readonly cause: WorkflowTaskFailedCause | 'TimedOut';
  readonly failure: FailureInfo;
  readonly buffered: readonly BufferedEvent[];
  readonly now: number;
  readonly workerId: string;
  readonly retry: WorkflowTaskRetry;
}): { readonly events: NewEvent[]; readonly patch: RunPatch; readonly bufferedUpTo: number } {
  const { run, now } = input;
  const events: NewEvent[] = [];
  if (run.wftAttempt === 1) {
    const ids = { scheduledEventId: run.wftScheduledEventId, startedEventId: run.wftStartedEventId };
    events.push(
      input.cause === 'TimedOut'
        ? { type: 'WorkflowTaskTimedOut', time: now, attributes: ids }
        : {
            type: 'WorkflowTaskFailed',
            time: now,
            attributes: { ...ids, workerId: input.workerId, cause: input.cause, failure: input.failure },
          },
    );
  }
  for (const b of input.buffered) events.push(b.event);
  const nextAttempt = run.wftAttempt + 1;
  return {
    events,
    bufferedUpTo: input.buffered.length > 0 ? input.buffered[input.buffered.length - 1]!.seq : 0,
    patch: {
      wftPhase: 'scheduled',
      wftAttempt: nextAttempt,
      wftScheduledEventId: 0,
      wftStartedEventId: 0,
      // A timed-out task already waited its whole timeout (its worker died or stalled): retry at once.
      wftVisibleAt: input.cause === 'TimedOut' ? now : now + workflowTaskBackoffMs(input.retry, nextAttempt),
      wftLeaseOwner: null,
      wftLeaseExpiresAt: 0,
      wftFailure: input.failure,
      nextEventId: run.nextEventId + events.length,
    },
  };
}

/**
 * A retried task (attempt 2+) was not recorded when it started; on completion its Scheduled and Started
 * events are written first, so history shows exactly one task that completed.
 */
function materialiseTask(
  run: RunRecord,
  push: (e: NewEvent) => number,
): { scheduledEventId: number; startedEventId: number } {
  if (run.wftAttempt === 1) {
    return { scheduledEventId: run.wftScheduledEventId, startedEventId: run.wftStartedEventId };
  }
  const t = run.wftStartedTime;
  const scheduledEventId = push({
    type: 'WorkflowTaskScheduled',
    time: t,
    attributes: { taskQueue: run.taskQueue, attempt: run.wftAttempt },
  });
  const startedEventId = push({
    type: 'WorkflowTaskStarted',
    time: t,
    attributes: { scheduledEventId, workerId: run.wftLeaseOwner ?? '' },
  });
  return { scheduledEventId, startedEventId };
}

function activityCanceled(scheduledEventId: number, now: number): NewEvent {
  return { type: 'ActivityCanceled', time: now, attributes: { scheduledEventId, startedEventId: 0 } };
}
