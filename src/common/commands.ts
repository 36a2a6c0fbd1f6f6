import type { FailureInfo } from './errors.js';
import type { ActivityOptionsMs } from './events.js';

/**
 * Commands: what one activation of workflow code asks for. Each becomes an event when the workflow task
 * completes. `seq` numbers are per command kind, counted by the workflow from 1 in the order calls were
 * made; replay matches commands to recorded events by kind and seq.
 */
export type WorkflowCommand =
  | {
      readonly type: 'scheduleActivity';
      readonly seq: number;
      readonly activityType: string;
      readonly taskQueue?: string | undefined;
      readonly input: unknown[];
      readonly options: ActivityOptionsMs;
    }
  | { readonly type: 'requestCancelActivity'; readonly seq: number }
  | { readonly type: 'startTimer'; readonly seq: number; readonly durationMs: number }
  | { readonly type: 'cancelTimer'; readonly seq: number }
  | { readonly type: 'completeWorkflow'; readonly result?: unknown }
  | { readonly type: 'failWorkflow'; readonly failure: FailureInfo }
  | { readonly type: 'cancelWorkflow' };

export type CommandType = WorkflowCommand['type'];

/** Commands that close the run. */
export function isClosingCommand(c: WorkflowCommand): boolean {
  return c.type === 'completeWorkflow' || c.type === 'failWorkflow' || c.type === 'cancelWorkflow';
}

/**
 * Jobs: what one activation hands to workflow code. The activator builds them from the history events
 * of one workflow task, in this fixed order (behaviour version 1):
 *   1. `start` (first activation only)
 *   2. signals, in history order
 *   3. `cancelWorkflow`, if requested
 *   4. resolutions (activities, timers), in history order
 * then all microtasks are drained once.
 */
export type ActivationJob =
  | {
      readonly type: 'start';
      readonly workflowType: string;
      readonly args: unknown[];
      readonly randomnessSeed: string;
    }
  | { readonly type: 'signal'; readonly signalName: string; readonly args: unknown[] }
  | { readonly type: 'cancelWorkflow'; readonly reason?: string | undefined }
  | { readonly type: 'resolveActivity'; readonly seq: number; readonly result: unknown }
  | { readonly type: 'failActivity'; readonly seq: number; readonly failure: FailureInfo }
  | { readonly type: 'fireTimer'; readonly seq: number };

/** Facts about the run that `workflowInfo()` exposes inside the sandbox. */
export interface WorkflowInfo {
  readonly namespace: string;
  readonly workflowId: string;
  readonly runId: string;
  readonly workflowType: string;
  readonly taskQueue: string;
  /** Start time of the run, ms since the epoch. */
  readonly startTime: number;
  readonly historyLength: number;
  readonly continueAsNewSuggested: boolean;
  readonly memo?: Record<string, unknown> | undefined;
  readonly searchAttributes?: Record<string, unknown> | undefined;
}

export interface Activation {
  /** Workflow time for this activation: the start time of the workflow task, ms since the epoch. */
  readonly timestamp: number;
  readonly isReplaying: boolean;
  readonly historyLength: number;
  readonly jobs: readonly ActivationJob[];
}
