import { describe, expect, it } from 'vitest';
import { Notifier, WakeWatch } from '../../src/runtime/notifier.js';

const closed = (runId: string) => ({ kind: 'runClosed', runId }) as const;

describe('WakeWatch', () => {
  it('a notification that arrives before the wait (during a read) ends the wait at once', async () => {
    const notifier = new Notifier();
    const watch = new WakeWatch(notifier);
    watch.watch(closed('r1'));
    watch.reset();
    notifier.notify(closed('r1')); // between the read and the wait
    const t0 = performance.now();
    await watch.wait(10_000);
    expect(performance.now() - t0).toBeLessThan(1000);
    watch.stop();
  });

  it('waits the full time without a notification, and reset forgets an earlier one', async () => {
    const notifier = new Notifier();
    const watch = new WakeWatch(notifier);
    watch.watch(closed('r1'));
    notifier.notify(closed('r1'));
    notifier.notify(closed('other'));
    watch.reset();
    const t0 = performance.now();
    await watch.wait(50);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(45);
    watch.stop();
  });

  it('a notification during the wait ends it; watch() moves to another channel; stop() ends a wait', async () => {
    const notifier = new Notifier();
    const watch = new WakeWatch(notifier);
    watch.watch(closed('r1'));
    watch.reset();
    const waiting = watch.wait(10_000);
    setTimeout(() => notifier.notify(closed('r1')), 10);
    await waiting;

    watch.watch(closed('r2'));
    watch.reset();
    notifier.notify(closed('r1')); // no longer watched
    let ended = false;
    const second = watch.wait(10_000).then(() => {
      ended = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(ended).toBe(false);
    watch.stop();
    await second;
    expect(ended).toBe(true);
  });
});
