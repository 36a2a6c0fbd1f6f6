/**
 * Four worker processes on one PostgreSQL schema run many five-activity pipelines while a controller
 * kills one of three workers with SIGKILL every few seconds (and restarts it), and stops the fourth with
 * SIGSTOP for longer than its workflow-task and activity leases, then resumes it (a zombie that wakes up
 * holding stale tokens). Afterwards every history and the activity log must show the guarantees of
 * DESIGN section 2: every acknowledged start completed with the right result, one result per workflow
 * task and activity scheduling, gap-free event ids, no completed activity run again, and the zombie's
 * late reports rejected.
 *
 * LONGHAUL_CHAOS_WORKFLOWS sets how many workflows run (default 2000: 35-45 s of work on a busy two-core
 * machine, with 12-15 kills and 4-5 pauses).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client, type HistoryFile } from 'longhaul/client';
import { afterAll, describe, expect, it } from 'vitest';
import { ProcessGroup, sleep, waitUntil } from '../crash/harness.js';
import { ACTIVITY_HEARTBEAT_TIMEOUT_MS } from '../fixtures/chaos/workflows.js';
import { type ActivityLogEntry, readActivityLog } from '../fixtures/crash/activity-log.js';
import { dropSchema, storeUrl, testSchema } from '../store/fixtures/postgres.js';
import { activityKey, checkRun, excerpt } from './checks.js';
import {
  CHAOS_ACTIVITIES,
  CHAOS_WORKER_OPTIONS,
  CHAOS_WORKFLOWS,
  WorkerFleet,
  type WorkerSlot,
} from './fleet.js';
import { fetchHistories, pipelineSpecs, StoreProbe, startPipelines } from './workload.js';

const DEFAULT_WORKFLOWS = 2000;
const WORKFLOWS = readCount('LONGHAUL_CHAOS_WORKFLOWS', DEFAULT_WORKFLOWS);
/** How long each first attempt sleeps (ms): long enough that a stopped worker is caught holding some. */
const STEP_MS = 50;
/**
 * How long retries sleep (ms): a retry of an attempt the zombie held starts a heartbeat timeout (plus a
 * sweep) after the stop and is still running when the zombie wakes up PAUSE_MS after the stop.
 */
const RETRY_STEP_MS = 4000;
const WORKFLOW_TASK_TIMEOUT_MS = 2000;
/** A kill every this many ms. */
const KILL_EVERY_MS = 3000;
/**
 * The zombie sleeps past every lease it can hold (its attempts heartbeat when they start, so the heartbeat
 * timeout bounds them), plus sweeps and a margin for a loaded machine (ms).
 */
const PAUSE_MS = Math.max(WORKFLOW_TASK_TIMEOUT_MS, ACTIVITY_HEARTBEAT_TIMEOUT_MS) + 3000;
/** Bound on the whole run: the measured rate is about 50 workflows/s with faults; this allows a third of it. */
const RUN_TIMEOUT_MS = 30_000 + WORKFLOWS * 60;

function readCount(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got '${raw}'`);
  return n;
}

/** A workflow task leased to the zombie while it was stopped (attempts after the first have no events yet). */
interface HeldWorkflowTask {
  readonly runId: string;
  readonly workflowId: string;
  readonly attempt: number;
  /** Its fencing token (what the worker's log lines about this task carry). */
  readonly token: number;
  /** Its WorkflowTaskStarted (attempt 1 only; 0 otherwise). */
  readonly startedEventId: number;
  /** When its lease expires, by the database clock (ms since the epoch). */
  readonly leaseExpiresAt: number;
}

/** One SIGSTOP/SIGCONT of the zombie, with what the store said it held while it was stopped. */
interface Pause {
  readonly pid: number;
  readonly identity: string;
  readonly stoppedAt: number;
  readonly resumedAt: number;
  /** Workflow tasks leased to the zombie while stopped: run id and WorkflowTaskStarted event id. */
  readonly workflowTasks: HeldWorkflowTask[];
  /** Activity attempts leased to the zombie while stopped. */
  readonly activities: number;
}

describe('chaos: four workers on PostgreSQL, one killed every few seconds, one stopped past its leases', () => {
  const schema = testSchema();
  const url = storeUrl(schema, { poolSize: '5' });
  const group = new ProcessGroup();
  // Made by the test, not when the file is collected (`vitest list` runs no hooks).
  let dir: string | undefined;
  let probe: StoreProbe | undefined;
  let client: Client | undefined;

  afterAll(async () => {
    try {
      await group.killAll();
      await client?.close();
      await probe?.end();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
      await dropSchema(schema);
    }
  });

  it(
    `${WORKFLOWS} pipelines complete exactly once each; zombie reports are rejected`,
    async () => {
      const began = Date.now();
      dir = mkdtempSync(path.join(tmpdir(), 'longhaul-chaos-'));
      const logPath = path.join(dir, 'activities.log');
      probe = new StoreProbe(url, schema);
      const fleet = new WorkerFleet(group, 4, {
        connection: url,
        taskQueue: 'chaos',
        workflowsPath: CHAOS_WORKFLOWS,
        activitiesPath: CHAOS_ACTIVITIES,
        identityPrefix: 'chaos',
        options: CHAOS_WORKER_OPTIONS,
      });
      await fleet.startAll();
      client = await Client.connect(url);
      const specs = pipelineSpecs(WORKFLOWS, 'pipeline');
      const workStarted = Date.now();

      let done = false;
      const kills: { pid: number; at: number }[] = [];
      const pauses: Pause[] = [];
      const killable = fleet.slots.slice(0, 3);
      const zombie = fleet.slots[3]!;

      // Kills go round the three killable slots, one every KILL_EVERY_MS, or as soon as the previous
      // victim's replacement is up if that takes longer (so at least two killable workers stay up).
      const killLoop = async (): Promise<void> => {
        let last = Date.now();
        for (let i = 0; !done; i++) {
          await sleepUnless(last + KILL_EVERY_MS - Date.now(), () => done);
          if (done) break;
          const slot = killable[i % killable.length]!;
          const pid = slot.current.process.pid;
          last = await slot.kill9();
          kills.push({ pid, at: last });
          await slot.start();
        }
      };
      const zombieLoop = async (): Promise<void> => {
        await sleepUnless(2000, () => done);
        while (!done) {
          pauses.push(await pauseZombie(zombie, probe!));
          await sleepUnless(4000, () => done);
        }
      };
      const chaos = Promise.all([killLoop(), zombieLoop()]);
      let starts: Awaited<ReturnType<typeof startPipelines>>;
      try {
        starts = await startPipelines(client, specs, {
          taskQueue: 'chaos',
          logPath,
          stepMs: STEP_MS,
          retryStepMs: RETRY_STEP_MS,
          workflowTaskTimeoutMs: WORKFLOW_TASK_TIMEOUT_MS,
          concurrency: 16,
        });
        await probe!.waitAllClosed(WORKFLOWS, RUN_TIMEOUT_MS);
      } finally {
        done = true;
        await chaos;
      }
      const workMs = Date.now() - workStarted;

      expect(starts.failed, 'every start() call returned').toEqual([]);
      expect(starts.acknowledged).toHaveLength(WORKFLOWS);

      // The zombie's attempts that were running when it was stopped: they finish after SIGCONT and try
      // to report; wait (bounded) until each logged its completion and its report was answered.
      const inFlight = (log: readonly ActivityLogEntry[]) =>
        pauses.flatMap((p) =>
          attemptsRunningAt(log, p.pid, p.stoppedAt, p.resumedAt).map((e) => ({ pause: p, entry: e })),
        );
      const lateOf = (log: readonly ActivityLogEntry[], p: Pause, e: ActivityLogEntry) =>
        log.find(
          (x) =>
            x.event === 'complete' &&
            x.pid === p.pid &&
            x.workflowId === e.workflowId &&
            x.activityId === e.activityId &&
            x.attempt === e.attempt,
        );
      const rejectionOf = (p: Pause, e: ActivityLogEntry) =>
        fleet
          .rejectionsOf(p.pid)
          .find(
            (r) => r.workflowId === e.workflowId && r.activityId === e.activityId && r.attempt === e.attempt,
          );
      await waitUntil(
        () => {
          const log = readActivityLog(logPath);
          return inFlight(log).every(
            ({ pause, entry }) => lateOf(log, pause, entry) && rejectionOf(pause, entry),
          );
        },
        'the zombie to report the attempts it held when it was stopped',
        15_000,
        100,
      ).catch(() => undefined); // the assertions below say which report is missing

      const log = readActivityLog(logPath);
      const histories = await fetchHistories(
        client,
        specs.map((s) => s.workflowId),
      );
      const { violations, stats, recorded } = checkRun(
        histories,
        new Map(specs.map((s) => [s.workflowId, s.expected])),
        log,
      );
      expect(
        violations.slice(0, 20),
        `${violations.length} invariant violations; ${describeFaults(kills, pauses)}; worker stderr:\n${fleet.stderrTail()}`,
      ).toEqual([]);

      // Faults really happened, and killed workers' attempts were retried elsewhere.
      const killedPids = new Set(kills.map((k) => k.pid));
      const retriedAfterKill = log.filter(
        (e) =>
          e.event === 'start' &&
          killedPids.has(e.pid) &&
          (recorded.get(activityKey(e.workflowId, e.activityId))?.attempt ?? 0) > e.attempt,
      );
      expect(kills.length, 'workers killed').toBeGreaterThanOrEqual(2);
      expect(retriedAfterKill.length, 'attempts of killed workers retried elsewhere').toBeGreaterThan(0);

      // The zombie held activity attempts when stopped. Each one whose lease the sweepers took over while
      // it was stopped was superseded by a retry (on another worker, or on the zombie itself once it woke
      // up), and its late completion, logged after SIGCONT, was rejected by the store (the worker prints
      // the rejection; see worker-process.ts). On a saturated machine a sweep can come only after SIGCONT:
      // then the zombie's attempt was still current, and its result is the one recorded.
      expect(pauses.length, 'zombie pauses').toBeGreaterThanOrEqual(1);
      const held = inFlight(log);
      let racedReplacement = 0;
      let superseded = 0;
      expect(held.length, 'activity attempts running in the zombie when it was stopped').toBeGreaterThan(0);
      for (const { pause, entry } of held) {
        const key = activityKey(entry.workflowId, entry.activityId);
        const rec = recorded.get(key);
        const what = `${key} attempt ${entry.attempt} held by zombie ${pause.pid}`;
        if (rec?.attempt === entry.attempt) {
          expect(rec.pid, `${what}: not overtaken, so its own result is recorded`).toBe(pause.pid);
          continue;
        }
        superseded++;
        expect(rec?.attempt, `${what}: superseded by a later attempt`).toBeGreaterThan(entry.attempt);
        expect(lateOf(log, pause, entry), `${what}: completed late, after SIGCONT`).toBeDefined();
        expect(rejectionOf(pause, entry), `${what}: its late report was rejected`).toBeDefined();
        // Did the late report meet the replacement attempt still running (a newer token in the row)?
        const late = lateOf(log, pause, entry)!;
        const replacement = log.filter(
          (e) =>
            e.workflowId === entry.workflowId &&
            e.activityId === entry.activityId &&
            e.attempt === rec!.attempt,
        );
        const start = replacement.find((e) => e.event === 'start');
        const end = replacement.find((e) => e.event === 'complete');
        if (start && end && start.time < late.time && late.time < end.time) racedReplacement++;
      }
      expect(superseded, 'zombie attempts superseded while it was stopped').toBeGreaterThan(0);
      // The token check itself was exercised, not only the "attempt is gone" case.
      expect(racedReplacement, 'late zombie reports that met a running replacement attempt').toBeGreaterThan(
        0,
      );

      // Workflow tasks leased to the zombie while it was stopped: after SIGCONT its result for each was
      // rejected (the lease had expired and the task was retried elsewhere; an attempt-1 task shows as
      // WorkflowTaskTimedOut), unless the zombie was stopped inside that task's commit, holding the run's
      // row lock: then that commit went through after SIGCONT, and the history says the zombie completed it.
      let zombieTasksRejected = 0;
      for (const p of pauses) {
        for (const t of p.workflowTasks) {
          const h = histories.get(t.workflowId)!;
          const where = `${t.workflowId}: workflow task attempt ${t.attempt} leased to zombie ${p.identity}\n${excerpt(h)}`;
          const rejected = fleet
            .rejectionsOf(p.pid)
            .some(
              (r) =>
                r.runId === t.runId &&
                r.token === t.token &&
                String(r.message).startsWith('workflow task result rejected'),
            );
          const completedByZombie = completedBy(h, t, p.identity);
          expect(
            rejected !== completedByZombie,
            `${where}\nrejected: ${rejected}, completed by the zombie: ${completedByZombie}`,
          ).toBe(true);
          if (rejected) zombieTasksRejected++;
          if (t.attempt === 1) {
            // Attempt 1 is recorded when it starts; its one outcome is the timeout or the zombie's commit.
            const started = h.events[t.startedEventId - 1];
            expect(started?.type, where).toBe('WorkflowTaskStarted');
            expect((started?.attributes as { workerId?: string } | undefined)?.workerId, where).toBe(
              p.identity,
            );
            const outcome = h.events.find(
              (e) =>
                ['WorkflowTaskCompleted', 'WorkflowTaskFailed', 'WorkflowTaskTimedOut'].includes(e.type) &&
                (e.attributes as { startedEventId: number }).startedEventId === t.startedEventId,
            );
            expect(outcome?.type, where).toBe(rejected ? 'WorkflowTaskTimedOut' : 'WorkflowTaskCompleted');
          }
        }
      }

      console.log(
        `chaos multi-worker: ${WORKFLOWS} workflows (${stats.events} events) in ${(workMs / 1000).toFixed(1)} s ` +
          `of work (${((Date.now() - began) / 1000).toFixed(1)} s in all); ${kills.length} kills, ` +
          `${pauses.length} pauses holding ${held.length} activity attempts (${racedReplacement} reported while their retry ran) and ` +
          `${pauses.reduce((n, p) => n + p.workflowTasks.length, 0)} workflow tasks ` +
          `(${zombieTasksRejected} results rejected); ${stats.workflowTasksTimedOut} workflow tasks timed out, ` +
          `${stats.activitiesRetried} activities retried (highest attempt ${stats.highestAttempt}), ` +
          `${stats.unrecordedCompletions} completions logged but not recorded`,
      );
    },
    RUN_TIMEOUT_MS + 90_000,
  );
});

/** The faults injected, with wall-clock times, for failure messages. */
function describeFaults(kills: readonly { pid: number; at: number }[], pauses: readonly Pause[]): string {
  const t = (ms: number): string => new Date(ms).toISOString().slice(11, 23);
  const k = kills.map((x) => `SIGKILL ${x.pid} at ${t(x.at)}`);
  const p = pauses.map(
    (x) =>
      `SIGSTOP ${x.pid} ${t(x.stoppedAt)}-${t(x.resumedAt)} holding ${x.activities} activities and ` +
      `${x.workflowTasks.length} workflow tasks (${x.workflowTasks.map((w) => w.workflowId).join(', ')})`,
  );
  return [...k, ...p].join('; ');
}

/** Whether the history shows the held workflow task (that attempt) started and completed by `identity`. */
function completedBy(h: HistoryFile, t: HeldWorkflowTask, identity: string): boolean {
  const byIdentity = (e: HistoryFile['events'][number] | undefined, type: string): boolean =>
    e?.type === type && (e.attributes as { workerId?: string }).workerId === identity;
  return h.events.some((started, i) => {
    if (!byIdentity(started, 'WorkflowTaskStarted')) return false;
    const scheduled = h.events[(started.attributes as { scheduledEventId: number }).scheduledEventId - 1];
    const attempt = (scheduled?.attributes as { attempt?: number } | undefined)?.attempt;
    if (t.attempt === 1 ? started.eventId !== t.startedEventId : attempt !== t.attempt) return false;
    return h.events
      .slice(i + 1)
      .some(
        (e) =>
          byIdentity(e, 'WorkflowTaskCompleted') &&
          (e.attributes as { startedEventId: number }).startedEventId === started.eventId,
      );
  });
}

/** Sleeps `ms`, waking early once `stop()` is true (checked every 100 ms). */
async function sleepUnless(ms: number, stop: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (!stop() && Date.now() < until) await sleep(Math.min(100, until - Date.now()));
}

/**
 * Stops the zombie for PAUSE_MS. It waits (up to 2 s) for a moment when the zombie holds a workflow-task
 * lease, so that path is exercised too, then stops it and records what the store says it holds.
 */
async function pauseZombie(slot: WorkerSlot, probe: StoreProbe): Promise<Pause> {
  const { identity, process: proc } = slot.current;
  const huntUntil = Date.now() + 2000;
  while (Date.now() < huntUntil) {
    const [row] = await probe.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM $schema.runs WHERE status = 'running' AND wft_phase = 'started' AND wft_lease_owner = $1`,
      [identity],
    );
    if (row!.n > 0) break;
    await sleep(5);
  }
  const stoppedAt = slot.pause();
  let held: Pick<Pause, 'workflowTasks' | 'activities'>;
  let resumedAt = 0;
  try {
    const workflowTasks = await probe.query<HeldWorkflowTask>(
      `SELECT run_id AS "runId", workflow_id AS "workflowId", wft_attempt AS attempt, wft_token::int AS token,
              wft_started_event_id::int AS "startedEventId", wft_lease_expires_at::float8 AS "leaseExpiresAt"
         FROM $schema.runs WHERE status = 'running' AND wft_phase = 'started' AND wft_lease_owner = $1`,
      [identity],
    );
    const [acts] = await probe.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM $schema.activities WHERE phase = 'started' AND lease_owner = $1`,
      [identity],
    );
    held = { workflowTasks, activities: acts!.n };
    await sleep(PAUSE_MS);
  } finally {
    // Resumed whatever happens, so that no stopped process outlives a failed probe.
    resumedAt = slot.resume();
  }
  return { pid: proc.pid, identity, stoppedAt, resumedAt, ...held };
}

/**
 * Attempts that `pid` logged as started before `stoppedAt` and had not logged as completed before
 * `resumedAt`: they were running when the process was stopped (a line written in the instant between
 * the test reading the clock and the stop taking effect counts as written before the stop).
 */
function attemptsRunningAt(
  log: readonly ActivityLogEntry[],
  pid: number,
  stoppedAt: number,
  resumedAt: number,
): ActivityLogEntry[] {
  const open = new Map<string, ActivityLogEntry>();
  for (const e of log) {
    if (e.pid !== pid) continue;
    const key = `${activityKey(e.workflowId, e.activityId)}#${e.attempt}`;
    if (e.event === 'start' && e.time < stoppedAt) open.set(key, e);
    else if (e.event === 'complete' && e.time < resumedAt) open.delete(key);
  }
  return [...open.values()];
}
