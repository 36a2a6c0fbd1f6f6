import type { WorkflowInfo } from '../common/commands.js';
import { uuidFrom } from './random.js';
import { currentActivator, maybeCurrentActivator } from './run-context.js';

/** Facts about the current run; `historyLength` is the length of history at the current activation. */
export function workflowInfo(): WorkflowInfo {
  const activator = currentActivator('workflowInfo()');
  return { ...activator.info, historyLength: activator.historyLength };
}

/** A random uuid (version 4) drawn from the run's seeded generator: the same on every replay. */
export function uuid4(): string {
  return uuidFrom(currentActivator('uuid4()').random);
}

export type LogFields = Record<string, unknown>;

function emit(level: string, message: string, fields?: LogFields): void {
  maybeCurrentActivator()?.log(level, message, fields);
}

/**
 * Replay-aware logger for workflow code: lines are dropped while the run is replaying history (so each
 * line appears once) and otherwise forwarded to the worker's logger with workflowId, runId and
 * workflowType added. Fields must be JSON-serialisable.
 */
export const log = {
  debug: (message: string, fields?: LogFields): void => emit('debug', message, fields),
  info: (message: string, fields?: LogFields): void => emit('info', message, fields),
  warn: (message: string, fields?: LogFields): void => emit('warn', message, fields),
  error: (message: string, fields?: LogFields): void => emit('error', message, fields),
};
