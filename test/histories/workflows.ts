/**
 * Workflows whose saved histories live beside this file. Never change their behaviour: the histories
 * are replayed against this module on every test run to catch non-determinism regressions in the engine.
 */
import {
  condition,
  defineSignal,
  isCancellation,
  proxyActivities,
  setHandler,
  sleep,
} from 'longhaul/workflow';
import type * as activities from './activities.js';

const { charge, ship, flaky } = proxyActivities<typeof activities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '10ms', maximumAttempts: 5 },
});

export const approve = defineSignal<[string]>('approve');
export const items = defineSignal<[number]>('item');

/** Activities, a retried activity, a signal-driven condition with timeout, and a timer. */
export async function order(orderId: string): Promise<string> {
  let approver: string | undefined;
  const added: number[] = [];
  setHandler(approve, (who) => {
    approver = who;
  });
  setHandler(items, (n) => {
    added.push(n);
  });
  const receipt = await charge(orderId);
  const attempts = await flaky(2);
  const approved = await condition(() => approver !== undefined, '5s');
  await sleep(20);
  const label = await ship(`${orderId}:${added.join(',')}`);
  return `${receipt}|${attempts}|${approved ? approver : 'timeout'}|${label}|${Math.floor(Math.random() * 1000)}`;
}

/** Cancellation while waiting on a timer and an activity. */
export async function cancellable(): Promise<string> {
  try {
    await Promise.all([sleep('1h'), charge('never')]);
    return 'finished';
  } catch (err) {
    if (isCancellation(err)) return 'cancelled';
    throw err;
  }
}
