import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock } from '../../src/common/clock.js';
import { Runtime } from '../../src/runtime/runtime.js';
import type { StartRequest } from '../../src/runtime/workflow-ops.js';

/** A manual clock: tests move time explicitly. */
export class ManualClock implements Clock {
  constructor(public time = Date.UTC(2026, 0, 1)) {}
  now(): number {
    return this.time;
  }
  advance(ms: number): void {
    this.time += ms;
  }
}

export async function openRuntime(): Promise<{
  runtime: Runtime;
  clock: ManualClock;
  close(): Promise<void>;
}> {
  const dir = mkdtempSync(join(tmpdir(), 'longhaul-runtime-'));
  const clock = new ManualClock();
  const runtime = await Runtime.acquire(`sqlite:${join(dir, 'db.sqlite')}`, { mode: 'node', clock });
  return {
    runtime,
    clock,
    async close() {
      await runtime.release();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function startRequest(overrides: Partial<StartRequest> = {}): StartRequest {
  return {
    namespace: 'default',
    workflowId: 'wf-1',
    workflowType: 'order',
    taskQueue: 'q',
    args: [],
    workflowTaskTimeoutMs: 10_000,
    idConflictPolicy: 'fail',
    idReusePolicy: 'allowDuplicate',
    ...overrides,
  };
}
