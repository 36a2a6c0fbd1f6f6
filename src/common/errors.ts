/**
 * Errors and failures shared by every realm (host and workflow sandbox).
 *
 * Classes are recognised by a symbol brand rather than bare `instanceof`, because workflow code runs in
 * its own `node:vm` realm with its own copy of these classes. `Symbol.for` keys live in the isolate-wide
 * registry, so a brand set in one realm is visible in every other.
 */

/** Serialised form of any failure; what history and the store hold. */
export interface FailureInfo {
  /** Which class this failure was: decides how `fromFailureInfo` rebuilds it. */
  readonly kind: 'application' | 'activity' | 'timeout' | 'cancelled' | 'terminated' | 'childWorkflow';
  readonly type: string;
  readonly message: string;
  readonly stack?: string | undefined;
  readonly nonRetryable?: boolean | undefined;
  readonly details?: readonly unknown[] | undefined;
  readonly cause?: FailureInfo | undefined;
  readonly activityType?: string | undefined;
  readonly activityId?: string | undefined;
  readonly retryState?: RetryState | undefined;
  readonly timeoutType?: TimeoutType | undefined;
  readonly lastHeartbeatDetails?: unknown;
}

export type RetryState =
  | 'maximumAttemptsReached'
  | 'nonRetryableFailure'
  | 'timeout'
  | 'cancelRequested'
  | 'inProgress';

export type TimeoutType = 'scheduleToStart' | 'startToClose' | 'heartbeat' | 'scheduleToClose';

function brand(name: string): symbol {
  return Symbol.for(`longhaul.${name}`);
}

/** Makes `x instanceof Class` true for any object carrying the brand, whatever realm made it. */
function branded<T extends abstract new (...args: never[]) => object>(cls: T, name: string): void {
  const sym = brand(name);
  Object.defineProperty(cls.prototype, sym, { value: true, enumerable: false });
  Object.defineProperty(cls, Symbol.hasInstance, {
    value: (x: unknown) =>
      typeof x === 'object' && x !== null && (x as Record<symbol, unknown>)[sym] === true,
  });
}

/** Base of every error longhaul throws. `code` is a stable string from one registry (see README). */
export class LonghaulError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}
branded(LonghaulError, 'LonghaulError');

/** Bad input at a boundary: names the field and what to do. Nothing was written. */
export class ValidationError extends LonghaulError {
  readonly field: string;
  constructor(field: string, message: string) {
    super('VALIDATION', `${field}: ${message}`);
    this.field = field;
  }
}
branded(ValidationError, 'ValidationError');

/** No such workflow, or (with `reason`) the addressed run is closed and cannot take the request. */
export class WorkflowNotFoundError extends LonghaulError {
  constructor(
    readonly workflowId: string,
    readonly runId?: string,
    reason?: string,
  ) {
    super(
      'WORKFLOW_NOT_FOUND',
      `workflow ${workflowId}${runId ? ` run ${runId}` : ''} ${reason ?? 'not found'}`,
    );
  }
}
branded(WorkflowNotFoundError, 'WorkflowNotFoundError');

export class WorkflowExecutionAlreadyStartedError extends LonghaulError {
  constructor(
    readonly workflowId: string,
    readonly runId: string,
  ) {
    super(
      'WORKFLOW_ALREADY_STARTED',
      `workflow ${workflowId} already has an open run (${runId}); pass idConflictPolicy 'useExisting' or 'terminateExisting' to change this`,
    );
  }
}
branded(WorkflowExecutionAlreadyStartedError, 'WorkflowExecutionAlreadyStartedError');

export class QueryNotRegisteredError extends LonghaulError {
  constructor(
    readonly queryType: string,
    readonly knownQueries: readonly string[],
  ) {
    super(
      'QUERY_NOT_REGISTERED',
      `query '${queryType}' is not registered by the workflow (known: ${knownQueries.join(', ') || 'none'})`,
    );
  }
}
branded(QueryNotRegisteredError, 'QueryNotRegisteredError');

export class QueryTimeoutError extends LonghaulError {
  constructor(message: string) {
    super('QUERY_TIMEOUT', message);
  }
}
branded(QueryTimeoutError, 'QueryTimeoutError');

/** The query reached a run whose workflow task keeps failing; carries that failure. */
export class QueryFailedError extends LonghaulError {
  constructor(message: string, cause?: unknown) {
    super('QUERY_FAILED', message, { cause });
  }
}
branded(QueryFailedError, 'QueryFailedError');

/** The run closed unsuccessfully; `cause` holds the failure chain. */
export class WorkflowFailedError extends LonghaulError {
  constructor(
    message: string,
    cause: unknown,
    readonly status: string,
  ) {
    super('WORKFLOW_FAILED', message, { cause });
  }
}
branded(WorkflowFailedError, 'WorkflowFailedError');

/** A result, heartbeat or workflow-task completion carried a token that is no longer current. */
export class StaleTokenError extends LonghaulError {
  constructor(message: string) {
    super('STALE_TOKEN', message);
  }
}
branded(StaleTokenError, 'StaleTokenError');

/** Replayed code produced different commands than history recorded. */
export class NonDeterminismError extends LonghaulError {
  constructor(message: string) {
    super('NON_DETERMINISM', message);
  }
}
branded(NonDeterminismError, 'NonDeterminismError');

/** Workflow code did not yield within the deadlock bound. */
export class DeadlockError extends LonghaulError {
  constructor(message: string) {
    super('DEADLOCK', message);
  }
}
branded(DeadlockError, 'DeadlockError');

/** The workflows bundle could not be built (forbidden import, syntax error, missing file). */
export class BundleError extends LonghaulError {
  constructor(message: string) {
    super('BUNDLE', message);
  }
}
branded(BundleError, 'BundleError');

/** The store is unreachable, has a newer schema, or a transient fault outlasted the retry budget. */
export class StoreError extends LonghaulError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
branded(StoreError, 'StoreError');

// ---- Failures: what workflow and activity code throw and see ----

/** Base of the failures that travel through history. */
export class LonghaulFailure extends Error {
  /** The failure as it came from the store, if it was rebuilt from one. */
  failure?: FailureInfo;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}
branded(LonghaulFailure, 'LonghaulFailure');

export interface ApplicationFailureOptions {
  readonly type?: string;
  readonly message?: string;
  readonly details?: readonly unknown[];
  readonly nonRetryable?: boolean;
  readonly cause?: unknown;
}

/**
 * The failure user code throws on purpose. From workflow code it fails the workflow (any other throw
 * only fails the workflow task); from activity code it fails the attempt, retried unless `nonRetryable`
 * or its `type` is listed in `nonRetryableErrorTypes`.
 */
export class ApplicationFailure extends LonghaulFailure {
  readonly type: string;
  readonly details: readonly unknown[];
  readonly nonRetryable: boolean;
  constructor(
    message: string,
    type: string,
    nonRetryable: boolean,
    details: readonly unknown[] = [],
    cause?: unknown,
  ) {
    super(message, { cause });
    this.type = type;
    this.nonRetryable = nonRetryable;
    this.details = details;
  }
  static create(options: ApplicationFailureOptions = {}): ApplicationFailure {
    return new ApplicationFailure(
      options.message ?? options.type ?? 'application failure',
      options.type ?? 'Error',
      options.nonRetryable ?? false,
      options.details ?? [],
      options.cause,
    );
  }
  static retryable(message: string, type = 'Error', ...details: unknown[]): ApplicationFailure {
    return new ApplicationFailure(message, type, false, details);
  }
  static nonRetryable(message: string, type = 'Error', ...details: unknown[]): ApplicationFailure {
    return new ApplicationFailure(message, type, true, details);
  }
}
branded(ApplicationFailure, 'ApplicationFailure');

/** What a workflow sees when an activity scheduling ends in failure; `cause` says why. */
export class ActivityFailure extends LonghaulFailure {
  constructor(
    message: string,
    readonly activityType: string,
    readonly activityId: string,
    readonly retryState: RetryState,
    cause?: unknown,
  ) {
    super(message, { cause });
  }
}
branded(ActivityFailure, 'ActivityFailure');

export class TimeoutFailure extends LonghaulFailure {
  constructor(
    message: string,
    readonly timeoutType: TimeoutType,
    readonly lastHeartbeatDetails?: unknown,
  ) {
    super(message);
  }
}
branded(TimeoutFailure, 'TimeoutFailure');

/** Cancellation was requested and honoured. */
export class CancelledFailure extends LonghaulFailure {
  constructor(
    message = 'cancelled',
    readonly details: readonly unknown[] = [],
  ) {
    super(message);
  }
}
branded(CancelledFailure, 'CancelledFailure');

export class TerminatedFailure extends LonghaulFailure {}
branded(TerminatedFailure, 'TerminatedFailure');

/** True when `err` is a cancellation, directly or as the cause of an activity failure. */
export function isCancellation(err: unknown): boolean {
  if (err instanceof CancelledFailure) return true;
  if (err instanceof ActivityFailure) return err.cause instanceof CancelledFailure;
  return false;
}

/**
 * The failure type of any thrown value: an ApplicationFailure's `type`, else the error's `name`, or its
 * constructor's name when `name` is the generic 'Error' (so `class CardDeclined extends Error {}` is
 * `CardDeclined`).
 */
export function errorType(err: unknown): string {
  if (err instanceof ApplicationFailure) return err.type;
  if (err instanceof Error) {
    if (err.name && err.name !== 'Error') return err.name;
    const ctor = (err as { constructor?: { name?: string } }).constructor?.name;
    return ctor || 'Error';
  }
  return typeof err === 'object' && err !== null ? 'Error' : typeof err;
}

/** Coerces any thrown value to an Error (strings, objects, undefined all become Errors). */
export function coerceError(err: unknown): Error {
  if (err instanceof Error) return err;
  if (typeof err === 'object' && err !== null && 'message' in err) {
    return new Error(String((err as { message: unknown }).message));
  }
  return new Error(typeof err === 'string' ? err : `non-error thrown: ${safeString(err)}`);
}

function safeString(x: unknown): string {
  try {
    return JSON.stringify(x) ?? String(x);
  } catch {
    return String(x);
  }
}

function toJsonSafe(details: readonly unknown[] | undefined): readonly unknown[] | undefined {
  if (!details || details.length === 0) return undefined;
  try {
    return JSON.parse(JSON.stringify(details)) as unknown[];
  } catch {
    return details.map((d) => safeString(d));
  }
}

/** Serialises any thrown value, keeping the cause chain. */
export function toFailureInfo(err: unknown, depth = 0): FailureInfo {
  if (err instanceof LonghaulFailure && err.failure && depth === 0 && !(err instanceof ActivityFailure)) {
    return err.failure;
  }
  const e = coerceError(err);
  const cause = depth < 8 && e.cause !== undefined ? toFailureInfo(e.cause, depth + 1) : undefined;
  const base = { message: e.message, stack: e.stack, cause };
  if (e instanceof ApplicationFailure) {
    return {
      ...base,
      kind: 'application',
      type: e.type,
      nonRetryable: e.nonRetryable,
      details: toJsonSafe(e.details),
    };
  }
  if (e instanceof ActivityFailure) {
    return {
      ...base,
      kind: 'activity',
      type: 'ActivityFailure',
      activityType: e.activityType,
      activityId: e.activityId,
      retryState: e.retryState,
    };
  }
  if (e instanceof TimeoutFailure) {
    return {
      ...base,
      kind: 'timeout',
      type: 'TimeoutFailure',
      timeoutType: e.timeoutType,
      lastHeartbeatDetails: e.lastHeartbeatDetails,
    };
  }
  if (e instanceof CancelledFailure) {
    return { ...base, kind: 'cancelled', type: 'CancelledFailure', details: toJsonSafe(e.details) };
  }
  if (e instanceof TerminatedFailure) return { ...base, kind: 'terminated', type: 'TerminatedFailure' };
  return { ...base, kind: 'application', type: errorType(e), nonRetryable: false };
}

/** Rebuilds the failure classes (of the calling realm) from their serialised form. */
export function fromFailureInfo(info: FailureInfo): LonghaulFailure {
  const cause = info.cause ? fromFailureInfo(info.cause) : undefined;
  let f: LonghaulFailure;
  switch (info.kind) {
    case 'activity':
      f = new ActivityFailure(
        info.message,
        info.activityType ?? 'unknown',
        info.activityId ?? '',
        info.retryState ?? 'inProgress',
        cause,
      );
      break;
    case 'timeout':
      f = new TimeoutFailure(info.message, info.timeoutType ?? 'startToClose', info.lastHeartbeatDetails);
      break;
    case 'cancelled':
      f = new CancelledFailure(info.message, info.details ?? []);
      break;
    case 'terminated':
      f = new TerminatedFailure(info.message);
      break;
    default:
      f = new ApplicationFailure(
        info.message,
        info.type,
        info.nonRetryable ?? false,
        info.details ?? [],
        cause,
      );
  }
  if (info.stack) f.stack = info.stack;
  f.failure = info;
  return f;
}
