import { fileURLToPath } from 'node:url';
import type { ActivationJob, WorkflowInfo } from '../../../src/common/commands.js';

/** Absolute path of a workflows fixture under test/fixtures/workflows. */
export function fixturePath(name: string): string {
  return fileURLToPath(new URL(`../../fixtures/workflows/${name}`, import.meta.url));
}

export function runInfo(workflowType: string, runId = 'run-1', startTime = 1_700_000_000_000): WorkflowInfo {
  return {
    namespace: 'default',
    workflowId: `wf-${runId}`,
    runId,
    workflowType,
    taskQueue: 'test-queue',
    startTime,
    historyLength: 1,
    continueAsNewSuggested: false,
  };
}

export function startJob(workflowType: string, args: unknown[] = [], seed = 'seed-1'): ActivationJob {
  return { type: 'start', workflowType, args, randomnessSeed: seed };
}
