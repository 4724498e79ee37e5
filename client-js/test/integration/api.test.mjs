// Every client API against the real server, in both encodings.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionClosedError, ServerError } from '../../dist/esm/index.js';
import { TestServer } from '../support/server.mjs';
import { Recorder, connectedClient, subscribed } from '../support/clients.mjs';
import { waitForEvent } from '../support/wait.mjs';

let server;
before(async () => {
  server = await TestServer.start();
});
after(() => server?.dispose());

for (const encoding of ['json', 'msgpack']) {
  describe(`${encoding} encoding`, () => {
    const ch = (name) => `${name}-${encoding}`;
    const open = (t, options = {}) => connectedClient(t, server, { encoding, ...options });

    test('connect: the connected reply reaches the application', async (t) => {
      const client = await open(t);
      const info = client.connectionInfo;
      assert.equal(client.state, 'connected');
      assert.equal(typeof info.clientId, 'string');
      assert.ok(info.clientId.length > 0);
      assert.equal(info.node, 'client-js-test');
      assert.equal(info.user, '');
      assert.equal(info.pingInterval, 25);
      assert.equal(info.pongTimeout, 10);
    });

    test('subscribe to a history channel; API publications arrive with consecutive offsets', async (t) => {
      const client = await open(t);
      const { sub, event } = await subscribed(client, ch('feed:news'));
      assert.equal(typeof event.epoch, 'string');
      assert.equal(typeof event.offset, 'number');
      const recorder = new Recorder(sub);
      const results = [];
      for (const n of [1, 2, 3]) results.push(await server.publish(ch('feed:news'), { n, title: `headline ${n}` }));
      await recorder.until(3);
      assert.deepEqual(recorder.data, [1, 2, 3].map((n) => ({ n, title: `headline ${n}` })));
      assert.deepEqual(recorder.offsets, [1, 2, 3].map((i) => event.offset + i));
      // A channel nobody published to yet answers offset 0 with an epoch of its own; its
      // first publication starts the stream's epoch at offset 1 (docs/protocol.md section 4).
      const epoch = event.offset === 0 ? recorder.messages[0].epoch : event.epoch;
      assert.ok(recorder.messages.every((m) => m.epoch === epoch && m.channel === ch('feed:news')));
      assert.deepEqual(results.map((r) => r.offset), recorder.offsets, 'API replies name the same offsets');
      assert.deepEqual(sub.position, { offset: event.offset + 3, epoch });
    });

    test('client publish: reply has offset and epoch; every subscriber gets it once', async (t) => {
      const reader = await open(t);
      const writer = await open(t);
      const { sub } = await subscribed(reader, ch('feed:chat'));
      const { sub: own } = await subscribed(writer, ch('feed:chat'));
      const recorder = new Recorder(sub);
      const ownRecorder = new Recorder(own);
      const result = await writer.publish(ch('feed:chat'), { text: 'hello' });
      assert.equal(typeof result.offset, 'number');
      assert.equal(typeof result.epoch, 'string');
      await recorder.until(1);
      await ownRecorder.until(1);
      assert.deepEqual(recorder.messages, [{ channel: ch('feed:chat'), data: { text: 'hello' }, offset: result.offset, epoch: result.epoch }]);
      const viaSub = await own.publish({ text: 'again' });
      assert.equal(viaSub.offset, result.offset + 1);
      await recorder.until(2);
    });

    test('a channel without history: no offset, no epoch', async (t) => {
      const client = await open(t);
      const { sub, event } = await subscribed(client, ch('lobby'));
      assert.equal(event.offset, undefined);
      assert.equal(event.epoch, undefined);
      const recorder = new Recorder(sub);
      const result = await client.publish(ch('lobby'), 'hi');
      assert.deepEqual(result, {});
      await recorder.until(1);
      assert.deepEqual(recorder.messages, [{ channel: ch('lobby'), data: 'hi' }]);
    });

    test('presence lists every subscriber with its user', async (t) => {
      const alice = await open(t);
      const bob = await open(t);
      const { sub } = await subscribed(alice, ch('feed:room'));
      await subscribed(bob, ch('feed:room'));
      const presence = await alice.presence(ch('feed:room'));
      assert.equal(presence.channel, ch('feed:room'));
      assert.deepEqual(presence.clients.map((c) => c.clientId).sort(), [alice.clientId, bob.clientId].sort());
      assert.ok(presence.clients.every((c) => c.user === ''), 'anonymous users are ""');
      assert.deepEqual(await sub.presence(), presence);
    });

    test('join and leave are announced to subscribers (namespace join_leave = true)', async (t) => {
      const alice = await open(t);
      const bob = await open(t);
      const { sub } = await subscribed(alice, ch('feed:hall'));
      const joined = waitForEvent(sub, 'join', { filter: (j) => j.clientId === bob.clientId, what: "bob's join" });
      const { sub: bobSub } = await subscribed(bob, ch('feed:hall'));
      assert.deepEqual(await joined, { channel: ch('feed:hall'), clientId: bob.clientId, user: '' });
      const left = waitForEvent(sub, 'leave', { filter: (l) => l.clientId === bob.clientId, what: "bob's leave" });
      await bobSub.unsubscribe();
      assert.deepEqual(await left, { channel: ch('feed:hall'), clientId: bob.clientId, user: '' });
    });

    test('history: everything, since a position, and limited', async (t) => {
      const client = await open(t);
      const channel = ch('feed:archive');
      for (let n = 1; n <= 5; n++) await server.publish(channel, `m${n}`);
      const all = await client.history(channel);
      assert.equal(all.channel, channel);
      assert.deepEqual(all.messages.map((m) => m.data), ['m1', 'm2', 'm3', 'm4', 'm5']);
      assert.deepEqual(all.messages.map((m) => m.offset), [1, 2, 3, 4, 5]);
      assert.equal(all.offset, 5);
      assert.equal(typeof all.epoch, 'string');
      const since = await client.history(channel, { since: { offset: 2, epoch: all.epoch } });
      assert.deepEqual(since.messages.map((m) => m.offset), [3, 4, 5]);
      const limited = await client.history(channel, { limit: 2 });
      assert.equal(limited.messages.length, 2);
      const [a, b] = limited.messages.map((m) => m.offset);
      assert.equal(b, a + 1, 'a limited page is consecutive');
    });

    test('unsubscribe: no more messages from that channel', async (t) => {
      const client = await open(t);
      const { sub } = await subscribed(client, ch('feed:gone'));
      const { sub: marker } = await subscribed(client, ch('feed:marker'));
      const gone = new Recorder(sub);
      const markers = new Recorder(marker);
      await sub.unsubscribe();
      assert.equal(sub.state, 'unsubscribed');
      await server.publish(ch('feed:gone'), 'after unsubscribe');
      // One connection delivers in order: once the later marker is here, the
      // earlier publication would have been too.
      await server.publish(ch('feed:marker'), 'marker');
      await markers.until(1);
      assert.deepEqual(gone.messages, []);
    });

    test('API unsubscribe: the subscription ends with an unsubscribed event', async (t) => {
      const client = await open(t);
      const { sub } = await subscribed(client, ch('feed:revoked'));
      const ended = waitForEvent(sub, 'unsubscribed', { what: 'the server-side unsubscribe' });
      const res = await server.api('POST', '/api/unsubscribe', { client_id: client.clientId, channel: ch('feed:revoked') });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.unsubscribed, 1);
      await ended;
      assert.equal(sub.state, 'unsubscribed');
      assert.equal(client.getSubscription(ch('feed:revoked')), undefined);
      assert.equal(client.state, 'connected');
    });

    test('errors reject with ServerError carrying PROTOCOL.md codes', async (t) => {
      const client = await open(t);
      const code = (promise) =>
        promise.then(
          (value) => assert.fail(`expected an error, got ${JSON.stringify(value)}`),
          (err) => {
            assert.ok(err instanceof ServerError, `a ServerError, got ${err}`);
            return err.code;
          },
        );
      assert.equal(await code(client.publish(ch('plain:x'), 1)), 103, 'allow_publish = none');
      assert.equal(await code(client.publish(ch('undeclared:x'), 1)), 102, 'undeclared namespace');
      assert.equal(await code(client.publish('bad channel!', 1)), 107, 'invalid channel name');
      assert.equal(await code(client.presence(ch('plain:x'))), 108, 'presence off');
      assert.equal(await code(client.history(ch('plain:x'))), 108, 'history off');
      assert.equal(client.state, 'connected', 'errors leave the connection open');
    });

    test('subscribe errors: error event with the code, then unsubscribed', async (t) => {
      const client = await open(t);
      for (const [channel, expected] of [
        [ch('undeclared:x'), 102],
        ['bad channel!', 107],
        ['dm#alice,bob', 103],
      ]) {
        const sub = client.subscribe(channel);
        const { error } = await waitForEvent(sub, 'error', { what: `an error subscribing to ${channel}` });
        assert.ok(error instanceof ServerError);
        assert.equal(error.code, expected, channel);
        assert.equal(sub.state, 'unsubscribed');
        assert.equal(client.getSubscription(channel), undefined);
      }
    });

    test('a burst of publications arrives complete and in offset order', async (t) => {
      const client = await open(t);
      const channel = ch('feed:burst');
      const { sub, event } = await subscribed(client, channel);
      const recorder = new Recorder(sub);
      const count = 200;
      await Promise.all(Array.from({ length: count }, (_, i) => server.publish(channel, i)));
      await recorder.until(count);
      assert.deepEqual(recorder.offsets, Array.from({ length: count }, (_, i) => event.offset + i + 1));
      assert.deepEqual([...recorder.data].sort((x, y) => x - y), Array.from({ length: count }, (_, i) => i));
    });

    test('API disconnect: reconnect true brings the client back; false stops it', async (t) => {
      const client = await open(t);
      const { sub } = await subscribed(client, ch('feed:kick'));
      const connecting = waitForEvent(client, 'connecting');
      const back = waitForEvent(sub, 'subscribed', { what: 'the resubscribe' });
      const first = client.clientId;
      const res = await server.api('POST', '/api/disconnect', { client_id: first, reconnect: true, reason: 'test' });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.disconnected, 1);
      assert.equal((await connecting).code, 4011);
      await back;
      assert.notEqual(client.clientId, first);

      const stopped = waitForEvent(client, 'disconnected');
      await server.api('POST', '/api/disconnect', { client_id: client.clientId, reconnect: false });
      assert.equal((await stopped).code, 4011);
      assert.equal(client.state, 'disconnected');
      await assert.rejects(client.publish(ch('feed:kick'), 1), ConnectionClosedError);
    });
  });
}

test('binary data: published as MessagePack bin, bytes for both encodings', async (t) => {
  const json = await connectedClient(t, server, { encoding: 'json' });
  const msgpack = await connectedClient(t, server, { encoding: 'msgpack' });
  const { sub: jsonSub } = await subscribed(json, 'feed:binary');
  const { sub: packSub } = await subscribed(msgpack, 'feed:binary');
  const jsonRecorder = new Recorder(jsonSub);
  const packRecorder = new Recorder(packSub);
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  await msgpack.publish('feed:binary', bytes);
  const [fromJson] = await jsonRecorder.until(1);
  const [fromPack] = await packRecorder.until(1);
  assert.ok(fromJson.data instanceof Uint8Array, `JSON client: bytes from data_b64, got ${JSON.stringify(fromJson.data)}`);
  assert.ok(fromPack.data instanceof Uint8Array, 'MessagePack client: bin');
  assert.deepEqual([...fromJson.data], [...bytes]);
  assert.deepEqual([...fromPack.data], [...bytes]);
});

test('JSON and MessagePack clients see the same structured data', async (t) => {
  const json = await connectedClient(t, server, { encoding: 'json' });
  const msgpack = await connectedClient(t, server, { encoding: 'msgpack' });
  const { sub: a } = await subscribed(json, 'feed:mixed');
  const { sub: b } = await subscribed(msgpack, 'feed:mixed');
  const ra = new Recorder(a);
  const rb = new Recorder(b);
  const data = { text: 'héllo ✓', n: 42, f: 1.5, list: [1, 'two', null, true], nested: { deep: { x: -7 } } };
  await json.publish('feed:mixed', data);
  await msgpack.publish('feed:mixed', data);
  await ra.until(2);
  await rb.until(2);
  assert.deepEqual(ra.data, [data, data]);
  assert.deepEqual(rb.data, [data, data]);
});
