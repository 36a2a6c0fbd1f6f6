import type { ActivityOptionsMs } from '../../src/common/events.js';
import { run as storeRun } from '../../src/store/conformance/records.js';
import type { ActivityRecord, RunRecord } from '../../src/store/store.js';

export const T0 = Date.UTC(2026, 0, 1);

/** A run whose first workflow task (events 2, 3) is started. */
export function run(overrides: Partial<RunRecord> = {}): RunRecord {
  return storeRun({
    taskQueue: 'q',
    startTime: T0,
    nextEventId: 4,
    wftPhase: 'started',
    wftScheduledEventId: 2,
    wftStartedEventId: 3,
    wftVisibleAt: T0,
    wftStartedTime: T0,
    wftLeaseOwner: 'w1',
    wftLeaseExpiresAt: T0 + 10_000,
    wftToken: 1,
    ...overrides,
  });
}

export const retry = {
  initialIntervalMs: 1000,
  backoffCoefficient: 2,
  maximumIntervalMs: 100_000,
  maximumAttempts: 0,
  nonRetryableErrorTypes: [] as string[],
};

export function options(overrides: Partial<ActivityOptionsMs> = {}): ActivityOptionsMs {
  return { startToCloseTimeoutMs: 60_000, retry, ...overrides };
}

export function activity(overrides: Partial<ActivityRecord> = {}): ActivityRecord {
  return {
    namespace: 'default',
    workflowId: 'wf-1',
    runId: 'run-1',
    scheduledEventId: 5,
    activityId: '1',
    activityType: 'charge',
    taskQueue: 'q',
    input: [],
    options: options(),
    phase: 'started',
    attempt: 1,
    scheduledTime: T0,
    visibleAt: T0,
    startedTime: T0,
    lastHeartbeatTime: null,
    heartbeatDetails: null,
    lastFailure: null,
    cancelRequested: false,
    leaseOwner: 'w1',
    token: 1,
    deadline: T0 + 60_000,
    ...overrides,
  };
}
