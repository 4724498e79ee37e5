// pushwire-client: the JavaScript client of the pushwire push server.
//
// Code map (one concern per module):
// - client.ts: the connection state machine, reconnects, request/reply routing.
// - subscription.ts: one channel's state machine, its history position, recovery.
// - policy.ts: docs/protocol.md's close-code table as reconnect decisions.
// - backoff.ts: exponential backoff with full jitter.
// - refresh.ts: connection-token refresh ahead of expiry.
// - watchdog.ts: the server-ping watchdog.
// - network.ts: the browser's online/offline events.
// - codec.ts: JSON and MessagePack frames, including batches.
// - outbox.ts: batching outgoing messages per tick.
// - requests.ts: matching replies by id, with timeouts.
// - replies.ts: wire replies to application shapes (camelCase, decoded bytes).
// - transport.ts: finding a WebSocket (browser global, or `ws` in Node).
// - options.ts, types.ts, errors.ts: the public shapes.
//
// Invariant: nothing here imports Node built-ins; the same code runs in
// browsers, Node and the single-file IIFE bundle.

export { Client } from './client.js';
export { Subscription } from './subscription.js';
export type { SubscriptionOptions } from './subscription.js';
export type { ClientOptions, NetworkEventTarget } from './options.js';
export { ConnectionClosedError, ErrorCode, PushwireError, ServerError, TimeoutError } from './errors.js';
export type { ErrorCodeValue } from './errors.js';
export { ClientCloseCode, CloseCode, actionForClose } from './policy.js';
export type { ReconnectAction } from './policy.js';
export { Backoff, jitteredDelay } from './backoff.js';
export type { BackoffBounds } from './backoff.js';
export { SUBPROTOCOLS, createCodec, CodecError } from './codec.js';
export type { Codec, Encoding, WireMessage } from './codec.js';
export type { WebSocketConstructor, WebSocketLike } from './transport.js';
export { VERSION } from './version.js';
export type * from './types.js';
