// Outbox: batches the messages sent in one tick into as few frames as fit.
//
// Resubscribing twenty channels after a reconnect costs one frame instead of
// twenty (docs/protocol.md section 1 requires servers to accept batches). Frames
// stay under `maxBatchBytes` so a batch never trips the server's
// max_frame_bytes (close 1009) when each message alone would not.

import type { Codec } from './codec.js';

export class Outbox {
  private queued: Array<string | Uint8Array> = [];
  private scheduled = false;

  constructor(
    private readonly codec: Codec,
    private readonly maxBatchBytes: number,
    /** Sends one frame; returns false when the socket is not open (the batch is dropped). */
    private readonly sendFrame: (frame: string | Uint8Array) => boolean,
  ) {}

  /** Queues a message; it leaves in a frame at the end of the current tick. */
  push(message: object): void {
    this.queued.push(this.codec.encode(message));
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** Drops queued messages (the connection they were meant for is gone). */
  clear(): void {
    this.queued = [];
  }

  /** Sends everything queued now. */
  flush(): void {
    this.scheduled = false;
    const queued = this.queued;
    this.queued = [];
    let batch: Array<string | Uint8Array> = [];
    let size = 0;
    for (const encoded of queued) {
      const length = this.codec.sizeOf(encoded) + 1;
      if (batch.length > 0 && size + length > this.maxBatchBytes) {
        if (!this.sendFrame(this.codec.join(batch))) return;
        batch = [];
        size = 0;
      }
      batch.push(encoded);
      size += length;
    }
    if (batch.length > 0) this.sendFrame(this.codec.join(batch));
  }
}
