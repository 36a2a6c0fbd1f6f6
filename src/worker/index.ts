export { Worker, type WorkerState } from './worker.js';
export type { WorkerOptions } from './worker-options.js';
export type { ActivityFunction } from './activity-executor.js';
export type { HistoryFile, HistoryEvent } from '../common/events.js';
export { jsonLogger, type Logger } from '../common/logger.js';
export {
  BundleError,
  DeadlockError,
  NonDeterminismError,
  StoreError,
  ValidationError,
} from '../common/errors.js';
