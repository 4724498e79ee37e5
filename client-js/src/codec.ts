// Codec: turns WebSocket frames into protocol messages and back.
//
// docs/protocol.md section 1: a frame may carry several messages. JSON frames are
// UTF-8 text with messages separated by `\n`; MessagePack frames are maps
// concatenated back to back. Both directions accept batches, so decoding always
// returns a list and encoding always takes one.

import { Decoder, Encoder } from '@msgpack/msgpack';

/** Wire encoding, chosen per connection through the WebSocket subprotocol. */
export type Encoding = 'json' | 'msgpack';

/** The subprotocol name that selects each encoding. */
export const SUBPROTOCOLS: Readonly<Record<Encoding, string>> = {
  json: 'pushwire.v1.json',
  msgpack: 'pushwire.v1.msgpack',
};

/** A decoded protocol message: a map with a string `op`. */
export interface WireMessage {
  op: string;
  [field: string]: unknown;
}

/** The frame payload types a WebSocket hands to `onmessage`. */
export type FramePayload = string | ArrayBuffer | ArrayBufferView;

/** The frame could not be decoded into protocol messages. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}

/** Encodes and decodes batches of protocol messages for one encoding. */
export interface Codec {
  readonly encoding: Encoding;
  readonly subprotocol: string;
  /** Encodes one message; frames are built by joining encoded messages. */
  encode(message: object): string | Uint8Array;
  /** Joins messages encoded by `encode` into one frame. */
  join(encoded: Array<string | Uint8Array>): string | Uint8Array;
  /** Size in bytes (JSON: UTF-16 code units, close enough for batching limits). */
  sizeOf(encoded: string | Uint8Array): number;
  decode(frame: FramePayload): WireMessage[];
}

/** Returns the codec for an encoding. */
export function createCodec(encoding: Encoding): Codec {
  if (encoding === 'json') return new JsonCodec();
  if (encoding === 'msgpack') return new MsgpackCodec();
  throw new TypeError(`unknown encoding ${JSON.stringify(encoding)}: use 'json' or 'msgpack'`);
}

function toBytes(frame: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (frame instanceof Uint8Array) return frame;
  if (ArrayBuffer.isView(frame)) {
    return new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
  }
  return new Uint8Array(frame);
}

function checkMessage(value: unknown): WireMessage {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new CodecError('protocol message is not a map');
  }
  if (typeof (value as { op?: unknown }).op !== 'string') {
    throw new CodecError('protocol message has no string "op"');
  }
  return value as WireMessage;
}

/** `pushwire.v1.json`: text frames, one JSON object per line. */
export class JsonCodec implements Codec {
  readonly encoding = 'json' as const;
  readonly subprotocol = SUBPROTOCOLS.json;
  private readonly textDecoder = new TextDecoder('utf-8', { fatal: true });

  encode(message: object): string {
    // JSON.stringify never emits a raw newline, so `\n` is a safe separator.
    return JSON.stringify(message);
  }

  join(encoded: Array<string | Uint8Array>): string {
    return encoded.join('\n');
  }

  sizeOf(encoded: string | Uint8Array): number {
    return typeof encoded === 'string' ? encoded.length : encoded.byteLength;
  }

  decode(frame: FramePayload): WireMessage[] {
    let text: string;
    try {
      text = typeof frame === 'string' ? frame : this.textDecoder.decode(toBytes(frame));
    } catch {
      throw new CodecError('JSON frame is not valid UTF-8');
    }
    const messages: WireMessage[] = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (err) {
        throw new CodecError(`invalid JSON in frame: ${(err as Error).message}`);
      }
      messages.push(checkMessage(value));
    }
    return messages;
  }
}

/** `pushwire.v1.msgpack`: binary frames, MessagePack maps back to back. */
export class MsgpackCodec implements Codec {
  readonly encoding = 'msgpack' as const;
  readonly subprotocol = SUBPROTOCOLS.msgpack;
  // Absent optional fields must be left out, not sent as nil.
  private readonly encoder = new Encoder({ ignoreUndefined: true });
  private readonly decoder = new Decoder();

  encode(message: object): Uint8Array {
    // `encode` returns a copy, safe to keep while the encoder is reused.
    return this.encoder.encode(message);
  }

  join(encoded: Array<string | Uint8Array>): Uint8Array {
    const parts = encoded as Uint8Array[];
    if (parts.length === 1) return parts[0]!;
    const total = parts.reduce((sum, part) => sum + part.byteLength, 0);
    const frame = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      frame.set(part, at);
      at += part.byteLength;
    }
    return frame;
  }

  sizeOf(encoded: string | Uint8Array): number {
    return typeof encoded === 'string' ? encoded.length : encoded.byteLength;
  }

  decode(frame: FramePayload): WireMessage[] {
    if (typeof frame === 'string') {
      throw new CodecError('text frame on a MessagePack connection');
    }
    const messages: WireMessage[] = [];
    try {
      for (const value of this.decoder.decodeMulti(toBytes(frame))) {
        messages.push(checkMessage(value));
      }
    } catch (err) {
      if (err instanceof CodecError) throw err;
      throw new CodecError(`invalid MessagePack in frame: ${(err as Error).message}`);
    }
    return messages;
  }
}

/** Decodes standard base64 (the `data_b64` field) into bytes. */
export function base64ToBytes(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * The payload of a `message` or history entry: `data`, or the bytes of
 * `data_b64` (binary data published as MessagePack `bin`, seen by a JSON client).
 */
export function payloadOf(message: Record<string, unknown>): unknown {
  if (typeof message.data_b64 === 'string' && !('data' in message)) {
    return base64ToBytes(message.data_b64);
  }
  return message.data;
}
