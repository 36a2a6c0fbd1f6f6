import { describe, expect, it } from 'vitest';
import { activityInfo, cancellationSignal, heartbeat } from '../../src/activity/index.js';
import { systemClock } from '../../src/common/clock.js';
import { type FailureInfo, StaleTokenError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import type { ActivityTask, ActivityTaskRef } from '../../src/runtime/activity-tasks.js';
import { ActivityExecutor, type ActivityReporter } from '../../src/worker/activity-executor.js';

function task(overrides: Partial<ActivityTask> = {}): ActivityTask {
  return {
    namespace: 'default',
    workflowId: 'wf',
    runId: 'run',
    scheduledEventId: 5,
    activityId: '1',
    activityType: 'work',
    taskQueue: 'q',
    input: [],
    options: {
      startToCloseTimeoutMs: 10_000,
      heartbeatTimeoutMs: 500,
      retry: {
        initialIntervalMs: 1000,
        backoffCoefficient: 2,
        maximumIntervalMs: 100_000,
        maximumAttempts: 0,
        nonRetryableErrorTypes: [],
      },
    },
    attempt: 1,
    token: 1,
    scheduledTime: Date.now(),
    startedTime: Date.now(),
    heartbeatDetails: null,
    ...overrides,
  };
}

class RecordingReporter implements ActivityReporter {
  readonly heartbeats: { at: number; details: unknown }[] = [];
  readonly completed: unknown[] = [];
  readonly failed: { failure: FailureInfo; details: unknown }[] = [];
  readonly cancels: unknown[] = [];
  cancelRequested = false;
  stale = false;
  async complete(_ref: ActivityTaskRef, result: unknown): Promise<void> {
    this.completed.push(result);
  }
  async fail(_ref: ActivityTaskRef, failure: FailureInfo, details: unknown): Promise<void> {
    this.failed.push({ failure, details });
  }
  async canceled(_ref: ActivityTaskRef, details: unknown): Promise<void> {
    this.cancels.push(details);
  }
  async heartbeat(_ref: ActivityTaskRef, details: unknown): Promise<{ cancelRequested: boolean }> {
    if (this.stale) throw new StaleTokenError('stale');
    this.heartbeats.push({ at: Date.now(), details });
    return { cancelRequested: this.cancelRequested };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('activity executor', () => {
  it('throttles heartbeats to about 80% of the heartbeat timeout, latest details winning', async () => {
    const reporter = new RecordingReporter();
    const activities = {
      async work() {
        for (let i = 1; i <= 60; i++) {
          heartbeat(i);
          await sleep(10);
        }
        return 'done';
      },
    };
    await new ActivityExecutor(activities, reporter, systemClock, silentLogger, 4).execute(task());
    expect(reporter.completed).toEqual(['done']);
    // ~600 ms of work with a 400 ms throttle: the first heartbeat at once, then at most one per interval.
    expect(reporter.heartbeats.length).toBeGreaterThanOrEqual(2);
    expect(reporter.heartbeats.length).toBeLessThanOrEqual(3);
    expect(reporter.heartbeats[0]!.details).toBe(1);
    for (let i = 1; i < reporter.heartbeats.length; i++) {
      expect(reporter.heartbeats[i]!.at - reporter.heartbeats[i - 1]!.at).toBeGreaterThanOrEqual(390);
    }
  });

  it('flushes the latest throttled details when the attempt fails', async () => {
    const reporter = new RecordingReporter();
    const activities = {
      async work() {
        heartbeat(1);
        heartbeat(2);
        heartbeat(3);
        throw new Error('boom');
      },
    };
    await new ActivityExecutor(activities, reporter, systemClock, silentLogger, 4).execute(task());
    expect(reporter.failed).toHaveLength(1);
    expect(reporter.failed[0]!.details).toBe(3);
    expect(reporter.failed[0]!.failure).toMatchObject({ type: 'Error', message: 'boom' });
  });

  it('shows the previous attempt’s details and a stable idempotency key', async () => {
    const reporter = new RecordingReporter();
    const seen: unknown[] = [];
    const activities = {
      async work() {
        const info = activityInfo();
        seen.push(info.attempt, info.heartbeatDetails, info.idempotencyKey);
      },
    };
    await new ActivityExecutor(activities, reporter, systemClock, silentLogger, 4).execute(
      task({ attempt: 3, heartbeatDetails: { offset: 42 } }),
    );
    expect(seen).toEqual([3, { offset: 42 }, 'wf:run:1']);
  });

  it('delivers a cancellation learned from a heartbeat through the AbortSignal and reports it', async () => {
    const reporter = new RecordingReporter();
    reporter.cancelRequested = true;
    const activities = {
      async work() {
        const signal = cancellationSignal();
        heartbeat('started');
        await new Promise((_resolve, reject) => {
          signal.addEventListener('abort', () => reject(signal.reason));
        });
      },
    };
    await new ActivityExecutor(activities, reporter, systemClock, silentLogger, 4).execute(task());
    expect(reporter.cancels).toHaveLength(1);
    expect(reporter.failed).toHaveLength(0);
  });

  it('stops and reports nothing when its attempt turns out to be stale', async () => {
    const reporter = new RecordingReporter();
    reporter.stale = true;
    let aborted = false;
    const activities = {
      async work() {
        heartbeat(1);
        await new Promise<void>((resolve) => {
          cancellationSignal().addEventListener('abort', () => {
            aborted = true;
            resolve();
          });
        });
        return 'late';
      },
    };
    await new ActivityExecutor(activities, reporter, systemClock, silentLogger, 4).execute(task());
    expect(aborted).toBe(true);
    expect(reporter.completed).toEqual([]);
    expect(reporter.failed).toEqual([]);
  });

  it('fails an unregistered activity type with a retryable, named failure', async () => {
    const reporter = new RecordingReporter();
    await new ActivityExecutor({}, reporter, systemClock, silentLogger, 4).execute(
      task({ activityType: 'missing' }),
    );
    expect(reporter.failed[0]!.failure).toMatchObject({ type: 'ActivityNotRegistered', nonRetryable: false });
    expect(reporter.failed[0]!.failure.message).toContain("'missing'");
  });

  it('aborts attempts still running when the shutdown grace time is over', async () => {
    const reporter = new RecordingReporter();
    const activities = {
      async work() {
        await new Promise((_resolve, reject) => {
          cancellationSignal().addEventListener('abort', () => reject(new Error('aborted by shutdown')));
        });
      },
    };
    const executor = new ActivityExecutor(activities, reporter, systemClock, silentLogger, 4);
    void executor.execute(task());
    expect(executor.inFlight).toBe(1);
    await executor.drain(50);
    expect(executor.inFlight).toBe(0);
    expect(reporter.failed[0]!.failure.message).toBe('aborted by shutdown');
  });

  it('frees an attempt’s slot when its function settles, while its report is still in flight', async () => {
    let releaseReport!: () => void;
    const reportGate = new Promise<void>((resolve) => {
      releaseReport = resolve;
    });
    const reporter = new RecordingReporter();
    reporter.complete = async (_task, result) => {
      await reportGate;
      reporter.completed.push(result);
    };
    const executor = new ActivityExecutor(
      { work: async () => 'done' },
      reporter,
      systemClock,
      silentLogger,
      1,
    );
    let freed = 0;
    const waiting = executor.room.wait(10_000, new AbortController().signal).then(() => freed++);
    const done = executor.execute(task());
    expect(executor.available).toBe(0);
    await waiting;
    // The report waits for its gate; the slot is already free for the next attempt (eager dispatch).
    expect(freed).toBe(1);
    expect(executor.available).toBe(1);
    expect(executor.reserve(2)).toBe(1);
    expect(executor.available).toBe(0);
    executor.release(1);
    expect(executor.available).toBe(1);
    expect(reporter.completed).toEqual([]);
    releaseReport();
    await done;
    await waiting;
    expect(freed).toBe(1);
    expect(reporter.completed).toEqual(['done']);
    expect(executor.inFlight).toBe(0);
    expect(executor.available).toBe(1);
  });
});
