/**
 * The workload of the chaos tests: start many `pipeline` workflows from a client, wait (bounded) until
 * every run closed, and read every history back. Progress is read with plain SQL on the store's schema,
 * on a small pool that rides out server restarts (a failed probe is retried at the next poll).
 */
import type { Client, HistoryFile } from 'longhaul/client';
import pg from 'pg';
import { sleep } from '../crash/harness.js';
import { transformValue } from '../fixtures/chaos/activities.js';
import { PIPELINE_STEPS } from '../fixtures/chaos/workflows.js';

export interface PipelineSpec {
  readonly workflowId: string;
  readonly seed: number;
  /** The workflow's result: every intermediate value of the pipeline. */
  readonly expected: number[];
}

export function pipelineSpecs(count: number, prefix: string): PipelineSpec[] {
  return Array.from({ length: count }, (_, i) => {
    const seed = (i * 7919 + 17) % 1_000_003;
    const expected: number[] = [];
    let value = seed;
    for (let step = 0; step < PIPELINE_STEPS; step++) {
      value = transformValue(value, step);
      expected.push(value);
    }
    return { workflowId: `${prefix}-${i}`, seed, expected };
  });
}

/** Runs `fn` over `items` with at most `limit` calls in flight. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(lanes);
  return out;
}

export interface StartOutcome {
  /** Workflow ids whose start() returned: acknowledged, so they must complete. */
  readonly acknowledged: string[];
  readonly failed: { readonly workflowId: string; readonly error: string }[];
  readonly elapsedMs: number;
}

/**
 * Starts every pipeline, `concurrency` calls at a time. Each start carries a request id, as a client that
 * retries would, so a start whose commit was in doubt and was re-run by the store is a no-op.
 */
export async function startPipelines(
  client: Client,
  specs: readonly PipelineSpec[],
  options: {
    readonly taskQueue: string;
    readonly logPath: string;
    readonly stepMs: number;
    /** How long attempts after the first sleep (ms). */
    readonly retryStepMs: number;
    readonly workflowTaskTimeoutMs: number;
    readonly concurrency: number;
    /** Called after each start() that returned. */
    readonly onAcknowledged?: (workflowId: string) => void;
  },
): Promise<StartOutcome> {
  const started = Date.now();
  const acknowledged: string[] = [];
  const failed: { workflowId: string; error: string }[] = [];
  await mapLimit(specs, options.concurrency, async (spec) => {
    try {
      await client.workflow.start('pipeline', {
        workflowId: spec.workflowId,
        taskQueue: options.taskQueue,
        args: [options.logPath, spec.seed, options.stepMs, options.retryStepMs],
        workflowTaskTimeout: options.workflowTaskTimeoutMs,
        requestId: `start-${spec.workflowId}`,
      });
      acknowledged.push(spec.workflowId);
      options.onAcknowledged?.(spec.workflowId);
    } catch (err) {
      failed.push({ workflowId: spec.workflowId, error: String(err) });
    }
  });
  return { acknowledged, failed, elapsedMs: Date.now() - started };
}

/** Reads every history through the client, `concurrency` at a time. */
export async function fetchHistories(
  client: Client,
  workflowIds: readonly string[],
  concurrency = 16,
): Promise<Map<string, HistoryFile>> {
  const out = new Map<string, HistoryFile>();
  await mapLimit(workflowIds, concurrency, async (id) => {
    out.set(id, await client.workflow.getHandle(id).fetchHistory());
  });
  return out;
}

/** A small pool on the store's database for progress probes and inspection. */
export class StoreProbe {
  readonly #pool: pg.Pool;

  constructor(
    connectionString: string,
    readonly schema: string,
  ) {
    if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`bad schema name '${schema}'`);
    const url = new URL(connectionString);
    url.search = '';
    this.#pool = new pg.Pool({ connectionString: url.href, max: 2, connectionTimeoutMillis: 3000 });
    // A pooled connection that dies while idle (server restart) is dropped; nothing else to do.
    this.#pool.on('error', () => undefined);
  }

  query<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> {
    return this.#pool.query<R>(text.replaceAll('$schema', `"${this.schema}"`), values).then((r) => r.rows);
  }

  /** Runs in the schema and how many of them are still running. */
  async progress(): Promise<{ total: number; running: number }> {
    const [row] = await this.query<{ total: number; running: number }>(
      `SELECT count(*)::int AS total, (count(*) FILTER (WHERE status = 'running'))::int AS running FROM $schema.runs`,
    );
    return row!;
  }

  /**
   * Waits until at least `total` runs exist and none is running; polls every `intervalMs`, tolerating
   * failed probes (the server may be restarting). Throws with the last progress after `timeoutMs`.
   */
  async waitAllClosed(total: number, timeoutMs: number, intervalMs = 300): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no probe succeeded';
    for (;;) {
      try {
        const p = await this.progress();
        last = `${p.total} runs, ${p.running} running`;
        if (p.total >= total && p.running === 0) return;
      } catch (err) {
        last = `probe failed: ${String(err)}`;
      }
      if (Date.now() >= deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${total} runs to close (${last})`);
      }
      await sleep(intervalMs);
    }
  }

  end(): Promise<void> {
    return this.#pool.end();
  }
}
