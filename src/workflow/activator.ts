import type { Activation, ActivationJob, WorkflowCommand, WorkflowInfo } from '../common/commands.js';
import type { FailureInfo } from '../common/errors.js';
import {
  CancelledFailure,
  fromFailureInfo,
  isCancellation,
  LonghaulFailure,
  toFailureInfo,
} from '../common/errors.js';
import { toPayload } from '../common/payload.js';
import { CancellationScope } from './cancellation-scope.js';
import { createRandom } from './random.js';

/** How a log line leaves the sandbox: level, message and the fields as JSON text (plain data only). */
export type SandboxLogSink = (level: string, message: string, fieldsJson: string) => void;

type Handler = (...args: unknown[]) => unknown;

interface PendingActivity {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
  cancelRequested: boolean;
}

interface PendingTimer {
  /** Called when the timer fires. */
  readonly fire: () => void;
  /** Called when the root scope is cancelled (the cancelTimer command is already emitted). */
  readonly cancel: (err: CancelledFailure) => void;
}

interface PendingCondition {
  readonly fn: () => boolean;
  readonly resolve: (value: boolean) => void;
  readonly reject: (err: unknown) => void;
  timerSeq: number | undefined;
}

/** What one activation hands back to the host. */
export interface ActivationOutcome {
  commands: WorkflowCommand[];
  taskFailure?: FailureInfo;
}

export type QueryOutcome =
  | { readonly ok: true; readonly result: unknown }
  | { readonly ok: false; readonly notRegistered: true; readonly known: string[] }
  | { readonly ok: false; readonly notRegistered: false; readonly failure: FailureInfo };

/** Marks a promise handled, so one the workflow never awaits is not reported as an unhandled rejection. */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

function cancelled(): CancelledFailure {
  return new CancelledFailure('workflow cancellation was requested');
}

/**
 * The state of one run inside the sandbox: what is pending, the commands of the current activation,
 * handlers, and the run's clock and randomness.
 *
 * Outcome rules for workflow code (the main function, signal handlers, timer callbacks):
 * - returns → `completeWorkflow`;
 * - throws a LonghaulFailure (ApplicationFailure, ActivityFailure, ...) → `failWorkflow`;
 * - throws a cancellation after cancellation was requested → `cancelWorkflow`;
 * - throws anything else → the workflow task fails (`taskFailure`); the run stays open.
 * Once a closing command is emitted, later commands are dropped.
 */
export class Activator {
  readonly info: WorkflowInfo;
  /** Workflow time of the current activation, ms since the epoch; never goes backwards. */
  now: number;
  isReplaying = false;
  historyLength: number;
  random: () => number;
  /** Exports of this run's workflows module. */
  workflows: Record<string, unknown> = {};
  readonly rootScope = new CancellationScope();
  cancelRequested = false;
  inQuery = false;
  readonly signalHandlers = new Map<string, Handler>();
  readonly queryHandlers = new Map<string, Handler>();

  private readonly logSink: SandboxLogSink | undefined;
  private activitySeq = 0;
  private timerSeq = 0;
  private conditionSeq = 0;
  private commands: WorkflowCommand[] = [];
  private readonly activities = new Map<number, PendingActivity>();
  private readonly timers = new Map<number, PendingTimer>();
  private readonly conditions = new Map<number, PendingCondition>();
  private readonly bufferedSignals: { signalName: string; args: unknown[] }[] = [];
  private closed = false;
  private taskFailure: FailureInfo | undefined;

  constructor(info: WorkflowInfo, logSink?: SandboxLogSink) {
    this.info = info;
    this.now = info.startTime;
    this.historyLength = info.historyLength;
    // Until the start job brings the run's seed, module top-level code gets randomness seeded by the run id.
    this.random = createRandom(`run:${info.runId}`);
    this.logSink = logSink;
  }

  // ---- activation ----

  /** Applies the jobs in order, checking conditions after each. The host drains microtasks afterwards. */
  activate(activation: Activation): void {
    this.now = Math.max(this.now, activation.timestamp);
    this.isReplaying = activation.isReplaying;
    this.historyLength = activation.historyLength;
    for (const job of activation.jobs) {
      this.applyJob(job);
      this.checkConditions();
    }
  }

  /** Takes the commands produced since the last collect. */
  collect(): ActivationOutcome {
    const out: ActivationOutcome = { commands: this.commands };
    this.commands = [];
    if (this.taskFailure) out.taskFailure = this.taskFailure;
    return out;
  }

  private applyJob(job: ActivationJob): void {
    switch (job.type) {
      case 'start':
        this.start(job.workflowType, job.args, job.randomnessSeed);
        return;
      case 'signal':
        this.deliverSignal(job.signalName, job.args);
        return;
      case 'cancelWorkflow':
        this.cancelWorkflow();
        return;
      case 'resolveActivity': {
        const pending = this.activities.get(job.seq);
        if (!pending) return;
        this.activities.delete(job.seq);
        pending.resolve(job.result);
        return;
      }
      case 'failActivity': {
        const pending = this.activities.get(job.seq);
        if (!pending) return;
        this.activities.delete(job.seq);
        pending.reject(fromFailureInfo(job.failure));
        return;
      }
      case 'fireTimer': {
        const timer = this.timers.get(job.seq);
        if (!timer) return;
        this.timers.delete(job.seq);
        timer.fire();
        return;
      }
    }
  }

  private start(workflowType: string, args: unknown[], seed: string): void {
    this.random = createRandom(seed);
    const fn = this.workflows[workflowType];
    if (typeof fn !== 'function') {
      const known = Object.keys(this.workflows).filter((k) => typeof this.workflows[k] === 'function');
      this.taskFailure ??= {
        kind: 'application',
        type: 'UnknownWorkflowType',
        message: `workflow type '${workflowType}' is not exported by the workflows module (exported: ${known.join(', ') || 'none'})`,
        nonRetryable: false,
      };
      return;
    }
    let result: Promise<unknown>;
    try {
      result = Promise.resolve((fn as Handler)(...args));
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (value) => this.complete(value),
      (err: unknown) => this.handleWorkflowError(err),
    );
  }

  private complete(value: unknown): void {
    let result: unknown;
    try {
      result = toPayload(value, 'workflow result');
    } catch (err) {
      this.failTask(err);
      return;
    }
    this.close(result === undefined ? { type: 'completeWorkflow' } : { type: 'completeWorkflow', result });
  }

  /** Applies the outcome rules (see class doc) to a throw from workflow code. */
  handleWorkflowError(err: unknown): void {
    if (this.closed) return;
    if (this.cancelRequested && isCancellation(err)) {
      this.close({ type: 'cancelWorkflow' });
    } else if (err instanceof LonghaulFailure) {
      this.close({ type: 'failWorkflow', failure: toFailureInfo(err) });
    } else {
      this.failTask(err);
    }
  }

  private failTask(err: unknown): void {
    this.taskFailure ??= toFailureInfo(err);
  }

  private close(command: WorkflowCommand): void {
    if (this.closed) return;
    this.commands.push(command);
    this.closed = true;
  }

  private push(command: WorkflowCommand): void {
    if (this.inQuery) {
      throw new Error(`a query handler must not change the workflow (it tried to emit ${command.type})`);
    }
    if (!this.closed) this.commands.push(command);
  }

  // ---- conditions ----

  /** Evaluates every pending condition once; true when at least one settled. */
  checkConditions(): boolean {
    let changed = false;
    for (const [id, c] of this.conditions) {
      let ok: boolean;
      try {
        ok = Boolean(c.fn());
      } catch (err) {
        this.conditions.delete(id);
        if (c.timerSeq !== undefined) this.cancelTimer(c.timerSeq);
        c.reject(err);
        changed = true;
        continue;
      }
      if (!ok) continue;
      this.conditions.delete(id);
      if (c.timerSeq !== undefined) this.cancelTimer(c.timerSeq);
      c.resolve(true);
      changed = true;
    }
    return changed;
  }

  /** Registers a condition; resolves true when `fn()` is true, false when the timeout timer fires first. */
  addCondition(fn: () => boolean, timeoutMs: number | undefined): Promise<boolean> {
    if (this.cancelRequested) return Promise.reject(cancelled());
    if (fn()) return Promise.resolve(true);
    return quiet(
      new Promise<boolean>((resolve, reject) => {
        const id = ++this.conditionSeq;
        const entry: PendingCondition = { fn, resolve, reject, timerSeq: undefined };
        if (timeoutMs !== undefined) {
          entry.timerSeq = this.startTimer(timeoutMs, {
            fire: () => {
              this.conditions.delete(id);
              resolve(false);
            },
            cancel: () => {},
          });
        }
        this.conditions.set(id, entry);
      }),
    );
  }

  // ---- timers ----

  /** Emits startTimer and returns its seq. */
  startTimer(durationMs: number, pending: PendingTimer): number {
    const seq = this.timerSeq + 1;
    this.push({ type: 'startTimer', seq, durationMs });
    this.timerSeq = seq;
    this.timers.set(seq, pending);
    return seq;
  }

  /** Emits cancelTimer if the timer is still pending; a timer that already fired is left alone. */
  cancelTimer(seq: number): void {
    if (!this.timers.delete(seq)) return;
    this.push({ type: 'cancelTimer', seq });
  }

  sleep(durationMs: number): Promise<void> {
    if (this.cancelRequested) return Promise.reject(cancelled());
    return quiet(
      new Promise<void>((resolve, reject) => {
        this.startTimer(durationMs, { fire: () => resolve(), cancel: reject });
      }),
    );
  }

  /** Backs the sandbox's `setTimeout`: the callback runs when the durable timer fires. */
  setTimeout(callback: () => void, durationMs: number): number {
    if (this.cancelRequested) return 0;
    return this.startTimer(durationMs, {
      fire: () => {
        try {
          callback();
        } catch (err) {
          this.handleWorkflowError(err);
        }
      },
      cancel: () => {},
    });
  }

  // ---- activities ----

  scheduleActivity(command: Omit<Extract<WorkflowCommand, { type: 'scheduleActivity' }>, 'seq' | 'type'>) {
    if (this.cancelRequested) return Promise.reject(cancelled());
    return quiet(
      new Promise<unknown>((resolve, reject) => {
        const seq = this.activitySeq + 1;
        this.push({ type: 'scheduleActivity', seq, ...command });
        this.activitySeq = seq;
        this.activities.set(seq, { resolve, reject, cancelRequested: false });
      }),
    );
  }

  // ---- cancellation ----

  private cancelWorkflow(): void {
    if (this.cancelRequested) return;
    this.cancelRequested = true;
    for (const [seq, timer] of [...this.timers]) {
      this.cancelTimer(seq);
      timer.cancel(cancelled());
    }
    for (const [seq, activity] of this.activities) {
      if (activity.cancelRequested) continue;
      activity.cancelRequested = true;
      this.push({ type: 'requestCancelActivity', seq });
    }
    for (const [id, c] of [...this.conditions]) {
      this.conditions.delete(id);
      c.reject(cancelled());
    }
    this.rootScope.markCancelled(cancelled());
  }

  // ---- signals and queries ----

  private deliverSignal(signalName: string, args: unknown[]): void {
    const handler = this.signalHandlers.get(signalName);
    if (handler) this.invokeSignalHandler(handler, args);
    else this.bufferedSignals.push({ signalName, args });
  }

  private invokeSignalHandler(handler: Handler, args: unknown[]): void {
    try {
      const r = handler(...args);
      if (typeof (r as { then?: unknown } | undefined)?.then === 'function') {
        Promise.resolve(r).catch((err: unknown) => this.handleWorkflowError(err));
      }
    } catch (err) {
      this.handleWorkflowError(err);
    }
  }

  /** Sets (or with `undefined` removes) a signal handler; buffered signals of that name run at once, in order. */
  setSignalHandler(name: string, handler: Handler | undefined): void {
    if (handler === undefined) {
      this.signalHandlers.delete(name);
      return;
    }
    this.signalHandlers.set(name, handler);
    for (let i = 0; i < this.bufferedSignals.length; ) {
      const buffered = this.bufferedSignals[i]!;
      if (buffered.signalName !== name) {
        i++;
        continue;
      }
      this.bufferedSignals.splice(i, 1);
      // The handler may have been replaced or removed by the previous delivery.
      const h = this.signalHandlers.get(name);
      if (!h) return;
      this.invokeSignalHandler(h, buffered.args);
    }
  }

  /** Runs a query handler synchronously; it must not emit commands or return a promise. */
  query(queryType: string, args: unknown[]): QueryOutcome {
    const handler = this.queryHandlers.get(queryType);
    if (!handler) return { ok: false, notRegistered: true, known: [...this.queryHandlers.keys()] };
    this.inQuery = true;
    try {
      const r = handler(...args);
      if (typeof (r as { then?: unknown } | undefined)?.then === 'function') {
        throw new Error(
          `query handler '${queryType}' returned a promise; query handlers must be synchronous`,
        );
      }
      return { ok: true, result: toPayload(r, `result of query '${queryType}'`) };
    } catch (err) {
      return { ok: false, notRegistered: false, failure: toFailureInfo(err) };
    } finally {
      this.inQuery = false;
    }
  }

  // ---- logging ----

  /** Forwards a log line to the host unless this activation is replaying. */
  log(level: string, message: string, fields: Record<string, unknown> | undefined): void {
    if (this.isReplaying || !this.logSink) return;
    const all = {
      workflowId: this.info.workflowId,
      runId: this.info.runId,
      workflowType: this.info.workflowType,
      ...fields,
    };
    let json: string;
    try {
      json = JSON.stringify(all);
    } catch {
      json = JSON.stringify({ workflowId: all.workflowId, runId: all.runId, workflowType: all.workflowType });
    }
    this.logSink(level, String(message), json);
  }

  /** Drops everything pending so a disposed run holds no closures. */
  dispose(): void {
    this.activities.clear();
    this.timers.clear();
    this.conditions.clear();
    this.bufferedSignals.length = 0;
    this.signalHandlers.clear();
    this.queryHandlers.clear();
    this.closed = true;
  }
}
