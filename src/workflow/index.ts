/**
 * `longhaul/workflow`: the API used inside workflow code. It runs in the worker's sandbox and imports
 * nothing from Node. Definitions (`defineSignal`, `defineQuery`, `proxyActivities`) also work outside
 * the sandbox, so clients may import a workflows module for them.
 */
export type { ActivityOptions, RetryPolicy } from '../common/activity-options.js';
export type { WorkflowInfo } from '../common/commands.js';
export type { Duration } from '../common/duration.js';
export type { ApplicationFailureOptions, RetryState, TimeoutType } from '../common/errors.js';
export {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  isCancellation,
  TimeoutFailure,
} from '../common/errors.js';
export { CancellationScope } from './cancellation-scope.js';
export type { QueryDefinition, QueryHandler, SignalDefinition, SignalHandler } from './handlers.js';
export { defineQuery, defineSignal, setHandler } from './handlers.js';
export type { LogFields } from './info.js';
export { log, uuid4, workflowInfo } from './info.js';
export type { ActivityInterfaceFor, UntypedActivities } from './proxy-activities.js';
export { proxyActivities } from './proxy-activities.js';
export { condition, sleep } from './timers.js';
