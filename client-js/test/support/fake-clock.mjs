// A manual clock implementing the client's Timers interface, so timer logic
// is tested by moving time forward instead of sleeping.

export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.current = start;
    this.nextHandle = 1;
    this.timers = new Map();
  }

  setTimeout = (callback, delayMs) => {
    const handle = this.nextHandle++;
    this.timers.set(handle, { at: this.current + Math.max(0, delayMs), callback });
    return handle;
  };

  clearTimeout = (handle) => {
    this.timers.delete(handle);
  };

  now = () => this.current;

  /** Moves time forward, running every timer that falls due, in order. */
  advance(ms) {
    const target = this.current + ms;
    for (;;) {
      let due = null;
      for (const [handle, timer] of this.timers) {
        if (timer.at <= target && (due === null || timer.at < due[1].at)) due = [handle, timer];
      }
      if (due === null) break;
      this.timers.delete(due[0]);
      this.current = due[1].at;
      due[1].callback();
    }
    this.current = target;
  }

  /** Delays of the pending timers, relative to now. */
  pendingDelays() {
    return [...this.timers.values()].map((t) => t.at - this.current).sort((a, b) => a - b);
  }
}
