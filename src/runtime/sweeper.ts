import type { FailureInfo } from '../common/errors.js';
import type { NewEvent } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { planActivityTimedOut } from '../engine/activity-attempt.js';
import { activityDeadline, expiredActivityTimeout } from '../engine/activity-timeouts.js';
import { applyActivityOutcome } from './activity-tasks.js';
import { deliver, inTransaction, type RuntimeContext, SINGLE_READ } from './context.js';
import type { LocalWorkflowWorker } from './local-workers.js';
import { waitForWake } from './notifier.js';
import { closeRun } from './workflow-ops.js';
import { applyFailure, claimTask, type WorkflowTask } from './workflow-tasks.js';

/** Rows handled per sweep transaction; a backlog is worked off in batches of this size. */
const BATCH = 100;
/** How often old request ids are deleted (ms). */
const REQUEST_ID_SWEEP_INTERVAL_MS = 60_000;
/** How long a request id is remembered (ms). */
export const REQUEST_ID_RETENTION_MS = 24 * 3_600_000;

/**
 * One sweep: fires due timers, times out expired workflow-task leases and activity deadlines, in
 * batches. Any node may sweep; each row is handled inside a transaction that re-reads it, so two nodes
 * sweeping at once never fire a timer twice. Returns how many rows it handled.
 */
export async function sweepOnce(ctx: RuntimeContext, sweeperId: string): Promise<number> {
  let handled = 0;
  for (;;) {
    const n = await sweepTimers(ctx);
    handled += n;
    if (n < BATCH) break;
  }
  for (;;) {
    const n = await sweepWorkflowTaskLeases(ctx, sweeperId);
    handled += n;
    if (n < BATCH) break;
  }
  for (;;) {
    const n = await sweepActivityDeadlines(ctx);
    handled += n;
    if (n < BATCH) break;
  }
  return handled;
}

/** Forgets request ids older than the retention, in batches; returns how many. */
export async function forgetOldRequestIds(ctx: RuntimeContext): Promise<number> {
  // Request ids make a retried call a no-op; a retry comes within seconds, so a day is ample.
  return inTransaction(ctx, (tx) =>
    tx.deleteRequestsBefore(ctx.clock.now() - REQUEST_ID_RETENTION_MS, BATCH),
  );
}

/**
 * Fires due timers. A task the firing schedules for a queue that a worker of this process polls is
 * claimed for that worker in the same commit and handed to it (no poll, no claim transaction between
 * the fire and the workflow code).
 */
async function sweepTimers(ctx: RuntimeContext): Promise<number> {
  const eager: { worker: LocalWorkflowWorker; task?: WorkflowTask }[] = [];
  try {
    const fired = await inTransaction(ctx, async (tx, wakes) => {
      for (const e of eager.splice(0)) e.worker.release(); // a retried transaction starts afresh
      const now = ctx.clock.now();
      const due = await tx.findDueTimers(now, BATCH);
      let polled = false;
      for (const t of due) {
        await tx.deleteTimer(t.runId, t.timerKey);
        const run = await tx.getRun(t.runId);
        if (run?.status !== 'running') continue;
        if (t.kind === 'user') {
          const fire: NewEvent = {
            type: 'TimerFired',
            time: now,
            attributes: { timerId: t.timerKey, startedEventId: t.startedEventId },
          };
          const { run: updated, appended } = await deliver(tx, wakes, run, [fire], now);
          if (run.wftPhase === 'idle' && updated.wftPhase === 'scheduled') {
            const worker = ctx.localWorkers.reserve(run.namespace, run.taskQueue);
            if (worker) {
              // The worker gets the events of the fire with the task: its cached instance reads nothing.
              eager.push({ worker, task: await claimTask(tx, updated, now, worker.workerId, appended) });
            } else polled = true;
          }
        } else {
          const timeoutType = t.kind === 'workflowExecutionTimeout' ? 'workflowExecution' : 'workflowRun';
          await closeRun(
            tx,
            wakes,
            run,
            'timedOut',
            { type: 'WorkflowTimedOut', time: now, attributes: { timeoutType } },
            now,
          );
        }
      }
      if (!polled) wakes.drop('workflowTask');
      return due.length;
    });
    for (const e of eager.splice(0)) e.worker.run(e.task!);
    return fired;
  } catch (err) {
    for (const e of eager.splice(0)) e.worker.release(); // rolled back: nothing was claimed
    throw err;
  }
}

async function sweepWorkflowTaskLeases(ctx: RuntimeContext, sweeperId: string): Promise<number> {
  return inTransaction(ctx, async (tx, wakes) => {
    const expired = await tx.findExpiredWorkflowTasks(ctx.clock.now(), BATCH);
    for (const run of expired) {
      const failure: FailureInfo = {
        kind: 'timeout',
        type: 'WorkflowTaskTimedOut',
        message: `workflow task timed out after ${run.workflowTaskTimeoutMs} ms (worker ${run.wftLeaseOwner ?? 'unknown'} did not report)`,
        timeoutType: 'startToClose',
      };
      await applyFailure(ctx, tx, wakes, run, 'TimedOut', failure, sweeperId);
    }
    return expired.length;
  });
}

async function sweepActivityDeadlines(ctx: RuntimeContext): Promise<number> {
  return inTransaction(ctx, async (tx, wakes) => {
    const now = ctx.clock.now();
    const due = await tx.findDueActivities(now, BATCH);
    for (const a of due) {
      const timeoutType = expiredActivityTimeout(a, now);
      if (timeoutType === null) {
        // The stored deadline was conservative (e.g. a heartbeat raced it): store the true one.
        await tx.updateActivity(a.runId, a.scheduledEventId, { deadline: activityDeadline(a) });
        continue;
      }
      if (a.phase === 'started')
        wakes.add({ kind: 'activityCancel', runId: a.runId, scheduledEventId: a.scheduledEventId });
      const run = await tx.getRun(a.runId);
      await applyActivityOutcome(tx, wakes, run, a, planActivityTimedOut(a, timeoutType, now), now);
    }
    return due.length;
  });
}

/**
 * Sweeps until stopped: right after any due time it knows of (timers written in this process wake it
 * at once), and at least every `pollIntervalMs` to see work written by other processes.
 */
export class Sweeper {
  #stopped = false;
  #loop: Promise<void> | null = null;

  constructor(
    private readonly ctx: RuntimeContext,
    private readonly sweeperId: string,
    private readonly pollIntervalMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.#loop) return;
    this.#stopped = false;
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    this.#loop = null;
  }

  #wake: (() => void) | null = null;

  async #run(): Promise<void> {
    const off = this.ctx.notifier.on({ kind: 'timer', fireAt: 0 }, (c) => {
      if (c.kind === 'timer' && c.fireAt < this.#nextAt) this.#wake?.();
    });
    try {
      let forgetAt = 0;
      while (!this.#stopped) {
        try {
          // A read first: an idle sweep costs no write transaction.
          let next = await this.ctx.store.read((tx) => tx.nextSweepTime(), SINGLE_READ);
          if (next !== null && next <= this.ctx.clock.now()) {
            await sweepOnce(this.ctx, this.sweeperId);
            next = await this.ctx.store.read((tx) => tx.nextSweepTime(), SINGLE_READ);
          }
          const now = this.ctx.clock.now();
          if (now >= forgetAt) {
            await forgetOldRequestIds(this.ctx);
            forgetAt = now + REQUEST_ID_SWEEP_INTERVAL_MS;
          }
          this.#nextAt =
            next === null ? now + this.pollIntervalMs : Math.min(next, now + this.pollIntervalMs);
        } catch (err) {
          if (this.#stopped) break;
          this.logger.warn('sweep failed; retrying', { error: String(err) });
          this.#nextAt = this.ctx.clock.now() + this.pollIntervalMs;
        }
        if (this.#stopped) break;
        const wake = new AbortController();
        this.#wake = () => wake.abort();
        await waitForWake(this.ctx.notifier, [], this.#nextAt - this.ctx.clock.now(), wake.signal);
        this.#wake = null;
      }
    } finally {
      off();
    }
  }

  #nextAt = 0;
}
