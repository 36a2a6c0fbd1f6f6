import { AsyncLocalStorage } from 'node:async_hooks';

/** What `activityInfo()` returns inside an activity. */
export interface ActivityInfo {
  readonly namespace: string;
  readonly workflowId: string;
  readonly runId: string;
  readonly activityId: string;
  readonly activityType: string;
  readonly taskQueue: string;
  /** 1-based attempt number. */
  readonly attempt: number;
  /**
   * The last details recorded by an earlier attempt of this scheduling (undefined on the first), so a
   * retry can resume from a checkpoint.
   */
  readonly heartbeatDetails: unknown;
  /** `workflowId:runId:activityId`: the same for every attempt (retries are the same intent). */
  readonly idempotencyKey: string;
  readonly scheduledTime: Date;
  readonly startedTime: Date;
  readonly heartbeatTimeoutMs: number | undefined;
  readonly startToCloseTimeoutMs: number | undefined;
  readonly scheduleToCloseTimeoutMs: number | undefined;
}

/** The per-attempt context the executor binds around an activity call. */
export interface ActivityContext {
  readonly info: ActivityInfo;
  readonly signal: AbortSignal;
  heartbeat(details?: unknown): void;
}

export const activityStorage = new AsyncLocalStorage<ActivityContext>();

export function currentActivity(fn: string): ActivityContext {
  const ctx = activityStorage.getStore();
  if (!ctx) throw new Error(`${fn}() may only be called inside an activity run by a longhaul worker`);
  return ctx;
}
