import type { Clock } from '../common/clock.js';
import { type Duration, parseDuration } from '../common/duration.js';
import { ValidationError } from '../common/errors.js';
import { validateId } from '../common/ids.js';
import { type Logger, silentLogger } from '../common/logger.js';
import type { WorkflowTaskRetry } from '../engine/retry-policy.js';
import type { ActivityFunction } from './activity-executor.js';

export interface WorkerOptions {
  /** Store connection string: `sqlite:PATH`, `sqlite::memory:` (see README). */
  readonly connection: string;
  readonly namespace?: string;
  readonly taskQueue: string;
  /** Path of the workflows module; bundled automatically (TypeScript works directly). */
  readonly workflowsPath?: string;
  /** Activity functions by type name, e.g. `import * as activities`; non-function exports are ignored. */
  readonly activities?: Readonly<Record<string, unknown>>;
  /** Name of this worker in history and logs; default `<hostname>:<pid>:<random>`. */
  readonly identity?: string;
  readonly maxConcurrentActivityTaskExecutions?: number;
  readonly maxConcurrentWorkflowTaskExecutions?: number;
  /** Workflows kept in memory between tasks (default 1000). */
  readonly maxCachedWorkflows?: number;
  /** Fraction of the heap limit above which cached workflows are evicted (default 0.7). */
  readonly cacheHeapWatermark?: number;
  /** How long `shutdown()` lets running activities finish before aborting them (default 10s). */
  readonly shutdownGraceTime?: Duration;
  /** Upper bound between polls when no wake-up arrives, e.g. from other processes (default 100ms). */
  readonly pollInterval?: Duration;
  /** Upper bound between sweeps for timers and expired leases (default 1s). */
  readonly sweepInterval?: Duration;
  /**
   * Sticky routing: the next task of a workflow this worker holds in its cache waits this long for this
   * worker before any other worker may take it (default 5s).
   */
  readonly stickyFallback?: Duration;
  /** Workflow code must yield within this bound (default 5s). */
  readonly deadlockTimeout?: Duration;
  /** Backoff of a failing workflow task: first retry and cap (defaults 1s and 10s). */
  readonly workflowTaskRetry?: { readonly initialInterval?: Duration; readonly maximumInterval?: Duration };
  readonly logger?: Logger;
  readonly clock?: Clock;
}

export interface CompiledWorkerOptions {
  readonly connection: string;
  readonly namespace: string;
  readonly taskQueue: string;
  readonly workflowsPath: string | undefined;
  readonly activities: Readonly<Record<string, ActivityFunction>>;
  readonly identity: string;
  readonly maxConcurrentActivityTaskExecutions: number;
  readonly maxConcurrentWorkflowTaskExecutions: number;
  readonly maxCachedWorkflows: number;
  readonly cacheHeapWatermark: number;
  readonly shutdownGraceMs: number;
  readonly pollIntervalMs: number;
  readonly sweepIntervalMs: number;
  readonly deadlockTimeoutMs: number;
  readonly stickyFallbackMs: number;
  readonly workflowTaskRetry: WorkflowTaskRetry;
  readonly logger: Logger;
  /** The injected clock; undefined means the store's (the database clock on PostgreSQL, else the system's). */
  readonly clock: Clock | undefined;
}

function positiveInt(value: unknown, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new ValidationError(field, `must be a non-negative integer, got ${String(value)}`);
  }
  return value;
}

/** Validates worker options once; every error names the field. */
export function compileWorkerOptions(o: WorkerOptions, defaultIdentity: string): CompiledWorkerOptions {
  if (typeof o !== 'object' || o === null)
    throw new ValidationError('options', 'Worker.create needs an options object');
  if (typeof o.connection !== 'string' || o.connection === '') {
    throw new ValidationError('connection', "is required, e.g. 'sqlite:./longhaul.db'");
  }
  if (!o.workflowsPath && !o.activities) {
    throw new ValidationError('workflowsPath', 'a worker needs workflowsPath, activities, or both');
  }
  if (o.workflowsPath !== undefined && typeof o.workflowsPath !== 'string') {
    throw new ValidationError('workflowsPath', 'must be a file path');
  }
  const activities = o.activities ?? {};
  if (typeof activities !== 'object')
    throw new ValidationError('activities', 'must be an object of functions');
  const ownActivities: Record<string, ActivityFunction> = {};
  for (const [name, fn] of Object.entries(activities)) {
    if (typeof fn === 'function') ownActivities[name] = fn as ActivityFunction;
  }
  const watermark = o.cacheHeapWatermark ?? 0.7;
  if (typeof watermark !== 'number' || !(watermark > 0 && watermark <= 1)) {
    throw new ValidationError('cacheHeapWatermark', 'must be a number in (0, 1]');
  }
  const wftRetry = o.workflowTaskRetry ?? {};
  const initialMs = parseDuration(wftRetry.initialInterval ?? 1000, 'workflowTaskRetry.initialInterval');
  const maxMs = parseDuration(wftRetry.maximumInterval ?? 10_000, 'workflowTaskRetry.maximumInterval');
  if (maxMs < initialMs) {
    throw new ValidationError('workflowTaskRetry.maximumInterval', 'must be at least initialInterval');
  }
  return {
    connection: o.connection,
    namespace: validateId(o.namespace ?? 'default', 'namespace'),
    taskQueue: validateId(o.taskQueue, 'taskQueue'),
    workflowsPath: o.workflowsPath,
    activities: ownActivities,
    identity: validateId(o.identity ?? defaultIdentity, 'identity'),
    maxConcurrentActivityTaskExecutions: Math.max(
      1,
      positiveInt(o.maxConcurrentActivityTaskExecutions, 'maxConcurrentActivityTaskExecutions', 100),
    ),
    maxConcurrentWorkflowTaskExecutions: Math.max(
      1,
      positiveInt(o.maxConcurrentWorkflowTaskExecutions, 'maxConcurrentWorkflowTaskExecutions', 10),
    ),
    maxCachedWorkflows: positiveInt(o.maxCachedWorkflows, 'maxCachedWorkflows', 1000),
    cacheHeapWatermark: watermark,
    shutdownGraceMs: parseDuration(o.shutdownGraceTime ?? 10_000, 'shutdownGraceTime'),
    pollIntervalMs: Math.max(1, parseDuration(o.pollInterval ?? 100, 'pollInterval')),
    sweepIntervalMs: Math.max(1, parseDuration(o.sweepInterval ?? 1000, 'sweepInterval')),
    deadlockTimeoutMs: Math.max(1, parseDuration(o.deadlockTimeout ?? 5000, 'deadlockTimeout')),
    stickyFallbackMs: parseDuration(o.stickyFallback ?? 5000, 'stickyFallback'),
    workflowTaskRetry: { initialMs, maxMs },
    logger: o.logger ?? silentLogger,
    clock: o.clock,
  };
}
