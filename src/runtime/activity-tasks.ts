import { type FailureInfo, StaleTokenError } from '../common/errors.js';
import type { ActivityOptionsMs } from '../common/events.js';
import {
  type AttemptOutcome,
  planActivityCanceled,
  planActivityCompleted,
  planActivityFailed,
  planActivityStart,
  planHeartbeat,
} from '../engine/activity-attempt.js';
import type { ActivityRecord, RunRecord, StoreTx } from '../store/store.js';
import { type ClaimSeen, deliver, inTransaction, type PendingWakes, type RuntimeContext } from './context.js';

/** A claimed activity attempt. `token` fences every report about it. */
export interface ActivityTask {
  readonly namespace: string;
  readonly workflowId: string;
  readonly runId: string;
  readonly workflowType?: string;
  readonly scheduledEventId: number;
  readonly activityId: string;
  readonly activityType: string;
  readonly taskQueue: string;
  readonly input: unknown[];
  readonly options: ActivityOptionsMs;
  readonly attempt: number;
  readonly token: number;
  readonly scheduledTime: number;
  readonly startedTime: number;
  /** Details of the last heartbeat recorded by an earlier attempt of this scheduling. */
  readonly heartbeatDetails: unknown;
}

export interface ActivityTaskRef {
  readonly runId: string;
  readonly scheduledEventId: number;
  readonly token: number;
}

export async function claimActivityTasks(
  ctx: RuntimeContext,
  namespace: string,
  taskQueue: string,
  workerId: string,
  limit: number,
  seen?: ClaimSeen,
): Promise<ActivityTask[]> {
  return inTransaction(ctx, async (tx) => {
    const now = ctx.clock.now();
    const found = await tx.findClaimableActivities(namespace, taskQueue, now, limit);
    if (seen) seen.lockedDue = tx.lockedDue();
    const tasks: ActivityTask[] = [];
    for (const a of found) {
      const patch = planActivityStart(a, now, workerId);
      await tx.updateActivity(a.runId, a.scheduledEventId, patch);
      tasks.push(activityTaskOf({ ...a, ...patch }, now));
    }
    return tasks;
  });
}

/** The task a worker runs for an attempt just started at `now`. */
export function activityTaskOf(a: ActivityRecord, now: number): ActivityTask {
  return {
    namespace: a.namespace,
    workflowId: a.workflowId,
    runId: a.runId,
    scheduledEventId: a.scheduledEventId,
    activityId: a.activityId,
    activityType: a.activityType,
    taskQueue: a.taskQueue,
    input: a.input,
    options: a.options,
    attempt: a.attempt,
    token: a.token,
    scheduledTime: a.scheduledTime,
    startedTime: now,
    heartbeatDetails: a.heartbeatDetails,
  };
}

/**
 * The current attempt, or StaleTokenError. Locks the run before the activity: every transaction that
 * touches both takes them in that order (a workflow task's commit does), so they cannot deadlock.
 */
export async function requireCurrentAttempt(
  tx: StoreTx,
  ref: ActivityTaskRef,
): Promise<{ run: RunRecord | undefined; a: ActivityRecord }> {
  const run = await tx.getRun(ref.runId);
  return { run, a: currentAttempt(await tx.getActivity(ref.runId, ref.scheduledEventId), ref) };
}

/**
 * Like requireCurrentAttempt, reading (and locking) all of the run's activities instead of one, in the
 * same read as the run: for a caller that needs the others too (the hot path's commit).
 */
export async function requireCurrentAttemptOfAll(
  tx: StoreTx,
  ref: ActivityTaskRef,
): Promise<{ run: RunRecord | undefined; a: ActivityRecord; all: ActivityRecord[] }> {
  const { run, activities: all } = await tx.getRunWithActivities(ref.runId);
  const a = currentAttempt(
    all.find((x) => x.scheduledEventId === ref.scheduledEventId),
    ref,
  );
  return { run, a, all };
}

function currentAttempt(a: ActivityRecord | undefined, ref: ActivityTaskRef): ActivityRecord {
  if (a?.phase !== 'started' || a.token !== ref.token) {
    throw new StaleTokenError(
      `activity attempt (run ${ref.runId}, scheduled event ${ref.scheduledEventId}, token ${ref.token}) is no longer current; its report was rejected`,
    );
  }
  return a;
}

/** Applies how an attempt ended; `run` is the activity's run as read (and locked) in this transaction. */
async function applyOutcome(
  tx: StoreTx,
  wakes: PendingWakes,
  run: RunRecord | undefined,
  a: ActivityRecord,
  outcome: AttemptOutcome,
  now: number,
): Promise<void> {
  if (outcome.kind === 'retry') {
    await tx.updateActivity(a.runId, a.scheduledEventId, outcome.patch);
    wakes.add({ kind: 'activityTask', namespace: a.namespace, taskQueue: a.taskQueue });
    return;
  }
  await tx.deleteActivity(a.runId, a.scheduledEventId);
  if (run?.status === 'running') await deliver(tx, wakes, run, outcome.events, now);
}

/** Records the result of the current attempt; rejected (StaleTokenError) if the attempt is stale. */
export async function completeActivity(
  ctx: RuntimeContext,
  ref: ActivityTaskRef,
  result: unknown,
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    const { run, a } = await requireCurrentAttempt(tx, ref);
    const now = ctx.clock.now();
    await applyOutcome(tx, wakes, run, a, planActivityCompleted(a, result, now), now);
  });
}

/** Fails the current attempt: retried per the retry policy, or the scheduling fails. */
export async function failActivity(
  ctx: RuntimeContext,
  ref: ActivityTaskRef,
  failure: FailureInfo,
  heartbeatDetails?: unknown,
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    const { run, a } = await requireCurrentAttempt(tx, ref);
    const now = ctx.clock.now();
    const details = heartbeatDetails === undefined ? a.heartbeatDetails : heartbeatDetails;
    await applyOutcome(tx, wakes, run, a, planActivityFailed(a, failure, now, details), now);
  });
}

/** The attempt honoured a cancellation request. */
export async function reportActivityCanceled(
  ctx: RuntimeContext,
  ref: ActivityTaskRef,
  details?: unknown,
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    const { run, a } = await requireCurrentAttempt(tx, ref);
    const now = ctx.clock.now();
    await applyOutcome(tx, wakes, run, a, planActivityCanceled(a, details, now), now);
  });
}

/** Records a heartbeat; tells the activity whether cancellation was requested. */
export async function heartbeatActivity(
  ctx: RuntimeContext,
  ref: ActivityTaskRef,
  details: unknown,
): Promise<{ cancelRequested: boolean }> {
  return inTransaction(ctx, async (tx) => {
    const { a } = await requireCurrentAttempt(tx, ref);
    await tx.updateActivity(a.runId, a.scheduledEventId, planHeartbeat(a, details, ctx.clock.now()));
    return { cancelRequested: a.cancelRequested };
  });
}

export { applyOutcome as applyActivityOutcome };
