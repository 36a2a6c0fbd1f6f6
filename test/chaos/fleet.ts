/**
 * Worker processes of a chaos test: a fixed number of slots, each running one worker process
 * (worker-process.ts) at a time, that can be killed with SIGKILL and restarted, or stopped with SIGSTOP
 * and resumed with SIGCONT. Every process a slot ever ran is kept, so the test can read what it printed
 * (its `rejected` lines) after it died. Children belong to a ProcessGroup: `ProcessGroup.killAll()` in
 * afterEach/afterAll leaves none behind (SIGKILL also ends a stopped process).
 */
import { fileURLToPath } from 'node:url';
import type { ManagedProcess, ProcessGroup } from '../crash/harness.js';
import type { ChaosWorkerConfig } from './worker-process.js';

export const CHAOS_WORKER_SCRIPT = fileURLToPath(new URL('./worker-process.ts', import.meta.url));
export const CHAOS_WORKFLOWS = fileURLToPath(new URL('../fixtures/chaos/workflows.ts', import.meta.url));
export const CHAOS_ACTIVITIES = fileURLToPath(new URL('../fixtures/chaos/activities.ts', import.meta.url));

/**
 * Worker options of the chaos tests (ms). Short polls and sweeps, so that the leases of a killed or stopped
 * worker are swept within a fraction of a second of expiring; a short sticky fallback, so that the
 * workflows a dead worker cached move on soon; a deadlock bound longer than any pause, so that an
 * activation interrupted by SIGSTOP is not taken for a deadlock.
 */
export const CHAOS_WORKER_OPTIONS: ChaosWorkerConfig['options'] = {
  sweepInterval: 200,
  pollInterval: 50,
  stickyFallback: 500,
  shutdownGraceTime: 1000,
  deadlockTimeout: 30_000,
  maxConcurrentActivityTaskExecutions: 100,
  maxConcurrentWorkflowTaskExecutions: 10,
  workflowTaskRetry: { initialInterval: 100, maximumInterval: 500 },
};

/** How long a worker process may take to print `ready` on a loaded two-core machine (ms). */
const READY_TIMEOUT_MS = 30_000;

/** One process a slot ran: its identity in history (`workerId`) is `<prefix>:<pid>`. */
export interface WorkerGeneration {
  readonly process: ManagedProcess;
  readonly identity: string;
}

export class WorkerSlot {
  readonly generations: WorkerGeneration[] = [];
  #stopped = false;

  constructor(
    private readonly group: ProcessGroup,
    readonly index: number,
    private readonly config: ChaosWorkerConfig,
  ) {}

  get current(): WorkerGeneration {
    const g = this.generations.at(-1);
    if (!g) throw new Error(`worker slot ${this.index} has not been started`);
    return g;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Starts a new process in this slot and waits until it polls. */
  async start(): Promise<WorkerGeneration> {
    const last = this.generations.at(-1);
    if (last?.process.alive) throw new Error(`slot ${this.index}: process ${last.process.pid} still runs`);
    const name = `worker ${this.index}.${this.generations.length + 1}`;
    const process = await this.group.start(
      name,
      CHAOS_WORKER_SCRIPT,
      [JSON.stringify(this.config)],
      READY_TIMEOUT_MS,
    );
    const ready = process.lines.find((l) => l.startsWith('ready '))!;
    const identity = ready.split(' ')[2]!;
    const generation = { process, identity };
    this.generations.push(generation);
    return generation;
  }

  /** SIGKILL of the current process; returns the wall-clock time just before the signal. */
  kill9(): Promise<number> {
    this.#stopped = false;
    return this.current.process.kill9();
  }

  /** SIGSTOP: the process keeps its connections and leases but does nothing until `resume()`. */
  pause(): number {
    const at = Date.now();
    this.#signal('SIGSTOP');
    this.#stopped = true;
    return at;
  }

  /** SIGCONT after `pause()`; returns the wall-clock time just before the signal. */
  resume(): number {
    const at = Date.now();
    this.#signal('SIGCONT');
    this.#stopped = false;
    return at;
  }

  #signal(signal: NodeJS.Signals): void {
    const p = this.current.process;
    if (!p.alive) throw new Error(`slot ${this.index}: process ${p.pid} is not running (${signal})`);
    p.child.kill(signal);
  }
}

/** Slots started together; workers of one store and task queue. */
export class WorkerFleet {
  readonly slots: WorkerSlot[];

  constructor(group: ProcessGroup, count: number, config: ChaosWorkerConfig) {
    this.slots = Array.from({ length: count }, (_, i) => new WorkerSlot(group, i, config));
  }

  /** Starts the first process of every slot, one after the other (the first creates the schema). */
  async startAll(): Promise<void> {
    await this.slots[0]!.start();
    await Promise.all(this.slots.slice(1).map((s) => s.start()));
  }

  /** Every process any slot ran. */
  get generations(): WorkerGeneration[] {
    return this.slots.flatMap((s) => s.generations);
  }

  /** `rejected` lines printed by one process, parsed. */
  rejectionsOf(pid: number): Record<string, unknown>[] {
    const g = this.generations.find((x) => x.process.pid === pid);
    if (!g) return [];
    return g.process.lines
      .filter((l) => l.startsWith('rejected '))
      .map((l) => JSON.parse(l.slice('rejected '.length)) as Record<string, unknown>);
  }

  /** Stderr of every process (warnings and errors), for failure messages. */
  stderrTail(maxChars = 4000): string {
    return this.generations
      .map((g) => (g.process.stderr ? `--- ${g.identity}\n${g.process.stderr.slice(-maxChars)}` : ''))
      .filter((s) => s !== '')
      .join('\n');
  }
}

/** The pid in a chaos worker identity `<prefix>:<pid>`. */
export function pidOfIdentity(identity: string): number {
  const pid = Number(identity.slice(identity.lastIndexOf(':') + 1));
  if (!Number.isInteger(pid)) throw new Error(`'${identity}' is not a chaos worker identity`);
  return pid;
}
