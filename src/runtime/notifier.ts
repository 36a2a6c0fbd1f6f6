/**
 * In-process wake-ups: when the producer of work (a client starting a workflow, a completed activity)
 * and its consumer (a worker's poller, the sweeper, a client waiting for a result) share a process, the
 * producer's commit wakes the consumer at once. Across processes, consumers fall back to polling at a
 * bounded interval; correctness never depends on a notification arriving.
 */
export type WakeChannel =
  | { readonly kind: 'workflowTask'; readonly namespace: string; readonly taskQueue: string }
  | { readonly kind: 'activityTask'; readonly namespace: string; readonly taskQueue: string }
  | { readonly kind: 'query'; readonly namespace: string; readonly taskQueue: string }
  | { readonly kind: 'queryAnswered'; readonly queryId: string }
  | { readonly kind: 'runClosed'; readonly runId: string }
  | { readonly kind: 'activityCancel'; readonly runId: string; readonly scheduledEventId: number }
  | { readonly kind: 'timer'; readonly fireAt: number };

type Listener = (channel: WakeChannel) => void;

function keyOf(c: WakeChannel): string {
  switch (c.kind) {
    case 'workflowTask':
    case 'activityTask':
    case 'query':
      return `${c.kind}\u0000${c.namespace}\u0000${c.taskQueue}`;
    case 'queryAnswered':
      return `${c.kind}\u0000${c.queryId}`;
    case 'runClosed':
      return `${c.kind}\u0000${c.runId}`;
    case 'activityCancel':
      return `${c.kind}\u0000${c.runId}\u0000${c.scheduledEventId}`;
    case 'timer':
      return c.kind;
  }
}

export class Notifier {
  readonly #listeners = new Map<string, Set<Listener>>();
  readonly #kindListeners = new Map<WakeChannel['kind'], Set<Listener>>();

  /** Subscribes to every channel of one kind (e.g. all activity cancellations); returns the unsubscribe. */
  onKind(kind: WakeChannel['kind'], listener: Listener): () => void {
    let set = this.#kindListeners.get(kind);
    if (!set) {
      set = new Set();
      this.#kindListeners.set(kind, set);
    }
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Subscribes to a channel (timer listeners ignore `fireAt` when subscribing); returns the unsubscribe. */
  on(channel: WakeChannel, listener: Listener): () => void {
    const key = keyOf(channel);
    let set = this.#listeners.get(key);
    if (!set) {
      set = new Set();
      this.#listeners.set(key, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(key);
    };
  }

  /** Where wake-ups also go to reach other processes (the store's notifications), if anywhere. */
  #remote: ((channel: WakeChannel) => void) | null = null;

  /** Sends every local wake-up to other processes too, via `publish`. */
  connectRemote(publish: (channel: WakeChannel) => void): void {
    this.#remote = publish;
  }

  /** Wakes listeners here and in other processes; call only after the work's transaction committed. */
  notify(channel: WakeChannel): void {
    this.#remote?.(channel);
    this.notifyLocal(channel);
  }

  /** Wakes listeners in this process only (a wake-up that came from another process). */
  notifyLocal(channel: WakeChannel): void {
    const kindSet = this.#kindListeners.get(channel.kind);
    if (kindSet) for (const l of [...kindSet]) l(channel);
    const set = this.#listeners.get(keyOf(channel));
    if (!set) return;
    for (const l of [...set]) l(channel);
  }
}

/** Resolves after `ms`, as soon as one of `channels` is notified, or when `signal` aborts. */
export function waitForWake(
  notifier: Notifier,
  channels: readonly WakeChannel[],
  ms: number,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const offs: (() => void)[] = [];
    const done = (): void => {
      clearTimeout(timer);
      for (const off of offs) off();
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    for (const c of channels) offs.push(notifier.on(c, done));
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Wake-ups of one channel, remembered between a read and the wait that follows it: subscribe with
 * `watch` before reading, `reset` right before each read, then `wait`. A notification that arrives
 * during the read ends the next wait at once, so it cannot fall between the read and the wait (which
 * `waitForWake`, subscribing only when it starts waiting, leaves to the poll interval).
 */
export class WakeWatch {
  #off: (() => void) | undefined;
  #woken = false;
  #wake: (() => void) | undefined;

  constructor(private readonly notifier: Notifier) {}

  /** Watches `channel` (instead of the one watched before, if any). */
  watch(channel: WakeChannel): void {
    this.#off?.();
    this.#off = this.notifier.on(channel, () => {
      this.#woken = true;
      this.#wake?.();
    });
  }

  /** Forgets wake-ups seen so far. */
  reset(): void {
    this.#woken = false;
  }

  /**
   * Resolves after `ms`, or at once if the channel was notified since the last `reset`; true if it was
   * (or `stop` ended the wait), false if the time ran out.
   */
  wait(ms: number): Promise<boolean> {
    if (this.#woken) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (woken: boolean): void => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve(woken);
      };
      const timer = setTimeout(() => done(false), ms);
      this.#wake = () => done(true);
    });
  }

  /** Unsubscribes, and ends a wait in progress. */
  stop(): void {
    this.#off?.();
    this.#off = undefined;
    this.#wake?.();
  }
}
