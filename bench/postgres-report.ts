/**
 * The PostgreSQL benchmark's results and how they are printed (bench/postgres.ts measures them), and the
 * W1 phase breakdown read back from history.
 */
import { availableParallelism } from 'node:os';
import type { Client } from '../src/client/index.js';
import type { WorkerCounters } from './spawn-workers.js';
import type { StoreProbeResult } from './store-probe.js';
import { fmt, p99AfterWarmUp, percentile, W1_WARM_UP, type W1Span, W2_IN_FLIGHT } from './workloads.js';

/** One server round trip and one single-row commit, measured on one connection (ms each). */
export interface ServerBaseline {
  readonly version: string;
  readonly synchronousCommit: string;
  readonly commitMs: number;
  readonly roundTripMs: number;
  /** CPU time this process spends on one `SELECT 1` round trip (the driver's own cost, ms). */
  readonly roundTripCpuMs: number;
}

/** What a run measured; the counters cover the workload only (client and workers together). */
export interface RunResult {
  readonly processes: number;
  readonly count: number;
  /** W1: sorted latencies (ms); W2: elapsed seconds. */
  readonly latencies: readonly number[];
  /** W1: the latencies in the order the workflows ran. */
  readonly inOrder: readonly number[];
  readonly seconds: number;
  readonly counters: WorkerCounters;
  /** Transactions the client issued (multi-process runs; in-process, client and worker share one count). */
  readonly clientTransactions?: number;
  /** Transactions each worker process issued (multi-process runs). */
  readonly perProcess: readonly number[];
  /** The worker processes' poll interval (ms), and the transactions their polling issues over the run when idle. */
  readonly pollIntervalMs?: number;
  readonly idlePolls?: number;
  readonly notifications: boolean;
  readonly probe?: StoreProbeResult;
  readonly cpuMs?: number;
  /** CPU ms of the PostgreSQL server over the run, where it runs on this host (see `ServerCpu`). */
  readonly serverCpuMs?: number;
  readonly phases?: Phases;
}

/**
 * Where a W1 workflow's time goes, from its history and the client's clock (medians over up to
 * `PHASE_SAMPLES` workflows spread over the run, ms): the start's commit, waiting for a worker to take the
 * first workflow task, running (first task started to WorkflowCompleted), and the client seeing the
 * result. History times have 1 ms resolution and come from the clocks of the processes that wrote them
 * (the client's may be the database's), so each phase is good to a few ms.
 */
export interface Phases {
  readonly samples: number;
  /** Median latency of the sampled workflows, by the client's wall clock. */
  readonly latencyMs: number;
  readonly startMs: number;
  readonly pickupMs: number;
  readonly runMs: number;
  readonly resultMs: number;
}

const PHASE_SAMPLES = 50;

export async function phasesOf(client: Client, spans: readonly W1Span[]): Promise<Phases> {
  const rows: { latency: number; start: number; pickup: number; run: number; result: number }[] = [];
  const step = Math.max(1, Math.floor(spans.length / PHASE_SAMPLES));
  for (let i = spans.length - 1; i >= 0 && rows.length < PHASE_SAMPLES; i -= step) {
    const span = spans[i]!;
    const { events } = await client.workflow.getHandle(span.workflowId).fetchHistory();
    const at = (type: string): number => Date.parse(events.find((e) => e.type === type)!.time);
    const started = at('WorkflowStarted');
    const firstTask = at('WorkflowTaskStarted');
    const completed = at('WorkflowCompleted');
    rows.push({
      latency: span.returnedAt - span.calledAt,
      start: started - span.calledAt,
      pickup: firstTask - started,
      run: completed - firstTask,
      result: span.returnedAt - completed,
    });
  }
  const median = (pick: (r: (typeof rows)[number]) => number): number =>
    percentile(
      rows.map(pick).sort((a, b) => a - b),
      50,
    );
  return {
    samples: rows.length,
    latencyMs: median((r) => r.latency),
    startMs: median((r) => r.start),
    pickupMs: median((r) => r.pickup),
    runMs: median((r) => r.run),
    resultMs: median((r) => r.result),
  };
}

function label(r: RunResult): string {
  if (r.processes === 1) return '1 worker process (this one, with the client)';
  const wake = r.notifications ? 'LISTEN/NOTIFY wake-ups' : 'no cross-process wake-ups';
  return `${r.processes} worker processes (${wake}, polling every ${r.pollIntervalMs} ms)`;
}

function perWorkflow(x: number | null, count: number): string {
  return x === null ? 'n/a' : fmt(x / count, 1);
}

function counted(r: RunResult): string {
  const c = r.counters;
  let out = `${perWorkflow(c.transactions, r.count)} store transactions per workflow`;
  if (r.clientTransactions !== undefined) {
    const total = r.perProcess.reduce((a, b) => a + b, 0);
    const split = r.perProcess.map((t) => fmt((100 * t) / Math.max(1, total), 0)).join('/');
    out += ` (client ${perWorkflow(r.clientTransactions, r.count)}, workers ${perWorkflow(total, r.count)}, split ${split} %`;
    if (r.idlePolls !== undefined)
      out += `; idle polling alone would be ${perWorkflow(r.idlePolls, r.count)}`;
    out += ')';
  }
  out += `, ${perWorkflow(c.commits, r.count)} commits incl. reads, ${c.retries ?? 'n/a'} re-run after conflicts`;
  // A remembered read saves the locking read of a run this process wrote last; a stale one costs a re-run.
  out += `; ${perWorkflow(c.remembered, r.count)} reads from remembered rows, ${c.stale ?? 'n/a'} found stale`;
  return out;
}

export function printW1(r: RunResult, base: ServerBaseline, one?: RunResult): void {
  const p50 = percentile(r.latencies, 50);
  const p99 = percentile(r.latencies, 99);
  const versus = one
    ? `p50 ${fmt(p50 / percentile(one.latencies, 50), 1)}× the 1-process figure`
    : 'target p50 ≤ 5 ms';
  console.log(
    `W1  ${r.count} workflows × 10 sequential activities, ${label(r)}: ` +
      `p50 ${fmt(p50)} ms (${fmt(p50 / base.commitMs, 1)}× one commit), p99 ${fmt(p99)} ms ` +
      `(${fmt(p99AfterWarmUp(r.inOrder))} ms without the first ${W1_WARM_UP}, the warm-up); ${counted(r)} (${versus})`,
  );
  if (r.phases) {
    const ph = r.phases;
    console.log(
      `    ${ph.samples} of them (p50 ${ph.latencyMs} ms), medians from history: start committed after ${ph.startMs} ms, ` +
        `a worker took it ${ph.pickupMs} ms later, ran ${ph.runMs} ms, the client had the result ${ph.resultMs} ms ` +
        'after it completed',
    );
  }
  // W1 runs one workflow at a time: the run lasted about as long as the latencies add up to.
  printServerCpu(
    r,
    r.latencies.reduce((a, b) => a + b, 0),
  );
}

/** W1 with one process: store time (measured) against a model built from the raw figures. */
export function printW1Breakdown(r: RunResult, base: ServerBaseline): void {
  const p = r.probe;
  if (!p) return;
  const mean = r.latencies.reduce((a, b) => a + b, 0) / r.count;
  const calls = p.transactions + p.reads;
  const busy = p.busyMs / r.count;
  const modelMs =
    (p.transactions * base.commitMs + (p.roundTrips - p.transactions) * base.roundTripMs) / r.count;
  console.log(
    `    one workflow (mean ${fmt(mean)} ms, ${fmt(mean / 10)} ms a step): store busy ${fmt(busy)} ms (${fmt((100 * busy) / mean, 0)}%) ` +
      `in ${fmt(p.transactions / r.count, 1)} transactions + ${fmt(p.reads / r.count, 1)} reads of ${fmt(p.callMs / calls)} ms each, ` +
      `${fmt(p.statements / r.count, 1)} statements (${fmt(p.statements / calls, 1)} a call) in ` +
      `${fmt(p.roundTrips / r.count, 1)} round trips (${fmt(p.roundTrips / calls, 1)} a call); ` +
      `one raw commit per transaction + one round trip per other round trip would be ${fmt(modelMs)} ms; ` +
      `outside the store ${fmt(mean - busy)} ms; this process used ${fmt((r.cpuMs ?? 0) / r.count)} ms CPU per workflow ` +
      `(its statements at the driver's cost of a SELECT 1: ${fmt((p.statements / r.count) * base.roundTripCpuMs)} ms)`,
  );
  const kinds = [...p.byKind].sort((a, b) => b[1] - a[1]);
  console.log(
    `    statements per step (of 10): ${kinds.map(([kind, k]) => `${fmt(k / r.count / 10, 1)} ${kind}`).join(', ')}; ` +
      `the ${fmt(p.transactions / r.count, 1)} transactions alone cost ${fmt((p.transactions / r.count) * base.commitMs)} ms ` +
      'per workflow at one raw commit each',
  );
}

/**
 * The server's CPU per workflow, and the share of the machine it took over `elapsedMs`: on a small
 * machine that runs the server too, the server's CPU caps what the workers can do.
 */
function printServerCpu(r: RunResult, elapsedMs: number): void {
  if (r.serverCpuMs === undefined || elapsedMs <= 0) return;
  const cores = availableParallelism();
  console.log(
    `    the PostgreSQL server used ${fmt(r.serverCpuMs / r.count)} ms CPU per workflow, ` +
      `${fmt(r.serverCpuMs / elapsedMs, 2)} cores (of this machine's ${cores}) on average over the run`,
  );
}

export function printW2(r: RunResult, commitRate: number, one?: RunResult): void {
  const rate = (r.count * 3) / r.seconds;
  const versus = one
    ? `${fmt(rate / ((one.count * 3) / one.seconds), 2)}× the 1-process throughput`
    : 'target ≥ 5,000 steps/s';
  const cpu =
    r.cpuMs === undefined ? '' : `; this process used ${fmt(r.cpuMs / r.count)} ms CPU per workflow`;
  console.log(
    `W2  ${r.count} workflows × 3 activities, ${W2_IN_FLIGHT} in flight, ${label(r)}: ` +
      `${fmt(rate, 0)} steps/s (${fmt(rate / commitRate, 2)}× the raw commit rate); ${counted(r)}${cpu} (${versus})`,
  );
  printServerCpu(r, r.seconds * 1000);
}
