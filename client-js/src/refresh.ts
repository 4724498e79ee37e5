// Refresh: replacing the connection token before it expires.
//
// `connected` and `refreshed` carry `expires_at`. Ahead of it the refresher
// fetches a new token through `getToken` and sends `refresh`, so the
// connection never hits close 4002. A failed refresh is retried with backoff;
// if the token expires anyway the server closes with 4002 and the reconnect
// path fetches a token instead.

import { Backoff } from './backoff.js';
import type { BackoffBounds } from './backoff.js';
import { ConnectionClosedError } from './errors.js';
import { expiresAtOf } from './replies.js';
import type { ReplyCallback } from './requests.js';
import type { TimerHandle, Timers } from './timers.js';

/** What the refresher needs from its client. */
export interface RefreshHost {
  readonly timers: Timers;
  readonly getToken: () => Promise<string>;
  readonly marginMs: number;
  readonly retryBounds: BackoffBounds;
  /** Sends `refresh` {token} on the current connection. */
  send(token: string, callback: ReplyCallback): void;
  /** The new token, to use for the next `connect` too. */
  onToken(token: string): void;
  onRefreshed(expiresAt: number | undefined): void;
  onError(error: Error): void;
  /** `getToken` resolved to '': the user signed out. */
  onSignedOut(): void;
}

/**
 * Milliseconds until a token expiring at `expiresAt` should be refreshed:
 * `marginMs` before expiry, or halfway through its remaining life if that is
 * later (so a token shorter-lived than the margin is not refreshed in a loop).
 * `expiresAt` is Unix seconds; milliseconds are accepted too.
 */
export function refreshDelay(expiresAt: number, nowMs: number, marginMs: number): number {
  const expiresMs = expiresAt > 1e12 ? expiresAt : expiresAt * 1000;
  const remaining = expiresMs - nowMs;
  return Math.max(0, remaining - marginMs, remaining / 2);
}

/** Refreshes one connection's token; `stop()` when the connection ends. */
export class TokenRefresher {
  private timer: TimerHandle | undefined;
  private session = 0;
  private readonly backoff: Backoff;

  constructor(private readonly host: RefreshHost) {
    this.backoff = new Backoff(host.retryBounds);
  }

  /** A connection (or refresh) reported `expires_at`; schedules the next refresh. */
  start(expiresAt: number | undefined): void {
    this.stop();
    this.schedule(expiresAt);
  }

  stop(): void {
    this.session += 1;
    this.clear();
  }

  private schedule(expiresAt: number | undefined): void {
    this.clear();
    if (expiresAt === undefined) return;
    const delay = refreshDelay(expiresAt, this.host.timers.now(), this.host.marginMs);
    this.arm(delay);
  }

  private arm(delayMs: number): void {
    const session = this.session;
    this.timer = this.host.timers.setTimeout(() => {
      this.timer = undefined;
      if (session === this.session) void this.refresh();
    }, delayMs);
  }

  private async refresh(): Promise<void> {
    const session = this.session;
    let token: string;
    try {
      token = await this.host.getToken();
    } catch (err) {
      if (session !== this.session) return;
      this.host.onError(err as Error);
      this.arm(this.backoff.next());
      return;
    }
    if (session !== this.session) return;
    if (!token) {
      this.host.onSignedOut();
      return;
    }
    this.host.onToken(token);
    this.host.send(token, (error, reply) => {
      if (session !== this.session || error instanceof ConnectionClosedError) return;
      if (error !== null) {
        this.host.onError(error);
        this.arm(this.backoff.next());
        return;
      }
      this.backoff.reset();
      const expiresAt = expiresAtOf(reply);
      this.host.onRefreshed(expiresAt);
      this.schedule(expiresAt);
    });
  }

  private clear(): void {
    if (this.timer !== undefined) this.host.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }
}
