/** The one source of time. Every component reads time from a Clock; nothing calls Date.now() directly. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
