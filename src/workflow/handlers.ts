import { ValidationError } from '../common/errors.js';
import { currentActivator } from './run-context.js';

/** A signal definition: a name, typed by its arguments. Plain data, usable from clients too. */
export interface SignalDefinition<Args extends unknown[] = []> {
  readonly type: 'signal';
  readonly name: string;
  /** Type-only marker; never set. */
  readonly __args?: Args;
}

/** A query definition: a name, typed by its result and arguments. Plain data, usable from clients too. */
export interface QueryDefinition<Ret = unknown, Args extends unknown[] = []> {
  readonly type: 'query';
  readonly name: string;
  /** Type-only markers; never set. */
  readonly __ret?: Ret;
  readonly __args?: Args;
}

export type SignalHandler<Args extends unknown[]> = (...args: Args) => void | Promise<void>;
export type QueryHandler<Ret, Args extends unknown[]> = (...args: Args) => Ret;

function checkName(name: unknown, field: string): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new ValidationError(field, 'must be a non-empty string');
  }
  return name;
}

export function defineSignal<Args extends unknown[] = []>(name: string): SignalDefinition<Args> {
  return { type: 'signal', name: checkName(name, 'defineSignal name') };
}

export function defineQuery<Ret = unknown, Args extends unknown[] = []>(
  name: string,
): QueryDefinition<Ret, Args> {
  return { type: 'query', name: checkName(name, 'defineQuery name') };
}

/**
 * Sets the handler of a signal or query for the current run; `undefined` removes it.
 *
 * Signal handlers run in history order. Signals that arrived before their handler was set are
 * buffered and delivered, in order, inside this call. A handler that throws (or rejects) follows the
 * workflow's outcome rules: an ApplicationFailure fails the workflow, anything else fails the task.
 *
 * Query handlers run synchronously on the current state; they must not start timers or activities
 * and must not return a promise.
 */
export function setHandler<Args extends unknown[]>(
  def: SignalDefinition<Args>,
  handler: SignalHandler<Args> | undefined,
): void;
export function setHandler<Ret, Args extends unknown[]>(
  def: QueryDefinition<Ret, Args>,
  handler: QueryHandler<Ret, Args> | undefined,
): void;
export function setHandler(
  def: SignalDefinition<unknown[]> | QueryDefinition<unknown, unknown[]>,
  handler: ((...args: unknown[]) => unknown) | undefined,
): void {
  const activator = currentActivator('setHandler()');
  if (handler !== undefined && typeof handler !== 'function') {
    throw new ValidationError('setHandler handler', 'must be a function or undefined');
  }
  if (def?.type === 'signal') activator.setSignalHandler(def.name, handler);
  else if (def?.type === 'query') {
    if (handler === undefined) activator.queryHandlers.delete(def.name);
    else activator.queryHandlers.set(def.name, handler);
  } else {
    throw new ValidationError('setHandler definition', 'must come from defineSignal or defineQuery');
  }
}
