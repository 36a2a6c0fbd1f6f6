/** Assertions shared by the crash tests: on the activity log and on a run's history. */

import type { HistoryFile } from 'longhaul/client';
import { expect } from 'vitest';
import type { ActivityLogEntry } from '../fixtures/crash/activity-log.js';

type HistoryEvent = HistoryFile['events'][number];

const keyOf = (e: ActivityLogEntry): string => `${e.workflowId}/${e.activityId}`;

/**
 * "A completed activity is never executed again": once an activity logged its COMPLETION, no START of
 * the same (workflowId, activityId) follows in the log, and it completes only once.
 */
export function expectNoCompletedActivityRestarted(entries: readonly ActivityLogEntry[]): void {
  const completedAt = new Map<string, number>();
  entries.forEach((e, i) => {
    const key = keyOf(e);
    if (e.event === 'complete') {
      expect(completedAt.has(key), `activity ${key} completed twice (log line ${i + 1})`).toBe(false);
      completedAt.set(key, i);
    } else if (e.event === 'start') {
      expect(
        completedAt.has(key),
        `activity ${key} started again (log line ${i + 1}, attempt ${e.attempt}) after it completed on line ${(completedAt.get(key) ?? 0) + 1}`,
      ).toBe(false);
    }
  });
}

/** Entries of one activity, by the `name` given to the `step` activity or by activity type. */
export function entriesOf(
  entries: readonly ActivityLogEntry[],
  match: { readonly name?: string; readonly activityType?: string },
): ActivityLogEntry[] {
  return entries.filter(
    (e) =>
      (match.name === undefined || e.name === match.name) &&
      (match.activityType === undefined || e.activityType === match.activityType),
  );
}

/**
 * History invariants that must hold after any crash: event ids 1..n without gaps, exactly one
 * ActivityScheduled per activity id and at most one result per scheduling, every workflow task that
 * started has exactly one outcome (completed, failed or timed out), and exactly one closing event, last.
 */
export function expectWellFormedHistory(history: HistoryFile, closing = 'WorkflowCompleted'): void {
  const events = history.events;
  expect(
    events.map((e) => e.eventId),
    'event ids are 1..n without gaps',
  ).toEqual(events.map((_, i) => i + 1));

  const scheduled = events.filter((e) => e.type === 'ActivityScheduled');
  const ids = scheduled.map((e) => attr<{ activityId: string }>(e).activityId);
  expect(new Set(ids).size, `one ActivityScheduled per activity id (got ${ids.join(', ')})`).toBe(ids.length);
  for (const s of scheduled) {
    const results = events.filter(
      (e) =>
        ['ActivityCompleted', 'ActivityFailed', 'ActivityTimedOut', 'ActivityCanceled'].includes(e.type) &&
        attr<{ scheduledEventId: number }>(e).scheduledEventId === s.eventId,
    );
    expect(
      results.length,
      `at most one result for the activity scheduled at event ${s.eventId}`,
    ).toBeLessThanOrEqual(1);
  }

  for (const started of events.filter((e) => e.type === 'WorkflowTaskStarted')) {
    const outcomes = events.filter(
      (e) =>
        ['WorkflowTaskCompleted', 'WorkflowTaskFailed', 'WorkflowTaskTimedOut'].includes(e.type) &&
        attr<{ startedEventId: number }>(e).startedEventId === started.eventId,
    );
    expect(
      outcomes.length,
      `exactly one outcome for the workflow task started at event ${started.eventId}`,
    ).toBe(1);
  }

  const closings = events.filter((e) =>
    [
      'WorkflowCompleted',
      'WorkflowFailed',
      'WorkflowCanceled',
      'WorkflowTerminated',
      'WorkflowTimedOut',
    ].includes(e.type),
  );
  expect(closings.map((e) => e.type)).toEqual([closing]);
  expect(events.at(-1)?.type).toBe(closing);
}

export function eventsOfType(history: HistoryFile, type: string): HistoryEvent[] {
  return history.events.filter((e) => e.type === type);
}

export function attr<T>(e: HistoryEvent): T {
  return e.attributes as T;
}

/** Milliseconds since the epoch of an event's ISO time. */
export function timeOf(e: HistoryEvent): number {
  return Date.parse(e.time);
}
