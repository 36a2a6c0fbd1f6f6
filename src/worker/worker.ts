import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { HistoryEvent, HistoryFile } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { childLogger } from '../common/logger.js';
import {
  claimActivityTasks,
  failActivity,
  heartbeatActivity,
  reportActivityCanceled,
} from '../runtime/activity-tasks.js';
import type { ClaimSeen, RuntimeContext } from '../runtime/context.js';
import { type WakeChannel, WakeWatch, waitForWake } from '../runtime/notifier.js';
import { claimQueries } from '../runtime/queries.js';
import { Runtime } from '../runtime/runtime.js';
import { Sweeper } from '../runtime/sweeper.js';
import { claimWorkflowTasks, type WorkflowTask } from '../runtime/workflow-tasks.js';
import { ActivityExecutor } from './activity-executor.js';
import { bundleWorkflows, type WorkflowBundle } from './bundler.js';
import { replayHistory } from './replay.js';
import { Room } from './room.js';
import { WorkflowSandbox } from './sandbox.js';
import { type CompiledWorkerOptions, compileWorkerOptions, type WorkerOptions } from './worker-options.js';
import { WorkflowTaskRunner } from './workflow-task-runner.js';

export type WorkerState = 'created' | 'running' | 'stopping' | 'stopped';

/** First wait before claiming again due work that another transaction held (ms); doubles while held. */
const LOCKED_RETRY_MS = 10;

/**
 * A worker polls one task queue of one namespace for workflow tasks, activity tasks and queries, and
 * sweeps the store's timers and expired leases (every node does; sweeps are safe to run concurrently).
 *
 * Lifecycle: `create()` validates options, opens (creating and migrating) the store and bundles the
 * workflows; `run()` polls until `shutdown()`, which stops polling at once, lets running activities
 * finish within the grace time (then aborts them: their attempts are retried elsewhere), waits for
 * in-flight workflow tasks, and releases the store.
 */
export class Worker {
  #state: WorkerState = 'created';
  #running: Promise<void> | null = null;
  readonly #abort = new AbortController();
  readonly #executor: ActivityExecutor;
  readonly #workflows: WorkflowTaskRunner;
  readonly #sweeper: Sweeper;
  readonly #ctx: RuntimeContext;
  readonly #log: Logger;
  readonly #inFlightWorkflowTasks = new Set<Promise<void>>();
  readonly #inFlightQueries = new Set<Promise<void>>();
  /** Signalled when a workflow task or query slot comes free. */
  readonly #workflowRoom = new Room();
  readonly #queryRoom = new Room();
  #unsubscribeCancels: (() => void) | null = null;
  #unregisterEager: (() => void) | null = null;
  #reservedWorkflowTasks = 0;

  private constructor(
    readonly options: CompiledWorkerOptions,
    private readonly runtime: Runtime,
    readonly bundle: WorkflowBundle | null,
    private readonly sandbox: WorkflowSandbox | null,
  ) {
    this.#ctx = { ...runtime.ctx, workflowTaskRetry: options.workflowTaskRetry };
    this.#log = childLogger(options.logger, { workerId: options.identity, taskQueue: options.taskQueue });
    const ctx = this.#ctx;
    this.#executor = new ActivityExecutor(
      options.activities,
      {
        complete: (task, result) => this.#workflows.completeActivity(task, result),
        fail: (ref, failure, details) => failActivity(ctx, ref, failure, details),
        canceled: (ref, details) => reportActivityCanceled(ctx, ref, details),
        heartbeat: (ref, details) => heartbeatActivity(ctx, ref, details),
      },
      ctx.clock,
      this.#log,
      options.maxConcurrentActivityTaskExecutions,
    );
    const executor = this.#executor;
    this.#workflows = new WorkflowTaskRunner(
      ctx,
      sandbox,
      bundle,
      options.identity,
      this.#log,
      { maxEntries: options.maxCachedWorkflows, heapWatermark: options.cacheHeapWatermark },
      { namespace: options.namespace, taskQueue: options.taskQueue },
      Object.keys(options.activities).length > 0 ? executor : null,
    );
    this.#sweeper = new Sweeper(ctx, options.identity, options.sweepIntervalMs, this.#log);
  }

  static async create(options: WorkerOptions): Promise<Worker> {
    const compiled = compileWorkerOptions(
      options,
      `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`,
    );
    let bundle: WorkflowBundle | null = null;
    let sandbox: WorkflowSandbox | null = null;
    if (compiled.workflowsPath) {
      bundle = await bundleWorkflows(compiled.workflowsPath);
      sandbox = WorkflowSandbox.create(bundle, { deadlockTimeoutMs: compiled.deadlockTimeoutMs });
    }
    const runtime = await Runtime.acquire(compiled.connection, {
      mode: 'node',
      logger: compiled.logger,
      clock: compiled.clock,
    });
    compiled.logger.info('worker created', {
      workerId: compiled.identity,
      store: runtime.ctx.store.description,
      taskQueue: compiled.taskQueue,
      workflowTypes: sandbox?.workflowTypes(),
      activityTypes: Object.keys(compiled.activities),
    });
    return new Worker(compiled, runtime, bundle, sandbox);
  }

  get state(): WorkerState {
    return this.#state;
  }

  /** How many workflows this worker holds in memory between tasks (for metrics and tests). */
  get cachedWorkflows(): number {
    return this.#workflows.cache.size;
  }

  /** Polls until `shutdown()`; resolves once the worker has fully stopped. */
  run(): Promise<void> {
    if (this.#running) return this.#running;
    if (this.#state !== 'created') throw new Error(`worker is ${this.#state}; create a new one`);
    this.#state = 'running';
    this.#unsubscribeCancels = this.#subscribeActivityCancels();
    this.#sweeper.start();
    const loops: Promise<void>[] = [waitForAbort(this.#abort.signal)];
    if (this.bundle) {
      this.#unregisterEager = this.#registerForEagerStarts();
      loops.push(this.#workflowLoop(), this.#queryLoop());
    }
    if (Object.keys(this.options.activities).length > 0) loops.push(this.#activityLoop());
    this.#running = Promise.all(loops).then(() => this.#finish());
    return this.#running;
  }

  /** Stops polling, drains in-flight work within the grace time, and releases the store. */
  async shutdown(): Promise<void> {
    if (this.#state === 'created') {
      this.#state = 'stopped';
      this.sandbox?.close();
      await this.runtime.release();
      return;
    }
    if (this.#state === 'running') {
      this.#state = 'stopping';
      this.#unregisterEager?.();
      this.#workflows.stop();
      this.#abort.abort();
    }
    await this.#running;
  }

  async #finish(): Promise<void> {
    await this.#executor.drain(this.options.shutdownGraceMs);
    await Promise.allSettled([...this.#inFlightWorkflowTasks, ...this.#inFlightQueries]);
    await this.#sweeper.stop();
    this.#unsubscribeCancels?.();
    this.#workflows.cache.clear();
    this.sandbox?.close();
    await this.runtime.release();
    this.#state = 'stopped';
    this.#log.info('worker stopped');
  }

  #subscribeActivityCancels(): () => void {
    // Cancellation requests written in this process reach running attempts at once; other processes'
    // requests arrive with the next heartbeat.
    return this.#ctx.notifier.onKind('activityCancel', (c) => {
      if (c.kind === 'activityCancel') this.#executor.cancel(c.runId, c.scheduledEventId);
    });
  }

  /**
   * Claims work of one kind while there is room for it, then waits. A wake-up that arrives while a
   * claim is in flight is remembered (WakeWatch), so it ends the next wait at once. When every slot is
   * busy the loop waits for one to come free (`room`), not for the next poll: work that could not
   * start eagerly is claimed as soon as it fits.
   */
  async #pollLoop(
    channel: WakeChannel,
    free: () => number,
    room: Room,
    claim: (limit: number, seen: ClaimSeen) => Promise<number>,
    what: string,
  ): Promise<void> {
    const signal = this.#abort.signal;
    const watch = new WakeWatch(this.#ctx.notifier);
    watch.watch(channel);
    const stop = (): void => watch.stop();
    signal.addEventListener('abort', stop, { once: true });
    let backoffMs = 0;
    /** How long to wait before claiming again work that another transaction held (0: none was held). */
    let lockedWaitMs = 0;
    try {
      while (!signal.aborted) {
        const limit = free();
        if (limit <= 0) {
          await room.wait(this.options.pollIntervalMs, signal);
          continue;
        }
        let claimed = 0;
        const seen: ClaimSeen = { lockedDue: 0 };
        watch.reset();
        try {
          claimed = await claim(limit, seen);
          backoffMs = 0;
        } catch (err) {
          backoffMs = Math.min(Math.max(backoffMs * 2, 50), 5000);
          this.#log.warn(`${what} poll failed; retrying`, { error: String(err), retryInMs: backoffMs });
        }
        if (signal.aborted) break;
        if (backoffMs > 0) {
          await waitForWake(this.#ctx.notifier, [], backoffMs, signal);
          continue;
        }
        if (claimed === limit) continue; // there may be more
        if (seen.lockedDue > 0) {
          // Due work that another transaction held for a moment: its release wakes no one, so look
          // again soon (sooner still on a wake-up), backing off while it stays held.
          lockedWaitMs = Math.min(Math.max(lockedWaitMs * 2, LOCKED_RETRY_MS), this.options.pollIntervalMs);
          await watch.wait(lockedWaitMs);
          continue;
        }
        lockedWaitMs = 0;
        await watch.wait(this.options.pollIntervalMs);
      }
    } finally {
      signal.removeEventListener('abort', stop);
      watch.stop();
    }
  }

  #workflowLoop(): Promise<void> {
    const o = this.options;
    return this.#pollLoop(
      { kind: 'workflowTask', namespace: o.namespace, taskQueue: o.taskQueue },
      () => this.#workflowTaskRoom(),
      this.#workflowRoom,
      async (limit, seen) => {
        const tasks = await claimWorkflowTasks(
          this.#ctx,
          o.namespace,
          o.taskQueue,
          o.identity,
          limit,
          o.stickyFallbackMs,
          seen,
        );
        for (const task of tasks) this.#startWorkflowTask(task);
        return tasks.length;
      },
      'workflow task',
    );
  }

  /** Workflow tasks this worker can take now: its limit less running and reserved (eager) ones. */
  #workflowTaskRoom(): number {
    const o = this.options;
    return (
      o.maxConcurrentWorkflowTaskExecutions - this.#inFlightWorkflowTasks.size - this.#reservedWorkflowTasks
    );
  }

  #startWorkflowTask(task: WorkflowTask): void {
    const p = this.#workflows
      .runTask(task)
      .catch((err) =>
        this.#log.error('workflow task could not be reported', { runId: task.runId, error: String(err) }),
      )
      .finally(() => {
        this.#inFlightWorkflowTasks.delete(p);
        this.#workflowRoom.freed();
      });
    this.#inFlightWorkflowTasks.add(p);
  }

  /** Offers this worker to starts in this process: they claim the first task for it in their commit. */
  #registerForEagerStarts(): () => void {
    return this.#ctx.localWorkers.register(this.options.namespace, this.options.taskQueue, {
      workerId: this.options.identity,
      reserve: () => {
        if (this.#state !== 'running' || this.#workflowTaskRoom() <= 0) return false;
        this.#reservedWorkflowTasks++;
        return true;
      },
      release: () => {
        this.#reservedWorkflowTasks--;
        this.#workflowRoom.freed();
      },
      run: (task) => {
        this.#reservedWorkflowTasks--;
        this.#startWorkflowTask(task);
      },
    });
  }

  #queryLoop(): Promise<void> {
    const o = this.options;
    return this.#pollLoop(
      { kind: 'query', namespace: o.namespace, taskQueue: o.taskQueue },
      () => 16 - this.#inFlightQueries.size,
      this.#queryRoom,
      async (limit, seen) => {
        const queries = await claimQueries(this.#ctx, o.namespace, o.taskQueue, limit, seen);
        for (const q of queries) {
          const p = this.#workflows
            .answer(q)
            .catch((err) => this.#log.error('query could not be answered', { error: String(err) }))
            .finally(() => {
              this.#inFlightQueries.delete(p);
              this.#queryRoom.freed();
            });
          this.#inFlightQueries.add(p);
        }
        return queries.length;
      },
      'query',
    );
  }

  #activityLoop(): Promise<void> {
    const o = this.options;
    return this.#pollLoop(
      { kind: 'activityTask', namespace: o.namespace, taskQueue: o.taskQueue },
      () => this.#executor.available,
      this.#executor.room,
      async (limit, seen) => {
        const tasks = await claimActivityTasks(this.#ctx, o.namespace, o.taskQueue, o.identity, limit, seen);
        for (const t of tasks) void this.#executor.execute(t);
        return tasks.length;
      },
      'activity',
    );
  }

  /**
   * Replays a saved history against a workflows module: throws a NonDeterminismError naming the event
   * and the command when the code no longer produces what the history recorded.
   */
  static async runReplayHistory(
    options: { readonly workflowsPath: string },
    history: HistoryFile | readonly HistoryEvent[],
  ): Promise<void> {
    await replayHistory(options.workflowsPath, history);
  }
}

function waitForAbort(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
