import type { ActivationJob, WorkflowCommand, WorkflowInfo } from '../common/commands.js';
import type { FailureInfo } from '../common/errors.js';
import { LonghaulError, NonDeterminismError, ValidationError } from '../common/errors.js';
import type { EventOf, EventType, HistoryEvent, HistoryFile } from '../common/events.js';
import type { ActivationResult, WorkflowInstance, WorkflowSandbox } from './sandbox.js';

/**
 * The cached state no longer lines up with history (a task this instance computed failed, timed out or
 * was discarded, or events arrived out of the expected order). Not a workflow problem: discard the run
 * state and replay from history with a fresh instance.
 */
export class StaleRunStateError extends LonghaulError {
  constructor(message: string) {
    super('STALE_RUN_STATE', message);
  }
}

/** Events written for workflow commands; each must match the command at the same position. */
const COMMAND_EVENTS: ReadonlySet<EventType> = new Set<EventType>([
  'ActivityScheduled',
  'ActivityCancelRequested',
  'TimerStarted',
  'TimerCanceled',
  'WorkflowCompleted',
  'WorkflowFailed',
  'WorkflowCanceled',
]);

/** A completed task whose commands are being matched against the command events that follow it. */
interface Verification {
  readonly produced: readonly WorkflowCommand[];
  index: number;
  readonly completedEventId: number;
}

/** Thrown inside replay when workflow code failed a task that history says completed. */
class ReplayTaskFailure extends Error {
  constructor(
    readonly failure: FailureInfo,
    readonly completedEventId: number,
  ) {
    super(failure.message);
  }
}

/**
 * Turns one run's history into activations and checks that the workflow code still produces what
 * history recorded (DESIGN section 4).
 *
 * Task boundaries. A workflow task's batch is every non-workflow-task event since the previous
 * WorkflowTaskCompleted. WorkflowTaskStarted followed by WorkflowTaskCompleted is a completed task: it
 * is activated with `isReplaying: true` at the time of its WorkflowTaskStarted, and its commands must
 * match, 1:1 and in order, the command events that follow the WorkflowTaskCompleted. A task that
 * failed or timed out did not count: its batch carries over into the next task. The events after the
 * last completed task form the current task, activated with `isReplaying: false`.
 *
 * Caching. The commands returned for the current task are remembered; when the next call brings the
 * WorkflowTaskCompleted and command events they became, those are verified without re-activating. If
 * anything else happens to that task (failed, timed out, discarded), `runTask` throws
 * StaleRunStateError. After any throw, or a result with `taskFailure`, the state is unusable: discard
 * it (and its instance) and replay from history.
 *
 * Workflow time never goes backwards: each activation's timestamp is at least the previous one.
 */
export class WorkflowRunState {
  private readonly instance: WorkflowInstance;
  private readonly info: WorkflowInfo;
  private lastEventId = 0;
  private lastTaskTime = Number.NEGATIVE_INFINITY;
  /** Events for the next activation. */
  private batch: HistoryEvent[] = [];
  /** The WorkflowTaskStarted of a task not yet known to have completed, and the batch it saw. */
  private started: { event: EventOf<'WorkflowTaskStarted'>; batch: HistoryEvent[] } | undefined;
  private verifying: Verification | undefined;
  /** Commands this state returned for the current task, until its WorkflowTaskCompleted arrives. */
  private awaiting: readonly WorkflowCommand[] | undefined;
  /** ActivityScheduled events by event id. */
  private readonly scheduled = new Map<number, { activityId: string; activityType: string }>();
  private broken: string | undefined;

  constructor(instance: WorkflowInstance, info: WorkflowInfo) {
    this.instance = instance;
    this.info = info;
  }

  /**
   * Feeds the events appended since the last call (the whole history on the first call), replaying
   * and verifying every completed task among them, then activates the current task and returns its
   * result. Throws NonDeterminismError on divergence, DeadlockError from the sandbox, and
   * StaleRunStateError when cached state no longer fits history.
   */
  runTask(newEvents: readonly HistoryEvent[], task: { readonly time: number }): ActivationResult {
    this.checkUsable();
    try {
      this.ingest(newEvents);
      this.finishVerification();
      if (this.awaiting) {
        throw new StaleRunStateError(
          `${this.label()}: the task this state computed last has not completed in history; replay from history`,
        );
      }
      return this.activateCurrent(task.time);
    } catch (err) {
      this.broken = err instanceof Error ? err.message : String(err);
      if (err instanceof ReplayTaskFailure) return { commands: [], taskFailure: err.failure };
      throw err;
    }
  }

  /**
   * Replays every completed task of a whole history against a sandbox and checks determinism: throws
   * NonDeterminismError on divergence. The trailing, not yet completed task is not activated. An
   * unknown workflow type or a malformed history throws a clear error.
   */
  static replayHistory(sandbox: WorkflowSandbox, history: HistoryFile | readonly HistoryEvent[]): void {
    const parsed =
      'events' in history && !Array.isArray(history) ? parseHistoryFile(history as HistoryFile) : null;
    const events = parsed?.events ?? (history as readonly HistoryEvent[]);
    const first = events[0];
    if (first?.type !== 'WorkflowStarted') {
      throw new ValidationError('history', 'must begin with a WorkflowStarted event (event 1)');
    }
    const workflowType = first.attributes.workflowType;
    const known = sandbox.workflowTypes();
    if (!known.includes(workflowType)) {
      throw new LonghaulError(
        'UNKNOWN_WORKFLOW_TYPE',
        `workflow type '${workflowType}' of this history is not exported by ${sandbox.bundle.workflowsPath} (exported: ${known.join(', ') || 'none'})`,
      );
    }
    const info: WorkflowInfo = {
      namespace: 'default',
      workflowId: parsed?.workflowId ?? 'replay',
      runId: parsed?.runId ?? 'replay',
      workflowType,
      taskQueue: first.attributes.taskQueue,
      startTime: first.time,
      historyLength: events.length,
      continueAsNewSuggested: false,
      memo: first.attributes.memo,
      searchAttributes: first.attributes.searchAttributes,
    };
    const instance = sandbox.createInstance(info);
    try {
      const state = new WorkflowRunState(instance, info);
      try {
        state.ingest(events);
        state.finishVerification();
      } catch (err) {
        if (!(err instanceof ReplayTaskFailure)) throw err;
        throw new NonDeterminismError(
          `${state.label()}: replaying the workflow task completed at event ${err.completedEventId} failed (${err.failure.type}: ${err.failure.message}), but it completed when it ran`,
        );
      }
    } finally {
      instance.dispose();
    }
  }

  private label(): string {
    return `workflow '${this.info.workflowType}' run ${this.info.runId}`;
  }

  private checkUsable(): void {
    if (this.broken !== undefined) {
      throw new StaleRunStateError(
        `${this.label()}: run state is unusable (${this.broken}); replay from history`,
      );
    }
  }

  private ingest(events: readonly HistoryEvent[]): void {
    for (const e of events) {
      if (e.eventId !== this.lastEventId + 1) {
        throw new LonghaulError(
          'HISTORY',
          `${this.label()}: expected event ${this.lastEventId + 1} but got event ${e.eventId}; history must be gap-free`,
        );
      }
      this.lastEventId = e.eventId;
      if (e.type === 'ActivityScheduled') {
        this.scheduled.set(e.eventId, {
          activityId: e.attributes.activityId,
          activityType: e.attributes.activityType,
        });
      }
      if (this.awaiting) {
        this.ingestWhileAwaiting(e);
        continue;
      }
      switch (e.type) {
        case 'WorkflowTaskScheduled':
          break;
        case 'WorkflowTaskStarted':
          this.finishVerification();
          this.carryOver();
          this.started = { event: e, batch: this.batch };
          this.batch = [];
          break;
        case 'WorkflowTaskCompleted':
          this.replayCompleted(e.eventId);
          break;
        case 'WorkflowTaskFailed':
        case 'WorkflowTaskTimedOut':
          this.carryOver();
          break;
        default:
          if (COMMAND_EVENTS.has(e.type)) this.matchCommandEvent(e);
          else this.batch.push(e);
      }
    }
  }

  /** The current task was activated by this state: only its completion (and its commands) may follow. */
  private ingestWhileAwaiting(e: HistoryEvent): void {
    if (e.type === 'WorkflowTaskScheduled' || e.type === 'WorkflowTaskStarted') return;
    if (e.type === 'WorkflowTaskCompleted') {
      this.verifying = { produced: this.awaiting ?? [], index: 0, completedEventId: e.eventId };
      this.awaiting = undefined;
      return;
    }
    throw new StaleRunStateError(
      `${this.label()}: event ${e.eventId} (${e.type}) arrived where the completion of the task this state computed was expected; replay from history`,
    );
  }

  /** A started task that did not complete does not count: its batch joins the events that came after it. */
  private carryOver(): void {
    if (!this.started) return;
    this.batch = [...this.started.batch, ...this.batch];
    this.started = undefined;
  }

  private replayCompleted(completedEventId: number): void {
    if (!this.started) {
      throw new LonghaulError(
        'HISTORY',
        `${this.label()}: event ${completedEventId} is WorkflowTaskCompleted without a WorkflowTaskStarted before it`,
      );
    }
    const { event, batch } = this.started;
    this.started = undefined;
    const timestamp = Math.max(event.time, this.lastTaskTime);
    const result = this.instance.activate({
      timestamp,
      isReplaying: true,
      historyLength: event.eventId,
      jobs: this.jobsFrom(batch),
    });
    this.lastTaskTime = timestamp;
    if (result.taskFailure) throw new ReplayTaskFailure(result.taskFailure, completedEventId);
    this.verifying = { produced: result.commands, index: 0, completedEventId };
  }

  private matchCommandEvent(e: HistoryEvent): void {
    const v = this.verifying;
    const produced = v?.produced[v.index];
    if (!v || !produced) {
      const after = v
        ? ` after the ${v.produced.length} command(s) of the task completed at event ${v.completedEventId}`
        : '';
      throw this.divergence(
        e.eventId,
        `history recorded ${describeEvent(e)} but the workflow produced no command${after}`,
      );
    }
    if (!this.matches(produced, e)) {
      throw this.divergence(
        e.eventId,
        `history recorded ${describeEvent(e)} but the workflow produced ${describeCommand(produced)}`,
      );
    }
    v.index++;
  }

  /** Every command of the task being verified must have had its event. */
  private finishVerification(): void {
    const v = this.verifying;
    this.verifying = undefined;
    if (!v || v.index >= v.produced.length) return;
    const extra = v.produced[v.index]!;
    throw this.divergence(
      v.completedEventId,
      `the workflow produced ${describeCommand(extra)} in the task completed at event ${v.completedEventId}, but history has no matching event`,
    );
  }

  private divergence(eventId: number, what: string): NonDeterminismError {
    return new NonDeterminismError(
      `${this.label()}: non-determinism at event ${eventId}: ${what}. The workflow code is not compatible with this history; deploy code that makes the same calls in the same order`,
    );
  }

  private matches(c: WorkflowCommand, e: HistoryEvent): boolean {
    switch (c.type) {
      case 'scheduleActivity':
        return (
          e.type === 'ActivityScheduled' &&
          e.attributes.activityId === String(c.seq) &&
          e.attributes.activityType === c.activityType
        );
      case 'requestCancelActivity':
        return (
          e.type === 'ActivityCancelRequested' &&
          this.scheduled.get(e.attributes.scheduledEventId)?.activityId === String(c.seq)
        );
      case 'startTimer':
        return e.type === 'TimerStarted' && e.attributes.timerId === String(c.seq);
      case 'cancelTimer':
        return e.type === 'TimerCanceled' && e.attributes.timerId === String(c.seq);
      case 'completeWorkflow':
        return e.type === 'WorkflowCompleted';
      case 'failWorkflow':
        return e.type === 'WorkflowFailed';
      case 'cancelWorkflow':
        return e.type === 'WorkflowCanceled';
    }
  }

  private activateCurrent(time: number): ActivationResult {
    this.carryOver();
    const timestamp = Math.max(time, this.lastTaskTime);
    const result = this.instance.activate({
      timestamp,
      isReplaying: false,
      historyLength: this.lastEventId,
      jobs: this.jobsFrom(this.batch),
    });
    this.batch = [];
    this.lastTaskTime = timestamp;
    if (result.taskFailure) this.broken = `the workflow task failed: ${result.taskFailure.message}`;
    else this.awaiting = result.commands;
    return result;
  }

  /** Jobs in the order of commands.ts (behaviour version 1): start, signals, cancel, resolutions. */
  private jobsFrom(batch: readonly HistoryEvent[]): ActivationJob[] {
    const start: ActivationJob[] = [];
    const signals: ActivationJob[] = [];
    const cancel: ActivationJob[] = [];
    const resolutions: ActivationJob[] = [];
    for (const e of batch) {
      switch (e.type) {
        case 'WorkflowStarted':
          start.push({
            type: 'start',
            workflowType: e.attributes.workflowType,
            args: e.attributes.input,
            randomnessSeed: e.attributes.randomnessSeed,
          });
          break;
        case 'SignalReceived':
          signals.push({ type: 'signal', signalName: e.attributes.signalName, args: e.attributes.input });
          break;
        case 'WorkflowCancelRequested':
          if (cancel.length === 0) cancel.push({ type: 'cancelWorkflow', reason: e.attributes.reason });
          break;
        case 'ActivityCompleted':
          resolutions.push({
            type: 'resolveActivity',
            seq: this.activitySeq(e.eventId, e.attributes.scheduledEventId),
            result: e.attributes.result,
          });
          break;
        case 'ActivityFailed':
        case 'ActivityTimedOut':
        case 'ActivityCanceled':
          resolutions.push(this.activityFailureJob(e));
          break;
        case 'TimerFired':
          resolutions.push({ type: 'fireTimer', seq: Number(e.attributes.timerId) });
          break;
        default:
          break;
      }
    }
    return [...start, ...signals, ...cancel, ...resolutions];
  }

  private activitySeq(eventId: number, scheduledEventId: number): number {
    const s = this.scheduled.get(scheduledEventId);
    if (!s) {
      throw new LonghaulError(
        'HISTORY',
        `${this.label()}: event ${eventId} refers to ActivityScheduled event ${scheduledEventId}, which is not in history`,
      );
    }
    return Number(s.activityId);
  }

  private activityFailureJob(
    e: EventOf<'ActivityFailed'> | EventOf<'ActivityTimedOut'> | EventOf<'ActivityCanceled'>,
  ): ActivationJob {
    const seq = this.activitySeq(e.eventId, e.attributes.scheduledEventId);
    const s = this.scheduled.get(e.attributes.scheduledEventId)!;
    let cause: FailureInfo;
    let retryState: FailureInfo['retryState'];
    let what: string;
    if (e.type === 'ActivityCanceled') {
      const details = e.attributes.details;
      cause = {
        kind: 'cancelled',
        type: 'CancelledFailure',
        message: 'activity cancelled',
        details: details === undefined ? undefined : [details],
      };
      retryState = 'cancelRequested';
      what = 'was cancelled';
    } else {
      cause = e.attributes.failure;
      retryState = e.attributes.retryState;
      what = e.type === 'ActivityTimedOut' ? `timed out (${e.attributes.timeoutType})` : 'failed';
    }
    return {
      type: 'failActivity',
      seq,
      failure: {
        kind: 'activity',
        type: 'ActivityFailure',
        message: `activity '${s.activityType}' (id ${s.activityId}) ${what}`,
        activityType: s.activityType,
        activityId: s.activityId,
        retryState,
        cause,
      },
    };
  }
}

function describeEvent(e: HistoryEvent): string {
  switch (e.type) {
    case 'ActivityScheduled':
      return `ActivityScheduled (activityType '${e.attributes.activityType}', activityId '${e.attributes.activityId}')`;
    case 'ActivityCancelRequested':
      return `ActivityCancelRequested (scheduledEventId ${e.attributes.scheduledEventId})`;
    case 'TimerStarted':
      return `TimerStarted (timerId '${e.attributes.timerId}', ${e.attributes.durationMs} ms)`;
    case 'TimerCanceled':
      return `TimerCanceled (timerId '${e.attributes.timerId}')`;
    default:
      return e.type;
  }
}

function describeCommand(c: WorkflowCommand): string {
  switch (c.type) {
    case 'scheduleActivity':
      return `scheduleActivity (activityType '${c.activityType}', seq ${c.seq})`;
    case 'requestCancelActivity':
    case 'cancelTimer':
      return `${c.type} (seq ${c.seq})`;
    case 'startTimer':
      return `startTimer (seq ${c.seq}, ${c.durationMs} ms)`;
    default:
      return c.type;
  }
}

/** Validates the exported history format and converts times to milliseconds. */
function parseHistoryFile(file: HistoryFile): { workflowId: string; runId: string; events: HistoryEvent[] } {
  if (file.formatVersion !== 1) {
    throw new ValidationError('history.formatVersion', `must be 1, got ${String(file.formatVersion)}`);
  }
  if (!Array.isArray(file.events)) throw new ValidationError('history.events', 'must be an array');
  const events = file.events.map((e, i) => {
    const field = `history.events[${i}]`;
    if (typeof e !== 'object' || e === null) throw new ValidationError(field, 'must be an object');
    if (!Number.isSafeInteger(e.eventId)) throw new ValidationError(`${field}.eventId`, 'must be an integer');
    if (typeof e.type !== 'string') throw new ValidationError(`${field}.type`, 'must be an event type');
    const time = typeof e.time === 'string' ? Date.parse(e.time) : Number.NaN;
    if (Number.isNaN(time)) throw new ValidationError(`${field}.time`, 'must be an ISO 8601 time');
    if (typeof e.attributes !== 'object' || e.attributes === null) {
      throw new ValidationError(`${field}.attributes`, 'must be an object');
    }
    return { eventId: e.eventId, type: e.type, time, attributes: e.attributes } as HistoryEvent;
  });
  return { workflowId: String(file.workflowId), runId: String(file.runId), events };
}
