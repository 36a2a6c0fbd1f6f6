import { getHeapStatistics } from 'node:v8';

/** The heap is checked on every this many puts. */
const HEAP_CHECK_EVERY_PUTS = 32;

/**
 * Recently active workflows kept in memory so the next task of a hot workflow costs no replay. Bounded
 * by a count and by a heap watermark (Node cannot size an object, so the whole heap is watched): above
 * the watermark the least recently used quarter is evicted. Correctness never depends on the cache: a
 * miss replays from history.
 */
export class WorkflowCache<T extends { dispose(): void }> {
  readonly #entries = new Map<string, T>();
  readonly #heapLimitBytes: number;
  #putsSinceHeapCheck = 0;

  constructor(
    readonly maxEntries: number,
    /** Fraction (0–1] of V8's heap size limit above which entries are evicted. */
    heapWatermark: number,
    private readonly heapUsed: () => number = () => process.memoryUsage().heapUsed,
  ) {
    this.#heapLimitBytes = getHeapStatistics().heap_size_limit * heapWatermark;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Takes an entry out while a task runs on it (so no two tasks share one instance). */
  take(runId: string): T | undefined {
    const entry = this.#entries.get(runId);
    if (entry) this.#entries.delete(runId);
    return entry;
  }

  /** Puts an entry back as most recently used, then enforces the bounds. */
  put(runId: string, entry: T): void {
    const old = this.#entries.get(runId);
    if (old && old !== entry) old.dispose();
    this.#entries.delete(runId);
    if (this.maxEntries <= 0) {
      entry.dispose();
      return;
    }
    this.#entries.set(runId, entry);
    while (this.#entries.size > this.maxEntries) this.#evictOldest();
    // Reading heap usage costs tens of µs; once every few puts is plenty to follow a growing heap.
    if (++this.#putsSinceHeapCheck < HEAP_CHECK_EVERY_PUTS) return;
    this.#putsSinceHeapCheck = 0;
    if (this.heapUsed() > this.#heapLimitBytes) {
      const target = Math.floor(this.#entries.size * 0.75);
      while (this.#entries.size > target) this.#evictOldest();
    }
  }

  evict(runId: string): void {
    const entry = this.#entries.get(runId);
    if (!entry) return;
    this.#entries.delete(runId);
    entry.dispose();
  }

  clear(): void {
    for (const e of this.#entries.values()) e.dispose();
    this.#entries.clear();
  }

  #evictOldest(): void {
    const first = this.#entries.keys().next();
    if (!first.done) this.evict(first.value);
  }
}
