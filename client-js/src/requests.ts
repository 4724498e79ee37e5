// Requests: matching replies to requests by `id`, with timeouts.
//
// Every client request carries a fresh unsigned integer `id`; the reply (or an
// `error`) carries it back (docs/protocol.md section 2). Replies are delivered by
// callback, synchronously while the frame is being processed, so a
// `subscribed` reply is handled before the `message` ops that follow it in the
// same frame.

import { ConnectionClosedError, ServerError, TimeoutError } from './errors.js';
import type { WireMessage } from './codec.js';
import type { TimerHandle, Timers } from './timers.js';

/** Receives the reply to one request, or why there will be none. */
export type ReplyCallback = (error: Error | null, reply?: WireMessage) => void;

interface Pending {
  op: string;
  callback: ReplyCallback;
  timer: TimerHandle;
}

/** The requests of one client that are waiting for a reply. */
export class PendingRequests {
  private nextRequestId = 1;
  private readonly pending = new Map<number, Pending>();

  constructor(private readonly timers: Timers) {}

  /** A new request id; ids are never reused for the lifetime of the client. */
  nextId(): number {
    const id = this.nextRequestId;
    this.nextRequestId = id >= Number.MAX_SAFE_INTEGER ? 1 : id + 1;
    return id;
  }

  /** Waits for the reply to request `id`; `callback` runs exactly once. */
  add(id: number, op: string, timeoutMs: number, callback: ReplyCallback): void {
    const timer = this.timers.setTimeout(() => {
      if (this.pending.delete(id)) callback(new TimeoutError(op, timeoutMs));
    }, timeoutMs);
    this.pending.set(id, { op, callback, timer });
  }

  /**
   * Delivers a message carrying an `id`. Returns false when no request waits
   * for that id (a late reply after a timeout, or a stray `error`).
   */
  settle(message: WireMessage): boolean {
    const id = message.id;
    if (typeof id !== 'number') return false;
    const entry = this.pending.get(id);
    if (entry === undefined) return false;
    this.pending.delete(id);
    this.timers.clearTimeout(entry.timer);
    if (message.op === 'error') {
      const code = typeof message.code === 'number' ? message.code : 100;
      const text = typeof message.message === 'string' ? message.message : '';
      entry.callback(new ServerError(code, text));
    } else {
      entry.callback(null, message);
    }
    return true;
  }

  /** Fails every waiting request, e.g. because the connection closed. */
  rejectAll(error: ConnectionClosedError): void {
    const entries = [...this.pending.values()];
    this.pending.clear();
    for (const entry of entries) {
      this.timers.clearTimeout(entry.timer);
      entry.callback(error);
    }
  }

  /** How many requests wait for a reply. */
  get size(): number {
    return this.pending.size;
  }
}
