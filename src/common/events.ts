import type { FailureInfo, RetryState, TimeoutType } from './errors.js';

/**
 * History events. A run's history is append-only and gap-free (event ids 1, 2, 3, ...). Payloads are
 * stored as the payload converter encodes them (JSON values). Durations are milliseconds, times are
 * milliseconds since the epoch in memory and ISO 8601 strings in the exported history format.
 */
export interface EventAttributes {
  WorkflowStarted: {
    workflowType: string;
    taskQueue: string;
    input: unknown[];
    /** Seeds Math.random and uuid4 inside the sandbox; fixed per run so replay is exact. */
    randomnessSeed: string;
    workflowExecutionTimeoutMs?: number | undefined;
    workflowRunTimeoutMs?: number | undefined;
    workflowTaskTimeoutMs: number;
    expectedMaxDurationMs?: number | undefined;
    memo?: Record<string, unknown> | undefined;
    searchAttributes?: Record<string, unknown> | undefined;
    requestId?: string | undefined;
  };
  WorkflowTaskScheduled: { taskQueue: string; attempt: number };
  WorkflowTaskStarted: { scheduledEventId: number; workerId: string };
  WorkflowTaskCompleted: {
    scheduledEventId: number;
    startedEventId: number;
    workerId: string;
    /** Content hash of the workflows bundle that produced this task's commands. */
    bundleHash: string;
  };
  WorkflowTaskFailed: {
    scheduledEventId: number;
    startedEventId: number;
    workerId: string;
    cause: WorkflowTaskFailedCause;
    failure: FailureInfo;
  };
  WorkflowTaskTimedOut: { scheduledEventId: number; startedEventId: number };
  ActivityScheduled: {
    activityId: string;
    activityType: string;
    taskQueue: string;
    input: unknown[];
    options: ActivityOptionsMs;
    workflowTaskCompletedEventId: number;
  };
  ActivityStarted: { scheduledEventId: number; attempt: number; workerId: string };
  ActivityCompleted: { scheduledEventId: number; startedEventId: number; result?: unknown };
  ActivityFailed: {
    scheduledEventId: number;
    startedEventId: number;
    failure: FailureInfo;
    retryState: RetryState;
  };
  ActivityTimedOut: {
    scheduledEventId: number;
    /** 0 when the scheduling never started (schedule-to-start or schedule-to-close before any start). */
    startedEventId: number;
    timeoutType: TimeoutType;
    failure: FailureInfo;
    retryState: RetryState;
  };
  ActivityCancelRequested: { scheduledEventId: number };
  ActivityCanceled: { scheduledEventId: number; startedEventId: number; details?: unknown };
  TimerStarted: { timerId: string; durationMs: number };
  TimerFired: { timerId: string; startedEventId: number };
  TimerCanceled: { timerId: string; startedEventId: number };
  SignalReceived: { signalName: string; input: unknown[]; requestId?: string | undefined };
  MarkerRecorded: { markerName: string; details: Record<string, unknown> };
  WorkflowCancelRequested: { reason?: string | undefined; requestId?: string | undefined };
  WorkflowCompleted: { result?: unknown };
  WorkflowFailed: { failure: FailureInfo };
  WorkflowCanceled: { details?: unknown };
  WorkflowTerminated: { reason?: string | undefined; details?: unknown };
  WorkflowTimedOut: { timeoutType: 'workflowExecution' | 'workflowRun' };
}

export type EventType = keyof EventAttributes;

export type WorkflowTaskFailedCause =
  | 'WorkflowError'
  | 'NonDeterminism'
  | 'UnknownWorkflowType'
  | 'Deadlock'
  | 'UnhandledSignal'
  | 'BundleError';

/** One event as held in memory. */
export type HistoryEvent = {
  [K in EventType]: {
    readonly eventId: number;
    readonly type: K;
    readonly time: number;
    readonly attributes: EventAttributes[K];
  };
}[EventType];

/** An event before it has an id (what the runtime hands the store to append). */
export type NewEvent = {
  [K in EventType]: { readonly type: K; readonly time: number; readonly attributes: EventAttributes[K] };
}[EventType];

export type EventOf<K extends EventType> = Extract<HistoryEvent, { type: K }>;

/** Retry policy with every duration in milliseconds, as compiled and stored. */
export interface RetryPolicyMs {
  initialIntervalMs: number;
  backoffCoefficient: number;
  maximumIntervalMs: number;
  /** 0 means unlimited. */
  maximumAttempts: number;
  nonRetryableErrorTypes: string[];
}

/** Activity options as compiled by the workflow and stored in ActivityScheduled. */
export interface ActivityOptionsMs {
  scheduleToStartTimeoutMs?: number | undefined;
  startToCloseTimeoutMs?: number | undefined;
  scheduleToCloseTimeoutMs?: number | undefined;
  heartbeatTimeoutMs?: number | undefined;
  retry: RetryPolicyMs;
}

/** Events that close a run. */
export const CLOSING_EVENT_TYPES: ReadonlySet<EventType> = new Set<EventType>([
  'WorkflowCompleted',
  'WorkflowFailed',
  'WorkflowCanceled',
  'WorkflowTerminated',
  'WorkflowTimedOut',
]);

/** The exported history format (`fetchHistory()`, replay input). */
export interface HistoryFile {
  formatVersion: 1;
  workflowId: string;
  runId: string;
  events: { eventId: number; type: EventType; time: string; attributes: unknown }[];
}

export function toHistoryFile(
  workflowId: string,
  runId: string,
  events: readonly HistoryEvent[],
): HistoryFile {
  return {
    formatVersion: 1,
    workflowId,
    runId,
    events: events.map((e) => ({
      eventId: e.eventId,
      type: e.type,
      time: new Date(e.time).toISOString(),
      attributes: e.attributes,
    })),
  };
}
