import type BetterSqlite3 from 'better-sqlite3';
import { StoreError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { classifyStoreError, isTransientStoreErrorClass } from '../errors.js';
import type { SqliteGroupCommit } from './sqlite-group-commit.js';
import type { SqliteHistoryLog } from './sqlite-history-log.js';

/** Limits of the compactor (see `SqliteHistoryCompactor`). */
export interface HistoryCompactorLimits {
  /** How often, in ms, the compactor looks for due tails; 0: never on its own (only `compact`, `close`). */
  readonly intervalMs: number;
  /** Most tails one batch (one write callback) compacts. */
  readonly batchSize: number;
  /** A batch stops taking tails once it has run this long, in ms. */
  readonly batchMs: number;
  /** A timer pass stops starting batches once it has run this long, in ms; the next pass comes sooner. */
  readonly passMs: number;
  /** The delay, in ms, before the next pass when a pass stopped with work left. */
  readonly backlogDelayMs: number;
  /** Most free pages a pass gives back to the filesystem when the file holds no tail at all. */
  readonly vacuumPages: number;
  /** A pass gives free pages back only when the file has at least this many. */
  readonly vacuumMinFreePages: number;
}

export const DEFAULT_COMPACTOR_LIMITS: HistoryCompactorLimits = {
  intervalMs: 500,
  batchSize: 64,
  batchMs: 3,
  passMs: 25,
  backlogDelayMs: 25,
  vacuumPages: 256,
  vacuumMinFreePages: 64,
};

/** The part of the writer's connection the compactor uses (pragmas, run between write groups). */
export type VacuumDb = Pick<BetterSqlite3.Database, 'pragma'>;

/** Most free pages one `incremental_vacuum` statement releases. */
const VACUUM_STEP_PAGES = 2048;

/** What a compaction run found. */
export type Compaction = 'noTails' | 'done' | 'budgetSpent';

/**
 * Compresses the raw history tails of a store's file in the background (`SqliteHistoryLog` holds the
 * format and the per-tail work). A storage policy of the adapter: it decides nothing about runs.
 *
 * States: idle (a timer is armed, `unref`'d so it never keeps a process alive) -> passing -> idle ...
 * -> stopped (by `stop`, from `SqliteStore.close`). A pass first asks, on a read connection, whether any
 * tail is due (an idle store writes nothing); if so it runs batches, each one `SqliteGroupCommit.write`
 * callback compacting at most `batchSize` tails for at most `batchMs`, so a batch shares a group commit
 * with the foreground transactions queued beside it and delays them by at most a few ms. Between batches
 * it yields to the event loop. A pass ends when no due tail is left, or after `passMs` (then the next one
 * starts after `backlogDelayMs` instead of `intervalMs`).
 *
 * Free pages: compacted tails leave free pages behind, which later writes reuse. When the file holds no
 * tail at all (nothing was appended for `idleMs`: the store is at rest), a pass also gives back up to
 * `vacuumPages` of them to the filesystem (`incremental_vacuum`, in a file created with
 * `auto_vacuum = INCREMENTAL`; a no-op otherwise), so a quiet store shrinks back to its compressed size.
 *
 * Guarantees: the compactor compacts any tail of the file whose `compact_at` has passed, whichever
 * process appended it; several processes may compact concurrently (each tail is read, compressed,
 * written and deleted inside one write transaction, so a tail is compacted once and an append is never
 * lost). A failed batch is logged and retried by a later pass; nothing is lost by a failure, only
 * compression is late.
 */
export class SqliteHistoryCompactor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly writer: SqliteGroupCommit,
    private readonly log: SqliteHistoryLog,
    /** The writer's connection, for `incremental_vacuum` (run as `writer.exclusive` jobs). */
    private readonly db: VacuumDb,
    /** The smallest `compact_at` of any tail, or null when there is none; read outside the write path. */
    private readonly nextDue: () => Promise<number | null>,
    private readonly logger: Logger,
    private readonly where: string,
    private readonly limits: HistoryCompactorLimits = DEFAULT_COMPACTOR_LIMITS,
  ) {}

  /** Arms the timer (no-op when `intervalMs` is 0). */
  start(): void {
    this.schedule(this.limits.intervalMs);
  }

  /**
   * Compacts tails in batches until none is left in `scope` or `budgetMs` has passed. Scopes: `due`, the
   * tails whose `compact_at` has passed; `all`, every tail; `own`, the tails this store appended to, due
   * or not (every tail if it appended to too many to remember). Rejects if a batch fails.
   */
  async compact(scope: 'due' | 'all' | 'own', budgetMs: number): Promise<Compaction> {
    const started = performance.now();
    const next = await this.nextDue();
    if (next === null) {
      await this.forgetOwnTailsIfNone();
      return 'noTails';
    }
    const keys = scope === 'own' ? this.log.ownTails() : undefined;
    const dueBy = scope === 'due' ? this.log.now() : Number.MAX_SAFE_INTEGER;
    if (next > dueBy || keys?.length === 0) return 'done';
    const s = this.writer.statements;
    const { batchSize, batchMs } = this.limits;
    let done = 0;
    for (;;) {
      let more: boolean;
      if (keys) {
        const start = done;
        const end = Math.min(keys.length, start + batchSize);
        // A batch may run more than once (busy retries), so it depends on nothing it changes.
        done = await this.writer.write(async () =>
          this.log.compactKeys(s, keys, start, end, performance.now() + batchMs),
        );
        more = done < keys.length;
      } else {
        const batch = await this.writer.write(async () =>
          this.log.compactDue(s, dueBy, batchSize, performance.now() + batchMs),
        );
        more = batch.more;
      }
      if (!more) return 'done';
      if (performance.now() - started >= budgetMs) return 'budgetSpent';
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Gives at most `maxPages` free pages back to the filesystem (`incremental_vacuum`), in steps, until
   * `deadline` (a `performance.now()` value) has passed; does nothing below `minFree` free pages or in a
   * file without `auto_vacuum = INCREMENTAL`. Resolves to the number of pages released.
   */
  releaseFreePages(maxPages: number, minFree: number, deadline = Number.POSITIVE_INFINITY): Promise<number> {
    return this.writer.exclusive(async () => {
      if (Number(this.db.pragma('auto_vacuum', { simple: true })) !== 2) return 0;
      const initial = Number(this.db.pragma('freelist_count', { simple: true }));
      if (initial < Math.max(1, minFree)) return 0;
      let free = initial;
      while (free > 0 && initial - free < maxPages && performance.now() < deadline) {
        this.db.pragma(
          `incremental_vacuum(${Math.min(free, maxPages - (initial - free), VACUUM_STEP_PAGES)})`,
        );
        const after = Number(this.db.pragma('freelist_count', { simple: true }));
        if (after >= free) break;
        free = after;
      }
      return initial - free;
    });
  }

  /**
   * Lets the log forget the runs it appended to when the file holds no tail. Checked on the writer's
   * connection between write groups, when every append of this store is committed or undone (a read
   * elsewhere could miss an append still in an open group).
   */
  private forgetOwnTailsIfNone(): Promise<void> {
    const s = this.writer.statements;
    return this.writer.exclusive(async () => {
      if ((s.nextDueTail.get() as { t: number | null }).t === null) this.log.forgetOwnTails();
    });
  }

  /** Disarms the timer and waits for a pass in progress; later passes never start. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped || this.limits.intervalMs <= 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.pass();
    }, delayMs);
    this.timer.unref();
  }

  private async pass(): Promise<void> {
    let backlog = false;
    try {
      const found = await this.compact('due', this.limits.passMs);
      if (found === 'noTails') {
        const { vacuumPages, vacuumMinFreePages } = this.limits;
        backlog = (await this.releaseFreePages(vacuumPages, vacuumMinFreePages)) >= vacuumPages;
      } else {
        backlog = found === 'budgetSpent';
      }
    } catch (err) {
      // Another process holding the write lock is routine; anything else is worth a warning.
      const busy =
        (err instanceof StoreError && err.code === 'STORE_BUSY') ||
        isTransientStoreErrorClass(classifyStoreError(err));
      const fields = { store: this.where, error: String(err) };
      if (busy) this.logger.debug('compacting history found the store locked; a later pass retries', fields);
      else if (!this.stopped) this.logger.warn('compacting history failed; a later pass retries', fields);
    }
    this.running = undefined;
    this.schedule(backlog ? this.limits.backlogDelayMs : this.limits.intervalMs);
  }
}
