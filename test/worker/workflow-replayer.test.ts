import { beforeAll, describe, expect, it } from 'vitest';
import { NonDeterminismError } from '../../src/common/errors.js';
import { type HistoryEvent, toHistoryFile } from '../../src/common/events.js';
import { bundleWorkflows } from '../../src/worker/bundler.js';
import { type ActivationResult, WorkflowSandbox } from '../../src/worker/sandbox.js';
import { StaleRunStateError, WorkflowRunState } from '../../src/worker/workflow-replayer.js';
import { HistoryBuilder } from './helpers/history-builder.js';
import { fixturePath, runInfo } from './helpers/workflow-fixtures.js';

let sandbox: WorkflowSandbox;
beforeAll(async () => {
  sandbox = WorkflowSandbox.create(await bundleWorkflows(fixturePath('replay-order.ts')));
});

/**
 * The history of orderFlow('o1') approved by alice, task by task. `boundaries` are the ids of the
 * WorkflowTaskStarted events at which a worker would run a task.
 */
function orderHistory(workflowType = 'orderFlow', opts: { dropSecondTimer?: boolean } = {}) {
  const h = new HistoryBuilder();
  const boundaries: number[] = [];
  h.workflowStarted(workflowType, ['o1']);
  boundaries.push(h.taskStarted()); // 3
  h.taskCompleted(3); // 4
  const charge = h.activityScheduled(1, 'charge', ['o1', 100]); // 5
  h.activityCompleted(charge, { orderId: 'o1', cents: 100 }); // 6, 7
  boundaries.push(h.taskStarted()); // 9
  h.taskCompleted(9); // 10
  const approvalTimer = h.timerStarted(1, 3_600_000); // 11
  h.signal('approve', ['alice']); // 12
  boundaries.push(h.taskStarted()); // 14
  h.taskCompleted(14); // 15
  h.timerCanceled(1, approvalTimer); // 16
  if (!opts.dropSecondTimer) {
    const sleepTimer = h.timerStarted(2, 1000); // 17
    h.timerFired(2, sleepTimer); // 18
    boundaries.push(h.taskStarted()); // 20
    h.taskCompleted(20); // 21
    const greet = h.activityScheduled(2, 'greet', ['o1:alice']); // 22
    h.activityCompleted(greet, 'hello o1:alice'); // 23, 24
    boundaries.push(h.taskStarted()); // 26
    h.taskCompleted(26); // 27
    h.add('WorkflowCompleted', { result: 'hello o1:alice' }); // 28
  }
  return { events: h.events, boundaries, builder: h };
}

function divergence(fn: () => void): NonDeterminismError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NonDeterminismError);
    return err as NonDeterminismError;
  }
  throw new Error('expected a NonDeterminismError');
}

function replayAs(workflowType: string, events: readonly HistoryEvent[]): void {
  const first = events[0]!;
  const patched = [
    { ...first, attributes: { ...first.attributes, workflowType } } as HistoryEvent,
    ...events.slice(1),
  ];
  WorkflowRunState.replayHistory(sandbox, patched);
}

function freshRun(events: readonly HistoryEvent[], time: number): ActivationResult {
  const instance = sandbox.createInstance(runInfo('orderFlow', 'run-fresh'));
  try {
    return new WorkflowRunState(instance, runInfo('orderFlow', 'run-fresh')).runTask(events, { time });
  } finally {
    instance.dispose();
  }
}

describe('WorkflowRunState', () => {
  it('replays a full history with no error, as events or as an exported history file', () => {
    const { events } = orderHistory();
    expect(() => WorkflowRunState.replayHistory(sandbox, events)).not.toThrow();
    expect(() => WorkflowRunState.replayHistory(sandbox, toHistoryFile('wf', 'run', events))).not.toThrow();
  });

  it('detects a different activity type, naming the event, the recorded event and the command', () => {
    const err = divergence(() => replayAs('orderFlowRenamedActivity', orderHistory().events));
    expect(err.message).toContain('at event 5');
    expect(err.message).toContain("ActivityScheduled (activityType 'charge', activityId '1')");
    expect(err.message).toContain("scheduleActivity (activityType 'greet', seq 1)");
  });

  it('detects an extra timer', () => {
    const err = divergence(() => replayAs('orderFlowExtraTimer', orderHistory().events));
    expect(err.message).toContain('at event 5');
    expect(err.message).toContain('startTimer (seq 1, 5000 ms)');
  });

  it('detects a removed timer', () => {
    const err = divergence(() => replayAs('orderFlowMissingTimer', orderHistory().events));
    expect(err.message).toContain('at event 17');
    expect(err.message).toContain("TimerStarted (timerId '2', 1000 ms)");
    expect(err.message).toContain("scheduleActivity (activityType 'greet', seq 2)");
  });

  it('detects a command that history has no event for, naming the task completion event', () => {
    const { builder } = orderHistory('orderFlow', { dropSecondTimer: true });
    builder.signal('approve', ['bob']);
    builder.task();
    const err = divergence(() => WorkflowRunState.replayHistory(sandbox, builder.events));
    expect(err.message).toContain('at event 15');
    expect(err.message).toContain('startTimer (seq 2, 1000 ms)');
    expect(err.message).toContain('history has no matching event');
  });

  it('rejects an unknown workflow type with the exported types', () => {
    expect(() => replayAs('noSuchWorkflow', orderHistory().events)).toThrow(/'noSuchWorkflow'.*orderFlow/);
  });

  it('carries the batch of a failed task into the next task', () => {
    const h = new HistoryBuilder();
    h.workflowStarted('orderFlow', ['o1']);
    h.task(); // 2-4
    const charge = h.activityScheduled(1, 'charge', ['o1', 100]); // 5
    h.activityCompleted(charge, {}); // 6, 7
    h.taskFailed(h.taskStarted()); // 8, 9, 10
    h.signal('approve', ['bob']); // 11
    h.task(); // 12-14: saw the activity result (carried over) and the signal
    const timer = h.timerStarted(1, 1000); // 15: approval was already given, so no approval timer
    h.timerFired(1, timer); // 16
    const started = h.taskStarted(); // 17, 18
    const result = freshRun(h.events, h.time);
    expect(result.commands).toEqual([
      expect.objectContaining({ type: 'scheduleActivity', seq: 2, activityType: 'greet', input: ['o1:bob'] }),
    ]);
    expect(started).toBe(18);
    // Without the carry-over the activity result would be lost and event 15 would not match.
    expect(() => WorkflowRunState.replayHistory(sandbox, h.events)).not.toThrow();
  });

  it('activates the carried-over batch when a retried task has no WorkflowTaskStarted', () => {
    const h = new HistoryBuilder();
    h.workflowStarted('orderFlow', ['o1']);
    h.taskFailed(h.taskStarted()); // 2, 3, 4
    const result = freshRun(h.events, h.time);
    expect(result.commands).toEqual([
      expect.objectContaining({ type: 'scheduleActivity', activityType: 'charge' }),
    ]);
  });

  it('gives the same result task by task from a cached run as a fresh replay of the whole history', () => {
    const { events, boundaries } = orderHistory();
    const info = runInfo('orderFlow', 'run-cached');
    const cachedInstance = sandbox.createInstance(info);
    const cached = new WorkflowRunState(cachedInstance, info);
    let from = 1;
    const results: ActivationResult[] = [];
    for (const boundary of boundaries) {
      const time = events[boundary - 1]!.time;
      const incremental = cached.runTask(events.slice(from - 1, boundary), { time });
      from = boundary + 1;
      expect(incremental).toEqual(freshRun(events.slice(0, boundary), time));
      results.push(incremental);
    }
    cachedInstance.dispose();
    expect(results.map((r) => r.commands.map((c) => c.type))).toEqual([
      ['scheduleActivity'],
      ['startTimer'],
      ['cancelTimer', 'startTimer'],
      ['scheduleActivity'],
      ['completeWorkflow'],
    ]);
    expect(results[4]!.commands[0]).toEqual({ type: 'completeWorkflow', result: 'hello o1:alice' });
  });

  it("verifies a cached run's commands when they come back and detects a mismatch", () => {
    const { events } = orderHistory();
    const info = runInfo('orderFlow', 'run-cached-bad');
    const state = new WorkflowRunState(sandbox.createInstance(info), info);
    state.runTask(events.slice(0, 3), { time: events[2]!.time });
    // History says a different activity was scheduled than the one this state returned.
    const tampered = events
      .slice(3, 9)
      .map((e) =>
        e.type === 'ActivityScheduled'
          ? ({ ...e, attributes: { ...e.attributes, activityType: 'refund' } } as HistoryEvent)
          : e,
      );
    const err = divergence(() => state.runTask(tampered, { time: events[8]!.time }));
    expect(err.message).toContain('at event 5');
  });

  it('refuses to continue a cached run whose computed task failed in history', () => {
    const h = new HistoryBuilder();
    h.workflowStarted('orderFlow', ['o1']);
    const started = h.taskStarted();
    const info = runInfo('orderFlow', 'run-stale');
    const state = new WorkflowRunState(sandbox.createInstance(info), info);
    state.runTask(h.events, { time: h.time });
    h.taskFailed(started);
    expect(() => state.runTask(h.slice(4), { time: h.time })).toThrow(StaleRunStateError);
  });

  it('never lets workflow time go backwards', () => {
    const h = new HistoryBuilder();
    h.workflowStarted('orderFlow', ['o1']);
    h.task();
    const info = runInfo('orderFlow', 'run-time');
    const instance = sandbox.createInstance(info);
    const seen: number[] = [];
    const spy = {
      activate: (a: Parameters<typeof instance.activate>[0]) => {
        seen.push(a.timestamp);
        return instance.activate(a);
      },
    } as unknown as typeof instance;
    const state = new WorkflowRunState(spy, info);
    h.activityCompleted(h.activityScheduled(1, 'charge', ['o1', 100]), {});
    h.taskStarted();
    state.runTask(h.events, { time: 0 });
    expect(seen).toEqual([h.events[2]!.time, h.events[2]!.time]);
  });
});
