// A scriptable stand-in for the browser WebSocket, for client unit tests.
//
// `const server = new FakeServer()` hands out `server.WebSocket` (pass it as
// the client's `websocket` option); each socket the client opens shows up in
// `await server.nextSocket()`, where the test plays the server: accept it,
// read what the client sent, answer, close with any code.

import { EventEmitter } from 'node:events';
import { createCodec } from '../../dist/esm/codec.js';
import { withTimeout } from './wait.mjs';

export class FakeSocket extends EventEmitter {
  constructor(url, protocols) {
    super();
    this.url = url;
    this.protocols = Array.isArray(protocols) ? protocols : [protocols];
    this.readyState = 0;
    this.protocol = '';
    this.binaryType = 'blob';
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this.frames = [];
    this.received = [];
    this.closedByClient = null;
    this.taken = new WeakSet();
    const encoding = this.protocols.includes('pushwire.v1.msgpack') ? 'msgpack' : 'json';
    this.codec = createCodec(encoding);
  }

  // ---- the client's side ----

  send(frame) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.frames.push(frame);
    for (const message of this.codec.decode(frame)) {
      this.received.push(message);
      this.emit('received', message);
    }
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    this.closedByClient = { code, reason };
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }

  terminate() {
    this.close(1006, '');
  }

  // ---- the test's (server's) side ----

  accept() {
    this.readyState = 1;
    this.protocol = this.protocols[0];
    this.onopen?.({});
  }

  /** Sends messages to the client in one frame (a batch if several). */
  push(...messages) {
    const frame = this.codec.join(messages.map((m) => this.codec.encode(m)));
    this.onmessage?.({ data: frame instanceof Uint8Array ? frame.slice().buffer : frame });
  }

  /** Closes from the server side, optionally after a `disconnect` op. */
  serverClose(code, reason = '', { disconnect } = {}) {
    if (disconnect) this.push({ op: 'disconnect', code, reason, reconnect: disconnect.reconnect });
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The next message the client sends with `op` (already-received ones count). */
  nextMessage(op, timeout = 2000) {
    const seen = this.received.find((m) => m.op === op && !this.taken.has(m));
    if (seen) {
      this.taken.add(seen);
      return Promise.resolve(seen);
    }
    return withTimeout(
      new Promise((resolve) => {
        const listener = (message) => {
          if (message.op !== op || this.taken.has(message)) return;
          this.taken.add(message);
          this.off('received', listener);
          resolve(message);
        };
        this.on('received', listener);
      }),
      timeout,
      `the client to send "${op}"`,
    );
  }

  /** Accepts the socket and answers `connect` with `connected` plus `fields`. */
  async handshake(fields = {}) {
    this.accept();
    const connect = await this.nextMessage('connect');
    this.push({ op: 'connected', id: connect.id, client_id: 'c1', node: 'n1', ping_interval: 25, pong_timeout: 10, ...fields });
    return connect;
  }
}

export class FakeServer extends EventEmitter {
  constructor() {
    super();
    this.sockets = [];
    this.taken = 0;
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url, protocols) {
        super(url, protocols);
        server.sockets.push(this);
        server.emit('socket', this);
      }
    };
  }

  /** The next socket the client opens (sockets already opened count). */
  nextSocket(timeout = 2000) {
    if (this.sockets.length > this.taken) return Promise.resolve(this.sockets[this.taken++]);
    return withTimeout(
      new Promise((resolve) => this.once('socket', () => resolve(this.sockets[this.taken++]))),
      timeout,
      'the client to open a WebSocket',
    );
  }
}
