// Types: the shapes the client hands to applications.
//
// Wire field names are snake_case (`client_id`, `expires_at`); the objects
// applications see are camelCase, and `data_b64` arrives already decoded as
// bytes, so JSON and MessagePack connections look the same to the application.

/** Where a client is in a channel's history: docs/protocol.md section 4. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** A message published on a channel. */
export interface Publication {
  channel: string;
  /** Any value; bytes (MessagePack `bin`, or JSON `data_b64`) as a Uint8Array. */
  data: unknown;
  /** Present on channels whose namespace keeps history. */
  offset?: number;
  epoch?: string;
}

/** A client in a channel's presence. */
export interface ClientInfo {
  clientId: string;
  user: string;
  info?: unknown;
}

/** A `join` or `leave` on a channel. */
export interface PresenceChange extends ClientInfo {
  channel: string;
}

/** Reply to `publish`. */
export interface PublishResult {
  offset?: number;
  epoch?: string;
}

/** Options of `presence`: one page of a channel's presence. */
export interface PresenceOptions {
  /**
   * At most this many entries (the server also caps a page at the namespace's
   * `presence_max_page`, which is the page size without `limit`; 0 counts as 1).
   */
  limit?: number;
  /** The `cursor` of the previous page: this page starts after its last entry. */
  cursor?: string;
}

/** Reply to `presence`: one page, ordered by user, then by connection. */
export interface PresenceResult {
  channel: string;
  clients: ClientInfo[];
  /**
   * Present when there may be more: pass it back as `cursor` for the next page.
   * Absent on the last page.
   */
  cursor?: string;
}

/** Reply to `presenceStats`: counts without listing anyone. */
export interface PresenceStats {
  /** Connections subscribed to the channel. */
  clients: number;
  /** Distinct users among them; each anonymous connection counts as one user. */
  users: number;
}

/** Options of `history`. */
export interface HistoryOptions {
  /** Only messages after this position. */
  since?: StreamPosition;
  /** At most this many messages (counted from the newest with `reverse`). */
  limit?: number;
  /** Newest first: `{ limit: 20, reverse: true }` is "the latest 20". */
  reverse?: boolean;
}

/** Reply to `history`. */
export interface HistoryResult {
  channel: string;
  /** The channel's current epoch and latest offset. */
  epoch: string;
  offset: number;
  messages: Array<{ offset: number; data: unknown }>;
}

/** Connection states, in the order a healthy client goes through them. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected';

/** Why the client is (re)connecting, or why it stopped. */
export interface CloseInfo {
  /** A docs/protocol.md close code, a `ClientCloseCode`, or 0 for `connect()`. */
  code: number;
  reason: string;
}

/** The `connected` reply, camelCased. */
export interface ConnectedEvent {
  clientId: string;
  node: string;
  user: string;
  /** Seconds between server pings. */
  pingInterval: number;
  /** Seconds the server waits for a pong. */
  pongTimeout: number;
  /** Unix seconds when the connection token expires, if it does. */
  expiresAt?: number;
  /** Channels the server subscribed from the token's `channels` claim. */
  subscribed: string[];
}

/** Something went wrong that the client handles by itself (reported for logging). */
export interface ClientErrorEvent {
  type: 'transport' | 'connect' | 'token' | 'refresh' | 'protocol' | 'server';
  error: Error;
}

export interface StateChange<S> {
  oldState: S;
  newState: S;
}

/** Events of a `Client`. */
export type ClientEvents = {
  state: StateChange<ConnectionState>;
  connecting: CloseInfo;
  connected: ConnectedEvent;
  disconnected: CloseInfo;
  error: ClientErrorEvent;
  /** The connection token was refreshed; the new one expires at `expiresAt`. */
  refreshed: { expiresAt?: number };
  /**
   * The backend subscribed this connection to `channel` (`POST /api/subscribe`); its
   * messages arrive as `message` events, like those of the token's `channels` claim.
   */
  serverSubscribed: { channel: string; offset?: number; epoch?: string };
  /** The backend removed a server-side subscription (`POST /api/unsubscribe`). */
  serverUnsubscribed: { channel: string };
  /** Messages on server-side subscriptions (the token's `channels` claim, `/api/subscribe`). */
  message: Publication;
  join: PresenceChange;
  leave: PresenceChange;
};

/** Subscription states. */
export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/** The `subscribed` reply as a subscription event. */
export interface SubscribedEvent {
  channel: string;
  /** True when this subscribe asked the server to recover from a position. */
  wasRecovering: boolean;
  /**
   * True when every missed message was (or is about to be) delivered. When
   * `wasRecovering` is true and this is false, messages were lost: reload.
   */
  recovered: boolean;
  /** The channel's position after this reply, on channels with history. */
  offset?: number;
  epoch?: string;
}

/** Messages were missed without a reconnect (an offset jump or a new epoch). */
export interface GapEvent {
  channel: string;
  /** The position that was expected next, in the old epoch. */
  expected: StreamPosition;
  received: StreamPosition;
}

/** Events of a `Subscription`. */
export type SubscriptionEvents = {
  state: StateChange<SubscriptionState>;
  subscribing: CloseInfo;
  subscribed: SubscribedEvent;
  message: Publication;
  join: PresenceChange;
  leave: PresenceChange;
  gap: GapEvent;
  error: { channel: string; error: Error };
  unsubscribed: CloseInfo;
};
