import { type Clock, systemClock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import { silentLogger } from '../common/logger.js';
import { DEFAULT_WORKFLOW_TASK_RETRY } from '../engine/retry-policy.js';
import { openStore } from '../store/open-store.js';
import type { Store, StoreNotifications } from '../store/store.js';
import { defaultNewId, type RuntimeContext } from './context.js';
import { LocalWorkers } from './local-workers.js';
import { Notifier, type WakeChannel } from './notifier.js';

/**
 * One runtime per store per process: clients and workers in the same process that connect to the same
 * store share its connection, its in-process wake-ups, and (for `sqlite::memory:`) its data.
 * Reference-counted: the store closes when the last user releases it.
 */
export class Runtime {
  static readonly #shared = new Map<string, { runtime: Runtime; refs: number; opening: Promise<Runtime> }>();

  private constructor(
    readonly ctx: RuntimeContext,
    private readonly key: string,
  ) {}

  /**
   * Opens (or joins) the runtime for `url`. `mode: 'node'` creates and migrates the store; a client
   * (`mode: 'client'`) never creates one and fails clearly if it does not exist.
   */
  static async acquire(
    url: string,
    options: { mode: 'node' | 'client'; logger?: Logger | undefined; clock?: Clock | undefined },
  ): Promise<Runtime> {
    const clock = options.clock ?? systemClock;
    const key = `${normaliseUrl(url)}\u0000${clockId(clock)}`;
    const existing = Runtime.#shared.get(key);
    if (existing) {
      const runtime = await existing.opening;
      existing.refs++;
      return runtime;
    }
    const logger = options.logger ?? silentLogger;
    const opening = (async () => {
      const store: Store = await openStore(url, { mode: options.mode, logger });
      const notifier = new Notifier();
      if (store.notifications) connectNotifications(notifier, store.notifications);
      // Without an injected clock, a store with a shared clock (PostgreSQL) is the judge of time.
      const sharedClock =
        !options.clock && store.currentTime ? await StoreClock.start(store, logger) : undefined;
      return new Runtime(
        {
          store,
          clock: sharedClock ?? clock,
          notifier,
          logger,
          workflowTaskRetry: DEFAULT_WORKFLOW_TASK_RETRY,
          newId: defaultNewId,
          stats: { transactions: 0 },
          localWorkers: new LocalWorkers(),
        },
        key,
      );
    })();
    const entry = { runtime: undefined as unknown as Runtime, refs: 1, opening };
    Runtime.#shared.set(key, entry);
    try {
      entry.runtime = await opening;
      return entry.runtime;
    } catch (err) {
      Runtime.#shared.delete(key);
      throw err;
    }
  }

  /** Releases one reference; the last one closes the store. */
  async release(): Promise<void> {
    const entry = Runtime.#shared.get(this.key);
    if (!entry || entry.runtime !== this) return;
    entry.refs--;
    if (entry.refs > 0) return;
    Runtime.#shared.delete(this.key);
    if (this.ctx.clock instanceof StoreClock) this.ctx.clock.stop();
    await this.ctx.store.close();
  }
}

const clockIds = new WeakMap<Clock, number>();
let nextClockId = 1;
function clockId(clock: Clock): number {
  let id = clockIds.get(clock);
  if (id === undefined) {
    id = nextClockId++;
    clockIds.set(clock, id);
  }
  return id;
}

/** Same store, same key: relative SQLite paths are resolved against the current directory. */
function normaliseUrl(url: string): string {
  if (url.startsWith('sqlite:') && !url.startsWith('sqlite::memory:')) {
    const rest = url.slice('sqlite:'.length);
    const q = rest.indexOf('?');
    const path = q >= 0 ? rest.slice(0, q) : rest;
    return `sqlite:${resolvePath(path)}${q >= 0 ? rest.slice(q) : ''}`;
  }
  return url;
}

function resolvePath(p: string): string {
  return p.startsWith('/') ? p : `${process.cwd()}/${p}`;
}

/** Wake-ups to and from other processes through the store: a topic is the JSON of a wake channel. */
function connectNotifications(notifier: Notifier, notifications: StoreNotifications): void {
  notifier.connectRemote((channel) => {
    const topic = JSON.stringify(channel);
    // Oversized topics (very long ids) are not sent: other processes find that work by polling.
    if (topic.length <= MAX_TOPIC_LENGTH) notifications.publish([topic]);
  });
  notifications.subscribe((topic) => {
    try {
      notifier.notifyLocal(JSON.parse(topic) as WakeChannel);
    } catch {
      // Not a topic of ours: ignore.
    }
  });
}

/** Longest wake-up topic sent across processes (characters). */
const MAX_TOPIC_LENGTH = 2000;

/**
 * The store's clock as seen from this node: the node's clock plus the offset to the database clock,
 * measured at start and every 30 s (half the round trip is the measurement's error bound). Due times
 * and leases are then judged alike on every node, whatever their own clocks say.
 */
export class StoreClock implements Clock {
  #offsetMs = 0;
  #timer: NodeJS.Timeout | null = null;

  private constructor(private readonly store: Store) {}

  static async start(store: Store, logger: Logger): Promise<StoreClock> {
    const clock = new StoreClock(store);
    await clock.sync();
    clock.#timer = setInterval(() => {
      clock.sync().catch((err) => logger.warn('could not read the store clock', { error: String(err) }));
    }, 30_000);
    clock.#timer.unref();
    return clock;
  }

  now(): number {
    return Date.now() + this.#offsetMs;
  }

  async sync(): Promise<void> {
    const before = Date.now();
    const storeTime = await this.store.currentTime!();
    const after = Date.now();
    this.#offsetMs = Math.round(storeTime - (before + after) / 2);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
