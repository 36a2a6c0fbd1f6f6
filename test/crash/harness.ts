/**
 * Process control for crash tests: spawn a worker in a child process, wait for a line on its stdout,
 * kill it with SIGKILL, restart it. Every wait is bounded. Every child is tracked and killed by
 * `ProcessGroup.killAll()` (call it in afterEach), and, as a last resort, when the test process exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CrashWorkerConfig } from './worker-process.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const WORKER_PROCESS_SCRIPT = fileURLToPath(new URL('./worker-process.ts', import.meta.url));

/** How long a child may take to print its ready line (TypeScript loading and workflow bundling). */
export const DEFAULT_READY_TIMEOUT_MS = 20_000;

const everyChild = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of everyChild)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** One child process running a TypeScript script; stdout is split into lines, stderr is kept. */
export class ManagedProcess {
  readonly lines: string[] = [];
  stderr = '';
  /** Wall-clock time of the spawn and of the ready line, ms since the epoch. */
  readonly spawnedAt: number;
  readyAt = 0;
  readonly exited: Promise<ExitStatus>;
  #exit: ExitStatus | null = null;
  #partial = '';
  readonly #lineWaiters = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    this.spawnedAt = Date.now();
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      const parts = (this.#partial + chunk).split('\n');
      this.#partial = parts.pop() ?? '';
      this.lines.push(...parts);
      for (const wake of this.#lineWaiters) wake();
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        everyChild.delete(child);
        for (const wake of this.#lineWaiters) wake();
        resolve(this.#exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.#exit === null;
  }

  /** Waits for a stdout line matching `pattern`; fails on timeout or if the process exits first. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const line = this.lines.find((l) => pattern.test(l));
        if (line !== undefined) {
          done();
          resolve(line);
          return true;
        }
        if (this.#exit) {
          done();
          reject(
            new Error(
              `${this.name} exited (${describeExit(this.#exit)}) before printing ${pattern}${this.#tail()}`,
            ),
          );
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name} did not print ${pattern} within ${timeoutMs} ms${this.#tail()}`));
      }, timeoutMs);
      const wake = (): void => {
        check();
      };
      const done = (): void => {
        clearTimeout(timer);
        this.#lineWaiters.delete(wake);
      };
      this.#lineWaiters.add(wake);
      check();
    });
  }

  /**
   * Kills the process with SIGKILL (no cleanup code runs in it) and waits until it is gone. Returns the
   * wall-clock time taken just before the signal was sent.
   */
  async kill9(timeoutMs = 5000): Promise<number> {
    const at = Date.now();
    if (this.alive) this.child.kill('SIGKILL');
    await withTimeout(this.exited, timeoutMs, `${this.name} to exit after SIGKILL`);
    return at;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5000): Promise<ExitStatus> {
    if (!this.alive) return this.#exit!;
    this.child.kill('SIGTERM');
    const status = await Promise.race([this.exited, sleep(graceMs).then(() => null)]);
    if (status) return status;
    this.child.kill('SIGKILL');
    return withTimeout(this.exited, 5000, `${this.name} to exit after SIGKILL`);
  }

  #tail(): string {
    const err = this.stderr.trim();
    return err ? `; stderr:\n${err.slice(-4000)}` : '';
  }
}

/** Tracks the children of one test file; `killAll()` in afterEach/afterAll leaves none behind. */
export class ProcessGroup {
  readonly #children = new Set<ManagedProcess>();

  /** Spawns `node --conditions=source --import tsx <script> ...args` from the repository root. */
  spawn(name: string, script: string, args: readonly string[]): ManagedProcess {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', script, ...args], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    everyChild.add(child);
    const managed = new ManagedProcess(name, child);
    this.#children.add(managed);
    return managed;
  }

  /** Spawns a script and waits for its ready line; kills it if it does not get ready in time. */
  async start(
    name: string,
    script: string,
    args: readonly string[],
    readyTimeoutMs = DEFAULT_READY_TIMEOUT_MS,
  ): Promise<ManagedProcess> {
    const p = this.spawn(name, script, args);
    try {
      await p.waitForLine(/^ready\b/, readyTimeoutMs);
    } catch (err) {
      await p.kill9();
      throw err;
    }
    p.readyAt = Date.now();
    return p;
  }

  /** SIGKILLs every child still running and waits for each to exit. */
  async killAll(): Promise<void> {
    const all = [...this.#children];
    this.#children.clear();
    await Promise.all(all.map((p) => p.kill9()));
  }
}

/** A crash-test worker (worker-process.ts) that can be killed and restarted with the same config. */
export class CrashWorker {
  #current: ManagedProcess | null = null;
  #generation = 0;

  constructor(
    private readonly group: ProcessGroup,
    readonly config: CrashWorkerConfig,
  ) {}

  get process(): ManagedProcess {
    if (!this.#current) throw new Error('the crash worker has not been started');
    return this.#current;
  }

  /** Starts (or restarts) the worker process and waits for `ready`. */
  async start(): Promise<ManagedProcess> {
    if (this.#current?.alive) throw new Error(`worker ${this.#current.pid} is still running; kill it first`);
    this.#generation++;
    this.#current = await this.group.start(`worker #${this.#generation}`, WORKER_PROCESS_SCRIPT, [
      JSON.stringify(this.config),
    ]);
    return this.#current;
  }

  /** kill -9 of the running worker; returns the time just before the signal. */
  kill9(): Promise<number> {
    return this.process.kill9();
  }
}

/** A fresh temporary directory; `removeTempDirs()` deletes all of them. */
const tempDirs: string[] = [];
export function makeTempDir(prefix = 'longhaul-crash-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}
export function removeTempDirs(): void {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects with a message naming what was awaited if `promise` does not settle within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` every `intervalMs` until it returns a value other than undefined/false; bounded. */
export async function waitUntil<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs: number,
  intervalMs = 10,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

function describeExit(s: ExitStatus): string {
  return s.signal ? `signal ${s.signal}` : `code ${s.code}`;
}
