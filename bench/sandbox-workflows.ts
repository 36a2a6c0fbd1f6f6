import { defineQuery, proxyActivities, setHandler } from 'longhaul/workflow';
import type * as activities from './activities.js';

const { noop } = proxyActivities<typeof activities>({ startToCloseTimeout: '1m' });

export const progress = defineQuery<number>('progress');

/** One activity after another, forever: every activation is one job (a result) and one command. */
export async function loop(): Promise<void> {
  let done = 0;
  setHandler(progress, () => done);
  for (;;) {
    await noop();
    done++;
  }
}
