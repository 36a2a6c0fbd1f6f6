import { describe, expect, it } from 'vitest';
import type { WorkflowCommand } from '../../src/common/commands.js';
import type { NewEvent } from '../../src/common/events.js';
import { planClaim, planCompletion, planDelivery, planFailure } from '../../src/engine/workflow-task.js';
import type { BufferedEvent } from '../../src/store/store.js';
import { activity, options, run, T0 } from './fixtures.js';

const signal = (name: string): NewEvent => ({
  type: 'SignalReceived',
  time: T0,
  attributes: { signalName: name, input: [] },
});

function complete(commands: WorkflowCommand[], buffered: BufferedEvent[] = [], overrides = {}) {
  return planCompletion({
    run: run(overrides),
    commands,
    buffered,
    activities: new Map(),
    closedActivityEventIds: new Map(),
    timers: new Map(),
    now: T0 + 10,
    workerId: 'w1',
    bundleHash: 'h',
  });
}

describe('delivery and buffering', () => {
  it('buffers events that arrive while a task is in flight, writing no history', () => {
    const p = planDelivery(run({ wftPhase: 'started' }), [signal('a')], T0);
    expect(p.buffer).toHaveLength(1);
    expect(p.events).toEqual([]);
    expect(p.patch).toEqual({});
  });

  it('appends to history and schedules a task when the run is idle', () => {
    const p = planDelivery(run({ wftPhase: 'idle', nextEventId: 10 }), [signal('a')], T0);
    expect(p.events.map((e) => e.type)).toEqual(['SignalReceived', 'WorkflowTaskScheduled']);
    expect(p.patch).toMatchObject({ wftPhase: 'scheduled', wftScheduledEventId: 11, nextEventId: 12 });
  });

  it('appends without a second task when one is already scheduled', () => {
    const p = planDelivery(run({ wftPhase: 'scheduled', nextEventId: 10 }), [signal('a')], T0);
    expect(p.events.map((e) => e.type)).toEqual(['SignalReceived']);
    expect(p.patch).toEqual({ nextEventId: 11 });
  });
});

describe('claiming a task', () => {
  it('increments the fencing token and records WorkflowTaskStarted for attempt 1', () => {
    const p = planClaim(run({ wftPhase: 'scheduled', wftToken: 7, nextEventId: 3 }), T0 + 5, 'w9');
    expect(p.patch.wftToken).toBe(8);
    expect(p.patch.wftLeaseExpiresAt).toBe(T0 + 5 + 10_000);
    expect(p.events.map((e) => e.type)).toEqual(['WorkflowTaskStarted']);
  });

  it('records nothing for a retry of a failing task', () => {
    const p = planClaim(run({ wftPhase: 'scheduled', wftAttempt: 3 }), T0, 'w1');
    expect(p.events).toEqual([]);
    expect(p.patch.wftStartedEventId).toBe(0);
  });

  it('never moves workflow time backwards', () => {
    const p = planClaim(run({ wftPhase: 'scheduled', wftStartedTime: T0 + 1000 }), T0, 'w1');
    expect(p.patch.wftStartedTime).toBe(T0 + 1000);
  });
});

describe('completing a task', () => {
  it('turns commands into events and pending state, in order', () => {
    const p = complete([
      { type: 'scheduleActivity', seq: 1, activityType: 'charge', input: ['x'], options: options() },
      { type: 'startTimer', seq: 1, durationMs: 5000 },
    ]);
    expect(p.outcome).toBe('committed');
    expect(p.events.map((e) => e.type)).toEqual([
      'WorkflowTaskCompleted',
      'ActivityScheduled',
      'TimerStarted',
    ]);
    expect(p.insertActivities[0]).toMatchObject({
      scheduledEventId: 5,
      activityId: '1',
      phase: 'scheduled',
      attempt: 1,
    });
    expect(p.insertTimers[0]).toMatchObject({ timerKey: '1', fireAt: T0 + 10 + 5000, startedEventId: 6 });
    expect(p.patch).toMatchObject({ wftPhase: 'idle', nextEventId: 7, lastCompletedTaskEventId: 4 });
  });

  it('appends buffered events after the commands and schedules the next task', () => {
    const p = complete([{ type: 'startTimer', seq: 1, durationMs: 1 }], [{ seq: 1, event: signal('a') }]);
    expect(p.events.map((e) => e.type)).toEqual([
      'WorkflowTaskCompleted',
      'TimerStarted',
      'SignalReceived',
      'WorkflowTaskScheduled',
    ]);
    expect(p.patch).toMatchObject({ wftPhase: 'scheduled', wftScheduledEventId: 7 });
    expect(p.bufferedUpTo).toBe(1);
  });

  it('discards a closing task while signals wait, and activates the workflow again with them', () => {
    const p = complete([{ type: 'completeWorkflow', result: 1 }], [{ seq: 3, event: signal('late') }]);
    expect(p.outcome).toBe('discarded');
    expect(p.closed).toBe(false);
    expect(p.events.map((e) => e.type)).toEqual([
      'WorkflowTaskFailed',
      'SignalReceived',
      'WorkflowTaskScheduled',
    ]);
    expect(p.events[0]!.attributes).toMatchObject({ cause: 'UnhandledSignal' });
    expect(p.patch).toMatchObject({ wftPhase: 'scheduled', wftAttempt: 1 });
  });

  it('closes the run when no signal waits; later buffered results are dropped with it', () => {
    const buffered: BufferedEvent[] = [
      { seq: 1, event: { type: 'TimerFired', time: T0, attributes: { timerId: '1', startedEventId: 6 } } },
    ];
    const p = complete([{ type: 'completeWorkflow', result: 'ok' }], buffered);
    expect(p.outcome).toBe('committed');
    expect(p.closed).toBe(true);
    expect(p.events.map((e) => e.type)).toEqual(['WorkflowTaskCompleted', 'WorkflowCompleted']);
    expect(p.patch).toMatchObject({ status: 'completed', wftPhase: 'idle' });
  });

  it('records a retried task it completes as one task (Scheduled, Started, Completed)', () => {
    const p = complete([{ type: 'completeWorkflow' }], [], {
      wftAttempt: 4,
      wftScheduledEventId: 0,
      wftStartedEventId: 0,
    });
    expect(p.events.map((e) => e.type)).toEqual([
      'WorkflowTaskScheduled',
      'WorkflowTaskStarted',
      'WorkflowTaskCompleted',
      'WorkflowCompleted',
    ]);
    expect(p.events[2]!.attributes).toMatchObject({ scheduledEventId: 4, startedEventId: 5 });
  });

  it('cancels a not-yet-started activity at once, and asks a started one to stop', () => {
    const scheduled = activity({ activityId: '1', scheduledEventId: 5, phase: 'scheduled' });
    const started = activity({ activityId: '2', scheduledEventId: 6, phase: 'started' });
    const p = planCompletion({
      run: run({ nextEventId: 10 }),
      commands: [
        { type: 'requestCancelActivity', seq: 1 },
        { type: 'requestCancelActivity', seq: 2 },
      ],
      buffered: [],
      activities: new Map([
        ['1', scheduled],
        ['2', started],
      ]),
      closedActivityEventIds: new Map(),
      timers: new Map(),
      now: T0,
      workerId: 'w1',
      bundleHash: 'h',
    });
    expect(p.events.map((e) => e.type)).toEqual([
      'WorkflowTaskCompleted',
      'ActivityCancelRequested',
      'ActivityCancelRequested',
      'ActivityCanceled',
      'WorkflowTaskScheduled',
    ]);
    expect(p.deleteActivities).toEqual([5]);
    expect(p.cancelActivities).toEqual([6]);
  });
});

describe('failing a task', () => {
  const failure = { kind: 'application' as const, type: 'TypeError', message: 'x is undefined' };

  it('records the first failure and retries with backoff', () => {
    const p = planFailure({
      run: run(),
      cause: 'WorkflowError',
      failure,
      buffered: [],
      now: T0,
      workerId: 'w1',
      retry: { initialMs: 1000, maxMs: 10_000 },
    });
    expect(p.events.map((e) => e.type)).toEqual(['WorkflowTaskFailed']);
    expect(p.patch).toMatchObject({
      wftPhase: 'scheduled',
      wftAttempt: 2,
      wftVisibleAt: T0 + 1000,
      wftFailure: failure,
    });
  });

  it('does not grow history on later failures', () => {
    const p = planFailure({
      run: run({ wftAttempt: 5, wftScheduledEventId: 0, wftStartedEventId: 0 }),
      cause: 'NonDeterminism',
      failure,
      buffered: [],
      now: T0,
      workerId: 'w1',
      retry: { initialMs: 1000, maxMs: 10_000 },
    });
    expect(p.events).toEqual([]);
    expect(p.patch).toMatchObject({ wftAttempt: 6, wftVisibleAt: T0 + 10_000, nextEventId: 4 });
  });

  it('records a timeout as WorkflowTaskTimedOut and keeps buffered events', () => {
    const p = planFailure({
      run: run(),
      cause: 'TimedOut',
      failure,
      buffered: [{ seq: 2, event: signal('s') }],
      now: T0,
      workerId: 'sweeper',
      retry: { initialMs: 1000, maxMs: 10_000 },
    });
    expect(p.events.map((e) => e.type)).toEqual(['WorkflowTaskTimedOut', 'SignalReceived']);
    expect(p.patch).toMatchObject({ wftPhase: 'scheduled', wftAttempt: 2, wftVisibleAt: T0 });
    expect(p.bufferedUpTo).toBe(2);
  });
});
