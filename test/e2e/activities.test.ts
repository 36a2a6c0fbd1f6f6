import { ActivityFailure, ApplicationFailure, WorkflowFailedError } from 'longhaul/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openGate, probe } from '../fixtures/e2e/engine-activities.js';
import type { FailureView } from '../fixtures/e2e/engine-workflows.js';
import { eventsOf, eventually, rejectsWith, resultWithin, TestEnv, uniqueId } from './env.js';

describe('activities: retries, heartbeats and timeouts', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await TestEnv.create();
  });
  afterAll(async () => {
    await env?.close();
  });

  describe('retry policy', () => {
    it('a flaky activity succeeds on attempt 3 and history records one scheduling with attempt 3', async () => {
      const handle = await env.client.workflow.start('retried', {
        workflowId: uniqueId('flaky'),
        taskQueue: env.taskQueue,
      });
      expect(await resultWithin(handle)).toBe(3);
      expect(await eventsOf(handle, 'ActivityScheduled')).toHaveLength(1);
      const started = await eventsOf(handle, 'ActivityStarted');
      expect(started).toHaveLength(1);
      expect(started[0]!.attributes.attempt).toBe(3);
      const completed = await eventsOf(handle, 'ActivityCompleted');
      expect(completed).toHaveLength(1);
      expect(completed[0]!.attributes.result).toBe(3);
      expect(completed[0]!.attributes.startedEventId).toBe(started[0]!.eventId);
      expect(await eventsOf(handle, 'ActivityFailed')).toHaveLength(0);
    });

    it('an error type listed in nonRetryableErrorTypes (class CardDeclined extends Error) is not retried', async () => {
      const workflowId = uniqueId('card');
      const handle = await env.client.workflow.start('declines', { workflowId, taskQueue: env.taskQueue });
      const err = await rejectsWith(handle.result(), WorkflowFailedError);
      expect(err.cause).toBeInstanceOf(ActivityFailure);
      const activityFailure = err.cause as ActivityFailure;
      expect(activityFailure.activityType).toBe('declineCard');
      expect(activityFailure.retryState).toBe('nonRetryableFailure');
      expect(activityFailure.cause).toBeInstanceOf(ApplicationFailure);
      expect((activityFailure.cause as ApplicationFailure).type).toBe('CardDeclined');
      expect((activityFailure.cause as ApplicationFailure).message).toBe('card declined');
      expect(probe.attempts.get(workflowId)?.map((a) => a.attempt)).toEqual([1]);
      const started = await eventsOf(handle, 'ActivityStarted');
      expect(started.map((e) => e.attributes.attempt)).toEqual([1]);
    });
  });

  describe('heartbeats', () => {
    it('the next attempt sees the last heartbeat details of the failed one, with the same idempotency key', async () => {
      const workflowId = uniqueId('hb-details');
      const handle = await env.client.workflow.start('heartbeatRetry', {
        workflowId,
        taskQueue: env.taskQueue,
      });
      expect(await resultWithin(handle)).toEqual({ step: 3 });
      const attempts = probe.attempts.get(workflowId)!;
      expect(attempts.map((a) => a.attempt)).toEqual([1, 2]);
      expect(attempts[0]!.heartbeatDetails).toBeUndefined();
      expect(attempts[1]!.heartbeatDetails).toEqual({ step: 3 });

      const [scheduled] = await eventsOf(handle, 'ActivityScheduled');
      const activityId = scheduled!.attributes.activityId as string;
      const expectedKey = `${workflowId}:${handle.runId}:${activityId}`;
      expect(attempts.map((a) => a.idempotencyKey)).toEqual([expectedKey, expectedKey]);
      expect(attempts.every((a) => a.workflowId === workflowId && a.runId === handle.runId)).toBe(true);
    });

    it('the idempotency key differs in the next run of the same workflow id', async () => {
      const workflowId = uniqueId('hb-key');
      const first = await env.client.workflow.start('heartbeatRetry', {
        workflowId,
        taskQueue: env.taskQueue,
      });
      await resultWithin(first);
      const second = await env.client.workflow.start('heartbeatRetry', {
        workflowId,
        taskQueue: env.taskQueue,
      });
      await resultWithin(second);
      const keys = new Set(probe.attempts.get(workflowId)!.map((a) => a.idempotencyKey));
      expect(keys.size).toBe(2);
      expect([...keys].every((k) => k.startsWith(`${workflowId}:`))).toBe(true);
    });

    it('describe() shows a running activity with its state, attempt, last heartbeat time and details', async () => {
      const workflowId = uniqueId('hb-describe');
      const before = Date.now();
      const handle = await env.client.workflow.start('heartbeatDescribe', {
        workflowId,
        taskQueue: env.taskQueue,
      });
      const pending = await eventually(async () => {
        const d = await handle.describe();
        const [a] = d.pendingActivities;
        expect(a?.heartbeatDetails).toEqual({ progress: 'attempt-2' });
        return a!;
      });
      expect(pending.activityType).toBe('heartbeatAndWait');
      expect(pending.state).toBe('started');
      expect(pending.attempt).toBe(2);
      expect(pending.lastHeartbeatTime).toBeInstanceOf(Date);
      expect(pending.lastHeartbeatTime!.getTime()).toBeGreaterThanOrEqual(before);
      expect(pending.lastStartedTime).toBeInstanceOf(Date);
      expect(pending.lastFailure?.message).toBe('the first attempt fails');
      expect(pending.cancelRequested).toBe(false);

      openGate(workflowId);
      expect(await resultWithin(handle)).toBe(2);
      expect((await handle.describe()).pendingActivities).toEqual([]);
    });
  });

  describe('timeouts', () => {
    it('heartbeat timeout: an attempt that stops heartbeating is retried and the next attempt completes', async () => {
      const workflowId = uniqueId('hb-timeout');
      const handle = await env.client.workflow.start('heartbeatTimeout', {
        workflowId,
        taskQueue: env.taskQueue,
      });
      expect(await resultWithin(handle)).toBe(2);
      expect(probe.attempts.get(workflowId)!.map((a) => a.attempt)).toEqual([1, 2]);
      const started = await eventsOf(handle, 'ActivityStarted');
      expect(started.map((e) => e.attributes.attempt)).toEqual([2]);
      expect(await eventsOf(handle, 'ActivityCompleted')).toHaveLength(1);
      expect(await eventsOf(handle, 'ActivityTimedOut')).toHaveLength(0);
    });

    it('start-to-close timeout with maximumAttempts 1: the workflow sees ActivityFailure caused by TimeoutFailure', async () => {
      const handle = await env.client.workflow.start('activityTimesOut', {
        workflowId: uniqueId('stc'),
        taskQueue: env.taskQueue,
        args: ['startToClose'],
      });
      const view = (await resultWithin(handle)) as FailureView;
      expect(view).toEqual({
        activityFailure: true,
        activityType: 'sleepsFor',
        retryState: 'maximumAttemptsReached',
        timeoutFailure: true,
        timeoutType: 'startToClose',
      });
      const [timedOut] = await eventsOf(handle, 'ActivityTimedOut');
      expect(timedOut!.attributes.timeoutType).toBe('startToClose');
    });

    it('schedule-to-start timeout: an activity on a queue no worker polls times out unstarted', async () => {
      const handle = await env.client.workflow.start('activityTimesOut', {
        workflowId: uniqueId('sts'),
        taskQueue: env.taskQueue,
        args: ['scheduleToStart'],
      });
      const view = (await resultWithin(handle)) as FailureView;
      expect(view.activityFailure).toBe(true);
      expect(view.timeoutFailure).toBe(true);
      expect(view.timeoutType).toBe('scheduleToStart');
      expect(await eventsOf(handle, 'ActivityStarted')).toHaveLength(0);
      const [timedOut] = await eventsOf(handle, 'ActivityTimedOut');
      expect(timedOut!.attributes.startedEventId).toBe(0);
      const [scheduled] = await eventsOf(handle, 'ActivityScheduled');
      expect(scheduled!.attributes.taskQueue).toBe('no-worker-polls-this-queue');
      expect(Date.parse(timedOut!.time) - Date.parse(scheduled!.time)).toBeGreaterThanOrEqual(150);
    });

    it('schedule-to-close timeout ends the scheduling across attempts', async () => {
      const handle = await env.client.workflow.start('activityTimesOut', {
        workflowId: uniqueId('stclose'),
        taskQueue: env.taskQueue,
        args: ['scheduleToClose'],
      });
      const view = (await resultWithin(handle)) as FailureView;
      expect(view.activityFailure).toBe(true);
      expect(view.timeoutFailure).toBe(true);
      expect(view.timeoutType).toBe('scheduleToClose');
      const [scheduled] = await eventsOf(handle, 'ActivityScheduled');
      const [timedOut] = await eventsOf(handle, 'ActivityTimedOut');
      expect(timedOut!.attributes.timeoutType).toBe('scheduleToClose');
      expect(Date.parse(timedOut!.time) - Date.parse(scheduled!.time)).toBeGreaterThanOrEqual(200);
    });
  });
});
