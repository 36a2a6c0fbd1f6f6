/**
 * The invariants a chaos run must keep, checked over every history and the shared activity log. Each
 * check collects violations as readable text (workflow id, what was wrong, the history excerpt) instead
 * of failing at the first one, so a failed run says exactly what happened.
 */
import type { HistoryFile } from 'longhaul/client';
import type { TransformResult } from '../fixtures/chaos/activities.js';
import { PIPELINE_STEPS } from '../fixtures/chaos/workflows.js';
import type { ActivityLogEntry } from '../fixtures/crash/activity-log.js';
import { pidOfIdentity } from './fleet.js';

type HistoryEvent = HistoryFile['events'][number];

const CLOSING = [
  'WorkflowCompleted',
  'WorkflowFailed',
  'WorkflowCanceled',
  'WorkflowTerminated',
  'WorkflowTimedOut',
];
const ACTIVITY_RESULTS = ['ActivityCompleted', 'ActivityFailed', 'ActivityTimedOut', 'ActivityCanceled'];
const TASK_OUTCOMES = ['WorkflowTaskCompleted', 'WorkflowTaskFailed', 'WorkflowTaskTimedOut'];

/** How the recorded attempt of one activity scheduling relates to what its attempts logged. */
export interface RecordedActivity {
  readonly workflowId: string;
  readonly activityId: string;
  /** Attempt number in the history's ActivityStarted: the attempt whose result was recorded. */
  readonly attempt: number;
  /** The worker process (pid) that ran the recorded attempt, from the ActivityStarted `workerId`. */
  readonly pid: number;
}

export interface ChaosStats {
  workflows: number;
  events: number;
  /** Workflow tasks that timed out (a worker was killed or stopped while holding one). */
  workflowTasksTimedOut: number;
  /** Schedulings whose recorded attempt is not the first. */
  activitiesRetried: number;
  /** Attempts that logged a start but whose result is not the recorded one. */
  supersededAttempts: number;
  /** Of those, attempts that logged their completion anyway (their report was lost or rejected). */
  unrecordedCompletions: number;
  highestAttempt: number;
}

export interface CheckOutcome {
  readonly violations: string[];
  readonly stats: ChaosStats;
  /** By `workflowId/activityId`. */
  readonly recorded: Map<string, RecordedActivity>;
}

export const activityKey = (workflowId: string, activityId: string): string => `${workflowId}/${activityId}`;

/** A short, one-line-per-event rendering of a history for failure messages. */
export function excerpt(history: HistoryFile, around?: number, radius = 6): string {
  const events =
    around === undefined
      ? history.events
      : history.events.filter((e) => Math.abs(e.eventId - around) <= radius);
  return events
    .map((e) => `    #${e.eventId} ${e.type} ${e.time} ${JSON.stringify(e.attributes).slice(0, 160)}`)
    .join('\n');
}

function attr<T>(e: HistoryEvent): T {
  return e.attributes as T;
}

/**
 * Checks every history against its expected result and the activity log:
 * - event ids are 1..n without gaps; exactly one closing event, WorkflowCompleted, last, with the result;
 * - PIPELINE_STEPS activities scheduled, each with exactly one result event, ActivityCompleted, right
 *   after the ActivityStarted of the attempt it belongs to, holding the result that attempt computed;
 * - every started workflow task has exactly one outcome;
 * - against the log: every attempt logged at most one start and one completion; the recorded attempt
 *   (number and worker process) logged both; no attempt later than the recorded one ever started
 *   (a completed activity is not run again).
 */
export function checkRun(
  histories: ReadonlyMap<string, HistoryFile>,
  expected: ReadonlyMap<string, unknown>,
  log: readonly ActivityLogEntry[],
): CheckOutcome {
  const violations: string[] = [];
  const recorded = new Map<string, RecordedActivity>();
  const stats: ChaosStats = {
    workflows: histories.size,
    events: 0,
    workflowTasksTimedOut: 0,
    activitiesRetried: 0,
    supersededAttempts: 0,
    unrecordedCompletions: 0,
    highestAttempt: 0,
  };
  const bad = (id: string, what: string, history?: HistoryFile, around?: number): void => {
    violations.push(`${id}: ${what}${history ? `\n${excerpt(history, around)}` : ''}`);
  };

  for (const [workflowId, want] of expected) {
    const h = histories.get(workflowId);
    if (!h) {
      bad(workflowId, 'no history (the run was not found)');
      continue;
    }
    const events = h.events;
    stats.events += events.length;
    const gap = events.findIndex((e, i) => e.eventId !== i + 1);
    if (gap !== -1)
      bad(workflowId, `event ids are not 1..n: position ${gap + 1} holds id ${events[gap]!.eventId}`, h);

    const closings = events.filter((e) => CLOSING.includes(e.type));
    if (closings.length !== 1 || closings[0]!.type !== 'WorkflowCompleted' || events.at(-1) !== closings[0]) {
      bad(
        workflowId,
        `closing events ${JSON.stringify(closings.map((e) => e.type))}, want one WorkflowCompleted, last`,
        h,
      );
    } else if (JSON.stringify(attr<{ result?: unknown }>(closings[0]!).result) !== JSON.stringify(want)) {
      bad(
        workflowId,
        `result ${JSON.stringify(attr<{ result?: unknown }>(closings[0]!).result)}, want ${JSON.stringify(want)}`,
      );
    }

    for (const started of events.filter((e) => e.type === 'WorkflowTaskStarted')) {
      const outcomes = events.filter(
        (e) =>
          TASK_OUTCOMES.includes(e.type) &&
          attr<{ startedEventId: number }>(e).startedEventId === started.eventId,
      );
      if (outcomes.length !== 1) {
        bad(
          workflowId,
          `workflow task started at #${started.eventId} has ${outcomes.length} outcomes`,
          h,
          started.eventId,
        );
      }
    }
    stats.workflowTasksTimedOut += events.filter((e) => e.type === 'WorkflowTaskTimedOut').length;

    const scheduled = events.filter((e) => e.type === 'ActivityScheduled');
    const ids = scheduled.map((e) => attr<{ activityId: string }>(e).activityId);
    if (scheduled.length !== PIPELINE_STEPS || new Set(ids).size !== ids.length) {
      bad(workflowId, `activities scheduled: ${JSON.stringify(ids)}, want ${PIPELINE_STEPS} distinct`, h);
    }
    for (const s of scheduled) {
      const activityId = attr<{ activityId: string }>(s).activityId;
      const results = events.filter(
        (e) =>
          ACTIVITY_RESULTS.includes(e.type) &&
          attr<{ scheduledEventId: number }>(e).scheduledEventId === s.eventId,
      );
      const result = results[0];
      if (results.length !== 1 || result?.type !== 'ActivityCompleted') {
        bad(
          workflowId,
          `activity ${activityId} (#${s.eventId}) has results ${JSON.stringify(results.map((e) => e.type))}, want one ActivityCompleted`,
          h,
          s.eventId,
        );
        continue;
      }
      const started = events[result.eventId - 2];
      const startedAttrs =
        started && attr<{ scheduledEventId: number; attempt: number; workerId: string }>(started);
      if (
        started?.type !== 'ActivityStarted' ||
        startedAttrs!.scheduledEventId !== s.eventId ||
        attr<{ startedEventId: number }>(result).startedEventId !== started.eventId
      ) {
        bad(
          workflowId,
          `ActivityCompleted #${result.eventId} does not follow its ActivityStarted`,
          h,
          result.eventId,
        );
        continue;
      }
      const attempt = startedAttrs!.attempt;
      const pid = pidOfIdentity(startedAttrs!.workerId);
      // The recorded result is the one that attempt computed (the activity returns its attempt and pid):
      // a stale attempt's late result, accepted in place of the current one, shows here.
      const value = attr<{ result?: Partial<TransformResult> }>(result).result;
      if (value?.attempt !== attempt || value.pid !== pid) {
        bad(
          workflowId,
          `activity ${activityId}: ActivityCompleted #${result.eventId} holds the result of attempt ${value?.attempt} (pid ${value?.pid}), but ActivityStarted #${started.eventId} records attempt ${attempt} (pid ${pid})`,
          h,
          result.eventId,
        );
      }
      recorded.set(activityKey(workflowId, activityId), { workflowId, activityId, attempt, pid });
      if (attempt > 1) stats.activitiesRetried++;
      stats.highestAttempt = Math.max(stats.highestAttempt, attempt);
    }
  }

  checkLog(log, recorded, expected, stats, violations);
  return { violations, stats, recorded };
}

function checkLog(
  log: readonly ActivityLogEntry[],
  recorded: ReadonlyMap<string, RecordedActivity>,
  expected: ReadonlyMap<string, unknown>,
  stats: ChaosStats,
  violations: string[],
): void {
  const byKey = new Map<string, ActivityLogEntry[]>();
  for (const e of log) {
    const key = activityKey(e.workflowId, e.activityId);
    const list = byKey.get(key) ?? [];
    if (list.length === 0) byKey.set(key, list);
    list.push(e);
  }
  const show = (entries: readonly ActivityLogEntry[]): string =>
    entries
      .map((e) => `    ${e.event} attempt ${e.attempt} pid ${e.pid} at ${new Date(e.time).toISOString()}`)
      .join('\n');

  for (const [key, entries] of byKey) {
    if (!expected.has(entries[0]!.workflowId)) {
      violations.push(`${key}: logged by an activity of an unknown workflow\n${show(entries)}`);
      continue;
    }
    const rec = recorded.get(key);
    if (!rec) {
      violations.push(`${key}: attempts logged, but no recorded completion in history\n${show(entries)}`);
      continue;
    }
    const attempts = new Map<number, { start: ActivityLogEntry[]; complete: ActivityLogEntry[] }>();
    for (const e of entries) {
      if (e.event !== 'start' && e.event !== 'complete') continue;
      const a = attempts.get(e.attempt) ?? { start: [], complete: [] };
      attempts.set(e.attempt, a);
      a[e.event].push(e);
    }
    for (const [attempt, a] of attempts) {
      if (
        a.start.length !== 1 ||
        a.complete.length > 1 ||
        (a.complete[0] && a.complete[0].pid !== a.start[0]!.pid)
      ) {
        violations.push(`${key}: attempt ${attempt} ran more than once or out of order\n${show(entries)}`);
      }
      if (attempt > rec.attempt) {
        violations.push(
          `${key}: attempt ${attempt} started although attempt ${rec.attempt} is the recorded one (re-executed after completion?)\n${show(entries)}`,
        );
      } else if (attempt < rec.attempt) {
        stats.supersededAttempts++;
        if (a.complete.length > 0) stats.unrecordedCompletions++;
      }
    }
    const own = attempts.get(rec.attempt);
    if (own?.complete.length !== 1 || own.start[0]!.pid !== rec.pid) {
      violations.push(
        `${key}: the recorded attempt ${rec.attempt} (pid ${rec.pid}) did not log its start and completion\n${show(entries)}`,
      );
    }
  }
  for (const key of recorded.keys()) {
    if (!byKey.has(key))
      violations.push(`${key}: completion recorded in history, but no attempt logged anything`);
  }
}
