import { z } from 'zod';
import { type Duration, parseDuration } from '../common/duration.js';
import { ValidationError } from '../common/errors.js';
import { validateId } from '../common/ids.js';
import { encodePayloadText, toPayloads } from '../common/payload.js';
import type { IdConflictPolicy, IdReusePolicy, StartRequest } from '../runtime/workflow-ops.js';

/** Options of `client.workflow.start` and friends. */
export interface WorkflowStartOptions<Args extends unknown[] = unknown[]> {
  readonly workflowId: string;
  readonly taskQueue: string;
  readonly args?: Args;
  /** Limit on the whole workflow execution; it times out after this. */
  readonly workflowExecutionTimeout?: Duration;
  /** Limit on one run. */
  readonly workflowRunTimeout?: Duration;
  /** How long one workflow task may take before another worker retries it (default 10s). */
  readonly workflowTaskTimeout?: Duration;
  /** How long the workflow is expected to live at most; older runs show as overdue. */
  readonly expectedMaxDuration?: Duration;
  readonly searchAttributes?: Record<string, unknown>;
  readonly memo?: Record<string, unknown>;
  /** What to do when the workflow id has an open run (default 'fail'). */
  readonly idConflictPolicy?: IdConflictPolicy;
  /** What to do when the workflow id has closed runs (default 'allowDuplicate'). */
  readonly idReusePolicy?: IdReusePolicy;
  /** Makes a retried start a no-op: the same request id returns the run it started. */
  readonly requestId?: string;
}

const duration = (field: string) =>
  z
    .unknown()
    .optional()
    .transform((v) => (v === undefined ? undefined : parseDuration(v, field)));

const plainObject = (field: string) =>
  z
    .record(z.string(), z.unknown(), { error: `${field} must be an object of string keys` })
    .optional()
    .transform((v) => {
      if (v !== undefined) encodePayloadText(v, field);
      return v === undefined ? undefined : (JSON.parse(JSON.stringify(v)) as Record<string, unknown>);
    });

const startSchema = z.object({
  workflowId: z
    .unknown()
    .optional()
    .transform((v) => validateId(v, 'workflowId')),
  taskQueue: z
    .unknown()
    .optional()
    .transform((v) => validateId(v, 'taskQueue')),
  args: z
    .unknown()
    .optional()
    .transform((v) => toPayloads((v ?? []) as unknown[], 'args')),
  workflowExecutionTimeout: duration('workflowExecutionTimeout'),
  workflowRunTimeout: duration('workflowRunTimeout'),
  workflowTaskTimeout: duration('workflowTaskTimeout'),
  expectedMaxDuration: duration('expectedMaxDuration'),
  searchAttributes: plainObject('searchAttributes'),
  memo: plainObject('memo'),
  idConflictPolicy: z.enum(['fail', 'useExisting', 'terminateExisting']).default('fail'),
  idReusePolicy: z
    .enum(['allowDuplicate', 'allowDuplicateFailedOnly', 'rejectDuplicate'])
    .default('allowDuplicate'),
  requestId: z
    .unknown()
    .optional()
    .transform((v) => (v === undefined ? undefined : validateId(v, 'requestId'))),
});

/** Default workflow task timeout (ms). */
export const DEFAULT_WORKFLOW_TASK_TIMEOUT_MS = 10_000;

/** Validates start options into a start request; every error is a ValidationError naming the field. */
export function compileStartOptions(namespace: string, workflowType: string, options: unknown): StartRequest {
  if (typeof options !== 'object' || options === null) {
    throw new ValidationError(
      'options',
      'start needs an options object with at least workflowId and taskQueue',
    );
  }
  const parsed = parseWith(startSchema, options);
  const workflowTaskTimeoutMs = parsed.workflowTaskTimeout ?? DEFAULT_WORKFLOW_TASK_TIMEOUT_MS;
  if (workflowTaskTimeoutMs < 1) throw new ValidationError('workflowTaskTimeout', 'must be at least 1 ms');
  return {
    namespace,
    workflowId: parsed.workflowId,
    workflowType: validateId(workflowType, 'workflowType'),
    taskQueue: parsed.taskQueue,
    args: parsed.args,
    workflowExecutionTimeoutMs: parsed.workflowExecutionTimeout,
    workflowRunTimeoutMs: parsed.workflowRunTimeout,
    workflowTaskTimeoutMs,
    expectedMaxDurationMs: parsed.expectedMaxDuration,
    memo: parsed.memo,
    searchAttributes: parsed.searchAttributes,
    idConflictPolicy: parsed.idConflictPolicy,
    idReusePolicy: parsed.idReusePolicy,
    requestId: parsed.requestId,
  };
}

/** Parses with a zod schema, turning the first issue into a ValidationError that names its field. */
export function parseWith<T extends z.ZodType>(schema: T, value: unknown): z.output<T> {
  // Field validators throw ValidationError themselves; zod's own issues (wrong enum value, ...) are mapped here.
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  throw new ValidationError(issue.path.map(String).join('.') || 'options', issue.message);
}
