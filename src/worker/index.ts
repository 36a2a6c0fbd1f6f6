export {
  BundleError,
  DeadlockError,
  NonDeterminismError,
  StoreError,
  ValidationError,
} from '../common/errors.js';
export type { HistoryEvent, HistoryFile } from '../common/events.js';
export { jsonLogger, type Logger } from '../common/logger.js';
export type { ActivityFunction } from './activity-executor.js';
export { Worker, type WorkerState } from './worker.js';
export type { WorkerOptions } from './worker-options.js';
