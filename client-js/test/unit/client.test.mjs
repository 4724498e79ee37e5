// The Client against a scripted fake server: handshake, request/reply,
// reconnect policy, recovery, watchdog, token refresh, network events.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Client, ConnectionClosedError, ServerError, TimeoutError } from '../../dist/esm/index.js';
import { FakeServer } from '../support/fake-websocket.mjs';
import { collect, waitForEvent, withTimeout } from '../support/wait.mjs';

const URL = 'ws://pushwire.test/ws';
const fast = { minReconnectDelay: 1, maxReconnectDelay: 5, networkEvents: false };

function setup(options = {}) {
  const server = new FakeServer();
  const client = new Client(URL, { websocket: server.WebSocket, ...fast, ...options });
  return { server, client };
}

async function connected(options = {}, fields = {}) {
  const { server, client } = setup(options);
  client.connect();
  const socket = await server.nextSocket();
  const ready = waitForEvent(client, 'connected');
  const connect = await socket.handshake(fields);
  await ready;
  return { server, client, socket, connect };
}

test('connect: subprotocol, connect op with token and client name, connected event', async (t) => {
  const { server, client } = setup({ token: 'jwt-1' });
  t.after(() => client.disconnect());
  const states = collect(client, 'state');
  const connecting = collect(client, 'connecting');
  client.connect();
  assert.equal(client.state, 'connecting');
  const socket = await server.nextSocket();
  assert.equal(socket.url, URL);
  assert.deepEqual(socket.protocols, ['pushwire.v1.json']);
  const event = waitForEvent(client, 'connected');
  const connect = await socket.handshake({ user: 'alice', client_id: 'abc', expires_at: undefined, subscribed: ['feed'] });
  assert.equal(connect.token, 'jwt-1');
  assert.match(connect.client, /^pushwire-js\/\d+\.\d+\.\d+/);
  assert.equal(typeof connect.id, 'number');
  assert.deepEqual(await event, {
    clientId: 'abc',
    node: 'n1',
    user: 'alice',
    pingInterval: 25,
    pongTimeout: 10,
    subscribed: ['feed'],
  });
  assert.equal(client.state, 'connected');
  assert.equal(client.clientId, 'abc');
  assert.deepEqual(connecting, [{ code: 0, reason: 'connect called' }]);
  assert.deepEqual(states.map((s) => s.newState), ['connecting', 'connected']);
  assert.equal(socket.binaryType, 'arraybuffer');
});

test('http:// URLs become ws://; other schemes are refused', () => {
  assert.equal(new Client('http://h:1/ws').url, 'ws://h:1/ws');
  assert.equal(new Client('https://h/ws').url, 'wss://h/ws');
  assert.throws(() => new Client('ftp://h/ws'), TypeError);
  assert.throws(() => new Client(URL, { timeout: -1 }), RangeError);
});

test('publish, presence, history resolve with camelCased replies', async (t) => {
  const { client, socket } = await connected();
  t.after(() => client.disconnect());
  const published = client.publish('news', { title: 'hi' });
  const publish = await socket.nextMessage('publish');
  assert.deepEqual({ ...publish, id: 0 }, { op: 'publish', id: 0, channel: 'news', data: { title: 'hi' } });
  socket.push({ op: 'published', id: publish.id, offset: 4, epoch: 'e' });
  assert.deepEqual(await published, { offset: 4, epoch: 'e' });

  const presence = client.presence('room');
  const p = await socket.nextMessage('presence');
  socket.push({ op: 'presence', id: p.id, channel: 'room', clients: [{ client_id: 'c9', user: 'bob', info: { n: 1 } }] });
  assert.deepEqual(await presence, { channel: 'room', clients: [{ clientId: 'c9', user: 'bob', info: { n: 1 } }] });

  const history = client.history('news', { since: { offset: 2, epoch: 'e' }, limit: 10 });
  const h = await socket.nextMessage('history');
  assert.deepEqual(h.since, { offset: 2, epoch: 'e' });
  assert.equal(h.limit, 10);
  socket.push({ op: 'history', id: h.id, channel: 'news', epoch: 'e', offset: 4, messages: [{ offset: 3, data: 'a' }, { offset: 4, data_b64: 'AQI=' }] });
  const result = await history;
  assert.equal(result.offset, 4);
  assert.deepEqual(result.messages[0], { offset: 3, data: 'a' });
  assert.deepEqual([...result.messages[1].data], [1, 2]);
});

test('presence pages: the call without options sends only the channel; limit, cursor and the reply cursor pass through; presenceStats counts', async (t) => {
  const { client, socket } = await connected();
  t.after(() => client.disconnect());
  const plain = client.presence('room');
  const p0 = await socket.nextMessage('presence');
  assert.deepEqual({ ...p0, id: 0 }, { op: 'presence', id: 0, channel: 'room' });
  socket.push({ op: 'presence', id: p0.id, channel: 'room', clients: [] });
  assert.deepEqual(await plain, { channel: 'room', clients: [] });

  const first = client.presence('room', { limit: 2 });
  const p1 = await socket.nextMessage('presence');
  assert.deepEqual({ ...p1, id: 0 }, { op: 'presence', id: 0, channel: 'room', limit: 2 });
  socket.push({ op: 'presence', id: p1.id, channel: 'room', clients: [{ client_id: 'c1', user: 'ann' }, { client_id: 'c2', user: 'bob' }], cursor: 'bob\u0000c2' });
  assert.deepEqual(await first, { channel: 'room', clients: [{ clientId: 'c1', user: 'ann' }, { clientId: 'c2', user: 'bob' }], cursor: 'bob\u0000c2' });

  const sub = client.subscribe('room');
  const subscribe = await socket.nextMessage('subscribe');
  socket.push({ op: 'subscribed', id: subscribe.id, channel: 'room' });
  const last = sub.presence({ limit: 2, cursor: 'bob\u0000c2' });
  const p2 = await socket.nextMessage('presence');
  assert.deepEqual({ ...p2, id: 0 }, { op: 'presence', id: 0, channel: 'room', limit: 2, cursor: 'bob\u0000c2' });
  socket.push({ op: 'presence', id: p2.id, channel: 'room', clients: [{ client_id: 'c3', user: 'cy' }] });
  const page = await last;
  assert.deepEqual(page, { channel: 'room', clients: [{ clientId: 'c3', user: 'cy' }] });
  assert.equal('cursor' in page, false, 'the last page has no cursor');

  const stats = client.presenceStats('room');
  const s = await socket.nextMessage('presence_stats');
  assert.deepEqual({ ...s, id: 0 }, { op: 'presence_stats', id: 0, channel: 'room' });
  socket.push({ op: 'presence_stats', id: s.id, channel: 'room', clients: 3, users: 2 });
  assert.deepEqual(await stats, { clients: 3, users: 2 });

  const viaSub = sub.presenceStats();
  const s2 = await socket.nextMessage('presence_stats');
  assert.equal(s2.channel, 'room');
  socket.push({ op: 'error', id: s2.id, code: 108, message: 'presence disabled' });
  await assert.rejects(viaSub, (err) => err instanceof ServerError && err.code === 108);
});

test('replies are matched by id even when they arrive out of order in one batch', async (t) => {
  const { client, socket } = await connected();
  t.after(() => client.disconnect());
  const a = client.publish('a', 1);
  const b = client.publish('b', 2);
  const pa = await socket.nextMessage('publish');
  const pb = await socket.nextMessage('publish');
  assert.equal(socket.frames.length, 2, 'connect, then both publishes batched in one frame');
  socket.push({ op: 'published', id: pb.id, offset: 20 }, { op: 'published', id: pa.id, offset: 10 });
  assert.deepEqual(await Promise.all([a, b]), [{ offset: 10 }, { offset: 20 }]);
});

test('an error reply rejects with ServerError and its code; the connection stays', async (t) => {
  const { client, socket } = await connected();
  t.after(() => client.disconnect());
  const pending = client.publish('news', 1);
  const publish = await socket.nextMessage('publish');
  socket.push({ op: 'error', id: publish.id, code: 103, message: 'permission denied' });
  await assert.rejects(pending, (err) => err instanceof ServerError && err.code === 103);
  assert.equal(client.state, 'connected');
});

test('no reply within timeout: TimeoutError', async (t) => {
  const { client, socket } = await connected({ timeout: 50 });
  t.after(() => client.disconnect());
  const pending = client.presence('room');
  await socket.nextMessage('presence');
  await assert.rejects(pending, TimeoutError);
});

test('requests made while connecting wait for the connection', async (t) => {
  const { server, client } = setup();
  t.after(() => client.disconnect());
  client.connect();
  const pending = client.publish('news', 'early');
  const socket = await server.nextSocket();
  await socket.handshake();
  const publish = await socket.nextMessage('publish');
  socket.push({ op: 'published', id: publish.id });
  assert.deepEqual(await pending, {});
});

test('requests on a disconnected client reject; binary data needs msgpack', async () => {
  const client = new Client(URL, { websocket: new FakeServer().WebSocket });
  await assert.rejects(client.publish('a', 1), ConnectionClosedError);
  await assert.rejects(client.ready(), ConnectionClosedError);
  await assert.rejects(client.publish('a', new Uint8Array([1])), TypeError);
});

test('a lost connection rejects in-flight requests with ConnectionClosedError', async (t) => {
  const { client, socket } = await connected();
  t.after(() => client.disconnect());
  const pending = client.history('news');
  await socket.nextMessage('history');
  socket.serverClose(1006, '');
  await assert.rejects(pending, (err) => err instanceof ConnectionClosedError && err.closeCode === 1006);
});

for (const code of [1000, 1009, 4000, 4001]) {
  test(`close ${code}: stop, disconnected event, no reconnect`, async () => {
    const { server, client, socket } = await connected();
    const disconnected = waitForEvent(client, 'disconnected');
    socket.serverClose(code, 'bye');
    assert.deepEqual(await disconnected, { code, reason: 'bye' });
    assert.equal(client.state, 'disconnected');
    await assert.rejects(server.nextSocket(100), /timed out/);
  });
}

for (const code of [1001, 4004, 4005, 4008, 1006]) {
  test(`close ${code}: reconnect and resubscribe with recover`, async (t) => {
    const { server, client, socket } = await connected();
    t.after(() => client.disconnect());
    const sub = client.subscribe('news', { recover: true });
    const s1 = await socket.nextMessage('subscribe');
    socket.push({ op: 'subscribed', id: s1.id, channel: 'news', epoch: 'E', offset: 1 }, { op: 'message', channel: 'news', data: 'two', offset: 2, epoch: 'E' });
    const connecting = waitForEvent(client, 'connecting');
    socket.serverClose(code, 'drop');
    assert.deepEqual(await connecting, { code, reason: 'drop' });
    assert.equal(sub.state, 'subscribing');
    const next = await server.nextSocket();
    await next.handshake();
    const s2 = await next.nextMessage('subscribe');
    assert.deepEqual(s2.recover, { offset: 2, epoch: 'E' });
  });
}

test('4011 follows disconnect.reconnect', async () => {
  const { client, socket } = await connected();
  const disconnected = waitForEvent(client, 'disconnected');
  socket.serverClose(4011, 'kicked', { disconnect: { reconnect: false } });
  assert.equal((await disconnected).code, 4011);

  const second = await connected();
  const connecting = waitForEvent(second.client, 'connecting');
  second.socket.serverClose(4011, 'moved', { disconnect: { reconnect: true } });
  assert.equal((await connecting).code, 4011);
  await second.server.nextSocket();
  second.client.disconnect();
});

test('a disconnect op followed by a close without code (1006) reports the op\'s code', async () => {
  const { client, socket } = await connected();
  const disconnected = waitForEvent(client, 'disconnected');
  socket.push({ op: 'disconnect', code: 4001, reason: 'invalid token', reconnect: false });
  socket.serverClose(1006, '');
  assert.deepEqual(await disconnected, { code: 4001, reason: 'invalid token' });
});

test('4009/4010 wait at least the throttled floor before reconnecting', async (t) => {
  for (const code of [4009, 4010]) {
    const { server, client, socket } = await connected({ minThrottledReconnectDelay: 150, maxThrottledReconnectDelay: 300 });
    t.after(() => client.disconnect());
    const closedAt = Date.now();
    socket.serverClose(code, 'slow down');
    await server.nextSocket(2000);
    const waited = Date.now() - closedAt;
    assert.ok(waited >= 145, `close ${code}: reconnected after ${waited} ms, floor 150`);
  }
});

test('4002 and error 109: a new token from getToken, then reconnect', async (t) => {
  let issued = 0;
  const { server, client, socket, connect } = await connected({ getToken: async () => `tok${++issued}` });
  t.after(() => client.disconnect());
  assert.equal(connect.token, 'tok1');
  socket.serverClose(4002, 'token expired');
  const second = await server.nextSocket();
  second.accept();
  const c2 = await second.nextMessage('connect');
  assert.equal(c2.token, 'tok2');
  // The server finds tok2 expired too: error 109 answers connect.
  second.push({ op: 'error', id: c2.id, code: 109, message: 'token expired' });
  const third = await server.nextSocket();
  assert.equal((await third.handshake()).token, 'tok3');
  assert.equal(second.closedByClient?.code, 4002);
});

test('4002 without getToken stops', async () => {
  const { client, socket } = await connected({ token: 'static' });
  const disconnected = waitForEvent(client, 'disconnected');
  socket.serverClose(4002, 'token expired');
  assert.equal((await disconnected).code, 4002);
});

test('getToken resolving to "" means signed out: stop with 3005', async () => {
  const { server, client } = setup({ getToken: async () => '' });
  const disconnected = waitForEvent(client, 'disconnected');
  client.connect();
  assert.equal((await disconnected).code, 3005);
  assert.equal(server.sockets.length, 0);
});

test('getToken failing is retried with backoff', async (t) => {
  let calls = 0;
  const { server, client } = setup({
    getToken: async () => {
      calls += 1;
      if (calls < 3) throw new Error('auth service down');
      return 'finally';
    },
  });
  t.after(() => client.disconnect());
  const errors = collect(client, 'error');
  client.connect();
  const socket = await server.nextSocket();
  assert.equal((await socket.handshake()).token, 'finally');
  assert.deepEqual(errors.map((e) => e.type), ['token', 'token']);
});

test('error 101 answering connect stops; 100 reconnects', async () => {
  const a = setup();
  a.client.connect();
  const s = await a.server.nextSocket();
  s.accept();
  const c = await s.nextMessage('connect');
  const stopped = waitForEvent(a.client, 'disconnected');
  s.push({ op: 'error', id: c.id, code: 101, message: 'unauthorized' });
  assert.equal((await stopped).code, 4001);

  const b = setup();
  b.client.connect();
  const s1 = await b.server.nextSocket();
  s1.accept();
  const c1 = await s1.nextMessage('connect');
  s1.push({ op: 'error', id: c1.id, code: 100, message: 'internal' });
  await b.server.nextSocket();
  b.client.disconnect();
});

test('no connected reply within timeout: reconnect (3002)', async (t) => {
  const { server, client } = setup({ timeout: 60 });
  t.after(() => client.disconnect());
  client.connect();
  const first = await server.nextSocket();
  first.accept();
  const errors = collect(client, 'error');
  // Still connecting, so no new `connecting` event; an `error` event says why.
  const second = await server.nextSocket();
  assert.equal(first.closedByClient.code, 1006, 'the hung socket was terminated');
  assert.ok(errors.some((e) => e.type === 'connect' && e.error instanceof TimeoutError), 'a connect timeout was reported');
  assert.equal(client.state, 'connecting');
  await second.handshake();
  assert.equal(client.state, 'connected');
});

test('ping is answered with pong; silence beyond ping_interval + pong_timeout reconnects (3001)', async (t) => {
  const { server, client, socket } = await connected({}, { ping_interval: 0.2, pong_timeout: 0.1 });
  t.after(() => client.disconnect());
  const connecting = collect(client, 'connecting');
  // Pings every 60 ms keep it alive for well over one 300 ms window.
  for (let i = 0; i < 10; i++) {
    socket.push({ op: 'ping' });
    await socket.nextMessage('pong');
    await new Promise((resolve) => setTimeout(resolve, 60));
  }
  assert.deepEqual(connecting, [], 'pings kept the connection');
  const lastPing = Date.now() - 60;
  const dropped = waitForEvent(client, 'connecting', { timeout: 1000 });
  assert.equal((await dropped).code, 3001);
  const silence = Date.now() - lastPing;
  assert.ok(silence >= 290, `not before ping_interval + pong_timeout of silence: ${silence} ms`);
  assert.equal(socket.closedByClient.code, 1006, 'terminated, not a polite close');
  await server.nextSocket();
});

test('token refresh ahead of expiry: refresh op, refreshed event, next refresh scheduled', async (t) => {
  let issued = 0;
  const now = () => Math.floor(Date.now() / 1000);
  const { client, socket } = await connected(
    { getToken: async () => `tok${++issued}`, tokenRefreshMargin: 100000 },
    { expires_at: Date.now() / 1000 + 0.3 },
  );
  t.after(() => client.disconnect());
  const refresh = await socket.nextMessage('refresh', 2000);
  assert.equal(refresh.token, 'tok2');
  const refreshed = waitForEvent(client, 'refreshed');
  socket.push({ op: 'refreshed', id: refresh.id, expires_at: now() + 3600 });
  assert.equal((await refreshed).expiresAt, now() + 3600);
  assert.equal(client.connectionInfo.expiresAt, now() + 3600);
  assert.equal(client.state, 'connected');
});

test('browser offline drops the socket; online reconnects at once', async (t) => {
  const network = new EventEmitter();
  network.addEventListener = network.on;
  network.removeEventListener = network.off;
  const { server, client, socket } = await connected({
    networkEvents: true,
    networkEventTarget: network,
    minReconnectDelay: 60000,
    maxReconnectDelay: 60000,
  });
  const connecting = waitForEvent(client, 'connecting');
  network.emit('offline');
  assert.equal((await connecting).code, 3004);
  assert.equal(socket.readyState, 3);
  network.emit('online');
  await server.nextSocket(500);
  client.disconnect();
  assert.equal(network.listenerCount('online'), 0, 'listeners removed on disconnect');
});

test('disconnect(): close 1000, disconnected event, subscriptions kept and resumed by connect()', async () => {
  const { server, client, socket } = await connected();
  const sub = client.subscribe('news');
  const s1 = await socket.nextMessage('subscribe');
  socket.push({ op: 'subscribed', id: s1.id, channel: 'news' });
  const disconnected = waitForEvent(client, 'disconnected');
  client.disconnect();
  assert.deepEqual(await disconnected, { code: 1000, reason: 'disconnect called' });
  assert.equal(socket.closedByClient.code, 1000);
  assert.equal(sub.state, 'subscribing');
  client.connect();
  const next = await server.nextSocket();
  await next.handshake();
  await next.nextMessage('subscribe');
  client.disconnect();
});

test('subscribe twice to one channel throws; getSubscription finds it', async (t) => {
  const { client, socket } = await connected();
  t.after(() => client.disconnect());
  const sub = client.subscribe('news');
  assert.throws(() => client.subscribe('news'), /already subscribed/);
  assert.equal(client.getSubscription('news'), sub);
  const s = await socket.nextMessage('subscribe');
  socket.push({ op: 'subscribed', id: s.id, channel: 'news' });
  const done = sub.unsubscribe();
  assert.equal(client.getSubscription('news'), undefined);
  const u = await socket.nextMessage('unsubscribe');
  socket.push({ op: 'unsubscribed', id: u.id, channel: 'news' });
  await withTimeout(done, 1000, 'unsubscribe to resolve');
});

test('resubscribes after a reconnect go out in one frame', async (t) => {
  const { server, client, socket } = await connected();
  t.after(() => client.disconnect());
  for (const channel of ['a', 'b', 'c']) client.subscribe(channel);
  for (let i = 0; i < 3; i++) {
    const s = await socket.nextMessage('subscribe');
    socket.push({ op: 'subscribed', id: s.id, channel: s.channel });
  }
  socket.serverClose(1001, 'restart');
  const next = await server.nextSocket();
  await next.handshake();
  await next.nextMessage('subscribe');
  assert.equal(next.frames.length, 2, 'connect frame + one frame with three subscribes');
  assert.equal(next.received.filter((m) => m.op === 'subscribe').length, 3);
});

test('messages on server-side subscriptions (token channels claim) come from the client', async (t) => {
  const { client, socket } = await connected({}, { subscribed: ['alerts'] });
  t.after(() => client.disconnect());
  const messages = collect(client, 'message');
  socket.push({ op: 'message', channel: 'alerts', data: 'fire' }, { op: 'message', channel: 'unknown', data: 'x' });
  assert.deepEqual(messages, [{ channel: 'alerts', data: 'fire' }]);
});

test('an undecodable frame reconnects (3003)', async (t) => {
  const { server, client, socket } = await connected();
  t.after(() => client.disconnect());
  const connecting = waitForEvent(client, 'connecting');
  socket.onmessage({ data: '{not json' });
  assert.equal((await connecting).code, 3003);
  await server.nextSocket();
});

test('msgpack: binary frames both ways, bytes as Uint8Array', async (t) => {
  const { client, socket } = await connected({ encoding: 'msgpack' });
  t.after(() => client.disconnect());
  assert.deepEqual(socket.protocols, ['pushwire.v1.msgpack']);
  assert.ok(socket.frames[0] instanceof Uint8Array);
  const sub = client.subscribe('bin');
  const s = await socket.nextMessage('subscribe');
  const got = waitForEvent(sub, 'message');
  socket.push({ op: 'subscribed', id: s.id, channel: 'bin' }, { op: 'message', channel: 'bin', data: new Uint8Array([9, 8, 7]) });
  const message = await got;
  assert.ok(message.data instanceof Uint8Array);
  assert.deepEqual([...message.data], [9, 8, 7]);
  const published = client.publish('bin', new Uint8Array([1]));
  const p = await socket.nextMessage('publish');
  assert.deepEqual([...p.data], [1]);
  socket.push({ op: 'published', id: p.id });
  await withTimeout(published, 1000, 'publish reply');
});
