// Replies: turning the server's snake_case replies into the application's shapes.
//
// Fields are read defensively (a missing or mistyped optional field becomes
// absent rather than `undefined` or a wrong type), so a newer server adding
// fields, or an older one leaving some out, does not break applications.

import { payloadOf } from './codec.js';
import type { WireMessage } from './codec.js';
import type {
  ClientInfo,
  ConnectedEvent,
  HistoryResult,
  PresenceChange,
  PresenceResult,
  PresenceStats,
  Publication,
  PublishResult,
} from './types.js';

/** `connected` {client_id, node, user?, ping_interval, pong_timeout, expires_at?, subscribed?}. */
export function toConnectedEvent(reply: WireMessage): ConnectedEvent {
  const info: ConnectedEvent = {
    clientId: String(reply.client_id ?? ''),
    node: String(reply.node ?? ''),
    user: String(reply.user ?? ''),
    pingInterval: Number(reply.ping_interval ?? 0),
    pongTimeout: Number(reply.pong_timeout ?? 0),
    subscribed: Array.isArray(reply.subscribed) ? reply.subscribed.map(String) : [],
  };
  if (typeof reply.expires_at === 'number') info.expiresAt = reply.expires_at;
  return info;
}

/** `published` {offset?, epoch?}. */
export function toPublishResult(reply: WireMessage): PublishResult {
  const result: PublishResult = {};
  if (typeof reply.offset === 'number') result.offset = reply.offset;
  if (typeof reply.epoch === 'string') result.epoch = reply.epoch;
  return result;
}

/** `presence` {channel, clients: [{client_id, user, info?}], cursor?}. */
export function toPresenceResult(reply: WireMessage, channel: string): PresenceResult {
  const clients = Array.isArray(reply.clients) ? reply.clients.map(toClientInfo) : [];
  const result: PresenceResult = { channel: String(reply.channel ?? channel), clients };
  if (typeof reply.cursor === 'string') result.cursor = reply.cursor;
  return result;
}

/** `presence_stats` {channel, clients, users}. */
export function toPresenceStats(reply: WireMessage): PresenceStats {
  return { clients: Number(reply.clients ?? 0), users: Number(reply.users ?? 0) };
}

/** `history` {channel, epoch, offset, messages: [{offset, data | data_b64}]}. */
export function toHistoryResult(reply: WireMessage, channel: string): HistoryResult {
  const messages = Array.isArray(reply.messages) ? (reply.messages as Array<Record<string, unknown>>) : [];
  return {
    channel: String(reply.channel ?? channel),
    epoch: String(reply.epoch ?? ''),
    offset: Number(reply.offset ?? 0),
    messages: messages.map((m) => ({ offset: Number(m.offset), data: payloadOf(m) })),
  };
}

/** A `message` op. */
export function toPublication(message: WireMessage): Publication {
  const publication: Publication = { channel: String(message.channel), data: payloadOf(message) };
  if (typeof message.offset === 'number') publication.offset = message.offset;
  if (typeof message.epoch === 'string') publication.epoch = message.epoch;
  return publication;
}

/** A `join` or `leave` op. */
export function toPresenceChange(message: WireMessage): PresenceChange {
  return { channel: String(message.channel), ...toClientInfo(message) };
}

/** `refreshed` {expires_at}. */
export function expiresAtOf(reply: WireMessage | undefined): number | undefined {
  return typeof reply?.expires_at === 'number' ? reply.expires_at : undefined;
}

function toClientInfo(value: unknown): ClientInfo {
  const record = (value ?? {}) as Record<string, unknown>;
  const info: ClientInfo = { clientId: String(record.client_id ?? ''), user: String(record.user ?? '') };
  if (record.info !== undefined) info.info = record.info;
  return info;
}
