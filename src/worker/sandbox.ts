import type { Activation, WorkflowCommand, WorkflowInfo } from '../common/commands.js';
import type { FailureInfo } from '../common/errors.js';
import {
  ApplicationFailure,
  BundleError,
  DeadlockError,
  fromFailureInfo,
  LonghaulError,
  QueryNotRegisteredError,
} from '../common/errors.js';
import type { LogLevel } from '../common/logger.js';
import type { WorkflowBundle } from './bundler.js';
import { SandboxThread, slackFor, type ThreadAnswer } from './sandbox-thread.js';

/** What one activation produced. When `taskFailure` is set the task failed: discard `commands` and the instance. */
export interface ActivationResult {
  commands: WorkflowCommand[];
  taskFailure?: FailureInfo;
}

/** Receives the workflow's log lines (never called while replaying). Fields are host-realm plain data. */
export type WorkflowLogSink = (level: LogLevel, message: string, fields: Record<string, unknown>) => void;

export interface WorkflowSandboxOptions {
  /** How long workflow code may run without yielding before DeadlockError, ms. Default 5000. */
  readonly deadlockTimeoutMs?: number;
}

type Answer<T> = { value: T } | { error: FailureInfo; loading?: true };

/** Ends the thread of a sandbox that was dropped without `close()`. */
const orphans = new FinalizationRegistry<SandboxThread>((thread) => thread.stop());

/**
 * One `node:vm` realm per workflows bundle, shared by all runs of that bundle; each run gets its own
 * instance of the user's module (fresh module-level state). Inside the realm `Date`, `Math.random`,
 * `crypto`, `setTimeout` and `clearTimeout` are deterministic per run, and `WeakRef` /
 * `FinalizationRegistry` throw (src/workflow/global-overrides.ts).
 *
 * Where it runs. The realm lives on a worker thread of its own (sandbox-thread.ts), called
 * synchronously: every method here returns only when the thread has answered. Runs execute one at a
 * time. The realm is created with `microtaskMode: 'afterEvaluate'`: promise jobs of workflow code run
 * at the end of each evaluation in the thread. The host never holds a promise from the realm; requests
 * and answers cross as JSON text.
 *
 * Deadlocks. The thread's watchdog stops workflow code (the workflow function, condition predicates,
 * signal and query handlers, promise continuations) that runs `deadlockTimeoutMs` without yielding — at
 * most a tenth of that later (at least 5 ms, at most 1 s; see slackFor) — and the call throws
 * DeadlockError naming the workflow type and run. Only that instance becomes unusable; the realm and
 * every other instance stay. One watchdog guards many calls, so a call costs a thread round trip
 * (~12 µs in quick succession, ~50–100 µs when the thread was asleep) instead of a watchdog thread per
 * guarded call (~65 µs, two or more guarded calls per activation).
 *
 * Generations. If the thread gives no answer at all within the deadlock budget plus a grace time
 * (it died, or is stuck in native code that cannot be interrupted), the call throws DeadlockError and
 * the thread is replaced by a new one: `generation` goes up, and every instance of the old generation
 * is lost — its next use throws a LonghaulError ('SANDBOX') saying to replay from history (the worker
 * fails that task, and its retry replays with a fresh instance). Compare `instance.generation` with
 * `sandbox.generation` to find such instances before using them.
 */
export class WorkflowSandbox {
  readonly bundle: WorkflowBundle;
  readonly deadlockTimeoutMs: number;
  #thread: SandboxThread;
  #generation = 1;
  #closed = false;
  readonly #types: readonly string[];
  #nextId = 1;
  /** Log sinks of the current generation's instances, by instance id. */
  readonly #sinks = new Map<number, WorkflowLogSink>();
  /** Instances disposed since the last call; released in the thread with the next call. */
  #disposed: number[] = [];

  private constructor(bundle: WorkflowBundle, deadlockTimeoutMs: number) {
    this.bundle = bundle;
    this.deadlockTimeoutMs = deadlockTimeoutMs;
    this.#thread = this.#startThread();
    orphans.register(this, this.#thread, this);
    let probe: Answer<{ types: string[] }>;
    try {
      probe = this.call({ op: 'probe' }, 'loading the workflows module');
    } catch (err) {
      this.close();
      if (err instanceof BundleError || err instanceof DeadlockError) throw err;
      throw new BundleError(`workflows bundle of ${bundle.workflowsPath} failed to load: ${messageOf(err)}`);
    }
    if ('error' in probe) {
      this.close();
      throw new BundleError(
        `workflows module ${bundle.workflowsPath} threw while loading: ${probe.error.message}`,
      );
    }
    this.#types = Object.freeze([...probe.value.types]);
  }

  /** Creates the realm and loads the bundle once (module top-level code runs once here to list types). */
  static create(bundle: WorkflowBundle, options: WorkflowSandboxOptions = {}): WorkflowSandbox {
    const timeout = options.deadlockTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(timeout) || timeout <= 0) {
      throw new LonghaulError('VALIDATION', `deadlockTimeoutMs must be a positive integer, got ${timeout}`);
    }
    return new WorkflowSandbox(bundle, timeout);
  }

  /** Bumped whenever the sandbox thread is replaced; instances of an older generation are lost. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Heap in use by the sandbox thread (the realm and every instance in it), bytes, refreshed at least
   * every `deadlockTimeoutMs / 10` ms. The host's `process.memoryUsage()` does not include it.
   */
  get heapUsedBytes(): number {
    return this.#thread.heapUsedBytes;
  }

  /** Names of the functions the workflows module exports (its workflow types). */
  workflowTypes(): string[] {
    return [...this.#types];
  }

  /**
   * A fresh instance of the workflows module for one run. The module is loaded in the thread with the
   * instance's first call (one thread round trip instead of two); if it throws while loading, that
   * call throws BundleError.
   */
  createInstance(info: WorkflowInfo, logSink?: WorkflowLogSink): WorkflowInstance {
    if (this.#closed) {
      throw new LonghaulError(
        'SANDBOX',
        `loading workflow '${info.workflowType}' run ${info.runId}: the sandbox was closed`,
      );
    }
    if (this.#thread.exited) this.#replaceThread();
    const id = this.#nextId++;
    if (logSink) this.#sinks.set(id, logSink);
    const create = JSON.stringify({ op: 'create', id, info, log: logSink !== undefined });
    return new WorkflowInstance(this, id, info, this.#generation, create);
  }

  /** Ends the sandbox thread; every instance becomes unusable. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    orphans.unregister(this);
    this.#thread.stop();
    this.#sinks.clear();
    this.#disposed = [];
  }

  /**
   * @internal Sends one request into the realm and parses the answer; `before` (JSON text of a request,
   * a new instance's `create`) is dispatched ahead of it in the same round trip. A stopped call becomes
   * a DeadlockError naming `what`.
   */
  call<T>(request: Record<string, unknown>, what: string, before?: string): Answer<T> {
    if (this.#closed) throw new LonghaulError('SANDBOX', `${what}: the sandbox was closed`);
    if (this.#thread.exited) this.#replaceThread();
    const generation = this.#generation;
    let text: string;
    if (this.#disposed.length > 0) {
      text = JSON.stringify({ ...request, dispose: this.#disposed });
      this.#disposed = [];
    } else {
      text = JSON.stringify(request);
    }
    if (before !== undefined) text = `${before}\n${text}`;
    const answer: ThreadAnswer = this.#thread.call(text);
    switch (answer.kind) {
      case 'ok':
        if (answer.logs !== '') this.#deliverLogs(answer.logs);
        return JSON.parse(answer.text) as Answer<T>;
      case 'deadlock':
        if (answer.logs !== '') this.#deliverLogs(answer.logs);
        throw new DeadlockError(
          `${what}: workflow code did not yield within ${this.deadlockTimeoutMs} ms (deadlock or busy loop); it must not block — await a timer, an activity or a condition instead`,
        );
      case 'hung':
        if (generation === this.#generation) this.#replaceThread();
        throw new DeadlockError(
          `${what}: the sandbox thread did not answer within ${this.deadlockTimeoutMs + slackFor(this.deadlockTimeoutMs)} ms (workflow code stuck where it cannot be interrupted, or the thread died); the thread was replaced, and other runs' cached instances replay from history`,
        );
      case 'loadFailed':
        this.#thread.stop();
        throw new BundleError(
          `workflows bundle of ${this.bundle.workflowsPath} failed to load: ${answer.message}`,
        );
      case 'failed':
        throw new LonghaulError('SANDBOX', `${what}: the sandbox failed: ${answer.message}`);
    }
  }

  /** @internal Forgets an instance; it is released in the realm with the next call. */
  release(id: number, generation: number): void {
    if (generation !== this.#generation) return;
    this.#sinks.delete(id);
    this.#disposed.push(id);
  }

  #startThread(): SandboxThread {
    return new SandboxThread({
      code: this.bundle.code,
      filename: `${this.bundle.workflowsPath}.bundle.js`,
      contextName: `longhaul workflows ${this.bundle.workflowsPath}`,
      deadlockTimeoutMs: this.deadlockTimeoutMs,
    });
  }

  /** Starts a new thread (and realm) in place of a lost one: a new generation. */
  #replaceThread(): void {
    this.#thread.stop();
    this.#thread = this.#startThread();
    orphans.unregister(this);
    orphans.register(this, this.#thread, this);
    this.#generation++;
    this.#sinks.clear();
    this.#disposed = [];
  }

  #deliverLogs(text: string): void {
    for (const [id, level, message, fields] of JSON.parse(text) as [
      number,
      LogLevel,
      string,
      Record<string, unknown>,
    ][]) {
      try {
        this.#sinks.get(id)?.(level, message, fields);
      } catch {
        // A failing log sink must not change the outcome of the workflow task.
      }
    }
  }
}

/**
 * One run's module instance inside a WorkflowSandbox. Not reusable after a DeadlockError, a
 * `taskFailure`, `dispose()`, or when the sandbox's generation moved past its own.
 */
export class WorkflowInstance {
  readonly info: WorkflowInfo;
  /** The sandbox generation this instance lives in (see WorkflowSandbox). */
  readonly generation: number;
  private readonly sandbox: WorkflowSandbox;
  private readonly id: number;
  private disposed = false;
  private broken: string | undefined;
  /** The `create` request (JSON text) until the first call sends it. */
  private create: string | undefined;

  /** @internal Use WorkflowSandbox.createInstance. */
  constructor(sandbox: WorkflowSandbox, id: number, info: WorkflowInfo, generation: number, create: string) {
    this.sandbox = sandbox;
    this.id = id;
    this.info = info;
    this.generation = generation;
    this.create = create;
  }

  private get label(): string {
    return `workflow '${this.info.workflowType}' run ${this.info.runId}`;
  }

  private checkUsable(): void {
    if (this.disposed) throw new LonghaulError('SANDBOX', `${this.label}: instance was disposed`);
    if (this.broken)
      throw new LonghaulError('SANDBOX', `${this.label}: instance is unusable: ${this.broken}`);
    if (this.generation !== this.sandbox.generation) {
      this.broken = 'the sandbox thread was replaced after another run hung; replay from history';
      throw new LonghaulError('SANDBOX', `${this.label}: instance is unusable: ${this.broken}`);
    }
  }

  private request<T>(request: Record<string, unknown>): T {
    let out: Answer<T>;
    const create = this.create;
    this.create = undefined;
    try {
      out = this.sandbox.call<T>({ ...request, id: this.id }, this.label, create);
    } catch (err) {
      this.broken = err instanceof Error ? err.message : String(err);
      throw err;
    }
    if ('error' in out) {
      this.broken = out.error.message;
      if (out.loading) {
        throw new BundleError(
          `workflows module ${this.sandbox.bundle.workflowsPath} threw while loading for run ${this.info.runId}: ${out.error.message}`,
        );
      }
      throw new LonghaulError(
        'SANDBOX',
        `${this.label}: internal error in the workflow runtime: ${out.error.message}`,
      );
    }
    return out.value;
  }

  /**
   * Runs the jobs of one activation in order, lets workflow code run until every coroutine is blocked
   * (re-checking conditions until none changes), and returns the commands. Throws DeadlockError when
   * workflow code runs longer than the deadlock timeout without yielding; the instance is then unusable.
   */
  activate(activation: Activation): ActivationResult {
    this.checkUsable();
    const r = this.request<ActivationResult>({ op: 'activate', activation });
    const result: ActivationResult = { commands: r.commands };
    if (r.taskFailure) {
      result.taskFailure = r.taskFailure;
      this.broken = `workflow task failed: ${r.taskFailure.message}`;
    }
    return result;
  }

  /**
   * Runs a query handler on the current state; produces no commands. Throws QueryNotRegisteredError
   * (listing the known queries) when there is no handler, and an ApplicationFailure carrying the
   * handler's message when it throws.
   */
  query(queryType: string, args: readonly unknown[]): unknown {
    this.checkUsable();
    const r = this.request<
      | { ok: true; result: unknown }
      | { ok: false; notRegistered: true; known: string[] }
      | { ok: false; notRegistered: false; failure: FailureInfo }
    >({ op: 'query', queryType, args });
    if (r.ok) return r.result;
    if (r.notRegistered) throw new QueryNotRegisteredError(queryType, r.known);
    const failure = fromFailureInfo(r.failure);
    if (failure instanceof ApplicationFailure) throw failure;
    throw new ApplicationFailure(r.failure.message, r.failure.type, false);
  }

  /** Releases the module instance (with the sandbox's next call; nothing runs now). Safe to call twice. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.sandbox.release(this.id, this.generation);
  }
}

function messageOf(err: unknown): string {
  if (err && typeof err === 'object' && 'message' in err)
    return String((err as { message: unknown }).message);
  return String(err);
}
