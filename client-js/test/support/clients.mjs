// Helpers for integration tests: connected clients that clean up after
// themselves, and recorders that await a number of messages.

import WebSocket from 'ws';
import { Client } from '../../dist/esm/index.js';
import { waitForEvent, waitUntil } from './wait.mjs';

/** Options every integration client uses: fast reconnects, no browser events. */
export const FAST = { minReconnectDelay: 20, maxReconnectDelay: 200, timeout: 5000, networkEvents: false };

/** A client connected to `server`, disconnected when the test `t` ends. */
export async function connectedClient(t, server, options = {}) {
  const client = new Client(server.wsUrl, { ...FAST, websocket: WebSocket, ...options });
  t.after(() => client.disconnect());
  server.clients.add(client);
  const ready = waitForEvent(client, 'connected', { timeout: 5000, what: 'the client to connect' });
  client.connect();
  await ready;
  return client;
}

/** Subscribes and waits for `subscribed`; rejects on a subscription error or after 5 s. */
export function subscribed(client, channel, options = {}) {
  const sub = client.subscribe(channel, options);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      sub.off('subscribed', onSubscribed);
      sub.off('error', onError);
    };
    const onSubscribed = (event) => {
      cleanup();
      resolve({ sub, event });
    };
    const onError = ({ error }) => {
      cleanup();
      reject(Object.assign(new Error(`subscribe ${channel} failed: ${error.code ?? ''} ${error.message}`), { cause: error }));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after 5000 ms waiting for subscribed to ${channel}`));
    }, 5000);
    sub.on('subscribed', onSubscribed);
    sub.on('error', onError);
  });
}

/** Records a subscription's (or client's) messages. */
export class Recorder {
  constructor(emitter, event = 'message') {
    this.emitter = emitter;
    this.event = event;
    this.messages = [];
    emitter.on(event, (m) => this.messages.push(m));
  }

  get data() {
    return this.messages.map((m) => m.data);
  }

  get offsets() {
    return this.messages.map((m) => m.offset);
  }

  /** Waits until at least `count` messages arrived. */
  async until(count, timeout = 5000) {
    await waitUntil(this.emitter, this.event, () => this.messages.length >= count, {
      timeout,
      what: `${count} messages (have ${this.messages.length})`,
    }).catch((err) => {
      err.message += ` — got ${JSON.stringify(this.data).slice(0, 400)}`;
      throw err;
    });
    return this.messages;
  }
}
