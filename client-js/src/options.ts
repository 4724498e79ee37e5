// Options: what `new Client(url, options)` accepts, and the defaults.

import type { Encoding } from './codec.js';
import type { WebSocketConstructor } from './transport.js';
import { VERSION } from './version.js';

/** A minimal EventTarget: where `online`/`offline` events come from. */
export interface NetworkEventTarget {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

/** Options of `new Client(url, options)`. Times are in milliseconds. */
export interface ClientOptions {
  /** Connection JWT sent in `connect`. */
  token?: string;
  /**
   * Fetches a connection JWT: before connecting when there is no `token`,
   * after close 4002 or error 109 (expired), and ahead of expiry to `refresh`.
   * Resolve to '' to say the user is signed out (the client stops, code 3005);
   * reject for a temporary failure (the client retries with backoff).
   */
  getToken?: () => Promise<string>;
  /** Wire encoding: 'json' (default) or 'msgpack'. */
  encoding?: Encoding;
  /** Sent as `client` in `connect`. Default "pushwire-js/<version>". */
  name?: string;
  /** WebSocket constructor. Default: the global WebSocket, else the `ws` package. */
  websocket?: WebSocketConstructor;
  /** Request timeout, also for establishing a connection. Default 10000. */
  timeout?: number;
  /** Reconnect delay floor. Default 500. */
  minReconnectDelay?: number;
  /** Reconnect delay ceiling. Default 20000. */
  maxReconnectDelay?: number;
  /** Floor after 4009/4010 and connect error 110 (rate or connection limits). Default 5000. */
  minThrottledReconnectDelay?: number;
  /** Ceiling after 4009/4010. Default 60000. */
  maxThrottledReconnectDelay?: number;
  /** Refresh the connection token this long before it expires. Default 30000. */
  tokenRefreshMargin?: number;
  /** Reconnect when the browser reports `online`, drop on `offline`. Default true. */
  networkEvents?: boolean;
  /** Where online/offline events come from. Default `window` where there is one. */
  networkEventTarget?: NetworkEventTarget;
  /** Messages sent in one tick are batched into frames of at most this size. Default 16384. */
  maxBatchBytes?: number;
}

/** `ClientOptions` with every default applied. */
export interface ResolvedOptions {
  token: string | undefined;
  getToken: (() => Promise<string>) | undefined;
  encoding: Encoding;
  name: string;
  websocket: WebSocketConstructor | undefined;
  timeout: number;
  minReconnectDelay: number;
  maxReconnectDelay: number;
  minThrottledReconnectDelay: number;
  maxThrottledReconnectDelay: number;
  tokenRefreshMargin: number;
  networkEvents: boolean;
  networkEventTarget: NetworkEventTarget | undefined;
  maxBatchBytes: number;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value >= 0) || !Number.isFinite(value)) {
    throw new RangeError(`pushwire: option ${name} must be a finite number >= 0, got ${value}`);
  }
  return value;
}

function defaultNetworkTarget(): NetworkEventTarget | undefined {
  const win = (globalThis as { window?: Partial<NetworkEventTarget> }).window;
  if (win !== undefined && typeof win.addEventListener === 'function') {
    return win as NetworkEventTarget;
  }
  return undefined;
}

/** Applies defaults and checks ranges; throws on nonsense. */
export function resolveOptions(options: ClientOptions = {}): ResolvedOptions {
  const minReconnectDelay = positive('minReconnectDelay', options.minReconnectDelay, 500);
  const maxReconnectDelay = positive('maxReconnectDelay', options.maxReconnectDelay, Math.max(20000, minReconnectDelay));
  const minThrottled = positive('minThrottledReconnectDelay', options.minThrottledReconnectDelay, 5000);
  const maxThrottled = positive('maxThrottledReconnectDelay', options.maxThrottledReconnectDelay, Math.max(60000, minThrottled));
  if (maxReconnectDelay < minReconnectDelay || maxThrottled < minThrottled) {
    throw new RangeError('pushwire: a max reconnect delay is below its min');
  }
  return {
    token: options.token,
    getToken: options.getToken,
    encoding: options.encoding ?? 'json',
    name: options.name ?? `pushwire-js/${VERSION}`,
    websocket: options.websocket,
    timeout: positive('timeout', options.timeout, 10000),
    minReconnectDelay,
    maxReconnectDelay,
    minThrottledReconnectDelay: minThrottled,
    maxThrottledReconnectDelay: maxThrottled,
    tokenRefreshMargin: positive('tokenRefreshMargin', options.tokenRefreshMargin, 30000),
    networkEvents: options.networkEvents ?? true,
    networkEventTarget: options.networkEventTarget ?? defaultNetworkTarget(),
    maxBatchBytes: positive('maxBatchBytes', options.maxBatchBytes, 16384),
  };
}
