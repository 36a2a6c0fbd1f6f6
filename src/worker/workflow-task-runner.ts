import { isClosingCommand, type WorkflowInfo } from '../common/commands.js';
import {
  DeadlockError,
  type FailureInfo,
  NonDeterminismError,
  QueryNotRegisteredError,
  StaleTokenError,
  toFailureInfo,
} from '../common/errors.js';
import type { HistoryEvent, WorkflowTaskFailedCause } from '../common/events.js';
import { LIMITS } from '../common/ids.js';
import { childLogger, type Logger } from '../common/logger.js';
import type { RuntimeContext } from '../runtime/context.js';
import { answerQuery } from '../runtime/queries.js';
import {
  completeWorkflowTask,
  failWorkflowTask,
  readEvents,
  type WorkflowTask,
} from '../runtime/workflow-tasks.js';
import type { QueryRecord } from '../store/store.js';
import type { WorkflowBundle } from './bundler.js';
import type { WorkflowSandbox } from './sandbox.js';
import { WorkflowCache } from './workflow-cache.js';
import { WorkflowRunState } from './workflow-replayer.js';

/** A cached run: its sandbox instance and replay state, and the task completion it last committed. */
class CachedRun {
  constructor(
    readonly state: WorkflowRunState,
    readonly dispose: () => void,
    /** Id of the WorkflowTaskCompleted this instance committed; the run must still be at it. */
    public completedEventId: number,
    /** Last history event the instance has seen. */
    public lastEventId: number,
  ) {}
}

/**
 * Runs workflow tasks and queries for one worker: takes the cached instance or replays history into a
 * fresh one, runs the activation, and commits the commands fenced by the task's token. Anything other
 * than a workflow outcome (a TypeError, non-determinism, an unknown type, a deadlock) fails the task,
 * which the engine retries with backoff; the cached instance is dropped whenever its state could be
 * ahead of or apart from history.
 */
export class WorkflowTaskRunner {
  readonly cache: WorkflowCache<CachedRun>;

  constructor(
    private readonly ctx: RuntimeContext,
    private readonly sandbox: WorkflowSandbox | null,
    private readonly bundle: WorkflowBundle | null,
    private readonly workerId: string,
    private readonly logger: Logger,
    cacheOptions: { maxEntries: number; heapWatermark: number },
  ) {
    this.cache = new WorkflowCache<CachedRun>(cacheOptions.maxEntries, cacheOptions.heapWatermark);
  }

  async runTask(task: WorkflowTask): Promise<void> {
    const log = childLogger(this.logger, {
      workflowId: task.workflowId,
      runId: task.runId,
      workerId: this.workerId,
    });
    const fail = async (cause: WorkflowTaskFailedCause, failure: FailureInfo): Promise<void> => {
      this.cache.evict(task.runId);
      if (task.attempt === 1)
        log.warn('workflow task failed; it will be retried', { cause, error: failure.message });
      await failWorkflowTask(this.ctx, task.runId, task.token, cause, failure, this.workerId).catch((err) => {
        if (!(err instanceof StaleTokenError)) throw err;
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
    let cached = this.cache.take(task.runId);
    if (cached && cached.completedEventId !== task.lastCompletedTaskEventId) {
      cached.dispose(); // another node advanced the run meanwhile: replay from history
      cached = undefined;
    }
    try {
      cached ??= this.#newRun(task);
      const events = await readEvents(this.ctx, task.runId, cached.lastEventId + 1);
      const result = cached.state.runTask(events, { time: task.startedTime });
      if (events.length > 0) cached.lastEventId = events[events.length - 1]!.eventId;
      if (result.taskFailure) {
        cached.dispose();
        return fail('WorkflowError', result.taskFailure);
      }
      const outcome = await completeWorkflowTask(
        this.ctx,
        task.runId,
        task.token,
        result.commands,
        this.bundle.hash,
        this.workerId,
      );
      const closes = result.commands.some(isClosingCommand);
      if (outcome.outcome === 'committed' && !closes) {
        cached.completedEventId = outcome.completedEventId;
        this.cache.put(task.runId, cached);
      } else {
        cached.dispose();
      }
    } catch (err) {
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

  #newRun(task: WorkflowTask): CachedRun {
    const info = workflowInfo(task);
    const instance = this.sandbox!.createInstance(info, (level, message, fields) =>
      this.logger[level](message, { ...fields, workflowId: task.workflowId, runId: task.runId }),
    );
    return new CachedRun(new WorkflowRunState(instance, info), () => instance.dispose(), 0, 0);
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
