// JWT authentication: connect tokens, getToken, refresh ahead of expiry,
// expiry (error 109 / close 4002), invalid tokens (4001), the channels claim,
// subscription tokens and user channels.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ServerError } from '../../dist/esm/index.js';
import { NAMESPACES, TestServer } from '../support/server.mjs';
import { Recorder, connectedClient, subscribed } from '../support/clients.mjs';
import { mintHs256, nowSecs } from '../support/jwt.mjs';
import { collect, waitForEvent } from '../support/wait.mjs';

const SECRET = 'client-js-test-secret-that-is-long-enough';
const token = (claims) => mintHs256(SECRET, { exp: nowSecs() + 3600, ...claims });

let server;
before(async () => {
  server = await TestServer.start({
    overrides: {
      allow_anonymous: false,
      auth: { token_hmac_secret: SECRET, expiry_grace_secs: 0 },
      namespaces: { ...NAMESPACES, private: { allow_subscribe: 'token', history_size: 10 } },
    },
  });
});
after(() => server?.dispose());

test('a connection JWT connects as its user; info shows in presence', async (t) => {
  const exp = nowSecs() + 3600;
  const client = await connectedClient(t, server, { token: token({ sub: 'alice', exp, info: { name: 'Alice' } }) });
  assert.equal(client.connectionInfo.user, 'alice');
  assert.equal(client.connectionInfo.expiresAt, exp);
  await subscribed(client, 'feed:team');
  const presence = await client.presence('feed:team');
  assert.deepEqual(presence.clients, [{ clientId: client.clientId, user: 'alice', info: { name: 'Alice' } }]);
});

test('getToken supplies the token when there is none', async (t) => {
  let calls = 0;
  const client = await connectedClient(t, server, { getToken: async () => (calls++, token({ sub: 'bob' })) });
  assert.equal(calls, 1);
  assert.equal(client.connectionInfo.user, 'bob');
});

test('without a token, allow_anonymous = false refuses the connection and the client stops', async (t) => {
  const { Client } = await import('../../dist/esm/index.js');
  const { default: WebSocket } = await import('ws');
  const client = new Client(server.wsUrl, { websocket: WebSocket, networkEvents: false, minReconnectDelay: 20 });
  t.after(() => client.disconnect());
  const stopped = waitForEvent(client, 'disconnected', { what: 'the client to stop' });
  client.connect();
  const event = await stopped;
  assert.equal(event.code, 4001, `stopped with ${event.code} ${event.reason}`);
});

test('an invalid token stops the client with 4001, without retrying', async (t) => {
  const { Client } = await import('../../dist/esm/index.js');
  const { recordingWebSocket } = await import('../support/sockets.mjs');
  const recording = recordingWebSocket();
  const forged = mintHs256('not-the-secret', { sub: 'mallory', exp: nowSecs() + 3600 });
  const client = new Client(server.wsUrl, { token: forged, websocket: recording.WebSocket, networkEvents: false, minReconnectDelay: 10, maxReconnectDelay: 20 });
  t.after(() => client.disconnect());
  const stopped = waitForEvent(client, 'disconnected');
  client.connect();
  assert.equal((await stopped).code, 4001);
  assert.equal(recording.sockets.length, 1, 'one attempt only');
  assert.equal(client.state, 'disconnected');
});

test('an expired token at connect: a fresh one from getToken, then connected', async (t) => {
  const issued = [];
  const getToken = async () => {
    // The first token handed out has already expired.
    const exp = issued.length === 0 ? nowSecs() - 60 : nowSecs() + 3600;
    issued.push(exp);
    return token({ sub: 'carol', exp });
  };
  const client = await connectedClient(t, server, { getToken });
  assert.equal(issued.length, 2, 'the expired token was replaced');
  assert.equal(client.connectionInfo.user, 'carol');
  assert.equal(client.connectionInfo.expiresAt, issued[1]);
});

test('refresh ahead of expiry keeps one connection open past the first token\'s exp', async (t) => {
  let calls = 0;
  const getToken = async () => (calls++, token({ sub: 'dave', exp: nowSecs() + 3 }));
  const client = await connectedClient(t, server, { getToken, tokenRefreshMargin: 1500 });
  const firstExp = client.connectionInfo.expiresAt;
  const clientId = client.clientId;
  const drops = collect(client, 'connecting');
  const refreshes = collect(client, 'refreshed');
  await waitForEvent(client, 'refreshed', {
    timeout: 10000,
    filter: () => Date.now() > (firstExp + 1) * 1000,
    what: 'a refresh after the first token expired',
  });
  assert.deepEqual(drops, [], 'never reconnected');
  assert.equal(client.clientId, clientId);
  assert.ok(refreshes.length >= 2);
  assert.ok(refreshes.every((r) => r.expiresAt > firstExp - 1));
  assert.ok(calls >= 3);
  // The connection still serves requests.
  const { sub } = await subscribed(client, 'feed:after-refresh');
  assert.equal(sub.state, 'subscribed');
});

test('no refresh: the server closes with 4002 at expiry; the client gets a new token and reconnects', async (t) => {
  let calls = 0;
  let client;
  const getToken = async () => {
    calls++;
    // Simulate an auth service that is down while connected: refreshes fail.
    if (client?.state === 'connected') throw new Error('auth service unavailable');
    return token({ sub: 'erin', exp: nowSecs() + 2 });
  };
  client = await connectedClient(t, server, { getToken, tokenRefreshMargin: 0, minReconnectDelay: 20 });
  const dropped = waitForEvent(client, 'connecting', { timeout: 10000, what: 'close 4002 at expiry' });
  const back = waitForEvent(client, 'connected', { timeout: 15000 });
  assert.equal((await dropped).code, 4002);
  await back;
  assert.equal(client.connectionInfo.user, 'erin');
});

test('the channels claim subscribes server-side; messages come on the client', async (t) => {
  const client = await connectedClient(t, server, { token: token({ sub: 'frank', channels: ['feed:alerts-frank'] }) });
  assert.deepEqual(client.connectionInfo.subscribed, ['feed:alerts-frank']);
  const recorder = new Recorder(client);
  await server.publish('feed:alerts-frank', 'fire drill');
  await recorder.until(1);
  assert.equal(recorder.messages[0].channel, 'feed:alerts-frank');
  assert.equal(recorder.messages[0].data, 'fire drill');
});

test('subscription tokens: required by allow_subscribe = "token", fetched through getToken', async (t) => {
  const client = await connectedClient(t, server, { token: token({ sub: 'grace' }) });
  const asked = [];
  const { sub } = await subscribed(client, 'private:grace', {
    getToken: async (channel) => (asked.push(channel), mintHs256(SECRET, { sub: 'grace', channel, exp: nowSecs() + 60 })),
  });
  assert.deepEqual(asked, ['private:grace']);
  const recorder = new Recorder(sub);
  await server.publish('private:grace', 'for grace');
  await recorder.until(1);

  const refused = client.subscribe('private:other');
  const { error } = await waitForEvent(refused, 'error');
  assert.ok(error instanceof ServerError);
  // PROTOCOL.md does not say whether a missing token is 101 or 103; either is a refusal.
  assert.ok([101, 103].includes(error.code), `refused with ${error.code}`);

  const wrongUser = client.subscribe('private:x', { token: mintHs256(SECRET, { sub: 'someone-else', channel: 'private:x', exp: nowSecs() + 60 }) });
  const denied = await waitForEvent(wrongUser, 'error');
  assert.ok([101, 103].includes(denied.error.code), `wrong sub refused with ${denied.error.code}`);
});

test('user channels: only the users after # may subscribe', async (t) => {
  const alice = await connectedClient(t, server, { token: token({ sub: 'alice' }) });
  const mallory = await connectedClient(t, server, { token: token({ sub: 'mallory' }) });
  await subscribed(alice, 'dm#alice,bob');
  const sub = mallory.subscribe('dm#alice,bob');
  const { error } = await waitForEvent(sub, 'error');
  assert.equal(error.code, 103);
});
