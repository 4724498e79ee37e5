// The server API calls that reach a connected client, against the real server:
// history newest first, a server-side subscribe, and /api/disconnect's reconnect flag
// for pushwire's own close codes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestServer } from '../support/server.mjs';
import { connectedClient } from '../support/clients.mjs';
import { waitForEvent } from '../support/wait.mjs';

let server;
before(async () => {
  server = await TestServer.start();
});
after(() => server?.dispose());

test('history with reverse: the newest first, limit counted from the newest', async (t) => {
  const client = await connectedClient(t, server);
  const results = [];
  for (let n = 1; n <= 5; n += 1) results.push(await server.publish('feed:reverse', { n }));
  const last = results.at(-1).offset;
  const newest = await client.history('feed:reverse', { limit: 2, reverse: true });
  assert.deepEqual(newest.messages.map((m) => m.offset), [last, last - 1]);
  assert.deepEqual(newest.messages.map((m) => m.data), [{ n: 5 }, { n: 4 }]);
  const oldest = await client.history('feed:reverse', { limit: 2 });
  assert.deepEqual(oldest.messages.map((m) => m.data), [{ n: 1 }, { n: 2 }]);
});

test('POST /api/subscribe: serverSubscribed, then the channel messages as client events', async (t) => {
  const client = await connectedClient(t, server);
  const announced = waitForEvent(client, 'serverSubscribed', { what: 'serverSubscribed' });
  const { status, body } = await server.api('POST', '/api/subscribe', { client_id: client.clientId, channel: 'feed:pushed' });
  assert.deepEqual([status, body], [200, { subscribed: 1 }]);
  const event = await announced;
  assert.equal(event.channel, 'feed:pushed');
  assert.equal(typeof event.offset, 'number');
  const message = waitForEvent(client, 'message', { what: 'a message on feed:pushed' });
  await server.publish('feed:pushed', { hello: 'server-side' });
  assert.deepEqual((await message).data, { hello: 'server-side' });
});

test("/api/disconnect's reconnect flag decides, for pushwire's own codes too", async (t) => {
  // 4008 normally reconnects: with reconnect false the client stops.
  const stopped = await connectedClient(t, server);
  const ended = waitForEvent(stopped, 'disconnected', { what: 'the client to stop' });
  await server.api('POST', '/api/disconnect', { client_id: stopped.clientId, code: 4008, reconnect: false });
  assert.equal((await ended).code, 4008);
  assert.equal(stopped.state, 'disconnected');

  // 4000 normally stops: with reconnect true the client comes back.
  const back = await connectedClient(t, server);
  const firstId = back.clientId;
  const reconnected = waitForEvent(back, 'connected', { timeout: 5000, what: 'a reconnect after 4000' });
  await server.api('POST', '/api/disconnect', { client_id: firstId, code: 4000, reconnect: true });
  const info = await reconnected;
  assert.notEqual(info.clientId, firstId);
});
