/**
 * CPU time used by the PostgreSQL server, where it runs on this host: the sum over every process named
 * `postgres` (the postmaster, its backends, WAL writer, checkpointer, autovacuum; a backend that exited
 * counts through its parent), read from /proc. It covers every client of that server, so it is clean
 * only while the benchmark is the server's one user.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Hosts that name this machine in a connection string (`''`: a Unix socket). */
const LOCAL_HOSTS = new Set(['', 'localhost', '127.0.0.1', '[::1]']);

export class ServerCpu {
  readonly #ticksPerSecond: number;

  private constructor(ticksPerSecond: number) {
    this.#ticksPerSecond = ticksPerSecond;
  }

  /** A reader for the server of `url`, or null when that server is not on this host or /proc is missing. */
  static forUrl(url: string): ServerCpu | null {
    const u = new URL(url);
    const socket = u.searchParams.get('host')?.startsWith('/') ?? false;
    if (!socket && !LOCAL_HOSTS.has(u.hostname)) return null;
    let ticks = 100;
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      // Linux has used 100 ticks a second on every common platform.
    }
    const reader = new ServerCpu(ticks);
    return reader.ms() === undefined ? null : reader;
  }

  /** CPU ms the server's processes have used so far (user and system, their reaped children included). */
  ms(): number | undefined {
    let entries: string[];
    try {
      entries = readdirSync('/proc');
    } catch {
      return undefined;
    }
    let ticks = 0;
    let found = false;
    for (const pid of entries) {
      if (!/^\d+$/.test(pid)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      } catch {
        continue; // exited meanwhile
      }
      const close = stat.lastIndexOf(')');
      if (stat.slice(stat.indexOf('(') + 1, close) !== 'postgres') continue;
      // Fields after the name: state is [0]; utime, stime, cutime, cstime are [11..14].
      const f = stat.slice(close + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
      found = true;
    }
    return found ? (ticks * 1000) / this.#ticksPerSecond : undefined;
  }
}
