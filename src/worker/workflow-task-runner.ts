import { isClosingCommand, type WorkflowCommand, type WorkflowInfo } from '../common/commands.js';
import {
  DeadlockError,
  type FailureInfo,
  NonDeterminismError,
  QueryNotRegisteredError,
  StaleTokenError,
  toFailureInfo,
} from '../common/errors.js';
import { takeTurn } from '../common/event-loop-turn.js';
import type { HistoryEvent, WorkflowTaskFailedCause } from '../common/events.js';
import { LIMITS } from '../common/ids.js';
import { childLogger, type Logger } from '../common/logger.js';
import { type ActivityTask, completeActivity } from '../runtime/activity-tasks.js';
import type { RuntimeContext } from '../runtime/context.js';
import { completeActivityWithTask, hotPathEvents } from '../runtime/hot-path.js';
import { answerQuery } from '../runtime/queries.js';
import {
  type CompletionResult,
  completeWorkflowTask,
  type EagerDispatch,
  failWorkflowTask,
  readEvents,
  type WorkflowTask,
} from '../runtime/workflow-tasks.js';
import type { QueryRecord } from '../store/store.js';
import type { WorkflowBundle } from './bundler.js';
import type { ActivationResult, WorkflowSandbox } from './sandbox.js';
import { WorkflowCache } from './workflow-cache.js';
import { WorkflowRunState } from './workflow-replayer.js';

/** A cached run: its sandbox instance and replay state, and where its last own commit left the run. */
class CachedRun {
  /** Id of the WorkflowTaskCompleted this instance committed; the run must still be at it. */
  completedEventId = 0;
  /** Last history event the instance has seen. */
  lastEventId = 0;
  /** The run's next event id right after this instance's last commit (0: unknown). */
  nextEventId = 0;
  /** Events that commit appended which the instance has not been fed yet (its own commands' events). */
  unseen: readonly HistoryEvent[] = [];
  /** Workflow time of the last task it ran. */
  lastTaskTime = 0;

  constructor(
    readonly state: WorkflowRunState,
    readonly dispose: () => void,
    /** Sandbox thread generation the instance lives in. */
    readonly generation: number,
  ) {}

  /** Records a commit of this instance's commands; `fedUpTo` is the last event it was fed. */
  committed(outcome: CompletionResult, fedUpTo: number, taskTime: number): void {
    this.completedEventId = outcome.completedEventId;
    this.lastEventId = fedUpTo;
    this.nextEventId = outcome.nextEventId;
    this.unseen = outcome.events.filter((e) => e.eventId > fedUpTo);
    this.lastTaskTime = taskTime;
  }
}

/**
 * The events a task must feed `cached`, when all of them are in hand: those its claim handed over, after
 * the ones the instance has seen and the ones its own last commit appended (`unseen`). Undefined when
 * something in between is missing: then they are read.
 */
function inHand(cached: CachedRun, handed: readonly HistoryEvent[] | undefined): HistoryEvent[] | undefined {
  const first = handed?.[0]?.eventId;
  if (first === undefined) return undefined;
  if (first <= cached.lastEventId + 1) return handed!.filter((e) => e.eventId > cached.lastEventId);
  const unseen = cached.unseen;
  const joins = unseen.length === 0 || unseen[0]!.eventId === cached.lastEventId + 1;
  if (cached.nextEventId === first && joins && unseen.length === first - 1 - cached.lastEventId) {
    return [...unseen, ...handed!];
  }
  return undefined;
}

/** Where activity attempts of this worker run; eager dispatch reserves slots in it. */
export interface LocalActivities {
  reserve(wanted: number): number;
  release(count: number): void;
  execute(task: ActivityTask, reserved: boolean): Promise<void>;
}

/** A workflow whose next own wake-up (its earliest timer) is at least this far away leaves the cache (ms). */
const SLEEPER_EVICTION_MS = 10_000;

/** Most activities one commit starts eagerly for this worker. */
const EAGER_ACTIVITY_LIMIT = 8;

/**
 * Runs workflow tasks and queries for one worker: takes the cached instance or replays history into a
 * fresh one, runs the activation, and commits the commands fenced by the task's token. Anything other
 * than a workflow outcome (a TypeError, non-determinism, an unknown type, a deadlock) fails the task,
 * which the engine retries with backoff; the cached instance is dropped whenever its state could be
 * ahead of or apart from history.
 *
 * Hot path: when an activity of a cached run completes here, the next activation is computed from the
 * cache before anything is written and committed with the result in one transaction
 * (`completeActivityWithTask`); activities it schedules on this worker's queue start in that same commit.
 *
 * A task or an activity result takes a run's cached instance out of the cache for as long as it works
 * with it (until its commit is recorded in the instance, `#afterCommit`). Work for the same run that comes
 * meanwhile waits for it (`#hold`): a timer due a few ms after the commit that started it can be fired
 * and handed over before that commit's continuation has run, and it would otherwise replay the whole
 * history into a fresh instance.
 */
export class WorkflowTaskRunner {
  readonly cache: WorkflowCache<CachedRun>;
  /** Set when the worker shuts down: no new workflow work starts (no hot path, no eager dispatch). */
  #stopping = false;
  /** Runs whose cached instance a task or activity result of this runner holds, and when it is back. */
  readonly #held = new Map<string, Promise<void>>();

  constructor(
    private readonly ctx: RuntimeContext,
    private readonly sandbox: WorkflowSandbox | null,
    private readonly bundle: WorkflowBundle | null,
    private readonly workerId: string,
    private readonly logger: Logger,
    cacheOptions: { maxEntries: number; heapWatermark: number },
    private readonly queue: { readonly namespace: string; readonly taskQueue: string },
    private readonly activities: LocalActivities | null,
  ) {
    // Workflow state lives in the sandbox thread's heap, which process.memoryUsage() does not count.
    this.cache = new WorkflowCache<CachedRun>(
      cacheOptions.maxEntries,
      cacheOptions.heapWatermark,
      () => process.memoryUsage().heapUsed + (sandbox?.heapUsedBytes ?? 0),
    );
  }

  async runTask(task: WorkflowTask): Promise<void> {
    const log = childLogger(this.logger, {
      workflowId: task.workflowId,
      runId: task.runId,
      workerId: this.workerId,
      token: task.token,
    });
    const fail = async (cause: WorkflowTaskFailedCause, failure: FailureInfo): Promise<void> => {
      this.cache.evict(task.runId);
      if (task.attempt === 1)
        log.warn('workflow task failed; it will be retried', { cause, error: failure.message });
      await failWorkflowTask(this.ctx, task.runId, task.token, cause, failure, this.workerId).catch((err) => {
        if (!(err instanceof StaleTokenError)) throw err;
        log.info('workflow task result rejected: the task is no longer current', { cause });
      });
    };
    if (!this.sandbox || !this.bundle) {
      return fail(
        'UnknownWorkflowType',
        unknownType(task.workflowType, [], 'this worker has no workflowsPath'),
      );
    }
    if (!this.sandbox.workflowTypes().includes(task.workflowType)) {
      return fail('UnknownWorkflowType', unknownType(task.workflowType, this.sandbox.workflowTypes()));
    }
    const release = await this.#hold(task.runId);
    try {
      await this.#runHeld(task, this.bundle.hash, log, fail);
    } finally {
      release();
    }
  }

  /** `runTask` once it holds the run (see `#hold`). */
  async #runHeld(
    task: WorkflowTask,
    bundleHash: string,
    log: Logger,
    fail: (cause: WorkflowTaskFailedCause, failure: FailureInfo) => Promise<void>,
  ): Promise<void> {
    let cached = this.#takeCached(task.runId);
    if (cached && cached.completedEventId !== task.lastCompletedTaskEventId) {
      cached.dispose(); // another node advanced the run meanwhile: replay from history
      cached = undefined;
    }
    const reserved = { slots: 0 };
    try {
      cached ??= this.#newRun(task);
      const events =
        inHand(cached, task.history) ?? (await readEvents(this.ctx, task.runId, cached.lastEventId + 1));
      // A burst of tasks (a sweep firing many timers) must not hold the event loop from the next sweep.
      await takeTurn();
      const result = cached.state.runTask(events, { time: task.startedTime });
      const fedUpTo = events.length > 0 ? events[events.length - 1]!.eventId : cached.lastEventId;
      cached.lastEventId = fedUpTo;
      if (result.taskFailure) {
        cached.dispose();
        return fail('WorkflowError', result.taskFailure);
      }
      const eager = this.#reserveEager(result.commands, reserved);
      const outcome = await completeWorkflowTask(
        this.ctx,
        task.runId,
        task.token,
        result.commands,
        bundleHash,
        this.workerId,
        eager,
        this.cache.maxEntries > 0 ? this.workerId : null,
      );
      this.#afterCommit(task.runId, cached, outcome, fedUpTo, task.startedTime, result.commands, reserved);
    } catch (err) {
      this.activities?.release(reserved.slots);
      cached?.dispose();
      if (err instanceof StaleTokenError) {
        log.info('workflow task result rejected: the task is no longer current');
        return;
      }
      if (err instanceof NonDeterminismError) return fail('NonDeterminism', toFailureInfo(err));
      if (err instanceof DeadlockError) return fail('Deadlock', toFailureInfo(err));
      if (isStoreFault(err)) throw err;
      return fail('WorkflowError', toFailureInfo(err));
    }
  }

  /**
   * Records the result of an activity attempt run by this worker: through the hot path when the run is
   * cached here, else the ordinary way. Throws StaleTokenError if the attempt is no longer current.
   */
  async completeActivity(task: ActivityTask, result: unknown): Promise<void> {
    const release = await this.#hold(task.runId);
    try {
      await this.#completeHeld(task, result);
    } finally {
      release();
    }
  }

  /** `completeActivity` once it holds the run (see `#hold`). */
  async #completeHeld(task: ActivityTask, result: unknown): Promise<void> {
    const cached = this.sandbox && this.bundle && !this.#stopping ? this.#takeCached(task.runId) : undefined;
    if (!cached || cached.nextEventId === 0) {
      if (cached) this.cache.put(task.runId, cached);
      await completeActivity(this.ctx, task, result);
      return;
    }
    const taskTime = Math.max(this.ctx.clock.now(), cached.lastTaskTime);
    const speculative = hotPathEvents(
      task,
      result,
      this.queue.taskQueue,
      this.workerId,
      taskTime,
      taskTime,
      cached.nextEventId,
    );
    const fed = [...cached.unseen, ...speculative];
    let activation: ActivationResult;
    try {
      activation = cached.state.runTask(fed, { time: taskTime });
    } catch {
      activation = {
        commands: [],
        taskFailure: { kind: 'application', type: 'Error', message: 'speculation failed' },
      };
    }
    if (activation.taskFailure) {
      // Let the ordinary path run (and fail) this task where its failure is recorded properly.
      cached.dispose();
      await completeActivity(this.ctx, task, result);
      return;
    }
    const reserved = { slots: 0 };
    const eager = this.#reserveEager(activation.commands, reserved);
    try {
      const outcome = await completeActivityWithTask(
        this.ctx,
        task,
        result,
        {
          expectedNextEventId: cached.nextEventId,
          expectedLastCompletedTaskEventId: cached.completedEventId,
          taskTime,
          commands: activation.commands,
          bundleHash: this.bundle!.hash,
        },
        this.workerId,
        eager,
      );
      if (outcome.kind === 'fallback') {
        this.activities?.release(reserved.slots);
        cached.dispose(); // it ran ahead of history
        return;
      }
      const fedUpTo = speculative[speculative.length - 1]!.eventId;
      this.#afterCommit(task.runId, cached, outcome, fedUpTo, taskTime, activation.commands, reserved);
    } catch (err) {
      this.activities?.release(reserved.slots);
      cached.dispose();
      throw err;
    }
  }

  /**
   * Waits until no other task or activity result of this runner works with run `runId`, then marks it
   * held; the returned function gives it back (call it once the instance is back in the cache or gone).
   */
  async #hold(runId: string): Promise<() => void> {
    for (let busy = this.#held.get(runId); busy; busy = this.#held.get(runId)) await busy;
    let release!: () => void;
    const back = new Promise<void>((resolve) => {
      release = () => {
        this.#held.delete(runId);
        resolve();
      };
    });
    this.#held.set(runId, back);
    return release;
  }

  /** The cached run, unless its instance was lost with a replaced sandbox thread. */
  #takeCached(runId: string): CachedRun | undefined {
    const cached = this.cache.take(runId);
    if (cached && cached.generation !== this.sandbox?.generation) {
      cached.dispose();
      return undefined;
    }
    return cached;
  }

  /** From now on only in-flight work finishes; results go the ordinary way. */
  stop(): void {
    this.#stopping = true;
  }

  #reserveEager(
    commands: readonly WorkflowCommand[],
    reserved: { slots: number },
  ): EagerDispatch | undefined {
    if (!this.activities || this.#stopping) return undefined;
    const wanted = commands.filter(
      (c) => c.type === 'scheduleActivity' && (c.taskQueue ?? this.queue.taskQueue) === this.queue.taskQueue,
    ).length;
    if (wanted === 0) return undefined;
    reserved.slots = this.activities.reserve(Math.min(wanted, EAGER_ACTIVITY_LIMIT));
    if (reserved.slots === 0) return undefined;
    return { ...this.queue, workerId: this.workerId, slots: reserved.slots };
  }

  #afterCommit(
    runId: string,
    cached: CachedRun,
    outcome: CompletionResult,
    fedUpTo: number,
    taskTime: number,
    commands: readonly WorkflowCommand[],
    reserved: { slots: number },
  ): void {
    this.activities?.release(reserved.slots - outcome.eagerActivities.length);
    for (const t of outcome.eagerActivities) void this.activities!.execute(t, true);
    // A workflow that will sleep for a while costs rows, not memory: it is replayed when it wakes.
    const sleeps =
      outcome.nextWakeAt !== null && outcome.nextWakeAt - this.ctx.clock.now() >= SLEEPER_EVICTION_MS;
    if (outcome.outcome === 'committed' && !commands.some(isClosingCommand) && !sleeps) {
      cached.committed(outcome, fedUpTo, taskTime);
      this.cache.put(runId, cached);
    } else {
      cached.dispose();
    }
  }

  #newRun(task: WorkflowTask): CachedRun {
    const info = workflowInfo(task);
    const instance = this.sandbox!.createInstance(info, (level, message, fields) =>
      this.logger[level](message, { ...fields, workflowId: task.workflowId, runId: task.runId }),
    );
    return new CachedRun(new WorkflowRunState(instance, info), () => instance.dispose(), instance.generation);
  }

  /**
   * Answers a query on the run's state including every recorded and buffered event (so a signal whose
   * call returned is visible), on a throwaway instance: nothing is committed and the cache is untouched.
   */
  async answer(query: QueryRecord): Promise<void> {
    try {
      const result = await this.#evaluate(query);
      await answerQuery(this.ctx, query.id, { result });
    } catch (err) {
      const failure = toFailureInfo(err);
      // The client rebuilds QueryNotRegisteredError from these details (runtime/queries.ts fromQueryFailure).
      if (err instanceof QueryNotRegisteredError) {
        await answerQuery(this.ctx, query.id, {
          failure: { ...failure, details: [err.queryType, [...err.knownQueries]] },
        });
        return;
      }
      await answerQuery(this.ctx, query.id, { failure });
    }
  }

  async #evaluate(query: QueryRecord): Promise<unknown> {
    const { run, events, buffered } = await this.ctx.store.read(async (tx) => {
      const run = await tx.getRun(query.runId);
      return {
        run,
        events: await tx.readEvents(query.runId, 1),
        buffered: await tx.listBuffered(query.runId),
      };
    });
    if (!run) throw new Error(`run ${query.runId} no longer exists`);
    if (!this.sandbox?.workflowTypes().includes(run.workflowType)) {
      throw new Error(`workflow type '${run.workflowType}' is not registered on this worker`);
    }
    const all: HistoryEvent[] = [...events];
    let id = run.nextEventId;
    for (const b of buffered) all.push({ ...b.event, eventId: id++ } as HistoryEvent);
    const info = workflowInfo({ ...run, runStartTime: run.startTime, historyLength: all.length });
    const instance = this.sandbox.createInstance(info);
    try {
      const state = new WorkflowRunState(instance, info);
      state.runTask(all, { time: Math.max(run.wftStartedTime, this.ctx.clock.now()) });
      return instance.query(query.queryType, query.args);
    } finally {
      instance.dispose();
    }
  }
}

function workflowInfo(task: {
  namespace: string;
  workflowId: string;
  runId: string;
  workflowType: string;
  taskQueue: string;
  runStartTime: number;
  historyLength: number;
  memo: Record<string, unknown> | null;
  searchAttributes: Record<string, unknown> | null;
}): WorkflowInfo {
  return {
    namespace: task.namespace,
    workflowId: task.workflowId,
    runId: task.runId,
    workflowType: task.workflowType,
    taskQueue: task.taskQueue,
    startTime: task.runStartTime,
    historyLength: task.historyLength,
    continueAsNewSuggested: task.historyLength >= LIMITS.historyWarnEvents,
    memo: task.memo ?? undefined,
    searchAttributes: task.searchAttributes ?? undefined,
  };
}

function unknownType(type: string, known: readonly string[], why?: string): FailureInfo {
  return {
    kind: 'application',
    type: 'UnknownWorkflowType',
    message: `workflow type '${type}' is not registered on this worker${why ? ` (${why})` : ''}; registered: ${known.join(', ') || 'none'}. Deploy a worker whose workflows module exports it`,
  };
}

function isStoreFault(err: unknown): boolean {
  return (
    typeof err === 'object' && err !== null && (err as { code?: string }).code?.startsWith('STORE') === true
  );
}
