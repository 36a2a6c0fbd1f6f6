/**
 * Worker processes and a client run pipelines on a private PostgreSQL cluster that is restarted twice
 * while they are busy: once with `pg_ctl restart -m fast` while the client is still starting workflows,
 * once with `-m immediate` (a crash of the server, WAL recovery on start) while activities and workflow
 * tasks are in flight. Nothing acknowledged may be lost: every workflow whose start() returned completes
 * with the right result, and every history and the activity log keep the invariants of the
 * multi-worker chaos test.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client } from 'longhaul/client';
import { jsonLogger } from 'longhaul/worker';
import { afterAll, describe, expect, it } from 'vitest';
import { ProcessGroup, waitUntil } from '../crash/harness.js';
import { readActivityLog } from '../fixtures/crash/activity-log.js';
import { checkRun } from './checks.js';
import { CHAOS_ACTIVITIES, CHAOS_WORKER_OPTIONS, CHAOS_WORKFLOWS, WorkerFleet } from './fleet.js';
import { PrivatePostgres } from './private-postgres.js';
import { fetchHistories, pipelineSpecs, StoreProbe, startPipelines } from './workload.js';

const WORKFLOWS = 200;
const STEP_MS = 100;
const SCHEMA = 'lh_chaos';
const RESTART_MESSAGE = 're-running a PostgreSQL transaction';

describe('chaos: the PostgreSQL server restarts (fast, then a crash) under load', () => {
  const group = new ProcessGroup();
  // Made by the test, not when the file is collected (`vitest list` runs no hooks).
  let dir: string | undefined;
  let cluster: PrivatePostgres | undefined;
  let probe: StoreProbe | undefined;
  let client: Client | undefined;

  afterAll(async () => {
    try {
      await group.killAll();
      await client?.close().catch(() => undefined);
      await probe?.end().catch(() => undefined);
    } finally {
      try {
        await cluster?.destroy();
      } finally {
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
    }
  }, 90_000);

  it('loses nothing acknowledged: every started workflow completes once, with the right result', async () => {
    const began = Date.now();
    dir = mkdtempSync(path.join(tmpdir(), 'longhaul-chaos-db-'));
    const logPath = path.join(dir, 'activities.log');
    cluster = await PrivatePostgres.create();
    const url = cluster.url({ schema: SCHEMA, poolSize: '5' });
    probe = new StoreProbe(url, SCHEMA);
    const fleet = new WorkerFleet(group, 3, {
      connection: url,
      taskQueue: 'chaos',
      workflowsPath: CHAOS_WORKFLOWS,
      activitiesPath: CHAOS_ACTIVITIES,
      identityPrefix: 'chaos',
      options: CHAOS_WORKER_OPTIONS,
    });
    await fleet.startAll();
    let clientRetries = 0;
    client = await Client.connect(url, {
      logger: jsonLogger((line) => {
        if (line.includes(RESTART_MESSAGE)) clientRetries++;
      }, 'warn'),
    });

    const specs = pipelineSpecs(WORKFLOWS, 'restart');
    const workStarted = Date.now();
    let acknowledged = 0;
    const starting = startPipelines(client, specs, {
      taskQueue: 'chaos',
      logPath,
      stepMs: STEP_MS,
      retryStepMs: STEP_MS,
      workflowTaskTimeoutMs: 2000,
      concurrency: 4,
      onAcknowledged: () => {
        acknowledged++;
      },
    });
    let startsDone = false;
    void starting.finally(() => {
      startsDone = true;
    });

    // 1. A fast restart while the client is starting workflows.
    await waitUntil(() => acknowledged >= WORKFLOWS / 5 || startsDone, 'a fifth of the starts', 30_000);
    const fastRestart = { acknowledgedBefore: acknowledged, startsDone, at: Date.now(), ms: 0 };
    await cluster.restart('fast');
    fastRestart.ms = Date.now() - fastRestart.at;
    const starts = await starting;

    // 2. A crash of the server when about a third of the runs have closed: the rest are mid-flight.
    const third = await waitUntil(
      async () => {
        const p = await probe!.progress().catch(() => undefined);
        return p && p.total - p.running >= WORKFLOWS / 3 && p;
      },
      'a third of the runs to close',
      60_000,
      50,
    );
    const crash = { closedBefore: third.total - third.running, at: Date.now(), ms: 0 };
    await cluster.restart('immediate');
    crash.ms = Date.now() - crash.at;

    await probe.waitAllClosed(WORKFLOWS, 90_000);
    const workMs = Date.now() - workStarted;

    // Nothing acknowledged was lost, and every history and the log keep the invariants.
    const histories = await fetchHistories(client, starts.acknowledged);
    const expected = new Map(specs.map((s) => [s.workflowId, s.expected]));
    const { violations, stats } = checkRun(
      histories,
      new Map(starts.acknowledged.map((id) => [id, expected.get(id)])),
      readActivityLog(logPath),
    );
    expect(
      violations.slice(0, 20),
      `${violations.length} invariant violations; worker stderr:\n${fleet.stderrTail()}\n${cluster.diagnostics()}`,
    ).toEqual([]);
    // The client rode out the restart: every start() returned (each retried inside the store).
    expect(starts.failed, 'start() calls that failed').toEqual([]);
    expect(starts.acknowledged).toHaveLength(WORKFLOWS);
    expect(
      fastRestart.startsDone,
      'the fast restart happened while the client was still starting workflows',
    ).toBe(false);
    expect(crash.closedBefore, 'the crash happened while runs were in flight').toBeLessThan(WORKFLOWS);

    // The restarts hit the workers in the middle of their work: their transactions were re-run.
    const workerRetries = fleet.generations.reduce(
      (n, g) => n + g.process.stderr.split('\n').filter((l) => l.includes(RESTART_MESSAGE)).length,
      0,
    );
    expect(workerRetries, 'worker transactions re-run after a lost connection').toBeGreaterThan(0);

    console.log(
      `chaos database restart: ${WORKFLOWS} workflows (${stats.events} events) in ${(workMs / 1000).toFixed(1)} s ` +
        `of work (${((Date.now() - began) / 1000).toFixed(1)} s in all); fast restart after ` +
        `${fastRestart.acknowledgedBefore} starts took ${fastRestart.ms} ms, crash restart after ` +
        `${crash.closedBefore} closed runs took ${crash.ms} ms; transactions re-run: ${workerRetries} in ` +
        `workers, ${clientRetries} in the client; ${stats.workflowTasksTimedOut} workflow tasks timed out, ` +
        `${stats.activitiesRetried} activities retried, ${stats.unrecordedCompletions} completions logged ` +
        'but not recorded',
    );
  }, 180_000);
});
