import { describe, expect, it } from 'vitest';
import { TURN_MS, takeTurn } from '../../src/common/event-loop-turn.js';

/** Keeps the thread busy for `ms` (stands in for a workflow activation). */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // work
  }
}

/** Resolves once the event loop has turned. */
function afterTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('takeTurn', () => {
  it('lets the event loop turn once chained work has held it for TURN_MS', async () => {
    const order: string[] = [];
    let timerRanAfter = -1;
    let done = 0;
    setTimeout(() => {
      timerRanAfter = done;
      order.push('timer');
    }, 0);
    // 60 steps of 0.5 ms chained by promises only: without turns the timer would run after all of them.
    busy(2); // the timer is due before the chain starts
    for (let i = 0; i < 60; i++) {
      await Promise.resolve();
      await takeTurn();
      busy(0.5);
      done++;
    }
    expect(order).toEqual(['timer']);
    expect(timerRanAfter).toBeGreaterThanOrEqual(0);
    // A stretch lasts TURN_MS; the timer runs at the next timers phase, at most two stretches in.
    expect(timerRanAfter).toBeLessThanOrEqual(2 * (Math.ceil(TURN_MS / 0.5) + 1));
  });

  it('resumes the callers held back in one stretch together, in order, after one turn', async () => {
    await afterTurn(); // start right after a turn
    await takeTurn(); // opens a stretch
    busy(TURN_MS + 1); // and spends it
    let immediateRan = false;
    setImmediate(() => {
      immediateRan = true;
    });
    const order: string[] = [];
    await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        await takeTurn();
        order.push(`${i}${immediateRan ? ' after the turn' : ''}`);
        if (i === 0) process.nextTick(() => order.push('next tick'));
      }),
    );
    await afterTurn();
    // All four waited for the turn, and resumed in one callback: a tick queued by the first runs only
    // after the last (so, say, their writes still share one group commit).
    expect(order).toEqual([
      '0 after the turn',
      '1 after the turn',
      '2 after the turn',
      '3 after the turn',
      'next tick',
    ]);
  });

  it('costs no turn while the loop has not been held for long', async () => {
    await afterTurn(); // a fresh start
    let immediateRan = false;
    setImmediate(() => {
      immediateRan = true;
    });
    for (let i = 0; i < 100; i++) await takeTurn();
    expect(immediateRan).toBe(false);
  });
});
