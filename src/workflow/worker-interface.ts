/**
 * The sandbox side of the host ↔ sandbox protocol. Not part of the public API: the bundler builds this
 * file as the runtime of every workflows bundle, and the worker's sandbox thread
 * (src/worker/sandbox-thread-program.ts) talks to it.
 *
 * Protocol. `boot()` runs once per realm and returns the slot object. For every call the host writes a
 * JSON request to `slot.input`, then evaluates a script that calls `slot.dispatch()`, which answers with
 * JSON text. Only strings cross the boundary, so workflow code only ever sees objects of its own realm,
 * and the host never holds a promise made here. Promise jobs run when the host's script evaluation ends
 * (`microtaskMode: 'afterEvaluate'`), still with the same run set as current.
 *
 * A request may need more evaluations, so that promise jobs run between its steps: then `dispatch()`
 * leaves the follow-up request in `slot.next`, and the host evaluates again with it as input until
 * `slot.next` is empty; the answer of the last evaluation is the answer of the request.
 *
 * Requests: `probe` (list workflow types), `create {id, info, log}` (new module instance; with `log`
 * its log lines are kept for `slot.takeLogs()`), `activate {id, activation}` (apply jobs, then
 * continues with `settle`), `settle {id}` (check conditions; while one settled, continues with another
 * `settle` after the promise jobs ran; finally answers `{commands, taskFailure?}`), `query {id,
 * queryType, args}`, `dispose {id}`. Any request may carry `dispose: [id, ...]`: instances to release
 * first (the host batches disposals this way instead of a call each).
 *
 * One input may hold several requests separated by '\n' (JSON text never contains a raw newline): they
 * are dispatched in order, each in an evaluation of its own (after the follow-ups of the one before),
 * and the answer is the last one's. The host sends a new run's `create` this way, ahead of its first
 * activation, saving a thread round trip. When a request fails, the requests after it are dropped; a
 * failed `create` answers `{error, loading: true}`.
 */
import type { Activation, WorkflowInfo } from '../common/commands.js';
import { toFailureInfo } from '../common/errors.js';
import { Activator } from './activator.js';
import { installGlobalOverrides } from './global-overrides.js';
import * as api from './index.js';
import { setCurrentActivator } from './run-context.js';

export { api };

/** Evaluates a fresh instance of the user's workflows module; `require` serves 'longhaul/workflow'. */
export type ModuleFactory = (require: (id: string) => unknown) => Record<string, unknown>;

export interface HostSlot {
  /** The request of the next `dispatch()`, JSON text. */
  input: string;
  /** A follow-up request to dispatch after this evaluation's promise jobs ran, or '' when done. */
  next: string;
  dispatch(): string;
  /** Log lines since the last call as JSON text `[[id, level, message, fields], ...]`, or ''. */
  takeLogs(): string;
}

type Request = (
  | { op: 'probe' }
  | { op: 'create'; id: number; info: WorkflowInfo; log: boolean }
  | { op: 'activate'; id: number; activation: Activation }
  | { op: 'settle'; id: number }
  | { op: 'query'; id: number; queryType: string; args: unknown[] }
  | { op: 'dispose'; id: number }
) & { dispose?: number[] };

const SLOT_KEY = Symbol.for('longhaul.sandbox.slot');

const PROBE_INFO: WorkflowInfo = {
  namespace: 'default',
  workflowId: 'probe',
  runId: 'probe',
  workflowType: 'probe',
  taskQueue: 'probe',
  startTime: 0,
  historyLength: 0,
  continueAsNewSuggested: false,
};

function requireFor(id: string): unknown {
  if (id === 'longhaul/workflow') return api;
  throw new Error(`workflow code cannot load '${id}' at run time; only 'longhaul/workflow' is provided`);
}

/** Installs the deterministic globals and the dispatcher; returns the slot the host talks to. */
export function boot(factory: ModuleFactory): HostSlot {
  installGlobalOverrides(globalThis);
  const instances = new Map<number, Activator>();
  /** Log lines not yet taken by the host, each JSON text `[id, level, message, fields]`. */
  const logs: string[] = [];

  const instanceFor = (id: number): Activator => {
    const activator = instances.get(id);
    if (!activator) throw new Error(`no workflow instance ${id} in this sandbox (disposed?)`);
    setCurrentActivator(activator);
    return activator;
  };

  const loadModule = (activator: Activator): Record<string, unknown> => {
    setCurrentActivator(activator);
    return factory(requireFor);
  };

  const release = (id: number): void => {
    instances.get(id)?.dispose();
    instances.delete(id);
    setCurrentActivator(undefined);
  };

  const handle = (req: Request): unknown => {
    switch (req.op) {
      case 'probe': {
        const exportsOf = loadModule(new Activator(PROBE_INFO));
        setCurrentActivator(undefined);
        return { types: Object.keys(exportsOf).filter((k) => typeof exportsOf[k] === 'function') };
      }
      case 'create': {
        const id = req.id;
        const activator = new Activator(
          req.info,
          req.log
            ? (level, message, fieldsJson) => {
                logs.push(`[${id},${JSON.stringify(level)},${JSON.stringify(message)},${fieldsJson}]`);
              }
            : undefined,
        );
        activator.workflows = loadModule(activator);
        instances.set(req.id, activator);
        return { ok: true };
      }
      case 'activate':
        instanceFor(req.id).activate(req.activation);
        slot.next = JSON.stringify({ op: 'settle', id: req.id });
        return { ok: true };
      case 'settle': {
        const activator = instanceFor(req.id);
        if (activator.checkConditions()) {
          slot.next = JSON.stringify({ op: 'settle', id: req.id });
          return { ok: true };
        }
        return activator.collect();
      }
      case 'query':
        return instanceFor(req.id).query(req.queryType, req.args);
      case 'dispose':
        release(req.id);
        return { ok: true };
    }
  };

  const slot: HostSlot = {
    input: '',
    next: '',
    dispatch(): string {
      slot.next = '';
      const input = slot.input;
      const nl = input.indexOf('\n');
      let req: Request;
      try {
        req = JSON.parse(nl < 0 ? input : input.slice(0, nl)) as Request;
      } catch (err) {
        return JSON.stringify({ error: toFailureInfo(err) });
      }
      try {
        if (req.dispose) for (const id of req.dispose) release(id);
        const answer = JSON.stringify({ value: handle(req) });
        if (nl >= 0) {
          const rest = input.slice(nl + 1);
          slot.next = slot.next === '' ? rest : `${slot.next}\n${rest}`;
        }
        return answer;
      } catch (err) {
        slot.next = '';
        return JSON.stringify(
          req.op === 'create' ? { error: toFailureInfo(err), loading: true } : { error: toFailureInfo(err) },
        );
      }
    },
    takeLogs(): string {
      if (logs.length === 0) return '';
      const text = `[${logs.join(',')}]`;
      logs.length = 0;
      return text;
    },
  };
  Object.defineProperty(globalThis, SLOT_KEY, { value: slot, enumerable: false, writable: false });
  return slot;
}
