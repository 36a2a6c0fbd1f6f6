import type { FailureInfo } from '../common/errors.js';
import type { ActivityOptionsMs, HistoryEvent, NewEvent } from '../common/events.js';

/**
 * The Store contract. Adapters persist and query; they make no decisions (the runtime applies the
 * engine's rules inside `transaction`). Every adapter must pass `store/conformance.ts` unchanged.
 *
 * Concurrency model: `transaction` runs its callback with exclusive write access to the rows it touches
 * and commits atomically (SQLite: callbacks run one at a time in call order, several sharing one
 * `BEGIN IMMEDIATE … COMMIT` (group commit) each in its own savepoint, and none is acknowledged before
 * that commit; PostgreSQL:
 * row locks, `FOR UPDATE SKIP LOCKED` in the `find*` claim queries). A transient fault (SQLITE_BUSY,
 * serialization failure, lost connection) before commit re-runs the callback, so callbacks must have no
 * side effects outside the transaction. Times are milliseconds since the epoch, passed in by the caller
 * from the one injected clock.
 */
export interface Store {
  readonly capabilities: StoreCapabilities;
  /** A readable description for logs, e.g. the resolved file path. Never contains a password. */
  readonly description: string;
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  /**
   * Read-only access; may see a snapshot that excludes transactions committing concurrently. By default
   * every statement of the callback sees one consistent snapshot; see ReadOptions.
   */
  read<T>(fn: (tx: StoreReader) => Promise<T>, options?: ReadOptions): Promise<T>;
  close(): Promise<void>;
  /**
   * Wake-ups between processes, where the store has them (PostgreSQL: LISTEN/NOTIFY). Without them,
   * other processes find work by polling. Never needed for correctness, only for latency.
   */
  readonly notifications?: StoreNotifications;
  /**
   * The store's own clock (ms since the epoch), where it has one that all nodes share (PostgreSQL's
   * `clock_timestamp()`): the runtime judges due times and leases by it instead of the node's clock.
   */
  currentTime?(): Promise<number>;
  /**
   * A number that changes whenever a connection this store does not own commits to its database: another
   * process, or another Store on the same database. While it stays the same, every commit this process
   * can see went through this store (so its runtime announced what the commit woke). Absent where the
   * store cannot tell cheaply. Synchronous and cheap: a waiter polls it instead of reading.
   */
  externalChanges?(): number;
}

/**
 * Best-effort wake-ups across processes. `publish` is called after the transactions that produced the
 * work committed; implementations coalesce and send them off the committing transaction's path. A topic
 * is an opaque string of at most 200 characters.
 */
export interface StoreNotifications {
  publish(topics: readonly string[]): void;
  /** Calls `listener` with every topic published by other processes (and possibly this one). */
  subscribe(listener: (topic: string) => void): () => void;
}

export interface ReadOptions {
  /**
   * `false`: each statement sees the data committed when it runs, on its own, instead of one snapshot
   * for the whole callback. Cheaper where a snapshot costs round trips (PostgreSQL: no `BEGIN`/`COMMIT`
   * around a single statement). For callbacks that read once, or whose reads need not agree (a closed
   * run's last event, say). Default `true`.
   */
  readonly snapshot?: boolean;
}

export interface StoreCapabilities {
  /** Other processes may open the same store (so in-process wake-ups are not enough). */
  readonly sharedAcrossProcesses: boolean;
}

export type RunStatus = 'running' | 'completed' | 'failed' | 'canceled' | 'terminated' | 'timedOut';

export type WorkflowTaskPhase = 'idle' | 'scheduled' | 'started';

/** One run: identity, lifecycle, and the mutable state of its current workflow task. */
export interface RunRecord {
  readonly namespace: string;
  readonly workflowId: string;
  readonly runId: string;
  readonly workflowType: string;
  readonly taskQueue: string;
  readonly status: RunStatus;
  /** Id the next appended history event gets; the compare-and-set guard for hot-path commits. */
  readonly nextEventId: number;
  readonly startTime: number;
  readonly closeTime: number | null;
  /** Request id of the start call, so a retried start is a no-op. */
  readonly requestId: string | null;
  readonly workflowTaskTimeoutMs: number;
  readonly cancelRequested: boolean;
  readonly memo: Record<string, unknown> | null;
  readonly searchAttributes: Record<string, unknown> | null;
  /** Event id of the last WorkflowTaskCompleted (0 before the first): where the next activation starts. */
  readonly lastCompletedTaskEventId: number;
  // ---- current workflow task ----
  readonly wftPhase: WorkflowTaskPhase;
  /** 1 for a task recorded in history; 2+ for retries of a failing task, which are not recorded. */
  readonly wftAttempt: number;
  /** Event ids of the recorded WorkflowTaskScheduled/Started; 0 while not recorded (retries). */
  readonly wftScheduledEventId: number;
  readonly wftStartedEventId: number;
  /** When the scheduled task may be claimed (retries back off). */
  readonly wftVisibleAt: number;
  /** Workflow time of the started task. */
  readonly wftStartedTime: number;
  readonly wftLeaseOwner: string | null;
  readonly wftLeaseExpiresAt: number;
  /** Fencing token: incremented on every claim; a result must carry the current value. */
  readonly wftToken: number;
  /** Why the current task keeps failing (null when it is not failing). */
  readonly wftFailure: FailureInfo | null;
  /**
   * The worker that holds the run in its cache (sticky routing): it may claim the run's next task at
   * once; other workers only once the task has waited past their sticky fallback. Null: anyone.
   */
  readonly stickyWorker: string | null;
}

export type RunPatch = Partial<Omit<RunRecord, 'namespace' | 'workflowId' | 'runId' | 'startTime'>>;

export type ActivityPhase = 'scheduled' | 'started';

/** A pending activity scheduling: the queue entry, its retry state and its lease. */
export interface ActivityRecord {
  readonly namespace: string;
  readonly workflowId: string;
  readonly runId: string;
  readonly scheduledEventId: number;
  readonly activityId: string;
  readonly activityType: string;
  readonly taskQueue: string;
  readonly input: unknown[];
  readonly options: ActivityOptionsMs;
  readonly phase: ActivityPhase;
  /** 1-based attempt number of the current (or next) attempt. */
  readonly attempt: number;
  /** When the scheduling was recorded (schedule-to-close counts from here). */
  readonly scheduledTime: number;
  /** When the current attempt became claimable (schedule-to-start counts from here). */
  readonly visibleAt: number;
  readonly startedTime: number | null;
  readonly lastHeartbeatTime: number | null;
  readonly heartbeatDetails: unknown;
  readonly lastFailure: FailureInfo | null;
  readonly cancelRequested: boolean;
  readonly leaseOwner: string | null;
  /** Fencing token: incremented on every claim. */
  readonly token: number;
  /** Earliest time a timeout of this scheduling can fire; the sweeper looks here. */
  readonly deadline: number | null;
}

export type ActivityPatch = Partial<
  Omit<ActivityRecord, 'namespace' | 'workflowId' | 'runId' | 'scheduledEventId' | 'activityId'>
>;

export type TimerKind = 'user' | 'workflowExecutionTimeout' | 'workflowRunTimeout';

export interface TimerRecord {
  readonly namespace: string;
  readonly runId: string;
  /** Unique per run: the user timer id, or the kind for run-level timeouts. */
  readonly timerKey: string;
  readonly kind: TimerKind;
  readonly fireAt: number;
  /** Event id of TimerStarted for user timers, else 0. */
  readonly startedEventId: number;
}

/** An event waiting in a run's durable buffer while a workflow task is in flight. */
export interface BufferedEvent {
  readonly seq: number;
  readonly event: NewEvent;
}

export interface RequestRecord {
  readonly namespace: string;
  readonly requestId: string;
  readonly kind: 'start' | 'signal' | 'cancel' | 'terminate';
  readonly runId: string;
  readonly createdAt: number;
}

export type QueryPhase = 'pending' | 'claimed' | 'answered';

export interface QueryRecord {
  readonly id: string;
  readonly namespace: string;
  readonly runId: string;
  readonly taskQueue: string;
  readonly queryType: string;
  readonly args: unknown[];
  readonly phase: QueryPhase;
  readonly createdAt: number;
  readonly leaseExpiresAt: number;
  readonly result?: unknown;
  readonly failure?: FailureInfo | null;
}

export interface RunWithActivities {
  readonly run: RunRecord | undefined;
  readonly activities: ActivityRecord[];
}

export interface StoreReader {
  getRun(runId: string): Promise<RunRecord | undefined>;
  /** The run with `runId`, or when omitted the most recently started run of the workflow id. */
  findRun(namespace: string, workflowId: string, runId?: string): Promise<RunRecord | undefined>;
  findOpenRun(namespace: string, workflowId: string): Promise<RunRecord | undefined>;
  /** Events with ids >= fromEventId, ascending, at most `limit` (default: all). */
  readEvents(runId: string, fromEventId?: number, limit?: number): Promise<HistoryEvent[]>;
  /** The run's event with the highest id, if it has any (a closed run's is the one that closed it). */
  lastEvent(runId: string): Promise<HistoryEvent | undefined>;
  listBuffered(runId: string): Promise<BufferedEvent[]>;
  getActivity(runId: string, scheduledEventId: number): Promise<ActivityRecord | undefined>;
  /** The run's activities by scheduled event id; inside `transaction`, locked like `getActivity`'s row. */
  listActivities(runId: string): Promise<ActivityRecord[]>;
  /**
   * `getRun` then `listActivities` in one call (one statement where the store has a network hop),
   * locking the run before its activities inside `transaction`, the order every transaction that takes
   * both follows. No run: `run` is undefined and `activities` empty (activities belong to an existing run).
   */
  getRunWithActivities(runId: string): Promise<RunWithActivities>;
  listTimers(runId: string): Promise<TimerRecord[]>;
  getRequest(namespace: string, requestId: string): Promise<RequestRecord | undefined>;
  getQuery(id: string): Promise<QueryRecord | undefined>;
  /** Earliest future moment any sweep or poll could find work: timers, deadlines, leases, backoffs. */
  nextWakeTime(): Promise<number | null>;
  /**
   * Earliest time a sweep finds work: a timer's fireAt, an activity's deadline, or a started workflow
   * task's lease expiry (what the sweeper handles; claimable tasks are the pollers' business).
   */
  nextSweepTime(): Promise<number | null>;
}

export interface StoreTx extends StoreReader {
  /** Fails with a StoreError code 'DUPLICATE_OPEN_RUN' if the workflow id already has a running run. */
  insertRun(run: RunRecord): Promise<void>;
  updateRun(runId: string, patch: RunPatch): Promise<void>;
  /**
   * Appends events with ids `firstEventId`, `firstEventId + 1`, ... Fails with StoreError code
   * 'EVENT_CONFLICT' if any of those ids exists (the gap-free, append-only guard).
   */
  appendEvents(runId: string, firstEventId: number, events: readonly NewEvent[]): Promise<void>;
  addBuffered(runId: string, event: NewEvent): Promise<void>;
  /** Deletes buffered events with seq <= uptoSeq. */
  deleteBuffered(runId: string, uptoSeq: number): Promise<void>;
  insertActivity(activity: ActivityRecord): Promise<void>;
  updateActivity(runId: string, scheduledEventId: number, patch: ActivityPatch): Promise<void>;
  deleteActivity(runId: string, scheduledEventId: number): Promise<void>;
  insertTimer(timer: TimerRecord): Promise<void>;
  deleteTimer(runId: string, timerKey: string): Promise<void>;
  /** Deletes the run's activities, timers, buffered events and open queries (the run closed). */
  deleteRunState(runId: string): Promise<void>;
  putRequest(request: RequestRecord): Promise<void>;
  /** Forgets request ids recorded before `createdBefore` (oldest first, at most `limit`); returns how many. */
  deleteRequestsBefore(createdBefore: number, limit: number): Promise<number>;
  insertQuery(query: QueryRecord): Promise<void>;
  updateQuery(
    id: string,
    patch: Partial<Pick<QueryRecord, 'phase' | 'leaseExpiresAt' | 'result' | 'failure'>>,
  ): Promise<void>;
  deleteQuery(id: string): Promise<void>;

  // ---- claim and sweep queries: rows returned here are locked for this transaction where the store
  // supports it, and rows locked by another transaction are skipped, never waited for. ----

  /**
   * Runs whose workflow task is scheduled and visible (wftVisibleAt <= now), oldest first. With a
   * `claimant`, a run sticky to another worker is returned only if its task became visible at or before
   * `claimant.othersVisibleBy` (the sticky worker had its chance).
   */
  findClaimableWorkflowTasks(
    namespace: string,
    taskQueue: string,
    now: number,
    limit: number,
    claimant?: { readonly workerId: string; readonly othersVisibleBy: number },
  ): Promise<RunRecord[]>;
  /** Activities in phase 'scheduled', visible, not cancel-requested, oldest first. */
  findClaimableActivities(
    namespace: string,
    taskQueue: string,
    now: number,
    limit: number,
  ): Promise<ActivityRecord[]>;
  /** Pending queries (or claimed ones whose lease expired) for runs on this task queue. */
  findClaimableQueries(
    namespace: string,
    taskQueue: string,
    now: number,
    limit: number,
  ): Promise<QueryRecord[]>;
  /**
   * How many due rows the claims above passed over in this transaction because another transaction
   * held them for the moment (a commit or a sweep that locked them without taking them). Nothing wakes
   * a poller when such a lock is released, so a claimant that saw some polls again soon. Always 0 where
   * the store has no row locks.
   */
  lockedDue(): number;
  /**
   * Timers with fireAt <= now, earliest first. Where the store locks rows, each timer's run is locked
   * too, and a timer whose run another transaction holds is skipped: the sweep goes on to write the run,
   * and must not wait for it while holding the timer (a commit holding the run may want the timer).
   * Timers and activities always belong to an existing run; a store may ignore one that does not.
   */
  findDueTimers(now: number, limit: number): Promise<TimerRecord[]>;
  /** Running runs whose workflow task is started and whose lease expired. */
  findExpiredWorkflowTasks(now: number, limit: number): Promise<RunRecord[]>;
  /** Activities whose deadline <= now, earliest first; their runs are locked as `findDueTimers` says. */
  findDueActivities(now: number, limit: number): Promise<ActivityRecord[]>;
}
