import type { WorkflowCommand } from '../common/commands.js';
import { type FailureInfo, StaleTokenError, ValidationError } from '../common/errors.js';
import type { HistoryEvent, NewEvent, WorkflowTaskFailedCause } from '../common/events.js';
import { LIMITS } from '../common/ids.js';
import { planActivityStart } from '../engine/activity-attempt.js';
import { type CompletionPlan, planClaim, planCompletion, planFailure } from '../engine/workflow-task.js';
import type { ActivityRecord, RunPatch, RunRecord, StoreTx } from '../store/store.js';
import { type ActivityTask, activityTaskOf } from './activity-tasks.js';
import {
  appendEvents,
  asStored,
  type ClaimSeen,
  inTransaction,
  type PendingWakes,
  patchRun,
  type RuntimeContext,
  SINGLE_READ,
} from './context.js';

/** A claimed workflow task: what a worker needs to run it, plus its fencing token. */
export interface WorkflowTask {
  readonly namespace: string;
  readonly workflowId: string;
  readonly runId: string;
  readonly workflowType: string;
  readonly taskQueue: string;
  readonly token: number;
  readonly attempt: number;
  /** Workflow time of this task. */
  readonly startedTime: number;
  readonly runStartTime: number;
  /** Event id of the last WorkflowTaskCompleted: a cached run that committed it may skip replay. */
  readonly lastCompletedTaskEventId: number;
  /** History length when claimed (the task's events are all below this). */
  readonly historyLength: number;
  readonly memo: Record<string, unknown> | null;
  readonly searchAttributes: Record<string, unknown> | null;
  /**
   * The run's latest events as the claiming transaction wrote them, consecutive up to the task's
   * WorkflowTaskStarted: the whole history for an eager start, the fire and the task's events for a
   * fired timer's. A worker whose instance has seen every event before the first of them feeds these
   * instead of reading them back. Attributes went through JSON, as a store returns them.
   */
  readonly history?: readonly HistoryEvent[];
}

/**
 * Claims up to `limit` visible workflow tasks of a queue, each with a lease and a new token. Sticky
 * routing: a task of a run another worker holds in its cache is left to that worker for
 * `stickyFallbackMs` after it became visible; then anyone may take it (the sticky worker may be gone).
 */
export async function claimWorkflowTasks(
  ctx: RuntimeContext,
  namespace: string,
  taskQueue: string,
  workerId: string,
  limit: number,
  stickyFallbackMs = 0,
  seen?: ClaimSeen,
): Promise<WorkflowTask[]> {
  return inTransaction(ctx, async (tx) => {
    const now = ctx.clock.now();
    const claimant = { workerId, othersVisibleBy: now - stickyFallbackMs };
    const runs = await tx.findClaimableWorkflowTasks(namespace, taskQueue, now, limit, claimant);
    if (seen) seen.lockedDue = tx.lockedDue();
    const tasks: WorkflowTask[] = [];
    for (const run of runs) tasks.push(await claimTask(tx, run, now, workerId));
    return tasks;
  });
}

/** Claims one scheduled task of `run` inside a transaction: records its start and takes its lease. */
export async function claimTask(
  tx: StoreTx,
  run: RunRecord,
  now: number,
  workerId: string,
  /** Events this transaction appended to the run just before (they go to the worker with the task). */
  lead: readonly HistoryEvent[] = [],
): Promise<WorkflowTask> {
  const plan = planClaim(run, now, workerId);
  const started = await appendEvents(tx, run.runId, run.nextEventId, plan.events);
  await tx.updateRun(run.runId, plan.patch);
  return { ...claimedTask(run, plan), history: asStored([...lead, ...started]) };
}

/** The task a claim planned by `planClaim(run, ...)` hands to its worker. */
export function claimedTask(run: RunRecord, plan: ReturnType<typeof planClaim>): WorkflowTask {
  return {
    namespace: run.namespace,
    workflowId: run.workflowId,
    runId: run.runId,
    workflowType: run.workflowType,
    taskQueue: run.taskQueue,
    token: plan.patch.wftToken,
    attempt: run.wftAttempt,
    startedTime: plan.patch.wftStartedTime,
    runStartTime: run.startTime,
    lastCompletedTaskEventId: run.lastCompletedTaskEventId,
    historyLength: run.nextEventId - 1 + plan.events.length,
    memo: run.memo,
    searchAttributes: run.searchAttributes,
  };
}

/** Events of a run from `fromEventId` on; what a worker replays. */
export async function readEvents(
  ctx: RuntimeContext,
  runId: string,
  fromEventId: number,
): Promise<HistoryEvent[]> {
  return ctx.store.read((tx) => tx.readEvents(runId, fromEventId), SINGLE_READ);
}

async function requireCurrentTask(tx: StoreTx, runId: string, token: number): Promise<RunRecord> {
  return currentTask(await tx.getRun(runId), runId, token);
}

function currentTask(run: RunRecord | undefined, runId: string, token: number): RunRecord {
  if (run?.status !== 'running' || run.wftPhase !== 'started' || run.wftToken !== token) {
    throw new StaleTokenError(
      `workflow task of run ${runId} with token ${token} is no longer current${run ? ` (run ${run.status}, task ${run.wftPhase}, token ${run.wftToken})` : ''}; its result was discarded`,
    );
  }
  return run;
}

export interface CompletionResult {
  readonly outcome: 'committed' | 'discarded';
  /** Id of the WorkflowTaskCompleted event (0 when discarded). */
  readonly completedEventId: number;
  /** The run's next event id after this commit. */
  readonly nextEventId: number;
  /** The events this commit appended, with their ids. */
  readonly events: readonly HistoryEvent[];
  /** Activities started in this commit for the completing worker to run at once (eager dispatch). */
  readonly eagerActivities: readonly ActivityTask[];
  /**
   * When the run will next wake by itself if nothing comes from outside: now when an activity is pending,
   * else its earliest timer, else null (only a signal or cancellation can wake it).
   */
  readonly nextWakeAt: number | null;
}

/** A worker that can run activities of its queue right away: they are started in the scheduling commit. */
export interface EagerDispatch {
  readonly namespace: string;
  readonly taskQueue: string;
  readonly workerId: string;
  /** How many activities it can start now. */
  readonly slots: number;
}

/**
 * Commits a workflow task's commands, fenced by its token: the commands become events and pending
 * state, buffered events are appended, and the next task is scheduled if anything is waiting. A task
 * that would close the run while signals wait is discarded instead (DESIGN section 4).
 */
export async function completeWorkflowTask(
  ctx: RuntimeContext,
  runId: string,
  token: number,
  commands: readonly WorkflowCommand[],
  bundleHash: string,
  workerId: string,
  eager?: EagerDispatch,
  /** The worker that keeps the run cached and should get its next task (null: no preference). */
  stickyWorker: string | null = null,
): Promise<CompletionResult> {
  return inTransaction(ctx, async (tx, wakes) => {
    // The run and its activities in one read (both are needed, and locked in that order).
    const read = await tx.getRunWithActivities(runId);
    const run = currentTask(read.run, runId, token);
    return applyCompletion(ctx, tx, wakes, run, commands, bundleHash, workerId, eager, stickyWorker, {
      events: [],
      patch: {},
      activities: read.activities,
    });
  });
}

/** The commit of a started workflow task inside a transaction; shared by the ordinary and the hot path. */
export async function applyCompletion(
  ctx: RuntimeContext,
  tx: StoreTx,
  wakes: PendingWakes,
  run: RunRecord,
  commands: readonly WorkflowCommand[],
  bundleHash: string,
  workerId: string,
  eager: EagerDispatch | undefined,
  stickyWorker: string | null,
  /**
   * Events and run fields of the same commit that precede the task's own (the hot path's activity
   * result and task start): written with them in one append and one run update. `run` already counts
   * the events (its nextEventId is past them).
   */
  lead: {
    readonly events: readonly NewEvent[];
    readonly patch: RunPatch;
    readonly bufferEmpty?: boolean;
    /** The run's activities as this transaction already read and locked them (after its own writes). */
    readonly activities?: readonly ActivityRecord[];
  } = {
    events: [],
    patch: {},
  },
): Promise<CompletionResult> {
  const runId = run.runId;
  const now = ctx.clock.now();
  // The hot path knows the buffer is empty (the run had no task in flight); the timers matter only to
  // cancel one, or to tell when a run with no activity pending wakes next (read after the writes).
  const buffered = lead.bufferEmpty ? [] : await tx.listBuffered(runId);
  const activities = lead.activities ?? (await tx.listActivities(runId));
  const timers = commands.some((c) => c.type === 'cancelTimer') ? await tx.listTimers(runId) : [];
  const pending = new Map(activities.map((a) => [a.activityId, a]));
  const closedActivityEventIds = await scheduledEventIdsOfClosed(tx, run, commands, pending);
  const plan = planCompletion({
    run,
    commands,
    buffered,
    activities: pending,
    closedActivityEventIds,
    timers: new Map(timers.map((t) => [t.timerKey, t])),
    now,
    workerId,
    bundleHash,
  });
  const pendingAfter = activities.length - plan.deleteActivities.length + plan.insertActivities.length;
  if (!plan.closed && plan.insertActivities.length > 0 && pendingAfter > LIMITS.pendingActivities) {
    // Thrown before anything is written: the worker fails the task with this reason, history unchanged.
    throw new ValidationError(
      'scheduleActivity',
      `the workflow would have ${pendingAfter} pending activities; the limit is ${LIMITS.pendingActivities}. Await some before scheduling more`,
    );
  }
  const first = run.nextEventId - lead.events.length;
  const events = await appendEvents(tx, runId, first, [...lead.events, ...plan.events]);
  await tx.updateRun(runId, {
    ...lead.patch,
    ...plan.patch,
    stickyWorker: plan.closed ? null : stickyWorker,
  });
  if (plan.bufferedUpTo > 0) await tx.deleteBuffered(runId, plan.bufferedUpTo);
  const eagerActivities: ActivityTask[] = [];
  if (plan.closed) {
    await tx.deleteRunState(runId);
    for (const a of activities) {
      if (a.phase === 'started')
        wakes.add({ kind: 'activityCancel', runId, scheduledEventId: a.scheduledEventId });
    }
  } else {
    let slots = eager?.slots ?? 0;
    for (const scheduled of plan.insertActivities) {
      if (
        eager &&
        slots > 0 &&
        scheduled.namespace === eager.namespace &&
        scheduled.taskQueue === eager.taskQueue
      ) {
        // Eager dispatch: started in the same commit as scheduled, so schedule-to-start is zero.
        slots--;
        const started = { ...scheduled, ...planActivityStart(scheduled, now, eager.workerId) };
        await tx.insertActivity(started);
        eagerActivities.push(activityTaskOf(started, now));
        continue;
      }
      await tx.insertActivity(scheduled);
      wakes.add({ kind: 'activityTask', namespace: scheduled.namespace, taskQueue: scheduled.taskQueue });
    }
    for (const id of plan.deleteActivities) await tx.deleteActivity(runId, id);
    for (const id of plan.cancelActivities) {
      await tx.updateActivity(runId, id, { cancelRequested: true });
      wakes.add({ kind: 'activityCancel', runId, scheduledEventId: id });
    }
    for (const t of plan.insertTimers) {
      await tx.insertTimer(t);
      wakes.add({ kind: 'timer', fireAt: t.fireAt });
    }
    for (const key of plan.deleteTimers) await tx.deleteTimer(runId, key);
  }
  if (plan.patch.wftPhase === 'scheduled') {
    wakes.add({ kind: 'workflowTask', namespace: run.namespace, taskQueue: run.taskQueue });
  }
  if (plan.closed) wakes.add({ kind: 'runClosed', runId });
  return {
    outcome: plan.outcome,
    completedEventId: plan.completedEventId,
    nextEventId: plan.patch.nextEventId ?? run.nextEventId,
    events,
    eagerActivities,
    nextWakeAt: plan.closed ? null : await nextWake(tx, runId, now, activities.length, plan),
  };
}

/** When the run next wakes by itself; reads its timers (as written by this commit) only if it must. */
async function nextWake(
  tx: StoreTx,
  runId: string,
  now: number,
  activitiesBefore: number,
  plan: CompletionPlan,
): Promise<number | null> {
  const pending = activitiesBefore - plan.deleteActivities.length + plan.insertActivities.length;
  if (pending > 0 || plan.patch.wftPhase === 'scheduled') return now;
  let at: number | null = null;
  for (const t of await tx.listTimers(runId)) {
    if (at === null || t.fireAt < at) at = t.fireAt;
  }
  return at;
}

/** Cancelling an activity whose result is already in: its scheduled event id comes from history. */
async function scheduledEventIdsOfClosed(
  tx: StoreTx,
  run: RunRecord,
  commands: readonly WorkflowCommand[],
  pending: ReadonlyMap<string, unknown>,
): Promise<Map<string, number>> {
  const wanted = commands
    .filter((c) => c.type === 'requestCancelActivity' && !pending.has(String(c.seq)))
    .map((c) => String((c as { seq: number }).seq));
  const found = new Map<string, number>();
  if (wanted.length === 0) return found;
  for (const e of await tx.readEvents(run.runId, 1)) {
    if (e.type === 'ActivityScheduled' && wanted.includes(e.attributes.activityId)) {
      found.set(e.attributes.activityId, e.eventId);
    }
  }
  return found;
}

/**
 * Fails a workflow task, fenced by its token: the workflow does not close; the task is retried with
 * backoff, and only its first failure is recorded in history.
 */
export async function failWorkflowTask(
  ctx: RuntimeContext,
  runId: string,
  token: number,
  cause: WorkflowTaskFailedCause,
  failure: FailureInfo,
  workerId: string,
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    const run = await requireCurrentTask(tx, runId, token);
    await applyFailure(ctx, tx, wakes, run, cause, failure, workerId);
  });
}

/** Shared by task failures and lease expiry (a worker died or stalled mid-task). */
export async function applyFailure(
  ctx: RuntimeContext,
  tx: StoreTx,
  wakes: PendingWakes,
  run: RunRecord,
  cause: WorkflowTaskFailedCause | 'TimedOut',
  failure: FailureInfo,
  workerId: string,
): Promise<void> {
  const buffered = await tx.listBuffered(run.runId);
  const plan = planFailure({
    run,
    cause,
    failure,
    buffered,
    now: ctx.clock.now(),
    workerId,
    retry: ctx.workflowTaskRetry,
  });
  await appendEvents(tx, run.runId, run.nextEventId, plan.events);
  // The failing worker dropped its copy: the retry goes to whoever is free.
  await patchRun(tx, run, { ...plan.patch, stickyWorker: null });
  if (plan.bufferedUpTo > 0) await tx.deleteBuffered(run.runId, plan.bufferedUpTo);
  // A retry that is claimable now (a timed-out task) wakes the pollers; backed-off ones are polled for.
  if ((plan.patch.wftVisibleAt ?? Number.POSITIVE_INFINITY) <= ctx.clock.now()) {
    wakes.add({ kind: 'workflowTask', namespace: run.namespace, taskQueue: run.taskQueue });
  }
}
