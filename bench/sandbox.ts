/**
 * `node --conditions=source --import tsx bench/sandbox.ts`: the cost of the workflow sandbox boundary,
 * in µs per call, for a trivial workflow (each activation is one job and one command):
 * - activation of a cached instance: back to back (as in a replay), after 1 ms asleep (a worker waiting
 *   for work) and after 1 ms of other work (a busy worker);
 * - a new run: a fresh module instance, loaded with its first activation (disposal is measured
 *   separately);
 * - query of a cached instance.
 *
 * Each figure is the median over rounds of one round's mean, and the median single call (p50) over all
 * rounds. The machine's other load shows in the spread between rounds.
 *
 * Flags: --rounds 5   repeat each measurement.
 */
import { fileURLToPath } from 'node:url';
import type { Activation } from '../src/common/commands.js';
import { bundleWorkflows } from '../src/worker/bundler.js';
import { type WorkflowInstance, WorkflowSandbox } from '../src/worker/sandbox.js';

const args = process.argv.slice(2);
const roundsFlag = args.indexOf('--rounds');
const rounds = roundsFlag >= 0 ? Number(args[roundsFlag + 1]) : 5;
const T0 = 1_700_000_000_000;
const idle = new Int32Array(new SharedArrayBuffer(4));

function info(runId: string) {
  return {
    namespace: 'default',
    workflowId: `wf-${runId}`,
    runId,
    workflowType: 'loop',
    taskQueue: 'bench',
    startTime: T0,
    historyLength: 1,
    continueAsNewSuggested: false,
  };
}

function activation(jobs: Activation['jobs']): Activation {
  return { timestamp: T0, isReplaying: false, historyLength: 3, jobs };
}

/** A started `loop` run whose next activation resolves activity `seq`. */
function started(sandbox: WorkflowSandbox, runId: string): { instance: WorkflowInstance; seq: number } {
  const instance = sandbox.createInstance(info(runId));
  instance.activate(activation([{ type: 'start', workflowType: 'loop', args: [], randomnessSeed: 's' }]));
  return { instance, seq: 1 };
}

/** Every single call's time, µs, per measurement name. */
const calls: Record<string, number[]> = {};

/**
 * Mean µs per call of `fn` over `count` calls; before each call (not timed) it sleeps `gapMs`, or with
 * a negative `gapMs` works (busy-waits) that long.
 */
function time(name: string | undefined, count: number, fn: (i: number) => void, gapMs = 0): number {
  let total = 0;
  for (let i = 0; i < count; i++) {
    if (gapMs > 0) Atomics.wait(idle, 0, 0, gapMs);
    const workUntil = performance.now() - gapMs;
    while (gapMs < 0 && performance.now() < workUntil) {
      // other work
    }
    const t = performance.now();
    fn(i);
    const us = (performance.now() - t) * 1000;
    total += us;
    if (name !== undefined) {
      calls[name] ??= [];
      calls[name].push(us);
    }
  }
  return total / count;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const bundle = await bundleWorkflows(fileURLToPath(new URL('./sandbox-workflows.ts', import.meta.url)));
const createStart = performance.now();
const sandbox = WorkflowSandbox.create(bundle);
const sandboxMs = performance.now() - createStart;

const run = started(sandbox, 'run-hot');
const activate = (): void => {
  const r = run.instance.activate(activation([{ type: 'resolveActivity', seq: run.seq, result: null }]));
  run.seq++;
  if (r.commands.length !== 1 || r.commands[0]!.type !== 'scheduleActivity') {
    throw new Error(`unexpected commands ${JSON.stringify(r.commands)}`);
  }
};

const results: Record<string, number[]> = {
  'activation, back to back': [],
  'activation, after 1 ms asleep': [],
  'activation, after 1 ms working': [],
  query: [],
  'new run (load + first activation)': [],
  'instance disposal': [],
};
for (let round = 0; round < rounds; round++) {
  time(undefined, 2000, activate); // warm-up
  results['activation, back to back']!.push(time('activation, back to back', 20_000, activate));
  results['activation, after 1 ms asleep']!.push(time('activation, after 1 ms asleep', 1000, activate, 1));
  results['activation, after 1 ms working']!.push(time('activation, after 1 ms working', 1000, activate, -1));
  results.query!.push(
    time('query', 20_000, () => {
      run.instance.query('progress', []);
    }),
  );
  const made: WorkflowInstance[] = [];
  results['new run (load + first activation)']!.push(
    time('new run (load + first activation)', 2000, (i) => {
      made.push(started(sandbox, `run-${round}-${i}`).instance);
    }),
  );
  results['instance disposal']!.push(time('instance disposal', made.length, (i) => made[i]!.dispose()));
}

console.log(`sandbox created in ${sandboxMs.toFixed(1)} ms; µs per call, ${rounds} rounds:`);
console.log(`  ${''.padEnd(36)} ${'mean'.padStart(7)} ${'p50'.padStart(7)}   round means`);
for (const [name, xs] of Object.entries(results)) {
  const p50 = median(calls[name] ?? []);
  console.log(
    `  ${name.padEnd(36)} ${median(xs).toFixed(1).padStart(7)} ${p50.toFixed(1).padStart(7)}   ${xs.map((x) => x.toFixed(1)).join(' ')}`,
  );
}
