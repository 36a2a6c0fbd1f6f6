/**
 * A private PostgreSQL cluster for tests that restart the database: `initdb` into a temporary directory,
 * `pg_ctl start` on a free port of 127.0.0.1 (trust auth, user postgres, socket in the same directory),
 * restarts with `pg_ctl restart -m fast|immediate`, and `destroy()` stops it and deletes the directory.
 * The shared server the other tests use is never touched.
 *
 * PostgreSQL refuses to run as root. When the tests run as root (CI containers), every PostgreSQL command
 * runs as the `postgres` user through `runuser`, and the directory is given to that user; if that is
 * impossible, `create()` fails with a message saying what is missing. Binaries are looked up in
 * LONGHAUL_TEST_PG_BIN, else /usr/lib/postgresql/15/bin.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

const PG_BIN = process.env.LONGHAUL_TEST_PG_BIN ?? '/usr/lib/postgresql/15/bin';
/** Bound on one pg_ctl or initdb command (ms); pg_ctl's own wait (-t, s) is shorter. */
const COMMAND_TIMEOUT_MS = 60_000;
const PG_CTL_WAIT_S = 45;
/** The system user that runs PostgreSQL when the tests run as root. */
const PG_USER = 'postgres';

const running = new Set<PrivatePostgres>();
process.once('exit', () => {
  // Last resort if a test process ends without destroy(): stop the server (synchronously).
  for (const cluster of running) cluster.stopNowSync();
});

export class PrivatePostgres {
  #log = '';

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly asUser: string | null,
  ) {}

  get dataDir(): string {
    return path.join(this.dir, 'data');
  }

  get logFile(): string {
    return path.join(this.dir, 'server.log');
  }

  /** `postgres://postgres@127.0.0.1:PORT/postgres` with `?schema=` and other options. */
  url(options: Record<string, string> = {}): string {
    const url = new URL(`postgres://postgres@127.0.0.1:${this.port}/postgres`);
    for (const [k, v] of Object.entries(options)) url.searchParams.set(k, v);
    return url.href;
  }

  /** Creates and starts a cluster; on any failure removes what it made and throws with the details. */
  static async create(): Promise<PrivatePostgres> {
    for (const tool of ['initdb', 'pg_ctl']) {
      if (!existsSync(path.join(PG_BIN, tool))) {
        throw new Error(
          `${tool} not found in ${PG_BIN}: the database-restart tests need the PostgreSQL 15 server binaries ` +
            '(Debian: apt-get install postgresql-15), or LONGHAUL_TEST_PG_BIN pointing at them',
        );
      }
    }
    const dir = mkdtempSync(path.join(tmpdir(), 'longhaul-pg-'));
    const asUser = process.getuid?.() === 0 ? PG_USER : null;
    try {
      if (asUser) giveTo(dir, asUser);
      const cluster = new PrivatePostgres(dir, await freePort(), asUser);
      await cluster.#run('initdb', [
        '-D',
        cluster.dataDir,
        '-U',
        'postgres',
        '-A',
        'trust',
        '-E',
        'UTF8',
        '--no-sync',
      ]);
      await cluster.#pgCtl(['start']);
      running.add(cluster);
      return cluster;
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Restarts the server: `fast` rolls back open transactions and disconnects clients cleanly; `immediate`
   * kills the server processes without a shutdown checkpoint (a crash: WAL recovery on start).
   */
  async restart(mode: 'fast' | 'immediate'): Promise<void> {
    await this.#pgCtl(['restart', '-m', mode]);
  }

  /** Stops the server (immediate mode) and deletes the directory. Idempotent; never throws on a missing server. */
  async destroy(): Promise<void> {
    try {
      if (running.has(this) && existsSync(path.join(this.dataDir, 'postmaster.pid'))) {
        await this.#pgCtl(['stop', '-m', 'immediate']);
      }
    } finally {
      running.delete(this);
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** The server log and the output of the commands run so far, for failure messages. */
  diagnostics(): string {
    const server = existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8').slice(-4000) : '';
    return `${this.#log.slice(-4000)}\n--- server log\n${server}`;
  }

  /** For the exit hook only. */
  stopNowSync(): void {
    try {
      const [cmd, args] = this.#command('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', 'stop']);
      execFileSync(cmd, args, { stdio: 'ignore', timeout: 20_000 });
    } catch {
      // Nothing more can be done while exiting.
    }
  }

  #pgCtl(args: readonly string[]): Promise<void> {
    const serverOptions = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1`;
    return this.#run('pg_ctl', [
      '-D',
      this.dataDir,
      '-l',
      this.logFile,
      '-w',
      '-t',
      String(PG_CTL_WAIT_S),
      '-o',
      serverOptions,
      ...args,
    ]);
  }

  #command(tool: string, args: readonly string[]): [string, string[]] {
    const bin = path.join(PG_BIN, tool);
    return this.asUser ? ['runuser', ['-u', this.asUser, '--', bin, ...args]] : [bin, [...args]];
  }

  /**
   * Runs a PostgreSQL tool and waits for it to exit (not for its output streams to close: the server
   * pg_ctl starts lives on). Bounded by COMMAND_TIMEOUT_MS; fails with the tool's output.
   */
  #run(tool: string, args: readonly string[]): Promise<void> {
    const [cmd, fullArgs] = this.#command(tool, args);
    const what = `${cmd} ${fullArgs.join(' ')}`;
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, fullArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (c: Buffer) => {
        output += c.toString();
      });
      child.stderr.on('data', (c: Buffer) => {
        output += c.toString();
      });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${what} did not finish within ${COMMAND_TIMEOUT_MS} ms:\n${output}`));
      }, COMMAND_TIMEOUT_MS);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`could not run ${what}: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        this.#log += `$ ${what}\n${output}`;
        if (code === 0) resolve();
        else {
          const hint =
            this.asUser && /runuser|permission|cannot/i.test(output)
              ? `\n(PostgreSQL refuses to run as root, so this ran as '${this.asUser}' through runuser; that user ` +
                'must exist and be able to use the temporary directory)'
              : '';
          reject(new Error(`${what} failed (${signal ?? `exit ${code}`}):\n${output}${hint}`));
        }
      });
    });
  }
}

/** Gives `dir` to `user` (PostgreSQL's data directory must belong to the user that runs the server). */
function giveTo(dir: string, user: string): void {
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
  } catch {
    throw new Error(
      `the tests run as root, and PostgreSQL refuses to; they run it as the '${user}' user, which does not ` +
        `exist here. Create it (Debian: the postgresql package does), or run the tests as a non-root user.`,
    );
  }
  chownSync(dir, uid, gid);
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}
