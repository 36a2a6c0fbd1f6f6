import { z } from 'zod';
import { ValidationError } from '../common/errors.js';
import type { EventType, HistoryEvent, HistoryFile } from '../common/events.js';
import { bundleWorkflows } from './bundler.js';
import { WorkflowSandbox } from './sandbox.js';
import { WorkflowRunState } from './workflow-replayer.js';

const historyFileSchema = z.object({
  formatVersion: z.literal(1, { error: 'only history formatVersion 1 is supported' }),
  workflowId: z.string(),
  runId: z.string(),
  events: z
    .array(
      z.object({
        eventId: z.number().int().positive(),
        type: z.string(),
        time: z.string().refine((t) => !Number.isNaN(Date.parse(t)), 'must be an ISO 8601 time'),
        attributes: z.record(z.string(), z.unknown()),
      }),
    )
    .min(1, 'a history has at least its WorkflowStarted event'),
});

/** Validates a history file from outside (a saved fixture, the CLI) and converts it to events. */
export function parseHistoryFile(input: unknown): HistoryEvent[] {
  const parsed = historyFileSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ValidationError(`history.${issue.path.map(String).join('.')}`, issue.message);
  }
  const events = parsed.data.events;
  events.forEach((e, i) => {
    if (e.eventId !== i + 1) {
      throw new ValidationError(
        `history.events.${i}.eventId`,
        `expected ${i + 1} (event ids are gap-free from 1), got ${e.eventId}`,
      );
    }
  });
  return events.map(
    (e) =>
      ({
        eventId: e.eventId,
        type: e.type as EventType,
        time: Date.parse(e.time),
        attributes: e.attributes,
      }) as HistoryEvent,
  );
}

/** Replays a whole history against a workflows module; throws NonDeterminismError on divergence. */
export async function replayHistory(
  workflowsPath: string,
  history: HistoryFile | readonly HistoryEvent[],
): Promise<void> {
  const events = Array.isArray(history) ? (history as readonly HistoryEvent[]) : parseHistoryFile(history);
  const bundle = await bundleWorkflows(workflowsPath);
  const sandbox = WorkflowSandbox.create(bundle);
  try {
    WorkflowRunState.replayHistory(sandbox, events);
  } finally {
    sandbox.close();
  }
}
