import { expect } from 'vitest';
import { type FailureInfo, StoreError } from '../../common/errors.js';
import type { NewEvent } from '../../common/events.js';
import type { ActivityRecord, QueryRecord, RunRecord, Store, TimerRecord } from '../store.js';

/** Records and helpers used by the conformance suite. */

export const T0 = 1_700_000_000_000;

export const FAILURE: FailureInfo = {
  kind: 'application',
  type: 'CardDeclined',
  message: 'card declined ✗',
  nonRetryable: true,
  details: [{ code: 51, nested: { ok: false } }],
};

export const RETRY = {
  initialIntervalMs: 1000,
  backoffCoefficient: 2,
  maximumIntervalMs: 60_000,
  maximumAttempts: 5,
  nonRetryableErrorTypes: ['CardDeclined'],
};

export function run(o: Partial<RunRecord> = {}): RunRecord {
  return {
    namespace: 'default',
    workflowId: 'wf-1',
    runId: 'run-1',
    workflowType: 'order',
    taskQueue: 'q1',
    status: 'running',
    nextEventId: 1,
    startTime: T0,
    closeTime: null,
    requestId: null,
    workflowTaskTimeoutMs: 10_000,
    cancelRequested: false,
    memo: null,
    searchAttributes: null,
    lastCompletedTaskEventId: 0,
    wftPhase: 'idle',
    wftAttempt: 1,
    wftScheduledEventId: 0,
    wftStartedEventId: 0,
    wftVisibleAt: T0,
    wftStartedTime: 0,
    wftLeaseOwner: null,
    wftLeaseExpiresAt: 0,
    wftToken: 0,
    wftFailure: null,
    stickyWorker: null,
    ...o,
  };
}

export function activity(o: Partial<ActivityRecord> = {}): ActivityRecord {
  return {
    namespace: 'default',
    workflowId: 'wf-1',
    runId: 'run-1',
    scheduledEventId: 5,
    activityId: '1',
    activityType: 'charge',
    taskQueue: 'q1',
    input: ['order-42', { amount: 12.5 }],
    options: { startToCloseTimeoutMs: 60_000, heartbeatTimeoutMs: 5000, retry: RETRY },
    phase: 'scheduled',
    attempt: 1,
    scheduledTime: T0,
    visibleAt: T0,
    startedTime: null,
    lastHeartbeatTime: null,
    heartbeatDetails: undefined,
    lastFailure: null,
    cancelRequested: false,
    leaseOwner: null,
    token: 0,
    deadline: null,
    ...o,
  };
}

export function timer(o: Partial<TimerRecord> = {}): TimerRecord {
  return {
    namespace: 'default',
    runId: 'run-1',
    timerKey: 't1',
    kind: 'user',
    fireAt: T0,
    startedEventId: 3,
    ...o,
  };
}

export function query(o: Partial<QueryRecord> = {}): QueryRecord {
  return {
    id: 'query-1',
    namespace: 'default',
    runId: 'run-1',
    taskQueue: 'q1',
    queryType: 'status',
    args: [],
    phase: 'pending',
    createdAt: T0,
    leaseExpiresAt: 0,
    ...o,
  };
}

export function marker(n: number): NewEvent {
  return { type: 'MarkerRecorded', time: T0 + n, attributes: { markerName: 'm', details: { n } } };
}

export function signal(name: string): NewEvent {
  return { type: 'SignalReceived', time: T0, attributes: { signalName: name, input: [name, { x: [1] }] } };
}

/** A read-modify-write that loses updates unless transactions are serialised. */
export function increment(store: Store, runId: string): Promise<void> {
  return store.transaction(async (t) => {
    const current = await t.getRun(runId);
    await new Promise((r) => setImmediate(r));
    await t.updateRun(runId, { nextEventId: current!.nextEventId + 1 });
  });
}

export async function expectStoreError(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a StoreError with code ${code}`).toBeInstanceOf(StoreError);
  expect((err as StoreError).code).toBe(code);
}
