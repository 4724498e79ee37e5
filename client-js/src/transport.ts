// Transport: finding a WebSocket implementation and describing its shape.
//
// Browsers (and Node 22+) have a global WebSocket. Node 20 does not, so the
// client loads the `ws` package on first use; an application can also pass
// any constructor with the browser's interface through `options.websocket`.

/** The close event fields the client reads. */
export interface CloseEventLike {
  code: number;
  reason: string;
}

/** The message event field the client reads. */
export interface MessageEventLike {
  data: unknown;
}

/** The subset of the browser WebSocket interface the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: MessageEventLike) => void) | null;
  onclose: ((event: CloseEventLike) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** `ws` only: drops the TCP connection without a close handshake. */
  terminate?: () => void;
}

/** A WebSocket constructor with the browser's signature. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `WebSocket.OPEN`. */
export const OPEN = 1;

/**
 * The WebSocket constructor to use: the one given, else the global one, else
 * the `ws` package.
 */
export async function resolveWebSocket(given?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (given !== undefined) return given;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') return global;
  // A computed specifier keeps browser bundlers from trying to bundle `ws`.
  const specifier = 'ws';
  try {
    const mod = (await import(/* webpackIgnore: true */ /* @vite-ignore */ specifier)) as {
      WebSocket?: WebSocketConstructor;
      default?: WebSocketConstructor;
    };
    const ctor = mod.WebSocket ?? mod.default;
    if (typeof ctor === 'function') return ctor;
  } catch {
    // Fall through to the explanation below.
  }
  throw new Error(
    'pushwire: no WebSocket implementation found; in Node before 22 run `npm install ws` ' +
      'or pass one as `new Client(url, { websocket: WebSocket })`',
  );
}

/** Accepts ws:// and wss:// URLs, and turns http(s):// into ws(s)://. */
export function normalizeUrl(url: string): string {
  if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, 'ws');
  if (/^wss?:\/\//i.test(url)) return url;
  throw new TypeError(`pushwire: expected a ws://, wss://, http:// or https:// URL, got ${url}`);
}
