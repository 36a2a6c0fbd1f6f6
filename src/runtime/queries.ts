import {
  type FailureInfo,
  fromFailureInfo,
  QueryFailedError,
  QueryNotRegisteredError,
  QueryTimeoutError,
} from '../common/errors.js';
import type { QueryRecord } from '../store/store.js';
import { type ClaimSeen, inTransaction, type RuntimeContext, SINGLE_READ } from './context.js';
import { waitForWake } from './notifier.js';
import { requireRun } from './workflow-ops.js';

/** How long a claimed query may take before another worker may claim it. */
const QUERY_LEASE_MS = 10_000;

/**
 * Runs a query through the store: the query is written as a pending row, a worker polling the run's
 * task queue claims it, evaluates it on the run's state including every recorded or buffered event
 * (read-your-writes), and writes the answer. Nothing reaches history. Fails with QueryTimeoutError when
 * no worker answers within `timeoutMs`, and at once with the reason when the run's task is failing.
 */
export async function queryWorkflow(
  ctx: RuntimeContext,
  namespace: string,
  workflowId: string,
  runId: string | undefined,
  queryType: string,
  args: unknown[],
  timeoutMs: number,
): Promise<unknown> {
  const id = ctx.newId();
  const run = await inTransaction(ctx, async (tx, wakes) => {
    const run = await requireRun(tx, namespace, workflowId, runId);
    if (run.status === 'running' && run.wftFailure) {
      throw new QueryFailedError(
        `query '${queryType}' cannot be answered: the workflow task of ${workflowId} is failing (${run.wftFailure.type}: ${run.wftFailure.message})`,
        fromFailureInfo(run.wftFailure),
      );
    }
    await tx.insertQuery({
      id,
      namespace,
      runId: run.runId,
      taskQueue: run.taskQueue,
      queryType,
      args,
      phase: 'pending',
      createdAt: ctx.clock.now(),
      leaseExpiresAt: 0,
    });
    wakes.add({ kind: 'query', namespace, taskQueue: run.taskQueue });
    return run;
  });
  const deadline = ctx.clock.now() + timeoutMs;
  let pollMs = 2;
  try {
    for (;;) {
      const q = await ctx.store.read((tx) => tx.getQuery(id), SINGLE_READ);
      if (q?.phase === 'answered') {
        if (q.failure) throw fromQueryFailure(q.failure);
        return q.result;
      }
      const left = deadline - ctx.clock.now();
      if (left <= 0) {
        throw new QueryTimeoutError(
          `no worker answered query '${queryType}' for workflow ${workflowId} within ${timeoutMs} ms; is a worker polling task queue '${run.taskQueue}' running?`,
        );
      }
      await waitForWake(ctx.notifier, [{ kind: 'queryAnswered', queryId: id }], Math.min(pollMs, left));
      pollMs = Math.min(pollMs * 2, 100);
    }
  } finally {
    await inTransaction(ctx, (tx) => tx.deleteQuery(id)).catch(() => undefined);
  }
}

/** Rebuilds a worker's answer failure; an unknown query type keeps its own error class. */
function fromQueryFailure(f: FailureInfo): Error {
  if (f.type === 'QueryNotRegisteredError') {
    const [queryType, known] = (f.details ?? []) as [string, string[]];
    return new QueryNotRegisteredError(queryType ?? 'unknown', known ?? []);
  }
  return new QueryFailedError(`query failed: ${f.message}`, fromFailureInfo(f));
}

export async function claimQueries(
  ctx: RuntimeContext,
  namespace: string,
  taskQueue: string,
  limit: number,
  seen?: ClaimSeen,
): Promise<QueryRecord[]> {
  return inTransaction(ctx, async (tx) => {
    const now = ctx.clock.now();
    const found = await tx.findClaimableQueries(namespace, taskQueue, now, limit);
    if (seen) seen.lockedDue = tx.lockedDue();
    for (const q of found)
      await tx.updateQuery(q.id, { phase: 'claimed', leaseExpiresAt: now + QUERY_LEASE_MS });
    return found;
  });
}

export async function answerQuery(
  ctx: RuntimeContext,
  id: string,
  answer: { result?: unknown; failure?: FailureInfo },
): Promise<void> {
  await inTransaction(ctx, async (tx, wakes) => {
    const q = await tx.getQuery(id);
    if (!q) return; // the caller gave up
    await tx.updateQuery(id, { phase: 'answered', result: answer.result, failure: answer.failure ?? null });
    wakes.add({ kind: 'queryAnswered', queryId: id });
  });
}
