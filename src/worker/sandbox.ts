import { performance } from 'node:perf_hooks';
import vm from 'node:vm';
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

/** The sandbox side's slot object (see src/workflow/worker-interface.ts); only strings are exchanged. */
interface HostSlot {
  input: string;
  logSink: ((level: string, message: string, fieldsJson: string) => void) | undefined;
}

const DISPATCH = new vm.Script('globalThis[Symbol.for("longhaul.sandbox.slot")].dispatch()', {
  filename: 'longhaul-dispatch.js',
});

/** Promise.prototype of every sandbox realm, to recognise rejections that workflow code left unhandled. */
const sandboxPromisePrototypes = new WeakSet<object>();
let rejectionListenerInstalled = false;

/**
 * A promise rejected inside workflow code without a handler reaches the process's 'unhandledRejection'
 * event, which by default crashes the process. Workflow code that does not await a failed promise has
 * simply not observed it (as for any unawaited activity), so such rejections are ignored. Any other
 * unhandled rejection keeps Node's default behaviour (thrown, crashing the process) unless the
 * application has its own listener.
 */
function installRejectionListener(): void {
  if (rejectionListenerInstalled) return;
  rejectionListenerInstalled = true;
  const listener = (reason: unknown, promise: Promise<unknown>): void => {
    for (let p: object | null = Object.getPrototypeOf(promise); p !== null; p = Object.getPrototypeOf(p)) {
      if (sandboxPromisePrototypes.has(p)) return;
    }
    if (process.listeners('unhandledRejection').length === 1) throw reason;
  };
  process.on('unhandledRejection', listener);
}

function isTimeout(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT';
}

/**
 * One `node:vm` realm per workflows bundle, shared by all runs of that bundle; each run gets its own
 * instance of the user's module (fresh module-level state). Inside the realm `Date`, `Math.random`,
 * `crypto`, `setTimeout` and `clearTimeout` are deterministic per run, and `WeakRef` /
 * `FinalizationRegistry` throw (src/workflow/global-overrides.ts).
 *
 * Runs execute one at a time. The realm is created with `microtaskMode: 'afterEvaluate'`: promise jobs
 * of workflow code run at the end of each host call, inside the same deadlock timeout. The host never
 * awaits a promise from the realm; requests and results cross as JSON text.
 */
export class WorkflowSandbox {
  readonly bundle: WorkflowBundle;
  readonly deadlockTimeoutMs: number;
  private readonly context: vm.Context;
  private readonly slot: HostSlot;
  private readonly types: readonly string[];
  private nextId = 1;

  private constructor(bundle: WorkflowBundle, deadlockTimeoutMs: number) {
    this.bundle = bundle;
    this.deadlockTimeoutMs = deadlockTimeoutMs;
    this.context = vm.createContext(
      {},
      {
        name: `longhaul workflows ${bundle.workflowsPath}`,
        microtaskMode: 'afterEvaluate',
        codeGeneration: { strings: true, wasm: false },
      },
    );
    sandboxPromisePrototypes.add(vm.runInContext('Promise.prototype', this.context) as object);
    installRejectionListener();
    try {
      const script = new vm.Script(bundle.code, { filename: `${bundle.workflowsPath}.bundle.js` });
      this.slot = script.runInContext(this.context, { timeout: deadlockTimeoutMs }) as HostSlot;
    } catch (err) {
      throw new BundleError(`workflows bundle of ${bundle.workflowsPath} failed to load: ${messageOf(err)}`);
    }
    const probe = this.call({ op: 'probe' }, 'loading the workflows module') as
      | { value: { types: string[] } }
      | { error: FailureInfo };
    if ('error' in probe) {
      throw new BundleError(
        `workflows module ${bundle.workflowsPath} threw while loading: ${probe.error.message}`,
      );
    }
    this.types = Object.freeze([...probe.value.types]);
  }

  /** Creates the realm and loads the bundle once (module top-level code runs once here to list types). */
  static create(bundle: WorkflowBundle, options: WorkflowSandboxOptions = {}): WorkflowSandbox {
    const timeout = options.deadlockTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(timeout) || timeout <= 0) {
      throw new LonghaulError('VALIDATION', `deadlockTimeoutMs must be a positive integer, got ${timeout}`);
    }
    return new WorkflowSandbox(bundle, timeout);
  }

  /** Names of the functions the workflows module exports (its workflow types). */
  workflowTypes(): string[] {
    return [...this.types];
  }

  /** A fresh instance of the workflows module for one run. */
  createInstance(info: WorkflowInfo, logSink?: WorkflowLogSink): WorkflowInstance {
    const id = this.nextId++;
    if (logSink) {
      this.slot.logSink = (level, message, fieldsJson) => {
        logSink(level as LogLevel, message, JSON.parse(fieldsJson) as Record<string, unknown>);
      };
    }
    const out = this.call(
      { op: 'create', id, info },
      `loading workflow '${info.workflowType}' run ${info.runId}`,
    );
    this.slot.logSink = undefined;
    if ('error' in out) {
      throw new BundleError(
        `workflows module ${this.bundle.workflowsPath} threw while loading for run ${info.runId}: ${out.error.message}`,
      );
    }
    return new WorkflowInstance(this, id, info);
  }

  /**
   * @internal Sends one request into the realm and parses the answer. A vm timeout becomes a
   * DeadlockError naming `what`.
   */
  call(
    request: Record<string, unknown>,
    what: string,
    timeoutMs = this.deadlockTimeoutMs,
  ): { value: never } | { error: FailureInfo } {
    this.slot.input = JSON.stringify(request);
    let text: unknown;
    try {
      text = DISPATCH.runInContext(this.context, { timeout: Math.max(1, Math.ceil(timeoutMs)) });
    } catch (err) {
      if (isTimeout(err)) {
        throw new DeadlockError(
          `${what}: workflow code did not yield within ${this.deadlockTimeoutMs} ms (deadlock or busy loop); it must not block — await a timer, an activity or a condition instead`,
        );
      }
      throw new LonghaulError('SANDBOX', `${what}: the sandbox failed: ${messageOf(err)}`);
    } finally {
      this.slot.input = '';
    }
    return JSON.parse(String(text)) as { value: never } | { error: FailureInfo };
  }
}

/**
 * One run's module instance inside a WorkflowSandbox. Not reusable after a DeadlockError, a
 * `taskFailure` or `dispose()`.
 */
export class WorkflowInstance {
  readonly info: WorkflowInfo;
  private readonly sandbox: WorkflowSandbox;
  private readonly id: number;
  private disposed = false;
  private broken: string | undefined;

  /** @internal Use WorkflowSandbox.createInstance. */
  constructor(sandbox: WorkflowSandbox, id: number, info: WorkflowInfo) {
    this.sandbox = sandbox;
    this.id = id;
    this.info = info;
  }

  private get label(): string {
    return `workflow '${this.info.workflowType}' run ${this.info.runId}`;
  }

  private checkUsable(): void {
    if (this.disposed) throw new LonghaulError('SANDBOX', `${this.label}: instance was disposed`);
    if (this.broken)
      throw new LonghaulError('SANDBOX', `${this.label}: instance is unusable: ${this.broken}`);
  }

  private request<T>(request: Record<string, unknown>, deadline: number): T {
    let out: { value: T } | { error: FailureInfo };
    try {
      out = this.sandbox.call({ ...request, id: this.id }, this.label, deadline - performance.now()) as
        | { value: T }
        | { error: FailureInfo };
    } catch (err) {
      this.broken = err instanceof Error ? err.message : String(err);
      throw err;
    }
    if ('error' in out) {
      this.broken = out.error.message;
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
    const deadline = performance.now() + this.sandbox.deadlockTimeoutMs;
    this.request({ op: 'activate', activation }, deadline);
    for (;;) {
      const r = this.request<{ done: false } | ({ done: true } & ActivationResult)>(
        { op: 'settle' },
        deadline,
      );
      if (r.done) {
        const result: ActivationResult = { commands: r.commands };
        if (r.taskFailure) {
          result.taskFailure = r.taskFailure;
          this.broken = `workflow task failed: ${r.taskFailure.message}`;
        }
        return result;
      }
      if (performance.now() >= deadline) {
        this.broken = 'deadlock';
        throw new DeadlockError(
          `${this.label}: workflow code did not block within ${this.sandbox.deadlockTimeoutMs} ms (conditions keep changing)`,
        );
      }
    }
  }

  /**
   * Runs a query handler on the current state; produces no commands. Throws QueryNotRegisteredError
   * (listing the known queries) when there is no handler, and an ApplicationFailure carrying the
   * handler's message when it throws.
   */
  query(queryType: string, args: readonly unknown[]): unknown {
    this.checkUsable();
    const deadline = performance.now() + this.sandbox.deadlockTimeoutMs;
    const r = this.request<
      | { ok: true; result: unknown }
      | { ok: false; notRegistered: true; known: string[] }
      | { ok: false; notRegistered: false; failure: FailureInfo }
    >({ op: 'query', queryType, args }, deadline);
    if (r.ok) return r.result;
    if (r.notRegistered) throw new QueryNotRegisteredError(queryType, r.known);
    const failure = fromFailureInfo(r.failure);
    if (failure instanceof ApplicationFailure) throw failure;
    throw new ApplicationFailure(r.failure.message, r.failure.type, false);
  }

  /** Releases the module instance. Safe to call twice. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    try {
      this.sandbox.call({ op: 'dispose', id: this.id }, this.label);
    } catch {
      // A broken realm has nothing left to release for this run.
    }
  }
}

function messageOf(err: unknown): string {
  if (err && typeof err === 'object' && 'message' in err)
    return String((err as { message: unknown }).message);
  return String(err);
}
