// Timers: the clock the client's pure parts run on.
//
// Backoff, the ping watchdog and request timeouts take a `Timers` instead of
// calling the globals, so unit tests can drive them with a fake clock and
// assert exact delays without sleeping.

/** Opaque handle returned by `Timers.setTimeout`. */
export type TimerHandle = unknown;

/** The subset of the host's timer API the client uses. */
export interface Timers {
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

/** The host's real timers (browser or Node). */
export const realTimers: Timers = {
  setTimeout: (callback, delayMs) => setTimeout(callback, delayMs),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  now: () => Date.now(),
};
