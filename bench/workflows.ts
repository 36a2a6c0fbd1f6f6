import { proxyActivities, sleep } from 'longhaul/workflow';
import type * as activities from './activities.js';

const { noop } = proxyActivities<typeof activities>({ startToCloseTimeout: '1m' });

/** W1 and W2: `steps` sequential no-op activities. */
export async function steps(n: number): Promise<number> {
  for (let i = 0; i < n; i++) await noop();
  return n;
}

/** W3: one activity, then a long sleep. */
export async function sleeper(): Promise<void> {
  await noop();
  await sleep('1h');
}

/** W4: a short sleep; lateness is read from history. */
export async function napper(ms: number): Promise<void> {
  await sleep(ms);
}
