export {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  isCancellation,
  LonghaulError,
  QueryFailedError,
  QueryNotRegisteredError,
  QueryTimeoutError,
  StoreError,
  TerminatedFailure,
  TimeoutFailure,
  ValidationError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowFailedError,
  WorkflowNotFoundError,
} from '../common/errors.js';
export type { HistoryFile } from '../common/events.js';
export type {
  IdConflictPolicy,
  IdReusePolicy,
  PendingActivityDescription,
  WorkflowDescription,
} from '../runtime/workflow-ops.js';
export { Client, type ClientOptions, WorkflowClient, type WorkflowRef } from './client.js';
export { type QueryRef, type SignalRef, WorkflowHandle } from './handle.js';
export type { WorkflowStartOptions } from './start-options.js';
