/**
 * The sandbox side of the host ↔ sandbox protocol. Not part of the public API: the bundler builds this
 * file as the runtime of every workflows bundle, and the worker's sandbox talks to it.
 *
 * Protocol. `boot()` runs once per realm and returns the slot object. For every call the host writes a
 * JSON request to `slot.input`, then evaluates a script that calls `slot.dispatch()`, which answers with
 * JSON text. Only strings cross the boundary, so workflow code only ever sees objects of its own realm,
 * and the host never holds a promise made here. Promise jobs run when the host's script evaluation ends
 * (`microtaskMode: 'afterEvaluate'`), still with the same run set as current.
 *
 * Requests: `probe` (list workflow types), `create {id, info}` (new module instance; the log sink is
 * read from `slot.logSink`), `activate {id, activation}` (apply jobs), `settle {id}` (check conditions;
 * `{done: false}` asks the host to drain promise jobs and settle again, `{done: true, commands,
 * taskFailure?}` ends the activation), `query {id, queryType, args}`, `dispose {id}`.
 */
import type { Activation, WorkflowInfo } from '../common/commands.js';
import { toFailureInfo } from '../common/errors.js';
import { Activator, type SandboxLogSink } from './activator.js';
import { installGlobalOverrides } from './global-overrides.js';
import * as api from './index.js';
import { setCurrentActivator } from './run-context.js';

export { api };

/** Evaluates a fresh instance of the user's workflows module; `require` serves 'longhaul/workflow'. */
export type ModuleFactory = (require: (id: string) => unknown) => Record<string, unknown>;

export interface HostSlot {
  input: string;
  logSink: SandboxLogSink | undefined;
  dispatch(): string;
}

type Request =
  | { op: 'probe' }
  | { op: 'create'; id: number; info: WorkflowInfo }
  | { op: 'activate'; id: number; activation: Activation }
  | { op: 'settle'; id: number }
  | { op: 'query'; id: number; queryType: string; args: unknown[] }
  | { op: 'dispose'; id: number };

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

  const handle = (req: Request): unknown => {
    switch (req.op) {
      case 'probe': {
        const exportsOf = loadModule(new Activator(PROBE_INFO));
        setCurrentActivator(undefined);
        return { types: Object.keys(exportsOf).filter((k) => typeof exportsOf[k] === 'function') };
      }
      case 'create': {
        const activator = new Activator(req.info, slot.logSink);
        slot.logSink = undefined;
        activator.workflows = loadModule(activator);
        instances.set(req.id, activator);
        return { ok: true };
      }
      case 'activate':
        instanceFor(req.id).activate(req.activation);
        return { ok: true };
      case 'settle': {
        const activator = instanceFor(req.id);
        if (activator.checkConditions()) return { done: false };
        return { done: true, ...activator.collect() };
      }
      case 'query':
        return instanceFor(req.id).query(req.queryType, req.args);
      case 'dispose': {
        instances.get(req.id)?.dispose();
        instances.delete(req.id);
        setCurrentActivator(undefined);
        return { ok: true };
      }
    }
  };

  const slot: HostSlot = {
    input: '',
    logSink: undefined,
    dispatch(): string {
      let req: Request;
      try {
        req = JSON.parse(slot.input) as Request;
      } catch (err) {
        return JSON.stringify({ error: toFailureInfo(err) });
      }
      try {
        return JSON.stringify({ value: handle(req) });
      } catch (err) {
        return JSON.stringify({ error: toFailureInfo(err) });
      }
    },
  };
  Object.defineProperty(globalThis, SLOT_KEY, { value: slot, enumerable: false, writable: false });
  return slot;
}
