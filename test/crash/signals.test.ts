import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { add, finish } from '../fixtures/crash/workflows.js';
import {
  attr,
  entriesOf,
  eventsOfType,
  expectNoCompletedActivityRestarted,
  expectWellFormedHistory,
} from './checks.js';
import { sleep, withTimeout } from './harness.js';
import { type CrashEnv, createCrashEnv } from './setup.js';

const SIGNALS = 100;
const KILL_AFTER = 40;
const PAUSE_BETWEEN_SIGNALS_MS = 15;

describe('crash: kill -9 while signals are being sent', () => {
  let env: CrashEnv;
  beforeEach(() => {
    env = createCrashEnv();
  });
  afterEach(async () => {
    await env.dispose();
  });

  it('delivers every signal exactly once and in order across a kill and a restart', async () => {
    await env.worker.start();
    const client = await env.client();
    const handle = await client.workflow.start('collector', {
      workflowId: 'collector-1',
      taskQueue: env.taskQueue,
      args: [env.logPath],
      // A task that the killed worker held is retried 1 s after it started, not after the default 10 s.
      workflowTaskTimeout: '1s',
    });

    let restarting: Promise<unknown> | null = null;
    let ready = false;
    let sentWhileDown = 0;
    for (let n = 1; n <= SIGNALS; n++) {
      await handle.signal(add, n);
      if (restarting && !ready) sentWhileDown++;
      if (n === KILL_AFTER) {
        await env.worker.kill9();
        // Signals keep coming while the new worker starts up.
        restarting = env.worker.start().then(() => {
          ready = true;
        });
      }
      await sleep(PAUSE_BETWEEN_SIGNALS_MS);
    }
    await withTimeout(restarting!, 20_000, 'the worker restart');
    expect(sentWhileDown, 'signals were sent while no worker was up').toBeGreaterThan(0);
    await handle.signal(finish);
    const received = await withTimeout(handle.result(), 20_000, 'the workflow result');

    expect(received).toEqual(Array.from({ length: SIGNALS }, (_, i) => i + 1));
    const history = await handle.fetchHistory();
    const signals = eventsOfType(history, 'SignalReceived').map((e) =>
      attr<{ signalName: string; input: unknown[] }>(e),
    );
    expect(signals.filter((s) => s.signalName === 'add').map((s) => s.input[0])).toEqual(received);
    expect(signals.filter((s) => s.signalName === 'finish')).toHaveLength(1);

    const log = env.readLog();
    expect(entriesOf(log, { name: 'begin' }).map((e) => e.event)).toEqual(['start', 'complete']);
    expect(entriesOf(log, { name: 'end' }).map((e) => e.event)).toEqual(['start', 'complete']);
    expectNoCompletedActivityRestarted(log);
    expectWellFormedHistory(history);
  });
});
