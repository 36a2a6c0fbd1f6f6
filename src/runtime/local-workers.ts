import type { WorkflowTask } from './workflow-tasks.js';

/** A worker in this process that can take a workflow task claimed for it in someone else's commit. */
export interface LocalWorkflowWorker {
  readonly workerId: string;
  /** Reserves room for one task; false when the worker is at its limit or stopping. */
  reserve(): boolean;
  /** Gives back a reservation that was not used. */
  release(): void;
  /** Runs a task claimed for this worker, using its reservation. */
  run(task: WorkflowTask): void;
}

/**
 * Workers of this process by namespace and task queue, so that a start in the same process can claim
 * the first workflow task for one of them in the start's own commit (eager start: no poll, no claim
 * transaction).
 */
export class LocalWorkers {
  readonly #byQueue = new Map<string, LocalWorkflowWorker[]>();

  register(namespace: string, taskQueue: string, worker: LocalWorkflowWorker): () => void {
    const key = `${namespace}\u0000${taskQueue}`;
    const list = this.#byQueue.get(key) ?? [];
    list.push(worker);
    this.#byQueue.set(key, list);
    return () => {
      const i = list.indexOf(worker);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.#byQueue.delete(key);
    };
  }

  /** A worker of the queue that reserved room for one task, or undefined. */
  reserve(namespace: string, taskQueue: string): LocalWorkflowWorker | undefined {
    for (const w of this.#byQueue.get(`${namespace}\u0000${taskQueue}`) ?? []) {
      if (w.reserve()) return w;
    }
    return undefined;
  }
}
