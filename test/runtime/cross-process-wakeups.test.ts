import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { Notifier, type WakeChannel } from '../../src/runtime/notifier.js';
import { StoreClock } from '../../src/runtime/runtime.js';
import type { Store } from '../../src/store/store.js';

describe('wake-ups across processes', () => {
  it('sends local wake-ups to other processes and delivers theirs locally without echoing them back', () => {
    const sent: WakeChannel[] = [];
    const a = new Notifier();
    a.connectRemote((c) => sent.push(c));
    const heard: WakeChannel[] = [];
    const channel: WakeChannel = { kind: 'workflowTask', namespace: 'default', taskQueue: 'q' };
    a.on(channel, (c) => heard.push(c));
    a.notify(channel);
    expect(sent).toEqual([channel]);
    expect(heard).toEqual([channel]);
    a.notifyLocal(channel); // as if it came from another process
    expect(sent).toHaveLength(1);
    expect(heard).toHaveLength(2);
  });
});

describe('the store clock', () => {
  it('follows the store’s clock, not the node’s, corrected by half the round trip', async () => {
    const skew = 3_600_000; // the database is an hour ahead of this node
    const store = {
      currentTime: async () => Date.now() + skew,
    } as unknown as Store;
    const clock = await StoreClock.start(store, silentLogger);
    try {
      expect(Math.abs(clock.now() - (Date.now() + skew))).toBeLessThan(50);
    } finally {
      clock.stop();
    }
  });
});
