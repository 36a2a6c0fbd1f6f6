import { type ActivityContext, type ActivityInfo, activityStorage } from '../activity/context.js';
import type { Clock } from '../common/clock.js';
import {
  ApplicationFailure,
  CancelledFailure,
  type FailureInfo,
  StaleTokenError,
  toFailureInfo,
  ValidationError,
} from '../common/errors.js';
import { childLogger, type Logger } from '../common/logger.js';
import { toPayload } from '../common/payload.js';
import type { ActivityTask, ActivityTaskRef } from '../runtime/activity-tasks.js';
import { Room } from './room.js';

// biome-ignore lint/suspicious/noExplicitAny: activity functions take any JSON arguments.
export type ActivityFunction = (...args: any[]) => unknown;

/** How the executor reports attempts; the worker binds it to the runtime. */
export interface ActivityReporter {
  /** Gets the whole task (not just its ref) so a worker holding the run can take the hot path. */
  complete(task: ActivityTask, result: unknown): Promise<void>;
  fail(ref: ActivityTaskRef, failure: FailureInfo, heartbeatDetails: unknown): Promise<void>;
  canceled(ref: ActivityTaskRef, details: unknown): Promise<void>;
  heartbeat(ref: ActivityTaskRef, details: unknown): Promise<{ cancelRequested: boolean }>;
}

/** Throttle for heartbeats when the activity has no heartbeat timeout (ms). */
const DEFAULT_HEARTBEAT_THROTTLE_MS = 30_000;

interface Running {
  readonly task: ActivityTask;
  readonly controller: AbortController;
  /** Why the attempt was aborted: decides what (if anything) is reported. */
  abortReason: 'cancelRequested' | 'stale' | 'shutdown' | null;
  /** The activity function has returned or thrown; only its report is left, which takes no slot. */
  reporting: boolean;
  readonly done: Promise<void>;
}

/**
 * Runs activity attempts with a concurrency limit. Each attempt gets an AbortSignal, throttled
 * heartbeats (about 80% of its heartbeat timeout; the latest details win and are flushed when the attempt
 * fails) and its info (attempt, previous heartbeat details, idempotency key).
 *
 * What is reported: a result → complete; a throw → fail (retried per policy by the engine); a throw
 * after cancellation was requested → canceled. An attempt found stale (the run closed, or its lease was
 * given to another attempt) reports nothing: the store would reject it anyway.
 */
export class ActivityExecutor {
  readonly #running = new Map<string, Running>();
  /** Entries of `#running` whose function has settled and which are only reporting. */
  #reporting = 0;
  /** Signalled when an attempt has been reported and when reserved slots are given back. */
  readonly room = new Room();

  constructor(
    private readonly activities: Readonly<Record<string, ActivityFunction>>,
    private readonly reporter: ActivityReporter,
    private readonly clock: Clock,
    private readonly logger: Logger,
    readonly maxConcurrent: number,
  ) {}

  /** Slots promised to attempts that are being started in a commit right now (eager dispatch). */
  #reserved = 0;

  /**
   * Free slots. A slot is taken while an attempt's function runs, not while its result is reported: a
   * report through the hot path may start the workflow's next activity eagerly, in the slot it frees.
   */
  get available(): number {
    return Math.max(0, this.maxConcurrent - (this.#running.size - this.#reporting) - this.#reserved);
  }

  /** Reserves up to `wanted` slots for eagerly dispatched attempts; returns how many it got. */
  reserve(wanted: number): number {
    const got = Math.min(wanted, this.available);
    this.#reserved += got;
    return got;
  }

  /** Gives back reserved slots that were not used. */
  release(count: number): void {
    this.#reserved = Math.max(0, this.#reserved - count);
    if (count > 0) this.room.freed();
  }

  get inFlight(): number {
    return this.#running.size;
  }

  /** Starts an attempt (using a reserved slot when `reserved`); resolves when it has been reported. */
  execute(task: ActivityTask, reserved = false): Promise<void> {
    if (reserved) this.#reserved = Math.max(0, this.#reserved - 1); // the slot passes to this attempt
    const key = keyOf(task.runId, task.scheduledEventId);
    const controller = new AbortController();
    const entry: Running = {
      task,
      controller,
      abortReason: null,
      reporting: false,
      done: Promise.resolve(),
    };
    const done = this.#run(entry).finally(() => {
      this.#running.delete(key);
      if (entry.reporting) this.#reporting--;
      // Not earlier: a claim racing the report could skip rows the report's transaction holds locked
      // (the run's other activities, on PostgreSQL) and then wait for the next poll.
      this.room.freed();
    });
    (entry as { done: Promise<void> }).done = done;
    this.#running.set(key, entry);
    return done;
  }

  /** Delivers a cancellation to a running attempt in this process (the fast path; heartbeats are the other). */
  cancel(runId: string, scheduledEventId: number): void {
    const entry = this.#running.get(keyOf(runId, scheduledEventId));
    if (entry && !entry.controller.signal.aborted) {
      entry.abortReason = 'cancelRequested';
      entry.controller.abort(new CancelledFailure('activity cancellation requested'));
    }
  }

  /** Waits for running attempts up to `graceMs`, then aborts the rest and waits for them to settle. */
  async drain(graceMs: number): Promise<void> {
    const all = (): Promise<unknown> => Promise.allSettled([...this.#running.values()].map((r) => r.done));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs);
    });
    const outcome = await Promise.race([all().then(() => 'done' as const), graceOver]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      for (const r of this.#running.values()) {
        if (!r.controller.signal.aborted) {
          r.abortReason = 'shutdown';
          r.controller.abort(new CancelledFailure('worker shutting down'));
        }
      }
      await all();
    }
  }

  async #run(entry: Running): Promise<void> {
    const { task, controller } = entry;
    const ref: ActivityTaskRef = {
      runId: task.runId,
      scheduledEventId: task.scheduledEventId,
      token: task.token,
    };
    const log = childLogger(this.logger, {
      workflowId: task.workflowId,
      runId: task.runId,
      activityId: task.activityId,
      activityType: task.activityType,
      attempt: task.attempt,
    });
    const heartbeats = new HeartbeatThrottle(task, this.clock, async (details) => {
      try {
        const { cancelRequested } = await this.reporter.heartbeat(ref, details);
        if (cancelRequested && !controller.signal.aborted) {
          entry.abortReason = 'cancelRequested';
          controller.abort(new CancelledFailure('activity cancellation requested'));
        }
      } catch (err) {
        if (err instanceof StaleTokenError && !controller.signal.aborted) {
          entry.abortReason = 'stale';
          controller.abort(new CancelledFailure('activity attempt is no longer current'));
        } else if (!(err instanceof StaleTokenError)) {
          log.warn('heartbeat failed', { error: String(err) });
        }
      }
    });
    const info: ActivityInfo = {
      namespace: task.namespace,
      workflowId: task.workflowId,
      runId: task.runId,
      activityId: task.activityId,
      activityType: task.activityType,
      taskQueue: task.taskQueue,
      attempt: task.attempt,
      heartbeatDetails: task.heartbeatDetails ?? undefined,
      idempotencyKey: `${task.workflowId}:${task.runId}:${task.activityId}`,
      scheduledTime: new Date(task.scheduledTime),
      startedTime: new Date(task.startedTime),
      heartbeatTimeoutMs: task.options.heartbeatTimeoutMs,
      startToCloseTimeoutMs: task.options.startToCloseTimeoutMs,
      scheduleToCloseTimeoutMs: task.options.scheduleToCloseTimeoutMs,
    };
    const context: ActivityContext = {
      info,
      signal: controller.signal,
      heartbeat: (details) => heartbeats.record(details),
    };
    let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
    try {
      const fn = this.activities[task.activityType];
      if (!fn) {
        throw ApplicationFailure.retryable(
          `activity type '${task.activityType}' is not registered on this worker (registered: ${Object.keys(this.activities).join(', ') || 'none'})`,
          'ActivityNotRegistered',
        );
      }
      const value = await activityStorage.run(context, () => fn(...task.input));
      outcome = { ok: true, value: toPayload(value, `result of activity ${task.activityType}`) };
    } catch (error) {
      outcome = { ok: false, error };
    } finally {
      heartbeats.stop();
    }
    entry.reporting = true;
    this.#reporting++;
    try {
      if (entry.abortReason === 'stale') {
        log.info('attempt is no longer current; not reporting');
      } else if (outcome.ok) {
        await this.reporter.complete(task, outcome.value);
      } else if (entry.abortReason === 'cancelRequested') {
        await this.reporter.canceled(ref, heartbeats.latest);
      } else {
        const error =
          outcome.error instanceof ValidationError
            ? ApplicationFailure.nonRetryable(outcome.error.message, 'ValidationError')
            : outcome.error;
        await this.reporter.fail(ref, toFailureInfo(error), heartbeats.latest);
      }
    } catch (err) {
      if (err instanceof StaleTokenError) log.info('report rejected: attempt is no longer current');
      else log.error('could not report activity attempt', { error: String(err) });
    }
  }
}

function keyOf(runId: string, scheduledEventId: number): string {
  return `${runId}\u0000${scheduledEventId}`;
}

/**
 * Sends at most one heartbeat per interval (80% of the heartbeat timeout): the first at once, later
 * ones at the end of the interval with the latest details.
 */
class HeartbeatThrottle {
  readonly #intervalMs: number;
  #lastSentAt = Number.NEGATIVE_INFINITY;
  #pending = false;
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #latest: unknown;

  constructor(
    task: ActivityTask,
    private readonly clock: Clock,
    private readonly send: (details: unknown) => Promise<void>,
  ) {
    const hb = task.options.heartbeatTimeoutMs;
    this.#intervalMs = hb !== undefined ? Math.max(1, Math.floor(hb * 0.8)) : DEFAULT_HEARTBEAT_THROTTLE_MS;
    this.#latest = task.heartbeatDetails ?? undefined;
  }

  /** The latest details recorded in this attempt (or inherited from the previous one). */
  get latest(): unknown {
    return this.#latest;
  }

  record(details: unknown): void {
    if (this.#stopped) return;
    this.#latest = details === undefined ? this.#latest : toPayload(details, 'heartbeat details');
    const wait = this.#lastSentAt + this.#intervalMs - this.clock.now();
    if (wait <= 0 && !this.#timer) {
      this.#flush();
      return;
    }
    this.#pending = true;
    this.#timer ??= setTimeout(
      () => {
        this.#timer = null;
        if (this.#pending) this.#flush();
      },
      Math.max(0, wait),
    );
  }

  #flush(): void {
    this.#pending = false;
    this.#lastSentAt = this.clock.now();
    void this.send(this.#latest);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
