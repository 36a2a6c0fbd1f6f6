import { randomUUID } from 'node:crypto';
import type { Clock } from '../common/clock.js';
import type { HistoryEvent, NewEvent } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { linkStartedEventIds } from '../engine/activity-attempt.js';
import type { WorkflowTaskRetry } from '../engine/retry-policy.js';
import { planDelivery } from '../engine/workflow-task.js';
import type { ReadOptions, RunPatch, RunRecord, Store, StoreTx } from '../store/store.js';
import type { LocalWorkers } from './local-workers.js';
import type { Notifier, WakeChannel } from './notifier.js';

/** For `Store.read` callbacks that read once: no snapshot to hold (two round trips fewer on PostgreSQL). */
export const SINGLE_READ: ReadOptions = { snapshot: false };

/** Everything the runtime's operations share; compiled once, passed explicitly. */
export interface RuntimeContext {
  readonly store: Store;
  readonly clock: Clock;
  readonly notifier: Notifier;
  readonly logger: Logger;
  readonly workflowTaskRetry: WorkflowTaskRetry;
  readonly newId: () => string;
  /** Workers of this process, for eager starts. */
  readonly localWorkers: LocalWorkers;
  /** Counters for benchmarks and metrics: store transactions and reads issued by this runtime. */
  readonly stats: RuntimeStats;
}

export interface RuntimeStats {
  transactions: number;
}

export const defaultNewId = (): string => randomUUID();

/**
 * Collects the wake-ups a transaction produces; they are sent only after it commits (a wake-up for work
 * that was rolled back would send a poller looking for nothing, harmless but wasteful).
 */
export class PendingWakes {
  readonly #wakes: WakeChannel[] = [];
  add(c: WakeChannel): void {
    this.#wakes.push(c);
  }
  /** Drops wake-ups of one kind (their work was handed over directly). */
  drop(kind: WakeChannel['kind']): void {
    for (let i = this.#wakes.length - 1; i >= 0; i--)
      if (this.#wakes[i]!.kind === kind) this.#wakes.splice(i, 1);
  }
  send(notifier: Notifier): void {
    for (const c of this.#wakes) notifier.notify(c);
  }
}

/** Runs `fn` in a store transaction and sends its wake-ups after commit. */
export async function inTransaction<T>(
  ctx: RuntimeContext,
  fn: (tx: StoreTx, wakes: PendingWakes) => Promise<T>,
): Promise<T> {
  let wakes = new PendingWakes();
  ctx.stats.transactions++;
  const result = await ctx.store.transaction(async (tx) => {
    wakes = new PendingWakes(); // a retried transaction starts with no wake-ups
    return fn(tx, wakes);
  });
  wakes.send(ctx.notifier);
  return result;
}

/** Appends events at `firstEventId`, linking activity results to their ActivityStarted. */
export async function appendEvents(
  tx: StoreTx,
  runId: string,
  firstEventId: number,
  events: readonly NewEvent[],
): Promise<HistoryEvent[]> {
  if (events.length === 0) return [];
  const linked = linkStartedEventIds(events, firstEventId);
  await tx.appendEvents(runId, firstEventId, linked);
  return linked.map((e, i) => ({ ...e, eventId: firstEventId + i }) as HistoryEvent);
}

/** Appended events as a store returns them: attributes are kept as JSON, so they go through JSON. */
export function asStored(events: readonly HistoryEvent[]): HistoryEvent[] {
  return events.map((e) => ({ ...e, attributes: JSON.parse(JSON.stringify(e.attributes)) }) as HistoryEvent);
}

/**
 * Delivers events from outside the workflow task to a running run: buffered while a task is in flight,
 * else appended with a new workflow task scheduled if none is. Returns the run as updated and the
 * events appended.
 */
export async function deliver(
  tx: StoreTx,
  wakes: PendingWakes,
  run: RunRecord,
  incoming: readonly NewEvent[],
  now: number,
): Promise<{ readonly run: RunRecord; readonly appended: HistoryEvent[] }> {
  const plan = planDelivery(run, incoming, now);
  for (const e of plan.buffer) await tx.addBuffered(run.runId, e);
  const appended = await appendEvents(tx, run.runId, run.nextEventId, plan.events);
  const updated = await patchRun(tx, run, plan.patch);
  if (updated.wftPhase === 'scheduled' && run.wftPhase !== 'scheduled') {
    wakes.add({ kind: 'workflowTask', namespace: run.namespace, taskQueue: run.taskQueue });
  }
  return { run: updated, appended };
}

export async function patchRun(tx: StoreTx, run: RunRecord, patch: RunPatch): Promise<RunRecord> {
  if (Object.keys(patch).length === 0) return run;
  await tx.updateRun(run.runId, patch);
  return { ...run, ...patch };
}

/** What a claim saw beside the work it took: due rows another transaction held (StoreTx.lockedDue). */
export interface ClaimSeen {
  lockedDue: number;
}
