// Watchdog: notices a connection that died without closing.
//
// The server sends `ping` every ping_interval seconds (docs/protocol.md section 3).
// A client that hears none for ping_interval + pong_timeout treats the
// connection as dead: on a half-open TCP connection (a laptop lid closed, a NAT
// entry expired) no close event would ever come.

import type { TimerHandle, Timers } from './timers.js';

/** Calls `onSilence` when `feed()` is not called for `timeoutMs`. */
export class PingWatchdog {
  private timer: TimerHandle | undefined;
  private timeoutMs = 0;

  constructor(
    private readonly timers: Timers,
    private readonly onSilence: () => void,
  ) {}

  /** Arms the watchdog; a timeout of 0 or less disables it. */
  start(timeoutMs: number): void {
    this.stop();
    this.timeoutMs = timeoutMs;
    this.arm();
  }

  /** A ping arrived: the deadline moves forward by a full timeout. */
  feed(): void {
    if (this.timer === undefined) return;
    this.timers.clearTimeout(this.timer);
    this.arm();
  }

  stop(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  private arm(): void {
    if (!(this.timeoutMs > 0)) {
      this.timer = undefined;
      return;
    }
    this.timer = this.timers.setTimeout(() => {
      this.timer = undefined;
      this.onSilence();
    }, this.timeoutMs);
  }
}
