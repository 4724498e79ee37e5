// Backoff: how long to wait before the next reconnect attempt.
//
// Exponential growth with full jitter: attempt n waits a uniformly random time
// between `minDelayMs` and min(`maxDelayMs`, `minDelayMs` * 2^(n+1)). The floor
// keeps a client from hammering a server that just refused it; the jitter
// spreads a crowd of clients that all lost the same server over the whole
// window instead of letting them return in lockstep.

/** Bounds of one backoff schedule, in milliseconds. */
export interface BackoffBounds {
  minDelayMs: number;
  maxDelayMs: number;
}

/** A source of uniform random numbers in [0, 1), like `Math.random`. */
export type RandomSource = () => number;

/**
 * The delay before attempt `attempt` (0-based): uniform in
 * [min, min(max, min * 2^(attempt+1))).
 */
export function jitteredDelay(attempt: number, bounds: BackoffBounds, random: RandomSource): number {
  const { minDelayMs, maxDelayMs } = bounds;
  if (maxDelayMs <= minDelayMs) return minDelayMs;
  // Past 2^31 the ceiling is the max anyway; capping the exponent avoids Infinity.
  const exponent = Math.min(Math.max(attempt, 0) + 1, 31);
  const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** exponent);
  return Math.floor(minDelayMs + random() * (ceiling - minDelayMs));
}

/** Counts consecutive failed attempts and turns them into delays. */
export class Backoff {
  private attempts = 0;

  constructor(
    private readonly bounds: BackoffBounds,
    private readonly random: RandomSource = Math.random,
  ) {
    if (!(bounds.minDelayMs >= 0) || !(bounds.maxDelayMs >= bounds.minDelayMs)) {
      throw new RangeError('backoff bounds need 0 <= minDelayMs <= maxDelayMs');
    }
  }

  /** The delay before the next attempt; each call counts one more failure. */
  next(): number {
    const delay = jitteredDelay(this.attempts, this.bounds, this.random);
    this.attempts += 1;
    return delay;
  }

  /** Failed attempts since the last `reset()`. */
  get attempt(): number {
    return this.attempts;
  }

  /** Call after a success: the next failure starts from the floor again. */
  reset(): void {
    this.attempts = 0;
  }
}
