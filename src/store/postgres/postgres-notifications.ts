import type { Logger } from '../../common/logger.js';
import { classifyStoreError, errorCode } from '../errors.js';
import type { StoreNotifications } from '../store.js';
import { countTopics, MAX_PAYLOAD_BYTES, notificationChannel, packPayloads } from './postgres-channel.js';
import { asError, messageOf } from './postgres-errors.js';
import type { PostgresPool, PostgresPoolClient } from './postgres-pool.js';

/**
 * Wake-ups between processes over PostgreSQL `LISTEN/NOTIFY`. Best effort throughout: a wake-up that is
 * lost (queue full, database down, listener reconnecting) only costs latency, because every consumer
 * also polls at a bounded interval.
 *
 * Channel: one per schema, `longhaul_wake_<schema>` (`notificationChannel`), so stores on two schemas of
 * one database never wake each other (NOTIFY is already scoped to one database). A name that would
 * exceed PostgreSQL's 63-byte identifier limit keeps a prefix of the schema and appends a hash of the
 * whole schema name.
 *
 * Sending (`publish`), a coalescing queue:
 * - `publish` never throws and never does I/O itself. It adds the topics to a pending set (a topic
 *   already pending is not added twice) and arms a 1 ms timer. It is called after the producing
 *   transaction committed, so NOTIFY (which takes a cluster-wide lock at commit) is never inside, nor on
 *   the critical path of, a store transaction.
 * - When the timer fires, one flush takes every pending topic, packs them into payloads (a JSON array of
 *   topics, each payload at most 7999 bytes, PostgreSQL's limit being "shorter than 8000 bytes") and sends
 *   them with `SELECT pg_notify($1, p) FROM unnest($2::text[]) p` on one pooled connection in
 *   autocommit: one statement (one commit) per 32 payloads. At most one flush runs at a time; topics
 *   published meanwhile wait for the next one, which is how a burst of publishes becomes a few NOTIFYs.
 * - A topic too long for one payload, topics whose statement failed (database down, pool closed), and the
 *   oldest pending topics when the queue holds more than 1 MiB are dropped, with a debug log line.
 * - `close` flushes what is pending (unless the database is unreachable), then stops accepting topics.
 *
 * Receiving (`subscribe`), one dedicated connection per store, not from the pool, opened on the first
 * subscription. Its states:
 * - `connecting` → `listening` once `LISTEN` succeeded; every topic of every notification on the channel
 *   is then passed to every listener (a listener that throws is logged and skipped). Notifications sent
 *   by this store's own pooled connections are skipped: this process woke its own consumers already.
 * - `listening` → `waiting` when the connection fails (server restart, `pg_terminate_backend`, network),
 *   which is noticed from the driver's 'error'/'end' events or from a `LISTEN` re-issued every 30 s as a
 *   health check (with a 10 s timeout). `connecting` → `waiting` when connecting or `LISTEN` fails.
 * - `waiting` → `connecting` after a jittered backoff (100 ms doubling to 5 s; reset by a success).
 *   Notifications sent while disconnected are lost; polling finds that work.
 * - any state → `stopped` when the last listener unsubscribes or on `close` (the connection is ended,
 *   nothing reconnects; a later `subscribe` starts again, unless closed).
 */
export class PostgresNotifications implements StoreNotifications {
  readonly #pool: PostgresPool;
  readonly #newListenClient: () => PostgresListenClient;
  readonly #channel: string;
  readonly #logger: Logger;
  readonly #description: string;
  readonly #counters: {
    -readonly [K in Exclude<keyof PostgresNotificationStats, 'listenerPid' | 'pending'>]: number;
  } = {
    published: 0,
    notifyStatements: 0,
    payloadsSent: 0,
    topicsSent: 0,
    dropped: 0,
    received: 0,
    listenConnects: 0,
  };
  #closed = false;

  // Sending.
  /** Pending topics in publication order (a re-published topic moves to the end). */
  readonly #pending = new Set<string>();
  #pendingBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  /** Backend process ids of this store's pooled connections that sent notifications. */
  readonly #ownBackends = new Set<number>();

  // Receiving.
  readonly #listeners = new Set<(topic: string) => void>();
  #listening: Promise<void> | undefined;
  #listenerPid: number | null = null;
  /** Cuts short the listening loop's current wait (for a lost connection, or a backoff). */
  #interrupt: (() => void) | undefined;

  constructor(options: PostgresNotificationsOptions) {
    this.#pool = options.pool;
    this.#newListenClient = options.newListenClient;
    this.#channel = notificationChannel(options.schema);
    this.#logger = options.logger;
    this.#description = options.description;
    // A pooled connection that goes away no longer speaks for this store.
    options.pool.on('remove', (client) => {
      if (typeof client.processID === 'number') this.#ownBackends.delete(client.processID);
    });
  }

  get channel(): string {
    return this.#channel;
  }

  publish(topics: readonly string[]): void {
    if (this.#closed) {
      this.#logger.debug('dropped wake-ups published after the store closed', {
        store: this.#description,
        topics: topics.length,
      });
      return;
    }
    for (const topic of topics) {
      if (typeof topic !== 'string') continue;
      this.#counters.published++;
      if (this.#pending.delete(topic)) this.#pendingBytes -= Buffer.byteLength(topic);
      this.#pending.add(topic);
      this.#pendingBytes += Buffer.byteLength(topic);
    }
    let evicted = 0;
    while (this.#pendingBytes > MAX_PENDING_BYTES) {
      const oldest = this.#pending.values().next().value as string;
      this.#pending.delete(oldest);
      this.#pendingBytes -= Buffer.byteLength(oldest);
      evicted++;
    }
    if (evicted > 0) this.#drop(evicted, 'the wake-up queue is full (is PostgreSQL reachable?)');
    this.#arm();
  }

  subscribe(listener: (topic: string) => void): () => void {
    // Wrapped, so that subscribing one function twice gives two independent subscriptions.
    const entry = (topic: string) => listener(topic);
    this.#listeners.add(entry);
    this.#startListening();
    return () => {
      this.#listeners.delete(entry);
      if (this.#listeners.size === 0) this.#interrupt?.();
    };
  }

  /**
   * Sends what is pending (waiting at most CLOSE_FLUSH_TIMEOUT_MS for that), ends the listening
   * connection and stops for good: later publishes are dropped. Call before ending the pool.
   */
  async close(): Promise<void> {
    if (this.#closed) {
      await this.#listening;
      return;
    }
    this.#closed = true;
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#interrupt?.();
    // Bounded: with the database down, a flush waits for a connection (up to the connect timeout).
    await within(
      (async () => {
        await this.#flushing;
        if (this.#pending.size > 0) await this.#flush();
      })(),
      CLOSE_FLUSH_TIMEOUT_MS,
    );
    await this.#listening;
  }

  stats(): PostgresNotificationStats {
    return { ...this.#counters, pending: this.#pending.size, listenerPid: this.#listenerPid };
  }

  #drop(count: number, reason: string, err?: unknown): void {
    this.#counters.dropped += count;
    this.#logger.debug('dropped wake-ups; other processes find the work by polling', {
      store: this.#description,
      topics: count,
      reason,
      ...(err === undefined ? {} : { error: messageOf(err), code: errorCode(err) }),
    });
  }

  /** Schedules a flush in FLUSH_DELAY_MS, unless one is scheduled or running (it re-arms when done). */
  #arm(): void {
    if (this.#closed || this.#timer !== undefined || this.#flushing !== undefined) return;
    if (this.#pending.size === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flushing = this.#flush().finally(() => {
        this.#flushing = undefined;
        this.#arm();
      });
    }, FLUSH_DELAY_MS);
  }

  /** Sends every pending topic. Never rejects. */
  async #flush(): Promise<void> {
    const topics = [...this.#pending];
    this.#pending.clear();
    this.#pendingBytes = 0;
    const { payloads, tooLong } = packPayloads(topics);
    if (tooLong > 0) this.#drop(tooLong, `a topic does not fit in one ${MAX_PAYLOAD_BYTES}-byte payload`);
    if (payloads.length === 0) return;
    let client: PostgresPoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      this.#drop(countTopics(payloads), 'no connection to send them', err);
      return;
    }
    // A checked-out connection that dies between statements reports it here, not to a statement.
    let lost: Error | undefined;
    const onError = (err: Error) => {
      lost ??= err;
    };
    client.on('error', onError);
    if (typeof client.processID === 'number') this.#ownBackends.add(client.processID);
    let sent = 0;
    try {
      for (; sent < payloads.length; sent += PAYLOADS_PER_STATEMENT) {
        const batch = payloads.slice(sent, sent + PAYLOADS_PER_STATEMENT);
        const values = [this.#channel, batch.map((p) => p.text)];
        await client.query({ name: 'lh_wake_notify', text: NOTIFY, values });
        this.#counters.notifyStatements++;
        this.#counters.payloadsSent += batch.length;
        this.#counters.topicsSent += countTopics(batch);
      }
    } catch (err) {
      // After a lost connection the pool must not hand this one out again; after an SQL error it may.
      if (classifyStoreError(err) === 'connectionLost') lost ??= asError(err);
      this.#drop(countTopics(payloads.slice(sent)), 'NOTIFY failed', err);
    } finally {
      client.off('error', onError);
      client.release(lost);
    }
  }

  #startListening(): void {
    if (this.#closed || this.#listening !== undefined || this.#listeners.size === 0) return;
    this.#listening = this.#listenLoop().finally(() => {
      this.#listening = undefined;
      // A listener subscribed while the loop was stopping.
      this.#startListening();
    });
  }

  #wanted(): boolean {
    return !this.#closed && this.#listeners.size > 0;
  }

  /** The listening connection's state machine (see the class comment). Never rejects. */
  async #listenLoop(): Promise<void> {
    for (let failures = 0; this.#wanted(); ) {
      const client = this.#newListenClient();
      let lost: (reason: unknown) => void = () => undefined;
      const connectionLost = new Promise<unknown>((resolve) => {
        lost = resolve;
      });
      // Registered before connecting and never removed: a dead connection may report more than once.
      client.on('error', (err) => lost(err));
      client.on('end', () => lost(new Error('the listening connection ended')));
      client.on('notification', (message) => this.#deliver(message));
      let reason: unknown;
      let health: NodeJS.Timeout | undefined;
      try {
        const ready = (async () => {
          await client.connect();
          // Wake-ups never keep a process alive (like the pool's idle connections).
          client.unref?.();
          await client.query(this.#listenStatement());
          return true;
        })();
        // Connecting may outlive an interrupted wait below: its failure is then of no interest.
        ready.catch(() => undefined);
        if (!(await this.#until(ready)) || !this.#wanted()) break;
        this.#listenerPid = typeof client.processID === 'number' ? client.processID : null;
        this.#counters.listenConnects++;
        if (failures > 0) {
          this.#logger.info('listening for wake-ups again', {
            store: this.#description,
            channel: this.#channel,
          });
        }
        failures = 0;
        health = this.#checkHealth(client, lost);
        reason = await this.#until(connectionLost);
      } catch (err) {
        reason = err;
      } finally {
        clearInterval(health);
        this.#listenerPid = null;
        await endWithin(client, END_TIMEOUT_MS);
      }
      if (!this.#wanted()) break;
      failures++;
      const fields = {
        store: this.#description,
        error: messageOf(reason),
        code: errorCode(reason),
        attempt: failures,
      };
      const message =
        'lost the connection listening for wake-ups; reconnecting (until then, other processes wake ' +
        'this one only by polling)';
      // The first failure is worth a warning; the next ones (the server is still down), debug lines.
      if (failures === 1) this.#logger.warn(message, fields);
      else this.#logger.debug(message, fields);
      await this.#until(sleep(reconnectDelayMs(failures)));
    }
  }

  /**
   * Re-issues `LISTEN` (a no-op for the server) every HEALTH_CHECK_INTERVAL_MS; no answer within
   * HEALTH_CHECK_TIMEOUT_MS, or an error, counts as a lost connection (a silently dead network path
   * raises no socket error for a long time).
   */
  #checkHealth(client: PostgresListenClient, lost: (reason: unknown) => void): NodeJS.Timeout {
    let checking = false;
    const timer = setInterval(() => {
      if (checking) return;
      checking = true;
      const timeout = setTimeout(
        () => lost(new Error(`the listening connection did not answer within ${HEALTH_CHECK_TIMEOUT_MS} ms`)),
        HEALTH_CHECK_TIMEOUT_MS,
      );
      timeout.unref();
      client
        .query(this.#listenStatement())
        .catch((err: unknown) => lost(err))
        .finally(() => {
          clearTimeout(timeout);
          checking = false;
        });
    }, HEALTH_CHECK_INTERVAL_MS);
    timer.unref();
    return timer;
  }

  /** Waits for `promise`, or until `#interrupt` is called (the listener is no longer wanted). */
  async #until<T>(promise: Promise<T>): Promise<T | undefined> {
    if (!this.#wanted()) return undefined;
    let interrupted: () => void = () => undefined;
    const interruption = new Promise<undefined>((resolve) => {
      interrupted = () => resolve(undefined);
    });
    this.#interrupt = interrupted;
    try {
      return await Promise.race([promise, interruption]);
    } finally {
      if (this.#interrupt === interrupted) this.#interrupt = undefined;
    }
  }

  #listenStatement(): string {
    // The channel is built from a validated lower-case identifier and hex digits: no quoting issues.
    return `LISTEN "${this.#channel}"`;
  }

  #deliver(message: PostgresNotification): void {
    if (message.channel !== this.#channel) return;
    if (this.#ownBackends.has(message.processId)) return;
    let topics: unknown;
    try {
      topics = JSON.parse(message.payload ?? '');
    } catch {
      topics = undefined;
    }
    if (!Array.isArray(topics)) {
      this.#logger.debug('ignored a notification that is not a list of wake-up topics', {
        store: this.#description,
        channel: message.channel,
      });
      return;
    }
    for (const topic of topics) {
      if (typeof topic !== 'string') continue;
      this.#counters.received++;
      for (const listener of [...this.#listeners]) {
        try {
          listener(topic);
        } catch (err) {
          this.#logger.warn('a wake-up listener threw', { store: this.#description, error: messageOf(err) });
        }
      }
    }
  }
}

/** Counters and state of one store's notifications, for diagnostics and tests. */
export interface PostgresNotificationStats {
  /** Topics passed to `publish` (before deduplication). */
  readonly published: number;
  /** `SELECT pg_notify(...)` statements sent, each one autocommit transaction carrying 1-32 payloads. */
  readonly notifyStatements: number;
  /** Notifications (payloads) sent. */
  readonly payloadsSent: number;
  /** Topics sent, after deduplication. */
  readonly topicsSent: number;
  /** Topics dropped: queue full, too long, or the database could not be reached. */
  readonly dropped: number;
  /** Topics waiting for the next flush. */
  readonly pending: number;
  /** Topics received from other stores and passed to the listeners. */
  readonly received: number;
  /** Successful `LISTEN`s on a fresh connection (1 after the first subscription, +1 per reconnect). */
  readonly listenConnects: number;
  /** Backend process id of the listening connection, while one is listening. */
  readonly listenerPid: number | null;
}

/** What `PostgresNotifications` needs: the store's pool, and a way to make the listening connection. */
export interface PostgresNotificationsOptions {
  readonly pool: PostgresPool;
  /** A new, unconnected client (not from the pool): the listening connection. */
  readonly newListenClient: () => PostgresListenClient;
  readonly schema: string;
  /** The store's description, for logs (never a password). */
  readonly description: string;
  readonly logger: Logger;
}

/** A notification as the `pg` driver delivers it. */
export interface PostgresNotification {
  readonly processId: number;
  readonly channel: string;
  readonly payload?: string | undefined;
}

/** The part of a `pg.Client` the listening connection uses. */
export interface PostgresListenClient {
  /** The backend's process id, once connected (`pg` sets it; absent from its type declarations). */
  readonly processID?: number | null;
  connect(): Promise<unknown>;
  query(text: string): Promise<unknown>;
  end(): Promise<void>;
  /** Lets the process exit while this connection is open (`pg` has it; absent from its types). */
  unref?(): void;
  on(event: 'notification', listener: (message: PostgresNotification) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'end', listener: () => void): unknown;
}

const PAYLOADS_PER_STATEMENT = 32;
/** Delay, in ms, between the first publish of a batch and its flush. */
const FLUSH_DELAY_MS = 1;
/** Most bytes of topics waiting to be sent; beyond it the oldest are dropped. */
const MAX_PENDING_BYTES = 1 << 20;
const HEALTH_CHECK_INTERVAL_MS = 30_000;
const HEALTH_CHECK_TIMEOUT_MS = 10_000;
/** How long, in ms, `close` waits to send the pending wake-ups before dropping them. */
const CLOSE_FLUSH_TIMEOUT_MS = 1_000;
/** How long, in ms, ending a listening connection may take before it is abandoned. */
const END_TIMEOUT_MS = 2_000;
const NOTIFY = 'SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p';

/** Jittered exponential backoff before reconnect number `failures` (1, 2, ...): 100 ms doubling to 5 s. */
function reconnectDelayMs(failures: number): number {
  const ceiling = Math.min(5_000, 100 * 2 ** Math.min(failures - 1, 10));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Ends a client; gives up waiting after `ms` (a dead socket may never confirm). Never rejects. */
function endWithin(client: PostgresListenClient, ms: number): Promise<void> {
  return within(
    client.end().catch(() => undefined),
    ms,
  );
}

/** Waits for `promise` (which must never reject), for at most `ms`. */
async function within(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise,
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

/** Like setTimeout, but never keeps the process alive. */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
