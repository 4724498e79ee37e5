// Subscription: one channel's state machine and its place in the history.
//
//   unsubscribed --subscribe()--> subscribing --`subscribed`--> subscribed
//        ^                          ^     |                        |
//        |                          |     +-- error 100/110/timeout: retry with backoff
//        |                          +------------ connection lost -+
//        +-- unsubscribe(), or a permanent error (101, 102, 103, 106, 107, 108)
//
// The subscription remembers the offset and epoch of the last message it
// delivered. Each (re)subscribe with `recover` asks the server for everything
// after that position; messages at or below it are dropped as duplicates, so
// the application sees each message once and in order.
//
// A server that cannot deliver a recovery (it evicts the connection with 4008
// every time the backlog is queued) would otherwise keep the client in a
// reconnect loop forever: after MAX_FAILED_RECOVERIES such evictions in a row
// the subscription gives up its position, subscribes afresh and reports
// `recovered: false` so the application reloads.

import { Backoff } from './backoff.js';
import { ConnectionClosedError, ErrorCode, ServerError, TimeoutError } from './errors.js';
import { Emitter } from './emitter.js';
import { CloseCode } from './policy.js';
import type { WireMessage } from './codec.js';
import type { ReplyCallback } from './requests.js';
import type { TimerHandle, Timers } from './timers.js';
import type {
  HistoryOptions,
  HistoryResult,
  PresenceChange,
  PresenceOptions,
  PresenceResult,
  PresenceStats,
  Publication,
  PublishResult,
  StreamPosition,
  SubscriptionEvents,
  SubscriptionState,
} from './types.js';

/** 4008 evictions in a row while a recovering subscribe was outstanding before giving up. */
export const MAX_FAILED_RECOVERIES = 3;

/** Options of `client.subscribe(channel, options)`. */
export interface SubscriptionOptions {
  /**
   * Resubscribe after reconnects with `recover` {offset, epoch} so missed
   * messages are delivered (channels with history only). Default true.
   */
  recover?: boolean;
  /** Start from this position (e.g. saved before a page reload); implies recover. */
  since?: StreamPosition;
  /** Subscription JWT, for namespaces with allow_subscribe = "token". */
  token?: string;
  /** Fetches a subscription JWT; called before the first subscribe and after error 109. */
  getToken?: (channel: string) => Promise<string>;
}

/** What a subscription needs from its client. @internal */
export interface SubscriptionHost {
  readonly timers: Timers;
  readonly reconnectBounds: { minDelayMs: number; maxDelayMs: number };
  isConnected(): boolean;
  /** Sends a request on the current connection; the callback runs once. */
  request(op: string, fields: Record<string, unknown>, callback: ReplyCallback): void;
  remove(subscription: Subscription): void;
  publish(channel: string, data: unknown): Promise<PublishResult>;
  presence(channel: string, options?: PresenceOptions): Promise<PresenceResult>;
  presenceStats(channel: string): Promise<PresenceStats>;
  history(channel: string, options?: HistoryOptions): Promise<HistoryResult>;
}

/** A channel subscription, created by `client.subscribe()`. */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  private currentState: SubscriptionState = 'unsubscribed';
  private offset: number | undefined;
  private epoch: string | undefined;
  private readonly recover: boolean;
  private token: string | undefined;
  /** Bumped on every subscribe attempt and every lost connection; stale replies compare it. */
  private attempt = 0;
  /** Messages that arrived while the `subscribed` reply was outstanding. */
  private held: Publication[] = [];
  private retryTimer: TimerHandle | undefined;
  private readonly backoff: Backoff;
  /** A subscribe with `recover` is waiting for its reply. */
  private recoveryInFlight = false;
  private failedRecoveries = 0;
  /** The position was dropped after failed recoveries; the next reply reports recovered: false. */
  private recoveryAbandoned = false;

  /** @internal Use `client.subscribe()`. */
  constructor(
    channel: string,
    private readonly options: SubscriptionOptions,
    private readonly host: SubscriptionHost,
  ) {
    super();
    this.channel = channel;
    this.recover = options.recover !== false || options.since !== undefined;
    this.token = options.token;
    if (options.since !== undefined) {
      this.offset = options.since.offset;
      this.epoch = options.since.epoch;
    }
    this.backoff = new Backoff(host.reconnectBounds);
  }

  get state(): SubscriptionState {
    return this.currentState;
  }

  /** The offset and epoch of the last message delivered, on channels with history. */
  get position(): StreamPosition | undefined {
    if (this.offset === undefined || this.epoch === undefined) return undefined;
    return { offset: this.offset, epoch: this.epoch };
  }

  /** Publishes on this channel (the namespace must allow client publish). */
  publish(data: unknown): Promise<PublishResult> {
    return this.host.publish(this.channel, data);
  }

  /** One page of who is on this channel: see `Client.presence`. */
  presence(options?: PresenceOptions): Promise<PresenceResult> {
    return this.host.presence(this.channel, options);
  }

  /** How many connections and distinct users are on this channel. */
  presenceStats(): Promise<PresenceStats> {
    return this.host.presenceStats(this.channel);
  }

  history(options?: HistoryOptions): Promise<HistoryResult> {
    return this.host.history(this.channel, options);
  }

  /**
   * Leaves the channel. The subscription is finished at once (no more
   * events); the promise settles when the server confirms, or at once when the
   * client is not connected.
   */
  unsubscribe(): Promise<void> {
    if (this.currentState === 'unsubscribed') return Promise.resolve();
    this.finish(0, 'unsubscribe called');
    if (!this.host.isConnected()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.host.request('unsubscribe', { channel: this.channel }, (error) => {
        // A closed connection has forgotten the subscription anyway.
        if (error === null || error instanceof ConnectionClosedError) resolve();
        else reject(error);
      });
    });
  }

  /** @internal The client registered this subscription. */
  _start(): void {
    this.setState('subscribing');
    this.emit('subscribing', { code: 0, reason: 'subscribe called' });
    if (this.host.isConnected()) void this.sendSubscribe();
  }

  /** @internal The client (re)connected. */
  _onConnected(): void {
    if (this.currentState !== 'subscribing') return;
    this.clearRetry();
    this.backoff.reset();
    void this.sendSubscribe();
  }

  /** @internal The connection ended; the client will resubscribe after reconnecting. */
  _onDisconnected(code: number, reason: string): void {
    if (this.recoveryInFlight && code === CloseCode.SlowConsumer) {
      this.failedRecoveries += 1;
      if (this.failedRecoveries >= MAX_FAILED_RECOVERIES) {
        this.offset = undefined;
        this.epoch = undefined;
        this.recoveryAbandoned = true;
        this.failedRecoveries = 0;
      }
    }
    this.recoveryInFlight = false;
    this.attempt += 1;
    this.held = [];
    this.clearRetry();
    if (this.currentState === 'subscribed') {
      this.setState('subscribing');
      this.emit('subscribing', { code, reason });
    }
  }

  /** @internal A `message` op for this channel. */
  _onMessage(publication: Publication): void {
    if (this.currentState === 'subscribing') {
      // Only between our `subscribe` and its reply; delivered right after it.
      this.held.push(publication);
      return;
    }
    if (this.currentState !== 'subscribed') return;
    const { offset, epoch } = publication;
    if (typeof offset === 'number' && typeof epoch === 'string') {
      if (!this.advance(offset, epoch)) return;
    }
    this.emit('message', publication);
  }

  /** @internal A `join` or `leave` op for this channel. */
  _onPresence(kind: 'join' | 'leave', change: PresenceChange): void {
    if (this.currentState === 'subscribed') this.emit(kind, change);
  }

  /** @internal The server unsubscribed this connection (e.g. through its API). */
  _onServerUnsubscribe(reason: string): void {
    if (this.currentState !== 'unsubscribed') this.finish(0, reason);
  }

  /**
   * Moves the position to a delivered message. Returns false for a message
   * at or below the position (already delivered: a duplicate).
   */
  private advance(offset: number, epoch: string): boolean {
    if (this.offset !== undefined && this.epoch !== undefined) {
      const expected = { offset: this.offset + 1, epoch: this.epoch };
      // A channel nobody had published to reports offset 0; its first message starts
      // the stream's own epoch at offset 1, and nothing was missed.
      const streamStarted = this.offset === 0 && offset === 1;
      if (epoch === this.epoch || streamStarted) {
        if (offset < expected.offset) return false;
        if (offset > expected.offset) {
          this.emit('gap', { channel: this.channel, expected, received: { offset, epoch } });
        }
      } else {
        this.emit('gap', { channel: this.channel, expected, received: { offset, epoch } });
      }
    }
    this.offset = offset;
    this.epoch = epoch;
    return true;
  }

  private async sendSubscribe(): Promise<void> {
    const attempt = ++this.attempt;
    if (this.token === undefined && this.options.getToken !== undefined) {
      let token: string;
      try {
        token = await this.options.getToken(this.channel);
      } catch (err) {
        if (attempt !== this.attempt) return;
        this.emit('error', { channel: this.channel, error: err as Error });
        this.scheduleRetry();
        return;
      }
      if (attempt !== this.attempt || this.currentState !== 'subscribing') return;
      if (!token) {
        this.fail(new ServerError(ErrorCode.Unauthorized, 'getToken returned no subscription token'));
        return;
      }
      this.token = token;
    }
    if (!this.host.isConnected()) return;
    const fields: Record<string, unknown> = { channel: this.channel };
    if (this.token !== undefined) fields.token = this.token;
    const from = this.recover ? this.position : undefined;
    if (from !== undefined) fields.recover = from;
    this.held = [];
    this.recoveryInFlight = from !== undefined;
    this.host.request('subscribe', fields, (error, reply) => {
      if (attempt !== this.attempt || this.currentState !== 'subscribing') return;
      this.recoveryInFlight = false;
      if (error !== null) this.onSubscribeError(error);
      else this.onSubscribed(reply as WireMessage, from !== undefined);
    });
  }

  private onSubscribed(reply: WireMessage, sentRecover: boolean): void {
    const recovered = sentRecover && reply.recovered === true;
    const wasRecovering = sentRecover || this.recoveryAbandoned;
    this.recoveryAbandoned = false;
    this.failedRecoveries = 0;
    if (!recovered) {
      // Live from the channel's current position on; anything older is not coming.
      const offset = typeof reply.offset === 'number' ? reply.offset : undefined;
      const epoch = typeof reply.epoch === 'string' ? reply.epoch : undefined;
      this.offset = epoch === undefined ? undefined : offset;
      this.epoch = offset === undefined ? undefined : epoch;
    }
    this.backoff.reset();
    const held = this.held;
    this.held = [];
    const attempt = this.attempt;
    this.setState('subscribed');
    this.emit('subscribed', {
      channel: this.channel,
      wasRecovering,
      recovered,
      ...(this.position ?? {}),
    });
    for (const publication of held) {
      if (attempt !== this.attempt) return;
      this._onMessage(publication);
    }
  }

  private onSubscribeError(error: Error): void {
    if (error instanceof ConnectionClosedError) return; // resubscribed after the reconnect
    this.emit('error', { channel: this.channel, error });
    if (error instanceof TimeoutError) {
      this.scheduleRetry();
    } else if (error instanceof ServerError && error.code === ErrorCode.TokenExpired) {
      if (this.options.getToken === undefined) {
        this.fail(error, false);
        return;
      }
      this.token = undefined;
      this.scheduleRetry();
    } else if (error instanceof ServerError && error.temporary) {
      this.scheduleRetry();
    } else {
      this.fail(error, false);
    }
  }

  private fail(error: Error, report = true): void {
    if (report) this.emit('error', { channel: this.channel, error });
    const code = error instanceof ServerError ? error.code : 0;
    this.finish(code, error.message);
  }

  private scheduleRetry(): void {
    this.clearRetry();
    const attempt = this.attempt;
    this.retryTimer = this.host.timers.setTimeout(() => {
      this.retryTimer = undefined;
      if (attempt !== this.attempt || this.currentState !== 'subscribing') return;
      if (this.host.isConnected()) void this.sendSubscribe();
    }, this.backoff.next());
  }

  private clearRetry(): void {
    if (this.retryTimer !== undefined) this.host.timers.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private finish(code: number, reason: string): void {
    this.attempt += 1;
    this.held = [];
    this.clearRetry();
    this.host.remove(this);
    this.setState('unsubscribed');
    this.emit('unsubscribed', { code, reason });
  }

  private setState(next: SubscriptionState): void {
    const previous = this.currentState;
    if (previous === next) return;
    this.currentState = next;
    this.emit('state', { oldState: previous, newState: next });
  }
}
