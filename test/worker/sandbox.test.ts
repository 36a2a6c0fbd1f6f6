import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Activation, ActivationJob, WorkflowCommand } from '../../src/common/commands.js';
import {
  ApplicationFailure,
  BundleError,
  DeadlockError,
  QueryNotRegisteredError,
} from '../../src/common/errors.js';
import { bundleWorkflows } from '../../src/worker/bundler.js';
import { type ActivationResult, type WorkflowInstance, WorkflowSandbox } from '../../src/worker/sandbox.js';
import { fixturePath, runInfo, startJob } from './helpers/workflow-fixtures.js';

let sandbox: WorkflowSandbox;
const T0 = 1_700_000_000_000;

beforeAll(async () => {
  sandbox = WorkflowSandbox.create(await bundleWorkflows(fixturePath('basic.ts')), {
    deadlockTimeoutMs: 300,
  });
});

function activation(jobs: ActivationJob[], timestamp = T0, isReplaying = false): Activation {
  return { timestamp, isReplaying, historyLength: 3, jobs };
}

/** Starts `type` in a fresh instance and returns the instance and the first activation's result. */
function start(type: string, args: unknown[] = [], seed = 'seed-1', runId = 'run-1') {
  const instance = sandbox.createInstance(runInfo(type, runId));
  const first = instance.activate(activation([startJob(type, args, seed)]));
  return { instance, first };
}

function closing(result: ActivationResult): WorkflowCommand | undefined {
  return result.commands.find((c) => ['completeWorkflow', 'failWorkflow', 'cancelWorkflow'].includes(c.type));
}

describe('WorkflowSandbox', () => {
  it('lists the exported functions as workflow types (not signal or query definitions)', () => {
    const types = sandbox.workflowTypes();
    expect(types).toContain('greeting');
    expect(types).toContain('collector');
    expect(types).not.toContain('addItem');
    expect(types).not.toContain('items');
  });

  it('gives workflow time, seeded Math.random and uuids: equal for one seed, different across seeds', () => {
    const a = start('randomness', [], 'seed-A', 'run-a').first;
    const b = start('randomness', [], 'seed-A', 'run-b').first;
    const c = start('randomness', [], 'seed-C', 'run-c').first;
    const ra = (closing(a) as { result: Record<string, unknown> }).result;
    const rb = (closing(b) as { result: Record<string, unknown> }).result;
    const rc = (closing(c) as { result: Record<string, unknown> }).result;
    expect(ra.now).toBe(T0);
    expect(ra.newDate).toBe(T0);
    expect(ra.iso).toBe(new Date(T0).toISOString());
    expect(ra.random).toEqual(rb.random);
    expect(ra.uuid).toBe(rb.uuid);
    expect(ra.cryptoUuid).toBe(rb.cryptoUuid);
    expect(ra.uuid).not.toBe(ra.cryptoUuid);
    expect(ra.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(rc.random).not.toEqual(ra.random);
    expect(rc.uuid).not.toBe(ra.uuid);
    expect(ra.info).toBe('wf-run-a');
  });

  it('makes WeakRef throw with a clear message (a task failure)', () => {
    const { first } = start('usesWeakRef');
    expect(first.commands).toEqual([]);
    expect(first.taskFailure?.type).toBe('TypeError');
    expect(first.taskFailure?.message).toMatch(/WeakRef is not available in workflow code/);
  });

  it('gives each instance its own module-level state', () => {
    const one = start('counter', [], 's', 'run-c1').first;
    const two = start('counter', [], 's', 'run-c2').first;
    expect(closing(one)).toEqual({ type: 'completeWorkflow', result: 1 });
    expect(closing(two)).toEqual({ type: 'completeWorkflow', result: 1 });
  });

  it('throws DeadlockError naming the workflow type and run when code never yields', () => {
    const instance = sandbox.createInstance(runInfo('spin', 'run-spin'));
    expect(() => instance.activate(activation([startJob('spin')]))).toThrow(DeadlockError);
    expect(() => instance.activate(activation([]))).toThrow(/unusable/);
    const other = sandbox.createInstance(runInfo('spinLater', 'run-spin-later'));
    expect(other.activate(activation([startJob('spinLater')])).commands).toEqual([
      { type: 'startTimer', seq: 1, durationMs: 1 },
    ]);
    let caught: unknown;
    try {
      other.activate(activation([{ type: 'fireTimer', seq: 1 }]));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(DeadlockError);
    expect((caught as Error).message).toContain("workflow 'spinLater' run run-spin-later");
    // The realm stays usable for other runs.
    expect(closing(start('counter', [], 's', 'run-after-deadlock').first)).toEqual({
      type: 'completeWorkflow',
      result: 1,
    });
  });

  it('schedules an activity with compiled options and completes with its result', () => {
    const { instance, first } = start('greeting', ['ada']);
    expect(first.commands).toEqual([
      {
        type: 'scheduleActivity',
        seq: 1,
        activityType: 'greet',
        input: ['ada'],
        options: {
          startToCloseTimeoutMs: 10_000,
          retry: {
            initialIntervalMs: 1000,
            backoffCoefficient: 2,
            maximumIntervalMs: 100_000,
            maximumAttempts: 3,
            nonRetryableErrorTypes: ['CardDeclined'],
          },
        },
      },
    ]);
    const done = instance.activate(activation([{ type: 'resolveActivity', seq: 1, result: 'hello ada' }]));
    expect(done.commands).toEqual([{ type: 'completeWorkflow', result: 'hello ada' }]);
  });

  it('rejects an activity with an ActivityFailure whose cause is the ApplicationFailure', () => {
    const { instance } = start('activityFails');
    const r = instance.activate(
      activation([
        {
          type: 'failActivity',
          seq: 1,
          failure: {
            kind: 'activity',
            type: 'ActivityFailure',
            message: 'activity failed',
            activityType: 'charge',
            activityId: '1',
            retryState: 'nonRetryableFailure',
            cause: { kind: 'application', type: 'CardDeclined', message: 'declined', nonRetryable: true },
          },
        },
      ]),
    );
    expect(closing(r)).toEqual({
      type: 'completeWorkflow',
      result: 'ActivityFailure:ApplicationFailure:CardDeclined',
    });
  });

  it('fails the task, emitting nothing, when activity arguments are not serialisable', () => {
    const { first } = start('badArgs');
    expect(first.commands).toEqual([]);
    expect(first.taskFailure?.message).toMatch(/arguments of activity 'greet'/);
  });

  it('buffers signals that arrive before their handler and delivers them in order', () => {
    const { instance, first } = start('collector');
    expect(first.commands).toEqual([{ type: 'startTimer', seq: 1, durationMs: 1000 }]);
    const signal = (signalName: string, args: unknown[] = []): ActivationJob => ({
      type: 'signal',
      signalName,
      args,
    });
    const r1 = instance.activate(activation([signal('addItem', ['a']), signal('addItem', ['b'])]));
    expect(r1.commands).toEqual([]);
    expect(instance.query('items', [])).toEqual([]);
    const r2 = instance.activate(activation([signal('addItem', ['c']), { type: 'fireTimer', seq: 1 }]));
    expect(r2.commands).toEqual([]);
    expect(instance.query('items', [])).toEqual(['a', 'b', 'c']);
    const r3 = instance.activate(activation([signal('finish')]));
    expect(r3.commands).toEqual([{ type: 'completeWorkflow', result: ['a', 'b', 'c'] }]);
  });

  it('answers queries without commands; unknown queries list the known ones; throwing handlers fail the query', () => {
    const { instance } = start('collector');
    expect(instance.query('items', [])).toEqual([]);
    let err: unknown;
    try {
      instance.query('nope', []);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(QueryNotRegisteredError);
    expect((err as QueryNotRegisteredError).knownQueries).toEqual(['items', 'failingQuery']);
    expect(() => instance.query('failingQuery', [])).toThrow(ApplicationFailure);
    expect(() => instance.query('failingQuery', [])).toThrow(/query exploded/);
    // Queries changed nothing: the next activation proceeds normally.
    expect(instance.activate(activation([{ type: 'fireTimer', seq: 1 }])).commands).toEqual([]);
  });

  it('on cancellation: cancels timers, requests activity cancel, rejects conditions, and rejects later timers at once', () => {
    const { instance, first } = start('cancellable');
    expect(first.commands.map((c) => c.type)).toEqual(['scheduleActivity', 'startTimer']);
    const r1 = instance.activate(activation([{ type: 'cancelWorkflow' }]));
    expect(r1.commands).toEqual([
      { type: 'cancelTimer', seq: 1 },
      { type: 'requestCancelActivity', seq: 1 },
    ]);
    const r2 = instance.activate(
      activation([
        {
          type: 'failActivity',
          seq: 1,
          failure: {
            kind: 'activity',
            type: 'ActivityFailure',
            message: 'cancelled',
            activityType: 'greet',
            activityId: '1',
            retryState: 'cancelRequested',
            cause: { kind: 'cancelled', type: 'CancelledFailure', message: 'activity cancelled' },
          },
        },
      ]),
    );
    expect(r2.commands).toEqual([
      {
        type: 'completeWorkflow',
        result: [
          'timer:cancelled',
          'scope:true',
          'condition:cancelled',
          'activity:cancelled',
          'lateTimer:cancelled',
        ],
      },
    ]);
  });

  it('ends the workflow as cancelled when the cancellation propagates', () => {
    const { instance, first } = start('cancelPropagates');
    expect(first.commands).toEqual([{ type: 'startTimer', seq: 1, durationMs: 86_400_000 }]);
    const r = instance.activate(activation([{ type: 'cancelWorkflow' }]));
    expect(r.commands).toEqual([{ type: 'cancelTimer', seq: 1 }, { type: 'cancelWorkflow' }]);
  });

  it('resolves condition(fn, timeout) true and cancels its timer when fn becomes true first', () => {
    const { instance, first } = start('waitForFinish', ['1h']);
    expect(first.commands).toEqual([{ type: 'startTimer', seq: 1, durationMs: 3_600_000 }]);
    const r = instance.activate(activation([{ type: 'signal', signalName: 'finish', args: [] }]));
    expect(r.commands).toEqual([
      { type: 'cancelTimer', seq: 1 },
      { type: 'completeWorkflow', result: true },
    ]);
  });

  it('resolves condition(fn, timeout) false when the timer fires first; a late fire of a cancelled timer is ignored', () => {
    const { instance } = start('waitForFinish', ['1h']);
    const r = instance.activate(
      activation([
        { type: 'fireTimer', seq: 1 },
        { type: 'fireTimer', seq: 7 },
      ]),
    );
    expect(r.commands).toEqual([{ type: 'completeWorkflow', result: false }]);
  });

  it('turns setTimeout into a durable timer and clearTimeout into cancelTimer', () => {
    const { instance, first } = start('timeouts');
    expect(first.commands).toEqual([
      { type: 'startTimer', seq: 1, durationMs: 5000 },
      { type: 'startTimer', seq: 2, durationMs: 1000 },
      { type: 'cancelTimer', seq: 1 },
    ]);
    const r = instance.activate(activation([{ type: 'fireTimer', seq: 2 }]));
    expect(r.commands).toEqual([{ type: 'completeWorkflow', result: ['kept'] }]);
  });

  it('fails the task (not the workflow) on a TypeError, and fails the workflow on an ApplicationFailure', () => {
    const bug = start('typeError').first;
    expect(bug.commands).toEqual([]);
    expect(bug.taskFailure?.type).toBe('TypeError');
    const app = start('appFailure').first;
    expect(app.taskFailure).toBeUndefined();
    expect(app.commands).toHaveLength(1);
    const cmd = app.commands[0] as Extract<WorkflowCommand, { type: 'failWorkflow' }>;
    expect(cmd.type).toBe('failWorkflow');
    expect(cmd.failure).toMatchObject({
      kind: 'application',
      type: 'OutOfStock',
      message: 'no more widgets',
    });
    expect(cmd.failure.details).toEqual([42]);
  });

  it('fails the task when a signal handler throws a plain error', () => {
    const { instance } = start('badSignalHandler');
    const r = instance.activate(activation([{ type: 'signal', signalName: 'finish', args: [] }]));
    expect(r.taskFailure?.message).toBe('handler bug');
    expect(r.commands).toEqual([]);
  });

  it('fails the task for an unknown workflow type', () => {
    const instance = sandbox.createInstance(runInfo('nope'));
    const r = instance.activate(activation([startJob('nope')]));
    expect(r.taskFailure?.type).toBe('UnknownWorkflowType');
    expect(r.taskFailure?.message).toContain('greeting');
  });

  it('forwards logs with run fields, and drops them while replaying', () => {
    const lines: unknown[] = [];
    const sink = (level: string, message: string, fields: Record<string, unknown>) =>
      lines.push({ level, message, fields });
    sandbox
      .createInstance(runInfo('greeting', 'run-log-replay'), sink)
      .activate(activation([startJob('greeting', ['x'])], T0, true));
    expect(lines).toEqual([]);
    sandbox
      .createInstance(runInfo('greeting', 'run-log'), sink)
      .activate(activation([startJob('greeting', ['x'])]));
    expect(lines).toEqual([
      {
        level: 'info',
        message: 'greeting started',
        fields: { workflowId: 'wf-run-log', runId: 'run-log', workflowType: 'greeting', name: 'x' },
      },
    ]);
  });

  it('passes requests and answers larger than the shared buffer', () => {
    const big = 'é'.repeat(700_000); // 1.4 MB of UTF-8
    expect(closing(start('echo', [big], 's', 'run-big').first)).toEqual({
      type: 'completeWorkflow',
      result: big,
    });
  });

  it('refuses a disposed instance', () => {
    const { instance } = start('collector');
    instance.dispose();
    expect(() => (instance as WorkflowInstance).activate(activation([]))).toThrow(/disposed/);
  });

  it('can be closed: calls then fail instead of hanging', async () => {
    const own = WorkflowSandbox.create(await bundleWorkflows(fixturePath('basic.ts')));
    const instance = own.createInstance(runInfo('collector', 'run-closed'));
    own.close();
    expect(() => instance.activate(activation([startJob('collector')]))).toThrow(/closed/);
    expect(() => own.createInstance(runInfo('collector', 'run-closed-2'))).toThrow(/closed/);
  });
});

describe('WorkflowSandbox loading a module instance with its first call', () => {
  let own: WorkflowSandbox;
  beforeAll(async () => {
    own = WorkflowSandbox.create(await bundleWorkflows(fixturePath('load-per-run.ts')));
  });
  afterAll(() => own.close());

  it("runs the module's own promise jobs before the first activation", () => {
    const r = own.createInstance(runInfo('traced', 'run-loaded')).activate(activation([startJob('traced')]));
    expect(closing(r)).toEqual({
      type: 'completeWorkflow',
      result: ['module promise job', 'workflow body'],
    });
  });

  it('throws BundleError from the first call when the module throws while loading; other runs still load', () => {
    const refused = own.createInstance(runInfo('traced', 'run-refused-1'));
    let error: unknown;
    try {
      refused.activate(activation([startJob('traced')]));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(BundleError);
    expect((error as Error).message).toContain(
      'threw while loading for run run-refused-1: this module refuses to load for run-refused-1',
    );
    expect(() => refused.activate(activation([startJob('traced')]))).toThrow(/unusable/);
    const r = own
      .createInstance(runInfo('traced', 'run-loaded-2'))
      .activate(activation([startJob('traced')]));
    expect(closing(r)?.type).toBe('completeWorkflow');
  });
});

describe('WorkflowSandbox deadlock detection', () => {
  const signal = (signalName: string): ActivationJob => ({ type: 'signal', signalName, args: [] });

  /** `call` throws DeadlockError naming the run; the instance is unusable and other runs still work. */
  function expectDeadlock(instance: WorkflowInstance, runId: string, call: () => unknown): void {
    const generation = sandbox.generation;
    const startedAt = performance.now();
    let caught: unknown;
    try {
      call();
    } catch (err) {
      caught = err;
    }
    const elapsedMs = performance.now() - startedAt;
    expect(caught).toBeInstanceOf(DeadlockError);
    expect((caught as Error).message).toContain(`workflow '${instance.info.workflowType}' run ${runId}`);
    expect((caught as Error).message).toMatch(/did not yield within 300 ms/);
    // The watchdog fires between the timeout and the timeout plus a tenth of it.
    expect(elapsedMs).toBeGreaterThanOrEqual(290);
    expect(elapsedMs).toBeLessThan(2000);
    expect(() => instance.activate(activation([]))).toThrow(/unusable/);
    expect(() => instance.query('items', [])).toThrow(/unusable/);
    instance.dispose();
    // The realm and its other runs are untouched: no new generation, and a second run works.
    expect(sandbox.generation).toBe(generation);
    const { instance: next, first } = start('collector', [], 's', `${runId}-next`);
    expect(first.commands).toEqual([{ type: 'startTimer', seq: 1, durationMs: 1000 }]);
    next.activate(activation([signal('finish'), { type: 'fireTimer', seq: 1 }]));
    expect(next.query('items', [])).toEqual([]);
  }

  it('stops a workflow body that never yields', () => {
    const instance = sandbox.createInstance(runInfo('spin', 'run-dl-body'));
    expectDeadlock(instance, 'run-dl-body', () => instance.activate(activation([startJob('spin')])));
  });

  it('stops a condition predicate that never returns', () => {
    const { instance, first } = start('spinInCondition', [], 's', 'run-dl-condition');
    expect(first.commands).toEqual([]);
    expectDeadlock(instance, 'run-dl-condition', () => instance.activate(activation([signal('finish')])));
  });

  it('stops a signal handler that never returns', () => {
    const { instance } = start('spinInSignalHandler', [], 's', 'run-dl-signal');
    expectDeadlock(instance, 'run-dl-signal', () => instance.activate(activation([signal('finish')])));
  });

  it('stops a promise continuation that never yields', () => {
    const { instance } = start('spinInMicrotask', [], 's', 'run-dl-microtask');
    expectDeadlock(instance, 'run-dl-microtask', () => instance.activate(activation([signal('finish')])));
  });

  it('stops workflow code that keeps queueing promise jobs without ever blocking', () => {
    const instance = sandbox.createInstance(runInfo('spinOnPromiseJobs', 'run-dl-jobs'));
    expectDeadlock(instance, 'run-dl-jobs', () =>
      instance.activate(activation([startJob('spinOnPromiseJobs')])),
    );
  });

  it('stops a query handler that never returns', () => {
    const { instance } = start('spinInQuery', [], 's', 'run-dl-query');
    expectDeadlock(instance, 'run-dl-query', () => instance.query('stuck', []));
  });

  it('keeps cached runs usable across a deadlock of another run', () => {
    const { instance: kept, first } = start('collector', [], 's', 'run-dl-kept');
    expect(first.commands).toHaveLength(1);
    kept.activate(activation([{ type: 'signal', signalName: 'addItem', args: ['a'] }]));
    const stuckRun = sandbox.createInstance(runInfo('spin', 'run-dl-other'));
    expect(() => stuckRun.activate(activation([startJob('spin')]))).toThrow(DeadlockError);
    const r = kept.activate(
      activation([
        { type: 'signal', signalName: 'addItem', args: ['b'] },
        { type: 'fireTimer', seq: 1 },
      ]),
    );
    expect(r.commands).toEqual([]);
    expect(kept.query('items', [])).toEqual(['a', 'b']);
  });
});
