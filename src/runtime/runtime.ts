import { type Clock, systemClock } from '../common/clock.js';
import type { Logger } from '../common/logger.js';
import { silentLogger } from '../common/logger.js';
import { DEFAULT_WORKFLOW_TASK_RETRY } from '../engine/retry-policy.js';
import { openStore } from '../store/open-store.js';
import type { Store } from '../store/store.js';
import { defaultNewId, type RuntimeContext } from './context.js';
import { LocalWorkers } from './local-workers.js';
import { Notifier } from './notifier.js';

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
      return new Runtime(
        {
          store,
          clock,
          notifier: new Notifier(),
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
