import type { EventAttributes, EventType, HistoryEvent } from '../../../src/common/events.js';

const RETRY = {
  initialIntervalMs: 1000,
  backoffCoefficient: 2,
  maximumIntervalMs: 100_000,
  maximumAttempts: 0,
  nonRetryableErrorTypes: [],
};

/** Builds a run's history event by event, with ids 1, 2, 3, ... and a clock advancing 1 s per event. */
export class HistoryBuilder {
  readonly events: HistoryEvent[] = [];
  time: number;

  constructor(startTime = 1_700_000_000_000) {
    this.time = startTime;
  }

  add<K extends EventType>(type: K, attributes: EventAttributes[K]): number {
    const eventId = this.events.length + 1;
    this.events.push({ eventId, type, time: this.time, attributes } as HistoryEvent);
    this.time += 1000;
    return eventId;
  }

  workflowStarted(workflowType: string, input: unknown[], seed = 'seed'): number {
    return this.add('WorkflowStarted', {
      workflowType,
      taskQueue: 'q',
      input,
      randomnessSeed: seed,
      workflowTaskTimeoutMs: 10_000,
    });
  }

  /** WorkflowTaskScheduled + WorkflowTaskStarted; returns the started event id. */
  taskStarted(): number {
    const scheduledEventId = this.add('WorkflowTaskScheduled', { taskQueue: 'q', attempt: 1 });
    return this.add('WorkflowTaskStarted', { scheduledEventId, workerId: 'w1' });
  }

  taskCompleted(startedEventId: number): number {
    return this.add('WorkflowTaskCompleted', {
      scheduledEventId: startedEventId - 1,
      startedEventId,
      workerId: 'w1',
      bundleHash: 'h',
    });
  }

  taskFailed(startedEventId: number): number {
    return this.add('WorkflowTaskFailed', {
      scheduledEventId: startedEventId - 1,
      startedEventId,
      workerId: 'w1',
      cause: 'WorkflowError',
      failure: { kind: 'application', type: 'TypeError', message: 'boom' },
    });
  }

  /** A completed workflow task: scheduled, started, completed. Returns the completed event id. */
  task(): number {
    return this.taskCompleted(this.taskStarted());
  }

  activityScheduled(seq: number, activityType: string, input: unknown[] = []): number {
    return this.add('ActivityScheduled', {
      activityId: String(seq),
      activityType,
      taskQueue: 'q',
      input,
      options: { startToCloseTimeoutMs: 60_000, retry: RETRY },
      workflowTaskCompletedEventId: this.events.length,
    });
  }

  /** ActivityStarted + ActivityCompleted. */
  activityCompleted(scheduledEventId: number, result: unknown): number {
    const startedEventId = this.add('ActivityStarted', { scheduledEventId, attempt: 1, workerId: 'w1' });
    return this.add('ActivityCompleted', { scheduledEventId, startedEventId, result });
  }

  timerStarted(seq: number, durationMs: number): number {
    return this.add('TimerStarted', { timerId: String(seq), durationMs });
  }

  timerFired(seq: number, startedEventId: number): number {
    return this.add('TimerFired', { timerId: String(seq), startedEventId });
  }

  timerCanceled(seq: number, startedEventId: number): number {
    return this.add('TimerCanceled', { timerId: String(seq), startedEventId });
  }

  signal(signalName: string, input: unknown[]): number {
    return this.add('SignalReceived', { signalName, input });
  }

  /** The events from id `from` to id `to`, both included. */
  slice(from: number, to = this.events.length): HistoryEvent[] {
    return this.events.slice(from - 1, to);
  }
}
