import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { SANDBOX_THREAD_PROGRAM } from './sandbox-thread-program.js';

/**
 * What a sandbox thread made of one request:
 * - `ok`: the realm's answer (JSON text) and the log lines it produced (JSON text or '');
 * - `deadlock`: the thread's watchdog stopped workflow code that ran too long; the thread and its realm
 *   stay usable;
 * - `failed`: the thread itself failed (a bug, or the thread has exited);
 * - `loadFailed`: the bundle did not load in this thread;
 * - `hung`: no answer within the backstop time; the thread has been stopped and must be replaced.
 */
export type ThreadAnswer =
  | { readonly kind: 'ok'; readonly text: string; readonly logs: string }
  | { readonly kind: 'deadlock'; readonly logs: string }
  | { readonly kind: 'failed' | 'loadFailed'; readonly message: string }
  | { readonly kind: 'hung' };

export interface SandboxThreadOptions {
  /** The bundle's code (a classic script returning the slot) and its file name for stack traces. */
  readonly code: string;
  readonly filename: string;
  /** Name of the vm context, shown in heap snapshots and the inspector. */
  readonly contextName: string;
  /** How long a request may run workflow code before the thread's watchdog stops it, ms. */
  readonly deadlockTimeoutMs: number;
}

/** Int32 slots of the channel header. */
const REQ = 0; // sequence number of the latest request (host writes)
const RES = 1; // sequence number of the latest answer (thread writes)
const REQ_LEN = 2; // request length in bytes; -1: the request is on the port
const RES_LEN = 3; // answer length in bytes; -1: the answer is on the port
const RES_KIND = 4; // one of the KIND values
const HEAP_KIB = 5; // the thread's V8 heap in use, KiB, updated at least every slackFor(timeout) ms
const HEADER_BYTES = 32;
const KIND = { 1: 'ok', 2: 'deadlock', 3: 'failed', 4: 'loadFailed' } as const;

/** Requests and answers up to this size travel in shared memory; larger ones go through a MessagePort. */
const DATA_BYTES = 1 << 20;
/**
 * Busy-waiting, ms. Waking a sleeping thread costs ~10–40 µs per direction on a VM. The thread spins
 * after each answer so that calls in quick succession (a replay, a busy worker) find it awake; the host
 * spins only briefly, since a host that sleeps at once lets the kernel run the thread on its core, which
 * is what an idle worker wants. Measured (bench/sandbox.ts, µs per activation, back to back / after
 * 1 ms asleep): no spin 71 / 47; thread 0.05 only 36 / 49; host 0.02 + thread 0.05 12 / 85; host
 * 0.1 + thread 0.05 12 / 145.
 */
const HOST_SPIN_MS = 0.02;
const THREAD_SPIN_MS = 0.05;
/** Extra time the host allows for a thread to start and load the bundle before its first answer, ms. */
const START_GRACE_MS = 10_000;

/** The part of the deadlock budget by which the thread's watchdog may fire late, ms (see the program). */
export function slackFor(deadlockTimeoutMs: number): number {
  return Math.min(1000, Math.max(5, Math.ceil(deadlockTimeoutMs / 10)));
}

/**
 * One `worker_threads` thread that owns a workflows realm, called synchronously: the host writes a
 * request into shared memory, wakes the thread with `Atomics.notify`, and waits (`Atomics.wait`) for
 * the answer. The host's event loop does not turn during a call, and nothing in the thread ever waits
 * for the host, so a call either answers or times out.
 *
 * Guarantees. The thread's own watchdog (sandbox-thread-program.ts) answers `deadlock` when workflow
 * code runs longer than `deadlockTimeoutMs` (at most `slackFor(deadlockTimeoutMs)` ms later). As a
 * backstop, when no answer comes within the deadlock budget plus a grace time (the thread died, or it
 * is stuck in native code the watchdog cannot interrupt), `call` stops the thread and answers `hung`;
 * everything the thread held is lost and the owner must start a new one.
 *
 * The thread is unreferenced: it never keeps the process alive. `stop()` ends it.
 */
/** Young generation of the sandbox thread's heap (MB). */
const SANDBOX_YOUNG_GENERATION_MB = 4;

export class SandboxThread {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #ctl: Int32Array;
  readonly #data: Buffer;
  readonly #answerWithinMs: number;
  #seq = 0;
  #started = false;
  #exited = false;
  #exitReason = '';

  constructor(options: SandboxThreadOptions) {
    const sab = new SharedArrayBuffer(HEADER_BYTES + DATA_BYTES);
    this.#ctl = new Int32Array(sab, 0, HEADER_BYTES / 4);
    this.#data = Buffer.from(sab, HEADER_BYTES);
    const slackMs = slackFor(options.deadlockTimeoutMs);
    this.#answerWithinMs = options.deadlockTimeoutMs + slackMs + Math.max(1000, options.deadlockTimeoutMs);
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    this.#worker = new Worker(SANDBOX_THREAD_PROGRAM, {
      eval: true,
      // The thread needs no loader, flags or environment of the host process.
      execArgv: [],
      env: {},
      // Workflow state is many small, short-lived objects; a small young generation keeps the thread's
      // memory flat (the default sizes it for the whole machine) at little cost in collection time.
      resourceLimits: { maxYoungGenerationSizeMb: SANDBOX_YOUNG_GENERATION_MB },
      workerData: {
        code: options.code,
        filename: options.filename,
        contextName: options.contextName,
        sab,
        port: port2,
        headerBytes: HEADER_BYTES,
        deadlockTimeoutMs: options.deadlockTimeoutMs,
        slackMs,
        spinMs: THREAD_SPIN_MS,
      },
      transferList: [port2],
    });
    this.#worker.on('error', (err: unknown) => {
      this.#exitReason = err instanceof Error ? err.message : String(err);
    });
    this.#worker.on('exit', (code) => {
      this.#exited = true;
      this.#exitReason ||= `exit code ${code}`;
    });
    this.#worker.unref();
  }

  /** True once the thread has ended (stopped, or died: then `call` answers `failed`). */
  get exited(): boolean {
    return this.#exited;
  }

  /** The thread's V8 heap in use, bytes (its realm and every run in it); at most one session old. */
  get heapUsedBytes(): number {
    return Atomics.load(this.#ctl, HEAP_KIB) * 1024;
  }

  /** Sends one request (JSON text) and waits for its answer; see ThreadAnswer. */
  call(request: string): ThreadAnswer {
    if (this.#exited) {
      return { kind: 'failed', message: `the sandbox thread has ended (${this.#exitReason})` };
    }
    const ctl = this.#ctl;
    const data = this.#data;
    if (request.length * 3 <= data.length || Buffer.byteLength(request) <= data.length) {
      ctl[REQ_LEN] = data.write(request, 0);
    } else {
      this.#port.postMessage(request);
      ctl[REQ_LEN] = -1;
    }
    const before = Atomics.load(ctl, RES);
    this.#seq = this.#seq === 0x7fffffff ? 1 : this.#seq + 1;
    const seq = this.#seq;
    Atomics.store(ctl, REQ, seq);
    Atomics.notify(ctl, REQ);

    const start = performance.now();
    const spinUntil = start + HOST_SPIN_MS;
    const giveUpAt = start + this.#answerWithinMs + (this.#started ? 0 : START_GRACE_MS);
    while (Atomics.load(ctl, RES) !== seq) {
      const now = performance.now();
      if (now < spinUntil) continue;
      if (now >= giveUpAt) {
        this.stop();
        return { kind: 'hung' };
      }
      Atomics.wait(ctl, RES, before, giveUpAt - now);
    }
    this.#started = true;

    const kind = KIND[ctl[RES_KIND] as keyof typeof KIND];
    const length = ctl[RES_LEN]!;
    let text: string;
    if (length >= 0) {
      text = data.toString('utf8', 0, length);
    } else {
      const m = receiveMessageOnPort(this.#port) as { message: string } | undefined;
      if (m === undefined) return { kind: 'failed', message: 'the answer is missing from the port' };
      text = m.message;
    }
    switch (kind) {
      case 'ok':
      case 'deadlock': {
        const nl = text.indexOf('\n');
        const logs = text.slice(nl + 1);
        return kind === 'ok' ? { kind, text: text.slice(0, nl), logs } : { kind, logs };
      }
      case 'failed':
      case 'loadFailed':
        return { kind, message: text };
      default:
        return { kind: 'failed', message: `unknown answer kind ${String(ctl[RES_KIND])}` };
    }
  }

  /** Ends the thread (asynchronously; it answers no further call). Safe to call twice. */
  stop(): void {
    if (!this.#exited) this.#exitReason = 'stopped';
    this.#exited = true;
    this.#port.close();
    this.#worker.terminate().catch(() => {});
  }
}
