import type { Activator } from './activator.js';

/**
 * The run whose code is executing. The sandbox shares one realm between all runs of a bundle, and runs
 * one at a time: the host names the run on every entry, and everything that workflow code calls
 * (`sleep`, activities, `Date.now()`, `Math.random()`) acts on that run.
 */
let current: Activator | undefined;

export function setCurrentActivator(activator: Activator | undefined): void {
  current = activator;
}

/** The executing run, or undefined outside workflow code (e.g. when a client imports a workflows file). */
export function maybeCurrentActivator(): Activator | undefined {
  return current;
}

/** The executing run; throws a clear error when called outside workflow code. */
export function currentActivator(api: string): Activator {
  if (current === undefined) {
    throw new Error(
      `${api} can only be used inside a workflow function run by a longhaul worker (it was called outside workflow code)`,
    );
  }
  return current;
}
