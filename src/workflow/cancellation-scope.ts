import type { CancelledFailure } from '../common/errors.js';
import { currentActivator } from './run-context.js';

/**
 * A cancellation scope. Only the root scope of a run exists for now: it is cancelled when cancellation
 * of the workflow is requested. Then pending timers and conditions reject with a CancelledFailure at
 * once, pending activities are asked to cancel (their promises settle when the activity reports back),
 * and new timers and activities reject immediately without a command.
 */
export class CancellationScope {
  #cancelled = false;
  #reject: (err: CancelledFailure) => void = () => {};
  /** Rejects with a CancelledFailure when cancellation is requested; never resolves. */
  readonly cancelRequested: Promise<never>;

  /** @internal Created by the runtime, one per run. */
  constructor() {
    this.cancelRequested = new Promise<never>((_resolve, reject) => {
      this.#reject = reject;
    });
    // Nobody has to await this promise; a rejection nobody awaits must not count as unhandled.
    this.cancelRequested.catch(() => {});
  }

  /** The scope of the code that calls this: for now, always the root scope of the run. */
  static current(): CancellationScope {
    return currentActivator('CancellationScope.current()').rootScope;
  }

  /** True once cancellation has been requested. */
  get consideredCancelled(): boolean {
    return this.#cancelled;
  }

  /** @internal Marks the scope cancelled; called by the runtime on the cancelWorkflow job. */
  markCancelled(err: CancelledFailure): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    this.#reject(err);
  }
}
