// WebSocket classes for integration tests, built on the `ws` package:
// one that records every socket the client opens (to reach the TCP socket
// underneath), and one whose connection attempts wait behind a gate (to keep
// the client offline for exactly as long as a test needs).

import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { withTimeout } from './wait.mjs';

/** A `ws` subclass that remembers its instances: `Recording.sockets`. */
export function recordingWebSocket() {
  const events = new EventEmitter();
  const sockets = [];
  class Recording extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
      events.emit('socket', this);
    }
  }
  return { WebSocket: Recording, sockets, events };
}

/**
 * `hold()` makes the client's next connection attempts wait; `release()`
 * lets them through. Attempts made while held count in `attempts`.
 */
export function gatedWebSocket() {
  let gate = Promise.resolve();
  let open = () => {};
  const events = new EventEmitter();
  const state = { attempts: 0 };

  class Gated {
    constructor(url, protocols) {
      this.inner = null;
      this.closed = false;
      this.protocol = '';
      this.binaryType = 'arraybuffer';
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      state.attempts += 1;
      events.emit('attempt');
      gate.then(() => this.start(url, protocols));
    }

    start(url, protocols) {
      if (this.closed) return;
      const ws = new WebSocket(url, protocols);
      ws.binaryType = this.binaryType;
      this.inner = ws;
      ws.onopen = (e) => {
        this.protocol = ws.protocol;
        this.onopen?.(e);
      };
      ws.onmessage = (e) => this.onmessage?.(e);
      ws.onclose = (e) => this.onclose?.(e);
      ws.onerror = (e) => this.onerror?.(e);
    }

    get readyState() {
      if (this.inner) return this.inner.readyState;
      return this.closed ? 3 : 0;
    }

    send(data) {
      this.inner.send(data);
    }

    close(code, reason) {
      this.closed = true;
      if (this.inner) this.inner.close(code, reason);
      else queueMicrotask(() => this.onclose?.({ code: 1006, reason: '' }));
    }

    terminate() {
      this.closed = true;
      if (this.inner) this.inner.terminate();
      else queueMicrotask(() => this.onclose?.({ code: 1006, reason: '' }));
    }
  }

  return {
    WebSocket: Gated,
    state,
    hold() {
      gate = new Promise((resolve) => (open = resolve));
    },
    release() {
      open();
      gate = Promise.resolve();
    },
    /** Resolves when a connection attempt is waiting at the gate. */
    nextAttempt(timeout = 5000) {
      return withTimeout(new Promise((resolve) => events.once('attempt', resolve)), timeout, 'a connection attempt');
    },
  };
}
