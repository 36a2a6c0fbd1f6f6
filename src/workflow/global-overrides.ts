import { uuidFrom } from './random.js';
import { currentActivator, maybeCurrentActivator } from './run-context.js';

/**
 * Makes the sandbox's globals deterministic. Installed once per sandbox realm; every override asks the
 * run that is executing (see run-context.ts), because all runs of a bundle share the realm.
 * Overridden globals are made read-only so one run cannot replace them for the others.
 */
export function installGlobalOverrides(g: typeof globalThis): void {
  const OriginalDate = g.Date;
  const now = (): number => currentActivator('Date').now;

  // Date: workflow time (the start of the current workflow task), so replay sees the same clock.
  function WorkflowDate(this: unknown, ...args: unknown[]): unknown {
    if (new.target === undefined) return new OriginalDate(now()).toString();
    const ctorArgs = args.length === 0 ? [now()] : args;
    return Reflect.construct(OriginalDate, ctorArgs, new.target);
  }
  Object.setPrototypeOf(WorkflowDate, OriginalDate);
  Object.defineProperties(WorkflowDate, {
    prototype: { value: OriginalDate.prototype, writable: false },
    now: { value: now, writable: false },
    parse: { value: OriginalDate.parse, writable: false },
    UTC: { value: OriginalDate.UTC, writable: false },
  });
  // Dates made inside the sandbox report the workflow Date as their constructor.
  Object.defineProperty(OriginalDate.prototype, 'constructor', { value: WorkflowDate, writable: false });
  lock(g, 'Date', WorkflowDate);

  // Math.random: seeded per run, so replay draws the same numbers.
  lock(g.Math, 'random', () => currentActivator('Math.random()').random());

  // crypto: seeded per run for the same reason; there is no real entropy inside workflow code.
  const crypto = {
    randomUUID: (): string => uuidFrom(currentActivator('crypto.randomUUID()').random),
    getRandomValues<T extends ArrayBufferView>(array: T): T {
      const random = currentActivator('crypto.getRandomValues()').random;
      const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
      return array;
    },
  };
  lock(g, 'crypto', Object.freeze(crypto));

  // setTimeout: a durable timer (command startTimer), so waiting survives restarts and replays exactly.
  lock(g, 'setTimeout', (callback: unknown, ms?: unknown, ...args: unknown[]): number => {
    if (typeof callback !== 'function') throw new TypeError('setTimeout callback must be a function');
    const delay = Math.max(0, Math.round(Number(ms) || 0));
    return currentActivator('setTimeout()').setTimeout(() => callback(...args), delay);
  });
  // clearTimeout: cancels that durable timer (command cancelTimer).
  lock(g, 'clearTimeout', (id?: unknown): void => {
    if (typeof id === 'number') currentActivator('clearTimeout()').cancelTimer(id);
  });
  // setInterval: would need an unbounded number of timers; a loop with sleep() says what it means.
  lock(g, 'setInterval', () => {
    throw new TypeError('setInterval is not available in workflow code; use a loop with sleep()');
  });
  // queueMicrotask: not part of the JavaScript language, so the realm lacks it; promise jobs are deterministic.
  lock(g, 'queueMicrotask', (callback: () => void): void => {
    void Promise.resolve().then(callback);
  });

  // WeakRef, FinalizationRegistry: garbage collection timing differs between a run and its replay.
  for (const name of ['WeakRef', 'FinalizationRegistry'] as const) {
    lock(g, name, function Unavailable(): never {
      throw new TypeError(
        `${name} is not available in workflow code: garbage collection timing differs between a run and its replay, so the workflow would not be deterministic`,
      );
    });
  }

  // console: the realm has none; route it to the replay-aware workflow log.
  const logTo =
    (level: string) =>
    (...parts: unknown[]): void =>
      maybeCurrentActivator()?.log(
        level,
        parts.map((p) => (typeof p === 'string' ? p : safeText(p))).join(' '),
        {},
      );
  lock(
    g,
    'console',
    Object.freeze({
      log: logTo('info'),
      info: logTo('info'),
      debug: logTo('debug'),
      warn: logTo('warn'),
      error: logTo('error'),
    }),
  );

  // Shared namespaces and constructors are frozen: a run must not change what every other run sees.
  for (const shared of [g.Math, g.JSON, g.Reflect, g.Promise, g.Object, g.Array, g.Symbol]) {
    Object.freeze(shared);
  }
}

function lock(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: false, configurable: false, enumerable: false });
}

function safeText(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
