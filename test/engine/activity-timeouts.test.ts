import { describe, expect, it } from 'vitest';
import {
  planActivityFailed,
  planActivityStart,
  planActivityTimedOut,
  planHeartbeat,
} from '../../src/engine/activity-attempt.js';
import { activityDeadline, expiredActivityTimeout } from '../../src/engine/activity-timeouts.js';
import { activity, options, T0 } from './fixtures.js';

describe('activity timeouts', () => {
  it('schedule-to-start fires while the attempt waits to be claimed', () => {
    const a = activity({
      phase: 'scheduled',
      startedTime: null,
      options: options({ scheduleToStartTimeoutMs: 5000 }),
    });
    expect(activityDeadline(a)).toBe(T0 + 5000);
    expect(expiredActivityTimeout(a, T0 + 4999)).toBeNull();
    expect(expiredActivityTimeout(a, T0 + 5000)).toBe('scheduleToStart');
  });

  it('start-to-close fires while the attempt runs', () => {
    const a = activity({ options: options({ startToCloseTimeoutMs: 3000 }) });
    expect(expiredActivityTimeout(a, T0 + 2999)).toBeNull();
    expect(expiredActivityTimeout(a, T0 + 3000)).toBe('startToClose');
  });

  it('heartbeat timeout counts from the last heartbeat, else the start', () => {
    const a = activity({ options: options({ heartbeatTimeoutMs: 1000 }) });
    expect(expiredActivityTimeout(a, T0 + 1000)).toBe('heartbeat');
    const beaten = { ...a, ...planHeartbeat(a, 42, T0 + 900) };
    expect(beaten.deadline).toBe(T0 + 1900);
    expect(expiredActivityTimeout(beaten, T0 + 1899)).toBeNull();
    expect(expiredActivityTimeout(beaten, T0 + 1900)).toBe('heartbeat');
  });

  it('schedule-to-close spans every attempt', () => {
    const a = activity({
      options: options({ scheduleToCloseTimeoutMs: 10_000 }),
      attempt: 3,
      startedTime: T0 + 9000,
    });
    expect(expiredActivityTimeout(a, T0 + 10_000)).toBe('scheduleToClose');
  });

  it('the earliest expired deadline wins', () => {
    const a = activity({ options: options({ startToCloseTimeoutMs: 5000, heartbeatTimeoutMs: 1000 }) });
    expect(expiredActivityTimeout(a, T0 + 6000)).toBe('heartbeat');
  });

  it('a claimed attempt gets a new token and a deadline from its start', () => {
    const a = activity({ phase: 'scheduled', startedTime: null, token: 4 });
    const p = planActivityStart(a, T0 + 100, 'w2');
    expect(p.token).toBe(5);
    expect(p.deadline).toBe(T0 + 100 + 60_000);
    expect(p.leaseOwner).toBe('w2');
  });

  it('start-to-close and heartbeat timeouts are retried; the retry keeps heartbeat details', () => {
    const a = activity({ options: options({ heartbeatTimeoutMs: 1000 }), heartbeatDetails: { line: 7 } });
    const o = planActivityTimedOut(a, 'heartbeat', T0 + 1000);
    expect(o.kind).toBe('retry');
    if (o.kind !== 'retry') return;
    expect(o.patch.attempt).toBe(2);
    expect(o.patch.visibleAt).toBe(T0 + 2000);
    expect(o.patch.heartbeatDetails).toEqual({ line: 7 });
    expect(o.patch.lastFailure?.timeoutType).toBe('heartbeat');
  });

  it('schedule-to-start and schedule-to-close timeouts end the scheduling', () => {
    const a = activity({
      phase: 'scheduled',
      startedTime: null,
      options: options({ scheduleToStartTimeoutMs: 10 }),
    });
    const o = planActivityTimedOut(a, 'scheduleToStart', T0 + 10);
    expect(o.kind).toBe('closed');
    if (o.kind !== 'closed') return;
    expect(o.events.map((e) => e.type)).toEqual(['ActivityTimedOut']);
  });

  it('a final failure records ActivityStarted for the attempt that ended it, then ActivityFailed', () => {
    const a = activity({
      attempt: 2,
      options: options({ retry: { ...options().retry, maximumAttempts: 2 } }),
    });
    const o = planActivityFailed(a, { kind: 'application', type: 'Error', message: 'x' }, T0 + 5, null);
    expect(o.kind).toBe('closed');
    if (o.kind !== 'closed') return;
    expect(o.events.map((e) => e.type)).toEqual(['ActivityStarted', 'ActivityFailed']);
    expect(o.events[0]!.attributes).toMatchObject({ attempt: 2 });
    expect(o.events[1]!.attributes).toMatchObject({ retryState: 'maximumAttemptsReached' });
  });
});
