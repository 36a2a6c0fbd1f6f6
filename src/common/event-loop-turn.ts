/**
 * Cooperative turns. Work chained by promises (a burst of workflow tasks: read, activate, commit, the
 * next one) runs without the event loop turning, since SQLite answers synchronously and every promise
 * involved resolves at once. A sweep that fires 50 timers would then hold the loop for 50 tasks, and
 * the timers, I/O and heartbeats behind it would wait that long. `takeTurn()` bounds that: once the
 * loop has been held for TURN_MS, a caller waits for the loop to turn (`setImmediate`) before going on.
 *
 * How "held" is judged: the first call after the loop turned starts a stretch and queues an immediate
 * that ends it; later calls in the same stretch compare the time with its start. Callers held back in
 * one stretch wait for one shared immediate and resume together, in order, in one callback: the writes
 * they go on to make still share a group commit (an immediate each would commit them one by one and
 * cut W2's throughput by more than half). Each checks again on resuming, so a queue of waiting callers
 * proceeds TURN_MS at a time, one stretch per turn.
 *
 * Where it is called matters: a check passes at once for every caller that reaches it before the work
 * of the others has run, so it belongs right before a caller's own synchronous work (a workflow task
 * checks after its history read, right before its activation), not at the start of a burst.
 */

/** Longest stretch of chained work before callers let the event loop turn, ms. */
export const TURN_MS = 2;

/** When the current stretch began (performance.now() ms); -1 when none is open. */
let stretchStart = -1;

function endStretch(): void {
  stretchStart = -1;
}

/** True when the current stretch has lasted TURN_MS; opens a stretch when none is open. */
function stretchSpent(): boolean {
  const now = performance.now();
  if (stretchStart < 0) {
    stretchStart = now;
    setImmediate(endStretch);
    return false;
  }
  return now - stretchStart >= TURN_MS;
}

/** What callers held back in the current stretch wait for: one immediate for all of them. */
let turn: Promise<void> | null = null;

function nextTurn(): Promise<void> {
  turn ??= new Promise((resolve) =>
    setImmediate(() => {
      turn = null;
      resolve();
    }),
  );
  return turn;
}

/** Resolves at once while the event loop has been held for less than TURN_MS, else after it turned. */
export async function takeTurn(): Promise<void> {
  while (stretchSpent()) await nextTurn();
}
