export { Client, WorkflowClient, type ClientOptions, type WorkflowRef } from './client.js';
export { WorkflowHandle, type QueryRef, type SignalRef } from './handle.js';
export type { WorkflowStartOptions } from './start-options.js';
export type { WorkflowDescription, PendingActivityDescription, IdConflictPolicy, IdReusePolicy } from '../runtime/workflow-ops.js';
export type { HistoryFile } from '../common/events.js';
export {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
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
  isCancellation,
} from '../common/errors.js';
