import { randomUUID } from 'node:crypto';
import { parseDuration } from '../common/duration.js';
import {
  CancelledFailure,
  fromFailureInfo,
  TerminatedFailure,
  TimeoutFailure,
  WorkflowFailedError,
  WorkflowNotFoundError,
} from '../common/errors.js';
import { type HistoryFile, toHistoryFile } from '../common/events.js';
import { validateId } from '../common/ids.js';
import { toPayloads } from '../common/payload.js';
import { type RuntimeContext, SINGLE_READ } from '../runtime/context.js';
import { WakeWatch } from '../runtime/notifier.js';
import { queryWorkflow } from '../runtime/queries.js';
import {
  describeWorkflow,
  readHistory,
  requestCancel,
  signalWorkflow,
  terminateWorkflow,
  type WorkflowDescription,
} from '../runtime/workflow-ops.js';

/** A signal or query given by its definition (from `defineSignal`/`defineQuery`) or by name. */
export type SignalRef<Args extends unknown[] = unknown[]> =
  | string
  | { readonly name: string; readonly __args?: Args };
export type QueryRef<Ret = unknown, Args extends unknown[] = unknown[]> =
  | string
  | { readonly name: string; readonly __ret?: Ret; readonly __args?: Args };

function nameOf(ref: string | { readonly name: string }, field: string): string {
  return validateId(typeof ref === 'string' ? ref : ref?.name, field);
}

/** How long a query waits for a worker's answer by default (ms). */
const DEFAULT_QUERY_TIMEOUT_MS = 10_000;

/**
 * Pauses between two reads while waiting for a result, doubling from the first to the last (ms). A run
 * closed in this process wakes the waiter at once; one closed by another process does too where the
 * store carries wake-ups between processes (PostgreSQL), so polling there is only the fallback for a
 * lost notification, and starts at a worker's default poll interval (a lost wake-up costs a worker's
 * claim as much); without them (SQLite shared by processes) polling is how the result is found. Where
 * the store tells whether any other connection committed since (`Store.externalChanges`: SQLite), a
 * pause that ends with nothing committed elsewhere skips its read: a waiter in a process of its own
 * costs no reads until something happens.
 */
const RESULT_POLL_MS = { first: 5, last: 200 } as const;
const RESULT_POLL_WITH_NOTIFICATIONS_MS = { first: 100, last: 1000 } as const;

/**
 * A handle on a workflow: by id (the latest run) or by id and run id. Every call reads the store;
 * a handle holds no state beyond its ids.
 */
export class WorkflowHandle<Ret = unknown> {
  constructor(
    private readonly ctx: RuntimeContext,
    private readonly namespace: string,
    readonly workflowId: string,
    readonly runId: string | undefined,
  ) {}

  /** Records a signal; it is persisted before this returns and delivered exactly once, in order. */
  async signal<Args extends unknown[]>(def: SignalRef<Args>, ...args: Args): Promise<void> {
    const name = nameOf(def, 'signal');
    const payloads = toPayloads(args, 'signal args');
    await signalWorkflow(this.ctx, this.namespace, this.workflowId, this.runId, name, payloads, randomUUID());
  }

  /**
   * Asks the workflow a question; sees every signal whose call returned before (read-your-writes) and
   * leaves no trace in history. Fails with QueryTimeoutError if no worker answers in time (default 10s).
   */
  query<R = unknown, Args extends unknown[] = unknown[]>(def: QueryRef<R, Args>, ...args: Args): Promise<R> {
    return this.queryWithTimeout(def, DEFAULT_QUERY_TIMEOUT_MS, ...args);
  }

  /** Like `query`, with an explicit timeout. */
  async queryWithTimeout<R = unknown, Args extends unknown[] = unknown[]>(
    def: QueryRef<R, Args>,
    timeout: number | string,
    ...args: Args
  ): Promise<R> {
    const name = nameOf(def, 'query');
    const ms = parseDuration(timeout, 'timeout');
    const payloads = toPayloads(args, 'query args');
    const ctx = this.ctx;
    return (await queryWorkflow(ctx, this.namespace, this.workflowId, this.runId, name, payloads, ms)) as R;
  }

  /**
   * Waits for the run to close and returns its result; throws WorkflowFailedError (with the cause chain)
   * if it failed, was cancelled, terminated or timed out.
   */
  async result(): Promise<Ret> {
    const poll = this.ctx.store.notifications ? RESULT_POLL_WITH_NOTIFICATIONS_MS : RESULT_POLL_MS;
    const closed = new WakeWatch(this.ctx.notifier);
    try {
      // Watching before reading: a close committed between a read and the wait is not missed.
      let watched = this.runId;
      if (watched !== undefined) closed.watch({ kind: 'runClosed', runId: watched });
      const store = this.ctx.store;
      let read = true;
      let woken = false;
      let changes: number | undefined;
      for (let pollMs: number = poll.first; ; pollMs = Math.min(pollMs * 2, poll.last)) {
        closed.reset();
        if (read) {
          // Taken before the read: a commit from elsewhere during the read shows at the next check.
          changes = store.externalChanges?.();
          const outcome = await this.#readOutcome(woken ? watched : undefined);
          if ('value' in outcome) return outcome.value;
          if (watched !== outcome.runningRunId) {
            // The latest run's id is known only now (or a new run continued it): watch that run and
            // read once more before waiting.
            watched = outcome.runningRunId;
            closed.watch({ kind: 'runClosed', runId: watched });
            continue;
          }
        }
        woken = await closed.wait(pollMs);
        read = woken || changes === undefined || store.externalChanges?.() !== changes;
      }
    } finally {
      closed.stop();
    }
  }

  /**
   * The result once the run has closed (throws the error it closed with), else the running run's id.
   * `closedRunId`: a run just reported closed, whose last event is read beside the run (one round trip
   * where the store has a network hop, instead of one after the other).
   */
  async #readOutcome(closedRunId?: string): Promise<{ value: Ret } | { runningRunId: string }> {
    // No snapshot needed: a closed run's last event never changes.
    const { run, closing } = await this.ctx.store.read(async (tx) => {
      const [run, last] = await Promise.all([
        tx.findRun(this.namespace, this.workflowId, this.runId),
        closedRunId === undefined ? undefined : tx.lastEvent(closedRunId),
      ]);
      if (!run) throw new WorkflowNotFoundError(this.workflowId, this.runId);
      if (run.status === 'running') return { run, closing: undefined };
      // A closed run's last event is the one that closed it.
      if (run.runId === closedRunId && last?.eventId === run.nextEventId - 1) return { run, closing: last };
      const [closing] = await tx.readEvents(run.runId, run.nextEventId - 1, 1);
      return { run, closing };
    }, SINGLE_READ);
    if (closing) {
      switch (closing.type) {
        case 'WorkflowCompleted':
          return { value: closing.attributes.result as Ret };
        case 'WorkflowFailed':
          throw new WorkflowFailedError(
            `workflow ${run.workflowId} failed: ${closing.attributes.failure.message}`,
            fromFailureInfo(closing.attributes.failure),
            'failed',
          );
        case 'WorkflowCanceled':
          throw new WorkflowFailedError(
            `workflow ${run.workflowId} was cancelled`,
            new CancelledFailure(),
            'canceled',
          );
        case 'WorkflowTerminated':
          throw new WorkflowFailedError(
            `workflow ${run.workflowId} was terminated${closing.attributes.reason ? `: ${closing.attributes.reason}` : ''}`,
            new TerminatedFailure(closing.attributes.reason ?? 'terminated'),
            'terminated',
          );
        case 'WorkflowTimedOut':
          throw new WorkflowFailedError(
            `workflow ${run.workflowId} timed out (${closing.attributes.timeoutType})`,
            new TimeoutFailure(`${closing.attributes.timeoutType} timeout`, 'scheduleToClose'),
            'timedOut',
          );
        default:
          throw new Error(`run ${run.runId} is ${run.status} but its last event is ${closing.type}`);
      }
    }
    return { runningRunId: run.runId };
  }

  /** Status, pending activities (attempt, last heartbeat) and the current workflow-task failure, if any. */
  describe(): Promise<WorkflowDescription> {
    return describeWorkflow(this.ctx, this.namespace, this.workflowId, this.runId);
  }

  /** Requests cancellation; the workflow decides how to wind down. */
  cancel(reason?: string): Promise<void> {
    return requestCancel(this.ctx, this.namespace, this.workflowId, this.runId, reason);
  }

  /** Ends the run at once; no workflow code runs. */
  terminate(reason?: string): Promise<void> {
    return terminateWorkflow(this.ctx, this.namespace, this.workflowId, this.runId, reason);
  }

  /** The run's history in the versioned history format (replay input). */
  async fetchHistory(): Promise<HistoryFile> {
    const { run, events } = await readHistory(this.ctx, this.namespace, this.workflowId, this.runId);
    return toHistoryFile(run.workflowId, run.runId, events);
  }
}
