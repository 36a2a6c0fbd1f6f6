import type { HistoryEvent, NewEvent } from '../../common/events.js';
import {
  appendTailToChunkText,
  decodeChunk,
  encodeChunk,
  readChunk,
  tailText,
  tailToChunkText,
  type ZlibCounters,
} from './sqlite-history.js';
import type { ChunkRow, ChunkSizeRow, TailHeadRow, TailRow } from './sqlite-rows.js';
import type { SqliteStatements } from './sqlite-statements.js';

/** A run's last chunk takes the next compacted tail while its stored size is below this, in bytes. */
const CHUNK_APPEND_LIMIT_BYTES = 1024;
/**
 * A tail this long (in characters) is due for compaction at once, idle or not: it bounds what one append
 * copies and keeps a busy run's tail within about one database page.
 */
const TAIL_DUE_CHARS = 4096;
/**
 * A tail whose last event schedules a workflow task is due after this many `idleMs` (5 minutes by
 * default): a worker is about to append the task's outcome, and compacting the tail first would compress
 * it twice. Under a queue backlog most tails that fall due are of such runs: 10,000 starts queue for
 * seconds, 100,000 for over a minute. A run left waiting longer, with no worker polling, is still
 * compacted.
 */
const WAITING_IDLE_FACTOR = 300;
/** Most run keys `ownTails` remembers; past it, the store forgets them and reports them unknown. */
const OWN_TAILS_LIMIT = 100_000;

/** Counters of one store's history work (see `SqliteStore.stats`). */
export interface HistoryStats extends ZlibCounters {
  /** Tails compressed into chunks (counted per attempt: a re-run transaction counts again). */
  tailsCompacted: number;
}

/** What one `compactDue` call did. */
export interface CompactionBatch {
  readonly compacted: number;
  /** More tails may be due: the batch stopped at its size or time limit. */
  readonly more: boolean;
}

/**
 * A run's history as stored: compressed chunks in `history`, then at most one raw tail in
 * `history_tail` (encodings in `sqlite-history.ts`). One instance per store; its methods run inside the
 * caller's transaction on the statements they are given.
 *
 * - `append` only ever writes the tail, uncompressed: no zlib on the append path. A tail starts with
 *   the base time of the run's last chunk when that chunk is small enough to take it, so compaction can
 *   merge the two without re-encoding a single event.
 * - `compactTail` compresses a tail into the run's chunks (merged into the last chunk while that one is
 *   under `CHUNK_APPEND_LIMIT_BYTES`, else as a new chunk) and deletes it, in the caller's write
 *   transaction: it reads and writes under the database's write lock, so an append from any connection
 *   or process lands either before (and is compacted with the rest) or after (in a new tail).
 * - `read` returns the same events whatever form holds them.
 * - `ownTails` names the runs this store appended to whose tails it has not compacted, so `close()` can
 *   compact its own recent tails and leave those of other open stores to them.
 *
 * Each tail carries `compact_at`: the last append's time plus `idleMs` (`WAITING_IDLE_FACTOR` times
 * that when the append scheduled a workflow task), rounded up to a quarter of `idleMs` (so appends
 * within one quarter leave its index entry alone), or the append's time once the tail reaches
 * `TAIL_DUE_CHARS`. Times are wall-clock ms since the epoch (`now`), shared by every process
 * on the host.
 */
export class SqliteHistoryLog {
  readonly stats: HistoryStats = { deflates: 0, inflates: 0, tailsCompacted: 0 };
  private readonly quantumMs: number;
  /** `idleMs` of a tail whose run waits for a workflow task (see `WAITING_IDLE_FACTOR`). */
  private readonly waitingIdleMs: number;
  /** Keys of runs this store appended to since it last compacted their tail (or saw no tail at all). */
  private readonly own = new Set<number>();
  private ownOverflow = false;

  constructor(
    /** How long, in ms, a tail must go without appends before it is due. */
    readonly idleMs: number,
    readonly now: () => number = Date.now,
  ) {
    this.quantumMs = Math.max(1, Math.floor(idleMs / 4));
    this.waitingIdleMs = idleMs * WAITING_IDLE_FACTOR;
  }

  /**
   * Appends `events` as ids `firstEventId...` to the run with key `rk`. `check` gets the run's last event
   * id first and throws to refuse (conflict, gap).
   */
  append(
    s: SqliteStatements,
    rk: number,
    firstEventId: number,
    events: readonly NewEvent[],
    check: (lastEventId: number) => void,
  ): void {
    const last = firstEventId + events.length - 1;
    const now = this.now();
    const idleMs =
      events[events.length - 1]!.type === 'WorkflowTaskScheduled' ? this.waitingIdleMs : this.idleMs;
    this.remember(rk);
    const tail = s.tailHead.get(rk) as TailHeadRow | undefined;
    if (tail) {
      check(tail.last_event_id);
      const text = tailText(events, tail.base_time);
      if (text !== undefined) {
        const compactAt = this.compactAt(now, idleMs, tail.size + text.length, tail.compact_at);
        const stmt = compactAt === tail.compact_at ? s.appendTailSameDue : s.appendTail;
        stmt.run({ rk, last, compactAt, events: text });
        return;
      }
      // A time that does not round-trip against the tail's base (fractional or huge times; rare):
      // compact the tail now and start a new one.
      this.compactTail(s, rk);
    }
    const chunk = s.lastChunkSize.get({ rk }) as ChunkSizeRow | undefined;
    if (!tail) check(chunk?.last_event_id ?? 0);
    let base = 0;
    let text: string | undefined;
    if (chunk && chunk.size < CHUNK_APPEND_LIMIT_BYTES) {
      base = chunk.base_time;
      text = tailText(events, base);
    }
    if (text === undefined) {
      base = Number.isSafeInteger(events[0]!.time) ? events[0]!.time : 0;
      text = tailText(events, base);
    }
    if (text === undefined) {
      base = 0;
      text = tailText(events, 0)!;
    }
    const compactAt = this.compactAt(now, idleMs, text.length);
    s.insertTail.run({ rk, first: firstEventId, last, base, compactAt, events: text });
  }

  /**
   * Appends to `out` the events of run `rk` with ids in [from, from + max - out.length), in order.
   */
  read(s: SqliteStatements, rk: number, from: number, max: number, out: HistoryEvent[]): void {
    for (const row of s.readChunks.iterate({ rk, from }) as IterableIterator<ChunkRow>) {
      if (row.last_event_id < from) continue;
      readChunk(decodeChunk(row.chunk, this.stats), row.first_event_id, row.base_time, from, max, out);
      if (out.length >= max) return;
    }
    const tail = s.readTail.get(rk) as TailRow | undefined;
    if (tail && tail.last_event_id >= from) {
      readChunk(tailToChunkText(tail.events), tail.first_event_id, tail.base_time, from, max, out);
    }
  }

  /** The highest event id of run `rk` (0: no events). */
  lastEventId(s: SqliteStatements, rk: number): number {
    const tail = s.tailHead.get(rk) as TailHeadRow | undefined;
    if (tail) return tail.last_event_id;
    return (s.lastChunkSize.get({ rk }) as ChunkSizeRow | undefined)?.last_event_id ?? 0;
  }

  /** Compresses the tail of run `rk` into its chunks and deletes it; false if the run has no tail. */
  compactTail(s: SqliteStatements, rk: number): boolean {
    const tail = s.readTail.get(rk) as TailRow | undefined;
    if (!tail) return false;
    const last = s.lastChunk.get({ rk }) as ChunkRow | undefined;
    if (
      last &&
      last.last_event_id + 1 === tail.first_event_id &&
      last.base_time === tail.base_time &&
      last.chunk.byteLength < CHUNK_APPEND_LIMIT_BYTES
    ) {
      const text = appendTailToChunkText(decodeChunk(last.chunk, this.stats), tail.events);
      const chunk = encodeChunk(text, this.stats);
      s.updateChunk.run({ rk, first: last.first_event_id, last: tail.last_event_id, chunk });
    } else {
      const chunk = encodeChunk(tailToChunkText(tail.events), this.stats);
      s.insertChunk.run({
        rk,
        first: tail.first_event_id,
        last: tail.last_event_id,
        base: tail.base_time,
        chunk,
      });
    }
    s.deleteTail.run(rk);
    this.stats.tailsCompacted++;
    this.own.delete(rk);
    return true;
  }

  /**
   * Compacts the tails of `keys[start..end)` in order (runs without a tail are skipped), until `deadline`
   * (a `performance.now()` value) has passed (at least one key is always done); returns the index after
   * the last key done.
   */
  compactKeys(
    s: SqliteStatements,
    keys: readonly number[],
    start: number,
    end: number,
    deadline: number,
  ): number {
    let i = start;
    while (i < end) {
      this.compactTail(s, keys[i]!);
      i++;
      if (performance.now() >= deadline) break;
    }
    return i;
  }

  /**
   * Keys of the runs whose tails this store appended to and may not have been compacted yet (another
   * process may have compacted some); undefined if there were too many to remember.
   */
  ownTails(): number[] | undefined {
    return this.ownOverflow ? undefined : [...this.own];
  }

  /** The file holds no tail at all: nothing this store appended is left raw. */
  forgetOwnTails(): void {
    this.own.clear();
    this.ownOverflow = false;
  }

  /**
   * Compacts tails whose `compact_at` is at most `dueBy`, oldest first: at most `limit`, and no more once
   * `deadline` (a `performance.now()` value) has passed (at least one is always done).
   */
  compactDue(s: SqliteStatements, dueBy: number, limit: number, deadline: number): CompactionBatch {
    const due = s.dueTails.all(dueBy, limit) as { rk: number }[];
    let compacted = 0;
    for (const { rk } of due) {
      if (compacted > 0 && performance.now() >= deadline) return { compacted, more: true };
      if (this.compactTail(s, rk)) compacted++;
    }
    return { compacted, more: due.length >= limit };
  }

  private remember(rk: number): void {
    if (this.ownOverflow) return;
    if (this.own.size >= OWN_TAILS_LIMIT && !this.own.has(rk)) {
      this.own.clear();
      this.ownOverflow = true;
      return;
    }
    this.own.add(rk);
  }

  /**
   * The `compact_at` of a tail of `size` characters appended to at `now`, to be due after `idleMs`
   * (`current`: its value so far).
   */
  private compactAt(now: number, idleMs: number, size: number, current?: number): number {
    if (size >= TAIL_DUE_CHARS) return current === undefined ? now : Math.min(current, now);
    return Math.ceil((now + idleMs) / this.quantumMs) * this.quantumMs;
  }
}
