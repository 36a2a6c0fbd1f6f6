import type { Clock } from '../common/clock.js';
import { ValidationError } from '../common/errors.js';
import { validateId } from '../common/ids.js';
import type { Logger } from '../common/logger.js';
import { toPayloads } from '../common/payload.js';
import { Runtime } from '../runtime/runtime.js';
import { startWorkflow } from '../runtime/workflow-ops.js';
import { type SignalRef, WorkflowHandle } from './handle.js';
import { compileStartOptions, type WorkflowStartOptions } from './start-options.js';

export interface ClientOptions {
  readonly namespace?: string;
  readonly logger?: Logger;
  readonly clock?: Clock;
}

// biome-ignore lint/suspicious/noExplicitAny: a workflow function takes any arguments.
type WorkflowFn = (...args: any[]) => Promise<unknown>;
/** A workflow type: its name, or the workflow function itself (its `name` is used). */
export type WorkflowRef = string | WorkflowFn;
type ResultOf<W> = W extends (...args: never[]) => Promise<infer R> ? R : unknown;
type ArgsOf<W> = W extends (...args: infer A) => Promise<unknown> ? A : unknown[];

function typeName(ref: WorkflowRef): string {
  if (typeof ref === 'function') return validateId(ref.name, 'workflowType');
  return validateId(ref, 'workflowType');
}

/** Starts workflows and hands out handles. */
export class WorkflowClient {
  constructor(
    private readonly runtime: Runtime,
    private readonly namespace: string,
  ) {}

  /** Starts a run; resolves once it is durably recorded (an acknowledged start is never lost). */
  async start<W extends WorkflowRef>(
    workflow: W,
    options: WorkflowStartOptions<ArgsOf<W>>,
  ): Promise<WorkflowHandle<ResultOf<W>>> {
    const req = compileStartOptions(this.namespace, typeName(workflow), options);
    const { runId } = await startWorkflow(this.runtime.ctx, req);
    return new WorkflowHandle(this.runtime.ctx, this.namespace, req.workflowId, runId);
  }

  /** Starts a run and waits for its result. */
  async execute<W extends WorkflowRef>(
    workflow: W,
    options: WorkflowStartOptions<ArgsOf<W>>,
  ): Promise<ResultOf<W>> {
    const handle = await this.start(workflow, options);
    return handle.result();
  }

  /** A handle on a workflow id (its latest run) or on one run. Does not check that it exists. */
  getHandle<Ret = unknown>(workflowId: string, runId?: string): WorkflowHandle<Ret> {
    validateId(workflowId, 'workflowId');
    if (runId !== undefined) validateId(runId, 'runId');
    return new WorkflowHandle(this.runtime.ctx, this.namespace, workflowId, runId);
  }

  /** Signals the open run of `workflowId`, starting one first if none is open. */
  async signalWithStart<W extends WorkflowRef, SA extends unknown[]>(
    workflow: W,
    options: WorkflowStartOptions<ArgsOf<W>> & { readonly signal: SignalRef<SA>; readonly signalArgs?: SA },
  ): Promise<WorkflowHandle<ResultOf<W>>> {
    const signal = options.signal;
    const name = validateId(typeof signal === 'string' ? signal : signal?.name, 'signal');
    const args = toPayloads((options.signalArgs ?? []) as unknown[], 'signalArgs');
    const req = compileStartOptions(this.namespace, typeName(workflow), options);
    const { runId } = await startWorkflow(this.runtime.ctx, { ...req, signal: { name, args } });
    return new WorkflowHandle(this.runtime.ctx, this.namespace, req.workflowId, runId);
  }
}

/**
 * Connects to a store. A client never creates or migrates one: connecting to a store that does not
 * exist fails with a message that says so (a worker creates it).
 */
export class Client {
  readonly workflow: WorkflowClient;
  #closed = false;

  private constructor(
    private readonly runtime: Runtime,
    readonly namespace: string,
  ) {
    this.workflow = new WorkflowClient(runtime, namespace);
  }

  static async connect(url: string, options: ClientOptions = {}): Promise<Client> {
    if (typeof url !== 'string' || url === '') {
      throw new ValidationError('connection', "is required, e.g. 'sqlite:./longhaul.db'");
    }
    const namespace = validateId(options.namespace ?? 'default', 'namespace');
    const runtime = await Runtime.acquire(url, {
      mode: 'client',
      logger: options.logger,
      clock: options.clock,
    });
    return new Client(runtime, namespace);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.runtime.release();
  }
}
