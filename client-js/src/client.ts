// Client: one logical connection to a pushwire server, kept alive across drops.
//
// States: disconnected --connect()--> connecting --`connected`--> connected.
// Any drop goes back to connecting and, after a backoff delay chosen by
// policy.ts from the close code, opens a new WebSocket, sends `connect` and
// resubscribes every subscription with recovery. Only the close codes the
// protocol calls final (1000, 1009, 4000, 4001) and `disconnect()` end in
// disconnected.
//
// Each WebSocket attempt gets a generation number; callbacks from an older
// attempt (a late close event, a reply, a token fetched too slowly) compare it
// and do nothing, so a drop is handled exactly once.

import { Backoff } from './backoff.js';
import { createCodec } from './codec.js';
import type { Codec, FramePayload, WireMessage } from './codec.js';
import { ConnectionClosedError, ServerError, TimeoutError } from './errors.js';
import { Emitter } from './emitter.js';
import { resolveOptions } from './options.js';
import type { ClientOptions, ResolvedOptions } from './options.js';
import { Outbox } from './outbox.js';
import {
  ClientCloseCode,
  actionForClose,
  actionForConnectError,
  closeCodeForConnectError,
} from './policy.js';
import type { ReconnectAction } from './policy.js';
import { TokenRefresher } from './refresh.js';
import { PendingRequests } from './requests.js';
import type { ReplyCallback } from './requests.js';
import { Subscription } from './subscription.js';
import type { SubscriptionHost, SubscriptionOptions } from './subscription.js';
import { realTimers } from './timers.js';
import type { TimerHandle, Timers } from './timers.js';
import { OPEN, normalizeUrl, resolveWebSocket } from './transport.js';
import type { WebSocketLike } from './transport.js';
import { PingWatchdog } from './watchdog.js';
import { watchNetwork } from './network.js';
import {
  toConnectedEvent,
  toHistoryResult,
  toPresenceChange,
  toPresenceResult,
  toPresenceStats,
  toPublication,
  toPublishResult,
} from './replies.js';
import type {
  ClientEvents,
  ConnectedEvent,
  ConnectionState,
  HistoryOptions,
  HistoryResult,
  PresenceOptions,
  PresenceResult,
  PresenceStats,
  PublishResult,
} from './types.js';

/**
 * A connection must stay up this long before the backoff starts over, so a
 * server that accepts and then drops every connection (an eviction loop, a
 * crash on connect) sees the delays grow instead of a reconnect storm.
 */
const STABLE_CONNECTION_MS = 5000;

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
  timer: TimerHandle;
}

/** A pushwire connection; see the README for a tour. */
export class Client extends Emitter<ClientEvents> {
  readonly url: string;
  private readonly options: ResolvedOptions;
  private readonly codec: Codec;
  private readonly timers: Timers = realTimers;
  private readonly requests: PendingRequests;
  private readonly backoff: Backoff;
  private readonly throttledBackoff: Backoff;
  private readonly refresher: TokenRefresher | null;
  private readonly watchdog: PingWatchdog;
  private readonly outbox: Outbox;
  private readonly subs = new Map<string, Subscription>();
  private readonly host: SubscriptionHost;
  private currentState: ConnectionState = 'disconnected';
  private ws: WebSocketLike | null = null;
  private generation = 0;
  private token: string | undefined;
  private connection: ConnectedEvent | null = null;
  private serverSideChannels = new Set<string>();
  private lastDisconnect: { code: number; reason: string; reconnect?: boolean } | null = null;
  private reconnectTimer: TimerHandle | undefined;
  private connectTimer: TimerHandle | undefined;
  private stableTimer: TimerHandle | undefined;
  private readonly waiters = new Set<Waiter>();
  private detachNetwork: (() => void) | null = null;

  constructor(url: string, options: ClientOptions = {}) {
    super();
    this.url = normalizeUrl(url);
    this.options = resolveOptions(options);
    this.codec = createCodec(this.options.encoding);
    this.token = this.options.token;
    this.requests = new PendingRequests(this.timers);
    const normal = { minDelayMs: this.options.minReconnectDelay, maxDelayMs: this.options.maxReconnectDelay };
    this.backoff = new Backoff(normal);
    this.throttledBackoff = new Backoff({
      minDelayMs: this.options.minThrottledReconnectDelay,
      maxDelayMs: this.options.maxThrottledReconnectDelay,
    });
    this.watchdog = new PingWatchdog(this.timers, () =>
      this.dropTransport(ClientCloseCode.NoPing, 'no ping from the server', 'reconnect'),
    );
    this.outbox = new Outbox(this.codec, this.options.maxBatchBytes, (frame) => this.sendFrame(frame));
    this.host = {
      timers: this.timers,
      reconnectBounds: normal,
      isConnected: () => this.currentState === 'connected',
      request: (op, fields, callback) => this.sendRequest(op, fields, this.options.timeout, callback),
      remove: (sub) => {
        if (this.subs.get(sub.channel) === sub) this.subs.delete(sub.channel);
      },
      publish: (channel, data) => this.publish(channel, data),
      presence: (channel, presenceOptions) => this.presence(channel, presenceOptions),
      presenceStats: (channel) => this.presenceStats(channel),
      history: (channel, historyOptions) => this.history(channel, historyOptions),
    };
    const getToken = this.options.getToken;
    this.refresher =
      getToken === undefined
        ? null
        : new TokenRefresher({
            timers: this.timers,
            getToken,
            marginMs: this.options.tokenRefreshMargin,
            retryBounds: normal,
            send: (token, callback) => this.sendRequest('refresh', { token }, this.options.timeout, callback),
            onToken: (token) => (this.token = token),
            onRefreshed: (expiresAt) => {
              if (this.connection !== null && expiresAt !== undefined) this.connection.expiresAt = expiresAt;
              this.emit('refreshed', expiresAt === undefined ? {} : { expiresAt });
            },
            onError: (error) => this.emit('error', { type: 'refresh', error }),
            onSignedOut: () =>
              this.dropTransport(ClientCloseCode.Unauthorized, 'getToken returned no token', 'stop', true),
          });
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The `connected` reply of the current connection, or null. */
  get connectionInfo(): ConnectedEvent | null {
    return this.connection;
  }

  /** The server-assigned id of the current connection, or null. */
  get clientId(): string | null {
    return this.connection?.clientId ?? null;
  }

  get encoding(): 'json' | 'msgpack' {
    return this.codec.encoding;
  }

  /** Starts connecting; reconnects on its own from then on. */
  connect(): void {
    if (this.currentState !== 'disconnected') return;
    this.backoff.reset();
    this.throttledBackoff.reset();
    this.setState('connecting');
    this.emit('connecting', { code: 0, reason: 'connect called' });
    this.attachNetworkEvents();
    void this.openTransport();
  }

  /** Closes the connection (code 1000) and stops reconnecting. Subscriptions are kept. */
  disconnect(): void {
    if (this.currentState === 'disconnected') return;
    const ws = this.detachTransport();
    if (ws !== null) closeQuietly(ws, 1000, 'disconnect called');
    this.cleanUpConnection(1000, 'disconnect called');
    this.stop(1000, 'disconnect called');
  }

  /** Resolves once connected; rejects on timeout or when the client stops. */
  ready(timeoutMs: number = this.options.timeout): Promise<void> {
    return this.whenConnected(timeoutMs);
  }

  /** Sets the connection token used by the next `connect` (e.g. after a 4001 stop). */
  setToken(token: string): void {
    this.token = token;
  }

  /**
   * Subscribes to `channel`. Returns at once; listen to the subscription's
   * `subscribed`, `message` and `error` events. Throws if a subscription to
   * the channel exists already (see `getSubscription`).
   */
  subscribe(channel: string, options: SubscriptionOptions = {}): Subscription {
    if (typeof channel !== 'string' || channel === '') {
      throw new TypeError('pushwire: channel must be a non-empty string');
    }
    if (this.subs.has(channel)) {
      throw new Error(`pushwire: already subscribed to ${channel}; use getSubscription()`);
    }
    const sub = new Subscription(channel, options, this.host);
    this.subs.set(channel, sub);
    sub._start();
    return sub;
  }

  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  subscriptions(): Subscription[] {
    return [...this.subs.values()];
  }

  /** Publishes `data` on `channel` (the namespace must have allow_publish). */
  async publish(channel: string, data: unknown): Promise<PublishResult> {
    if (this.codec.encoding === 'json' && (data instanceof Uint8Array || data instanceof ArrayBuffer)) {
      throw new TypeError('pushwire: binary data needs encoding "msgpack"');
    }
    return toPublishResult(await this.call('publish', { channel, data }));
  }

  /**
   * Who is on `channel` (the namespace must have presence = true), one page at a
   * time: the result has `cursor` when there may be more; pass it back in
   * `options.cursor` for the next page.
   */
  async presence(channel: string, options: PresenceOptions = {}): Promise<PresenceResult> {
    const fields: Record<string, unknown> = { channel };
    if (options.limit !== undefined) fields.limit = options.limit;
    if (options.cursor !== undefined) fields.cursor = options.cursor;
    return toPresenceResult(await this.call('presence', fields), channel);
  }

  /** How many connections and distinct users are on `channel` (presence = true). */
  async presenceStats(channel: string): Promise<PresenceStats> {
    return toPresenceStats(await this.call('presence_stats', { channel }));
  }

  /** Recent messages on `channel` (the namespace must have history_size > 0). */
  async history(channel: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    const fields: Record<string, unknown> = { channel };
    if (options.since !== undefined) fields.since = { offset: options.since.offset, epoch: options.since.epoch };
    if (options.limit !== undefined) fields.limit = options.limit;
    if (options.reverse !== undefined) fields.reverse = options.reverse;
    return toHistoryResult(await this.call('history', fields), channel);
  }

  // ---- requests -------------------------------------------------------

  private async call(op: string, fields: Record<string, unknown>): Promise<WireMessage> {
    const started = this.timers.now();
    await this.whenConnected(this.options.timeout);
    const remaining = Math.max(1, this.options.timeout - (this.timers.now() - started));
    return new Promise((resolve, reject) => {
      this.sendRequest(op, fields, remaining, (error, reply) => (error ? reject(error) : resolve(reply!)));
    });
  }

  private sendRequest(op: string, fields: Record<string, unknown>, timeoutMs: number, callback: ReplyCallback): void {
    if (this.currentState !== 'connected') {
      callback(new ConnectionClosedError('not connected'));
      return;
    }
    const id = this.requests.nextId();
    this.requests.add(id, op, timeoutMs, callback);
    this.outbox.push({ op, id, ...fields });
  }

  private whenConnected(timeoutMs: number): Promise<void> {
    if (this.currentState === 'connected') return Promise.resolve();
    if (this.currentState === 'disconnected') {
      return Promise.reject(new ConnectionClosedError('client is disconnected; call connect() first'));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: this.timers.setTimeout(() => {
          this.waiters.delete(waiter);
          reject(new TimeoutError('waiting for the connection', timeoutMs));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  private settleWaiters(error: Error | null): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const waiter of waiters) {
      this.timers.clearTimeout(waiter.timer);
      if (error === null) waiter.resolve();
      else waiter.reject(error);
    }
  }

  // ---- transport ------------------------------------------------------

  private async openTransport(): Promise<void> {
    const generation = ++this.generation;
    if (this.token === undefined && this.options.getToken !== undefined) {
      let token: string;
      try {
        token = await this.options.getToken();
      } catch (err) {
        if (generation !== this.generation) return;
        this.emit('error', { type: 'token', error: err as Error });
        this.scheduleReconnect(ClientCloseCode.TransportClosed, 'getToken failed', 'reconnect');
        return;
      }
      if (generation !== this.generation || this.currentState !== 'connecting') return;
      if (!token) {
        this.stop(ClientCloseCode.Unauthorized, 'getToken returned no token');
        return;
      }
      this.token = token;
    }
    let ws: WebSocketLike;
    try {
      const WebSocketImpl = await resolveWebSocket(this.options.websocket);
      if (generation !== this.generation || this.currentState !== 'connecting') return;
      ws = new WebSocketImpl(this.url, [this.codec.subprotocol]);
    } catch (err) {
      if (generation !== this.generation) return;
      this.emit('error', { type: 'transport', error: err as Error });
      this.scheduleReconnect(ClientCloseCode.TransportClosed, (err as Error).message, 'reconnect');
      return;
    }
    this.attachTransport(ws, generation);
  }

  private attachTransport(ws: WebSocketLike, generation: number): void {
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.outbox.clear();
    this.lastDisconnect = null;
    ws.onopen = () => {
      if (this.ws === ws) this.sendConnect(generation);
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this.onFrame(event.data as FramePayload);
    };
    ws.onerror = () => {
      if (this.ws === ws) this.emit('error', { type: 'transport', error: new Error('WebSocket error') });
    };
    ws.onclose = (event) => {
      if (this.ws === ws) this.onTransportClosed(event.code, event.reason);
    };
    this.connectTimer = this.timers.setTimeout(() => {
      this.connectTimer = undefined;
      this.emit('error', { type: 'connect', error: new TimeoutError('connect', this.options.timeout) });
      this.dropTransport(ClientCloseCode.ConnectTimeout, 'no connected reply in time', 'reconnect');
    }, this.options.timeout);
  }

  private sendConnect(generation: number): void {
    const id = this.requests.nextId();
    const message: Record<string, unknown> = { op: 'connect', id, client: this.options.name };
    if (this.token !== undefined) message.token = this.token;
    this.requests.add(id, 'connect', this.options.timeout, (error, reply) => {
      if (generation !== this.generation) return;
      if (error === null) this.onConnected(reply as WireMessage);
      else this.onConnectFailed(error);
    });
    this.sendFrame(this.codec.join([this.codec.encode(message)]));
  }

  private onConnected(reply: WireMessage): void {
    this.clearTimer('connectTimer');
    const info = toConnectedEvent(reply);
    this.connection = info;
    this.serverSideChannels = new Set(info.subscribed);
    this.stableTimer = this.timers.setTimeout(() => {
      this.stableTimer = undefined;
      this.backoff.reset();
      this.throttledBackoff.reset();
    }, STABLE_CONNECTION_MS);
    this.setState('connected');
    if (info.pingInterval > 0) this.watchdog.start((info.pingInterval + info.pongTimeout) * 1000);
    this.refresher?.start(info.expiresAt);
    const generation = this.generation;
    this.emit('connected', info);
    if (generation !== this.generation) return;
    for (const sub of [...this.subs.values()]) sub._onConnected();
    this.settleWaiters(null);
  }

  private onConnectFailed(error: Error): void {
    if (error instanceof ConnectionClosedError) return; // the close event decides
    this.emit('error', { type: 'connect', error });
    if (error instanceof ServerError) {
      const code = closeCodeForConnectError(error.code);
      this.dropTransport(code, error.message, actionForConnectError(error.code), true);
    } else {
      this.dropTransport(ClientCloseCode.ConnectTimeout, error.message, 'reconnect');
    }
  }

  private onFrame(frame: FramePayload): void {
    let messages: WireMessage[];
    try {
      messages = this.codec.decode(frame);
    } catch (err) {
      this.emit('error', { type: 'protocol', error: err as Error });
      this.dropTransport(ClientCloseCode.BadFrame, (err as Error).message, 'reconnect', true);
      return;
    }
    const ws = this.ws;
    for (const message of messages) {
      if (this.ws !== ws) return; // a message in this batch ended the connection
      this.dispatch(message);
    }
  }

  private dispatch(message: WireMessage): void {
    switch (message.op) {
      case 'ping':
        this.watchdog.feed();
        this.outbox.push({ op: 'pong' });
        return;
      case 'message':
        this.routePublication(message);
        return;
      case 'join':
      case 'leave':
        this.routePresence(message.op, message);
        return;
      case 'disconnect':
        this.lastDisconnect = {
          code: Number(message.code),
          reason: String(message.reason ?? ''),
          ...(typeof message.reconnect === 'boolean' ? { reconnect: message.reconnect } : {}),
        };
        return;
      default:
        if (this.requests.settle(message)) return;
        if (message.op === 'subscribed' && typeof message.channel === 'string') {
          this.onServerSubscribe(message, message.channel);
        } else if (message.op === 'unsubscribed' && typeof message.channel === 'string') {
          this.subs.get(message.channel)?._onServerUnsubscribe('unsubscribed by the server');
          if (this.serverSideChannels.delete(message.channel)) {
            this.emit('serverUnsubscribed', { channel: message.channel });
          }
        } else if (message.op === 'error') {
          const error = new ServerError(Number(message.code ?? 100), String(message.message ?? ''));
          this.emit('error', { type: 'server', error });
        }
      // Unknown ops are ignored: newer servers may add some.
    }
  }

  /** `subscribed` with id 0: the backend subscribed us (`POST /api/subscribe`). */
  private onServerSubscribe(message: WireMessage, channel: string): void {
    this.serverSideChannels.add(channel);
    this.emit('serverSubscribed', {
      channel,
      ...(typeof message.offset === 'number' ? { offset: message.offset } : {}),
      ...(typeof message.epoch === 'string' ? { epoch: message.epoch } : {}),
    });
  }

  private routePublication(message: WireMessage): void {
    const publication = toPublication(message);
    const sub = this.subs.get(publication.channel);
    if (sub !== undefined) sub._onMessage(publication);
    else if (this.serverSideChannels.has(publication.channel)) this.emit('message', publication);
  }

  private routePresence(kind: 'join' | 'leave', message: WireMessage): void {
    const change = toPresenceChange(message);
    const sub = this.subs.get(change.channel);
    if (sub !== undefined) sub._onPresence(kind, change);
    else if (this.serverSideChannels.has(change.channel)) this.emit(kind, change);
  }

  private sendFrame(frame: string | Uint8Array): boolean {
    const ws = this.ws;
    if (ws === null || ws.readyState !== OPEN) return false;
    ws.send(frame);
    return true;
  }

  // ---- endings --------------------------------------------------------

  /** The server or the network closed the socket. */
  private onTransportClosed(code: number, reason: string): void {
    this.detachTransport();
    let effectiveCode = code;
    let effectiveReason = reason;
    const notice = this.lastDisconnect;
    if (notice !== null) {
      // Proxies and some stacks lose the close frame; the `disconnect` op says the same.
      if (code === 1005 || code === 1006 || !code) effectiveCode = notice.code;
      if (!effectiveReason) effectiveReason = notice.reason;
    }
    if (!effectiveCode) effectiveCode = ClientCloseCode.TransportClosed;
    this.cleanUpConnection(effectiveCode, effectiveReason || 'connection closed');
    this.afterEnding(effectiveCode, effectiveReason, actionForClose(effectiveCode, notice?.reconnect));
  }

  /** The client itself gives up on the current socket. */
  private dropTransport(code: number, reason: string, action: ReconnectAction, graceful = false): void {
    const ws = this.detachTransport();
    if (ws === null) return;
    if (graceful || typeof ws.terminate !== 'function') closeQuietly(ws, code, reason);
    else ws.terminate();
    this.cleanUpConnection(code, reason);
    this.afterEnding(code, reason, action);
  }

  private detachTransport(): WebSocketLike | null {
    const ws = this.ws;
    this.ws = null;
    this.generation += 1;
    this.outbox.clear();
    if (ws !== null) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      // Not null: `ws` throws an 'error' event that has no listener (e.g. on
      // a socket closed while still connecting).
      ws.onerror = ignore;
    }
    return ws;
  }

  private cleanUpConnection(code: number, reason: string): void {
    this.clearTimer('connectTimer');
    this.clearTimer('stableTimer');
    this.refresher?.stop();
    this.watchdog.stop();
    this.connection = null;
    this.serverSideChannels = new Set();
    // Subscriptions first: they must see why the connection ended before
    // their outstanding subscribe fails with ConnectionClosedError.
    for (const sub of [...this.subs.values()]) sub._onDisconnected(code, reason);
    this.requests.rejectAll(new ConnectionClosedError(reason, code));
  }

  private afterEnding(code: number, reason: string, action: ReconnectAction): void {
    if (this.currentState === 'disconnected') return;
    if (action === 'stop') {
      this.stop(code, reason);
    } else if (action === 'refresh-token') {
      if (this.options.getToken === undefined) {
        this.stop(code, reason);
        return;
      }
      this.token = undefined;
      this.scheduleReconnect(code, reason, 'reconnect');
    } else {
      this.scheduleReconnect(code, reason, action);
    }
  }

  private scheduleReconnect(code: number, reason: string, action: 'reconnect' | 'reconnect-throttled'): void {
    if (this.currentState !== 'connecting') {
      this.setState('connecting');
      this.emit('connecting', { code, reason });
    }
    this.clearTimer('reconnectTimer');
    const delay = action === 'reconnect-throttled' ? this.throttledBackoff.next() : this.backoff.next();
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.openTransport();
    }, delay);
  }

  private stop(code: number, reason: string): void {
    this.generation += 1;
    this.clearTimer('reconnectTimer');
    this.clearTimer('connectTimer');
    this.refresher?.stop();
    this.clearTimer('stableTimer');
    this.watchdog.stop();
    this.detachNetwork?.();
    this.detachNetwork = null;
    this.setState('disconnected');
    this.settleWaiters(new ConnectionClosedError(reason, code));
    this.emit('disconnected', { code, reason });
  }

  private setState(next: ConnectionState): void {
    const previous = this.currentState;
    if (previous === next) return;
    this.currentState = next;
    this.emit('state', { oldState: previous, newState: next });
  }

  private clearTimer(name: 'reconnectTimer' | 'connectTimer' | 'stableTimer'): void {
    const handle = this[name];
    if (handle !== undefined) this.timers.clearTimeout(handle);
    this[name] = undefined;
  }

  // ---- network events ---------------------------------------------------

  private attachNetworkEvents(): void {
    const target = this.options.networkEventTarget;
    if (!this.options.networkEvents || target === undefined || this.detachNetwork !== null) return;
    this.detachNetwork = watchNetwork(target, {
      offline: () => {
        if (this.ws !== null) this.dropTransport(ClientCloseCode.Offline, 'the network went offline', 'reconnect');
      },
      online: () => {
        // Back online: skip the rest of the backoff delay.
        if (this.currentState !== 'connecting' || this.reconnectTimer === undefined) return;
        this.clearTimer('reconnectTimer');
        this.backoff.reset();
        void this.openTransport();
      },
    });
  }
}

function ignore(): void {}

function closeQuietly(ws: WebSocketLike, code: number, reason: string): void {
  try {
    // Reason is limited to 123 bytes by RFC 6455.
    ws.close(code, reason.slice(0, 60));
  } catch {
    // Already closing or closed.
  }
}
