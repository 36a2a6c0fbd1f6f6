import type { WorkflowCommand } from '../common/commands.js';
import type { HistoryEvent, NewEvent } from '../common/events.js';
import { planActivityCompleted } from '../engine/activity-attempt.js';
import type { RunPatch } from '../store/store.js';
import { type ActivityTaskRef, applyActivityOutcome, requireCurrentAttemptOfAll } from './activity-tasks.js';
import { inTransaction, type RuntimeContext } from './context.js';
import { applyCompletion, type CompletionResult, type EagerDispatch } from './workflow-tasks.js';

/**
 * The next workflow task of a run, computed by the worker that holds the run in its cache before the
 * activity result was committed: it fed the workflow the events below (ids from `expectedNextEventId`).
 */
export interface Speculation {
  /** The run's next event id the speculation was computed against (the compare-and-set guard). */
  readonly expectedNextEventId: number;
  /** The last WorkflowTaskCompleted the cached instance committed. */
  readonly expectedLastCompletedTaskEventId: number;
  /** Workflow time of the speculative task. */
  readonly taskTime: number;
  readonly commands: readonly WorkflowCommand[];
  readonly bundleHash: string;
}

export type HotCompletion =
  | ({ readonly kind: 'committed' } & CompletionResult)
  /** The run moved meanwhile: the result was recorded the ordinary way; the speculation is void. */
  | { readonly kind: 'fallback' };

/**
 * The events the hot path appends ahead of the task's own: the activity's ActivityStarted and
 * ActivityCompleted, then WorkflowTaskScheduled and WorkflowTaskStarted of the task that sees them.
 * The worker feeds exactly these (with ids from the run's next event id) to its cached workflow.
 */
export function hotPathEvents(
  activity: { readonly scheduledEventId: number; readonly attempt: number; readonly startedTime: number },
  result: unknown,
  taskQueue: string,
  workerId: string,
  now: number,
  taskTime: number,
  firstEventId: number,
): HistoryEvent[] {
  const id = firstEventId;
  return [
    {
      eventId: id,
      type: 'ActivityStarted',
      time: activity.startedTime,
      attributes: { scheduledEventId: activity.scheduledEventId, attempt: activity.attempt, workerId },
    },
    {
      eventId: id + 1,
      type: 'ActivityCompleted',
      time: now,
      attributes: { scheduledEventId: activity.scheduledEventId, startedEventId: id, result },
    },
    { eventId: id + 2, type: 'WorkflowTaskScheduled', time: now, attributes: { taskQueue, attempt: 1 } },
    {
      eventId: id + 3,
      type: 'WorkflowTaskStarted',
      time: taskTime,
      attributes: { scheduledEventId: id + 2, workerId },
    },
  ];
}

/**
 * The hot path of DESIGN section 4: one transaction records an activity result, the workflow task that
 * sees it and that task's commands. It applies only if nothing happened to the run since the worker's
 * cached instance committed its last task: same next event id (compare-and-set), no task scheduled or
 * running, workflow time not going backwards. Otherwise the result is recorded the ordinary way in the
 * same transaction and a workflow task is scheduled for it ('fallback'). The activity attempt is fenced
 * by its token either way.
 */
export async function completeActivityWithTask(
  ctx: RuntimeContext,
  ref: ActivityTaskRef,
  result: unknown,
  spec: Speculation,
  workerId: string,
  eager: EagerDispatch | undefined,
): Promise<HotCompletion> {
  return inTransaction(ctx, async (tx, wakes) => {
    // The run first, then the activities: the lock order of every transaction that touches both.
    const { run: locked, a, all } = await requireCurrentAttemptOfAll(tx, ref);
    const now = ctx.clock.now();
    const outcome = planActivityCompleted(a, result, now);
    const run = locked;
    if (
      run?.status !== 'running' ||
      run.wftPhase !== 'idle' ||
      run.nextEventId !== spec.expectedNextEventId ||
      run.lastCompletedTaskEventId !== spec.expectedLastCompletedTaskEventId ||
      spec.taskTime < run.wftStartedTime
    ) {
      await applyActivityOutcome(tx, wakes, locked, a, outcome, now);
      return { kind: 'fallback' };
    }
    await tx.deleteActivity(a.runId, a.scheduledEventId);
    const first = run.nextEventId;
    const taskEvents: NewEvent[] = hotPathEvents(
      { scheduledEventId: a.scheduledEventId, attempt: a.attempt, startedTime: a.startedTime ?? now },
      result,
      run.taskQueue,
      a.leaseOwner ?? workerId,
      // These events happened, from the workflow's view, when the worker computed the task.
      spec.taskTime,
      spec.taskTime,
      first,
    ).map(({ eventId: _id, ...e }) => e as NewEvent);
    const started = {
      nextEventId: first + taskEvents.length,
      wftPhase: 'started',
      wftAttempt: 1,
      wftScheduledEventId: first + 2,
      wftStartedEventId: first + 3,
      wftVisibleAt: now,
      wftStartedTime: spec.taskTime,
      wftLeaseOwner: workerId,
      wftLeaseExpiresAt: now + run.workflowTaskTimeoutMs,
      wftToken: run.wftToken + 1,
      wftFailure: null,
    } satisfies RunPatch;
    // The result, the task start and the task's own events go in one append and one run update.
    const completion = await applyCompletion(
      ctx,
      tx,
      wakes,
      { ...run, ...started },
      spec.commands,
      spec.bundleHash,
      workerId,
      eager,
      workerId, // it holds the run in its cache
      {
        events: taskEvents,
        patch: { wftToken: started.wftToken, wftStartedTime: started.wftStartedTime },
        bufferEmpty: true, // nothing is buffered while no task is in flight, and none was (wftPhase idle)
        activities: all.filter((x) => x !== a), // as read and locked above, less the one just deleted
      },
    );
    return { kind: 'committed', ...completion };
  });
}
