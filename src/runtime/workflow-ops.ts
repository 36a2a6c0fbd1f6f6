import {
  type FailureInfo,
  ValidationError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
} from '../common/errors.js';
import type { HistoryEvent, NewEvent } from '../common/events.js';
import { LIMITS } from '../common/ids.js';
import { planClaim, planDelivery } from '../engine/workflow-task.js';
import type { RunRecord, RunStatus, StoreReader, StoreTx } from '../store/store.js';
import {
  appendEvents,
  asStored,
  deliver,
  inTransaction,
  type PendingWakes,
  patchRun,
  type RuntimeContext,
} from './context.js';
import { claimedTask, type WorkflowTask } from './workflow-tasks.js';

export type IdConflictPolicy = 'fail' | 'useExisting' | 'terminateExisting';
export type IdReusePolicy = 'allowDuplicate' | 'allowDuplicateFailedOnly' | 'rejectDuplicate';

/** A validated start request (the client validates user input into this). */
export interface StartRequest {
  readonly namespace: string;
  readonly workflowId: string;
  readonly workflowType: string;
  readonly taskQueue: string;
  readonly args: unknown[];
  readonly workflowExecutionTimeoutMs?: number | undefined;
  readonly workflowRunTimeoutMs?: number | undefined;
  readonly workflowTaskTimeoutMs: number;
  readonly expectedMaxDurationMs?: number | undefined;
  readonly memo?: Record<string, unknown> | undefined;
  readonly searchAttributes?: Record<string, unknown> | undefined;
  readonly idConflictPolicy: IdConflictPolicy;
  readonly idReusePolicy: IdReusePolicy;
  readonly requestId?: string | undefined;
  /** signalWithStart: the signal recorded with the start (or sent to the open run). */
  readonly signal?: { readonly name: string; readonly args: unknown[] } | undefined;
}

export interface StartResult {
  readonly runId: string;
  /** False when an open run was used (useExisting, signalWithStart) or the request id was seen before. */
  readonly created: boolean;
}

/**
 * Starts a run. Exactly one run per workflow id is open at a time (the store enforces it); the id
 * conflict policy says what happens when one is, the id reuse policy what happens when a closed one
 * exists. A request id already seen returns the run it started: a retried start is a no-op.
 */
export async function startWorkflow(ctx: RuntimeContext, req: StartRequest): Promise<StartResult> {
  // Eager start: a worker of this process polling the queue gets the first task claimed in this commit.
  const local = ctx.localWorkers.reserve(req.namespace, req.taskQueue);
  let eagerTask: WorkflowTask | undefined;
  try {
    const result = await inTransaction(ctx, async (tx, wakes) => {
      const started = await startInTransaction(ctx, tx, wakes, req, local?.workerId);
      eagerTask = started.task;
      return started.result;
    });
    if (local && eagerTask) local.run(eagerTask);
    else local?.release();
    return result;
  } catch (err) {
    local?.release();
    throw err;
  }
}

async function startInTransaction(
  ctx: RuntimeContext,
  tx: StoreTx,
  wakes: PendingWakes,
  req: StartRequest,
  /** A worker of this process that takes the first workflow task in this same commit (eager start). */
  claimFor?: string,
): Promise<{ result: StartResult; task?: WorkflowTask }> {
  {
    const now = ctx.clock.now();
    if (req.requestId) {
      const seen = await tx.getRequest(req.namespace, req.requestId);
      if (seen) return { result: { runId: seen.runId, created: false } };
    }
    const open = await tx.findOpenRun(req.namespace, req.workflowId);
    if (open) {
      if (req.signal) {
        await signalRun(tx, wakes, open, req.signal.name, req.signal.args, req.requestId, now);
        return { result: { runId: open.runId, created: false } };
      }
      if (req.idConflictPolicy === 'useExisting') return { result: { runId: open.runId, created: false } };
      if (req.idConflictPolicy === 'fail')
        throw new WorkflowExecutionAlreadyStartedError(req.workflowId, open.runId);
      await closeRun(
        tx,
        wakes,
        open,
        'terminated',
        {
          type: 'WorkflowTerminated',
          time: now,
          attributes: { reason: 'terminated by a start with idConflictPolicy terminateExisting' },
        },
        now,
      );
    } else if (req.idReusePolicy !== 'allowDuplicate') {
      const last = await tx.findRun(req.namespace, req.workflowId);
      if (last && (req.idReusePolicy === 'rejectDuplicate' || last.status === 'completed')) {
        throw new WorkflowExecutionAlreadyStartedError(req.workflowId, last.runId);
      }
    }
    const runId = ctx.newId();
    const run: RunRecord = {
      namespace: req.namespace,
      workflowId: req.workflowId,
      runId,
      workflowType: req.workflowType,
      taskQueue: req.taskQueue,
      status: 'running',
      nextEventId: 1,
      startTime: now,
      closeTime: null,
      requestId: req.requestId ?? null,
      workflowTaskTimeoutMs: req.workflowTaskTimeoutMs,
      cancelRequested: false,
      memo: req.memo ?? null,
      searchAttributes: req.searchAttributes ?? null,
      lastCompletedTaskEventId: 0,
      wftPhase: 'idle',
      wftAttempt: 1,
      wftScheduledEventId: 0,
      wftStartedEventId: 0,
      wftVisibleAt: now,
      wftStartedTime: now,
      wftLeaseOwner: null,
      wftLeaseExpiresAt: 0,
      wftToken: 0,
      wftFailure: null,
      stickyWorker: null,
    };
    const started: NewEvent = {
      type: 'WorkflowStarted',
      time: now,
      attributes: {
        workflowType: req.workflowType,
        taskQueue: req.taskQueue,
        input: req.args,
        randomnessSeed: ctx.newId(),
        workflowExecutionTimeoutMs: req.workflowExecutionTimeoutMs,
        workflowRunTimeoutMs: req.workflowRunTimeoutMs,
        workflowTaskTimeoutMs: req.workflowTaskTimeoutMs,
        expectedMaxDurationMs: req.expectedMaxDurationMs,
        memo: req.memo,
        searchAttributes: req.searchAttributes,
        requestId: req.requestId,
      },
    };
    const incoming: NewEvent[] = req.signal
      ? [
          {
            type: 'SignalReceived',
            time: now,
            attributes: { signalName: req.signal.name, input: req.signal.args },
          },
        ]
      : [];
    // The run is new: its first events, first workflow task and (eager start) that task's claim are
    // planned here and written with one insert and one append.
    const afterStart = { ...run, nextEventId: 2 };
    const delivery = planDelivery(afterStart, incoming, now);
    const scheduled: RunRecord = { ...afterStart, ...delivery.patch };
    const events = [started, ...delivery.events];
    let task: WorkflowTask | undefined;
    let final = scheduled;
    if (claimFor !== undefined) {
      const claim = planClaim(scheduled, now, claimFor);
      events.push(...claim.events);
      final = { ...scheduled, ...claim.patch };
      task = claimedTask(scheduled, claim);
    } else {
      wakes.add({ kind: 'workflowTask', namespace: run.namespace, taskQueue: run.taskQueue });
    }
    await tx.insertRun({ ...final, nextEventId: 1 + events.length });
    const history = await appendEvents(tx, runId, 1, events);
    // The worker that claimed the task gets the whole history in hand, exactly as a read would return it.
    if (task) task = { ...task, history: asStored(history) };
    for (const [kind, ms] of [
      ['workflowExecutionTimeout', req.workflowExecutionTimeoutMs],
      ['workflowRunTimeout', req.workflowRunTimeoutMs],
    ] as const) {
      if (ms === undefined) continue;
      await tx.insertTimer({
        namespace: req.namespace,
        runId,
        timerKey: kind,
        kind,
        fireAt: now + ms,
        startedEventId: 0,
      });
      wakes.add({ kind: 'timer', fireAt: now + ms });
    }
    if (req.requestId) {
      await tx.putRequest({
        namespace: req.namespace,
        requestId: req.requestId,
        kind: 'start',
        runId,
        createdAt: now,
      });
    }
    return { result: { runId, created: true }, task };
  }
}

/** Finds the addressed run: the given run id, else the latest run of the workflow id. */
export async function requireRun(
  tx: StoreReader,
  namespace: string,
  workflowId: string,
  runId?: string,
): Promise<RunRecord> {
  const run = await tx.findRun(namespace, workflowId, runId);
  if (!run) throw new WorkflowNotFoundError(workflowId, runId);
  return run;
}

function requireOpen(run: RunRecord, action: string): void {
  if (run.status !== 'running') {
    throw new WorkflowNotFoundError(run.workflowId, run.runId, `is ${run.status}: cannot ${action}`);
  }
}

async function signalRun(
  tx: StoreTx,
  wakes: PendingWakes,
  run: RunRecord,
  signalName: string,
  args: unknown[],
  requestId: string | undefined,
  now: number,
): Promise<void> {
  const buffered = await tx.listBuffered(run.runId);
  if (buffered.length >= LIMITS.pendingSignals) {
    throw new ValidationError(
      'signal',
      `run ${run.runId} already holds ${buffered.length} undelivered events; the limit is ${LIMITS.pendingSignals}. Retry later`,
    );
  }
  await deliver(
    tx,
    wakes,
    run,
    [{ type: 'SignalReceived', time: now, attributes: { signalName, input: args, requestId } }],
    now,
  );
  if (requestId) {
    await tx.putRequest({
      namespace: run.namespace,
      requestId,
      kind: 'signal',
      runId: run.runId,
      createdAt: now,
    });
  }
}

/**
 * Records a signal. It is persisted (in history, or in the run's buffer while a task is in flight)
 * before this returns; a request id already seen makes it a no-op.
 */
export async function signalWorkflow(
  ctx: RuntimeContext,
  namespace: string,
  workflowId: string,
  runId: string | undefined,
  signalName: string,
  args: unknown[],
  requestId?: string,
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    if (requestId && (await tx.getRequest(namespace, requestId))) return;
    const run = await requireRun(tx, namespace, workflowId, runId);
    requireOpen(run, `signal '${signalName}'`);
    await signalRun(tx, wakes, run, signalName, args, requestId, ctx.clock.now());
  });
}

/** Requests cancellation: the workflow sees it in its next activation. Repeated requests are no-ops. */
export async function requestCancel(
  ctx: RuntimeContext,
  namespace: string,
  workflowId: string,
  runId: string | undefined,
  reason?: string,
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    const run = await requireRun(tx, namespace, workflowId, runId);
    requireOpen(run, 'cancel');
    if (run.cancelRequested) return;
    const now = ctx.clock.now();
    const updated = await patchRun(tx, run, { cancelRequested: true });
    await deliver(
      tx,
      wakes,
      updated,
      [{ type: 'WorkflowCancelRequested', time: now, attributes: { reason } }],
      now,
    );
  });
}

/** Terminates at once: no workflow code runs; pending activities are abandoned and told to stop. */
export async function terminateWorkflow(
  ctx: RuntimeContext,
  namespace: string,
  workflowId: string,
  runId: string | undefined,
  reason?: string,
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    const run = await requireRun(tx, namespace, workflowId, runId);
    requireOpen(run, 'terminate');
    const now = ctx.clock.now();
    await closeRun(
      tx,
      wakes,
      run,
      'terminated',
      { type: 'WorkflowTerminated', time: now, attributes: { reason } },
      now,
    );
  });
}

/**
 * Closes a run from outside its code (termination, workflow timeouts). Any in-flight workflow task's
 * result is then rejected: its completion finds the run closed.
 */
export async function closeRun(
  tx: StoreTx,
  wakes: PendingWakes,
  run: RunRecord,
  status: RunStatus,
  event: NewEvent,
  now: number,
): Promise<void> {
  for (const a of await tx.listActivities(run.runId)) {
    if (a.phase === 'started')
      wakes.add({ kind: 'activityCancel', runId: run.runId, scheduledEventId: a.scheduledEventId });
  }
  await appendEvents(tx, run.runId, run.nextEventId, [event]);
  await tx.deleteRunState(run.runId);
  await patchRun(tx, run, {
    status,
    closeTime: now,
    nextEventId: run.nextEventId + 1,
    wftPhase: 'idle',
    wftLeaseOwner: null,
    wftLeaseExpiresAt: 0,
  });
  wakes.add({ kind: 'runClosed', runId: run.runId });
}

export interface PendingActivityDescription {
  readonly activityId: string;
  readonly activityType: string;
  readonly state: 'scheduled' | 'started';
  readonly attempt: number;
  readonly scheduledTime: Date;
  readonly lastStartedTime: Date | null;
  readonly lastHeartbeatTime: Date | null;
  readonly heartbeatDetails: unknown;
  readonly lastFailure: FailureInfo | null;
  readonly cancelRequested: boolean;
}

export interface WorkflowDescription {
  readonly workflowId: string;
  readonly runId: string;
  readonly workflowType: string;
  readonly taskQueue: string;
  readonly status: RunStatus;
  readonly startTime: Date;
  readonly closeTime: Date | null;
  readonly historyLength: number;
  readonly memo: Record<string, unknown> | null;
  readonly searchAttributes: Record<string, unknown> | null;
  readonly cancelRequested: boolean;
  readonly pendingActivities: readonly PendingActivityDescription[];
  /** Set while the workflow task keeps failing: why, and how many attempts so far. */
  readonly workflowTaskFailure: (FailureInfo & { readonly attempt: number }) | null;
}

export async function describeWorkflow(
  ctx: RuntimeContext,
  namespace: string,
  workflowId: string,
  runId?: string,
): Promise<WorkflowDescription> {
  return ctx.store.read(async (tx) => {
    const run = await requireRun(tx, namespace, workflowId, runId);
    const activities = await tx.listActivities(run.runId);
    const date = (t: number | null): Date | null => (t === null ? null : new Date(t));
    return {
      workflowId: run.workflowId,
      runId: run.runId,
      workflowType: run.workflowType,
      taskQueue: run.taskQueue,
      status: run.status,
      startTime: new Date(run.startTime),
      closeTime: date(run.closeTime),
      historyLength: run.nextEventId - 1,
      memo: run.memo,
      searchAttributes: run.searchAttributes,
      cancelRequested: run.cancelRequested,
      pendingActivities: activities.map((a) => ({
        activityId: a.activityId,
        activityType: a.activityType,
        state: a.phase,
        attempt: a.attempt,
        scheduledTime: new Date(a.scheduledTime),
        lastStartedTime: date(a.startedTime),
        lastHeartbeatTime: date(a.lastHeartbeatTime),
        heartbeatDetails: a.heartbeatDetails,
        lastFailure: a.lastFailure,
        cancelRequested: a.cancelRequested,
      })),
      workflowTaskFailure:
        run.status === 'running' && run.wftFailure
          ? { ...run.wftFailure, attempt: run.wftAttempt - 1 }
          : null,
    };
  });
}

export async function readHistory(
  ctx: RuntimeContext,
  namespace: string,
  workflowId: string,
  runId?: string,
): Promise<{ run: RunRecord; events: HistoryEvent[] }> {
  return ctx.store.read(async (tx) => {
    const run = await requireRun(tx, namespace, workflowId, runId);
    return { run, events: await tx.readEvents(run.runId, 1) };
  });
}
