// Reconnects against the real server: a restart, a drop with recovery, a
// server that goes silent, and backoff while the server is down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '../../dist/esm/index.js';
import { TestServer } from '../support/server.mjs';
import { FAST, Recorder, connectedClient, subscribed } from '../support/clients.mjs';
import { gatedWebSocket, recordingWebSocket } from '../support/sockets.mjs';
import { collect, waitForEvent } from '../support/wait.mjs';

for (const encoding of ['json', 'msgpack']) {
  test(`${encoding}: server restart — close 1001, reconnect, resubscribe with recover; nothing lost or duplicated`, async (t) => {
    const server = await TestServer.start();
    t.after(() => server.dispose());
    const client = await connectedClient(t, server, { encoding });
    const channel = `feed:restart-${encoding}`;
    const { sub } = await subscribed(client, channel, { recover: true });
    const recorder = new Recorder(sub);
    const gaps = collect(sub, 'gap');
    for (let n = 1; n <= 5; n++) await server.publish(channel, n);
    await recorder.until(5);
    const before = sub.position;
    assert.deepEqual(before.offset, 5);

    const connecting = waitForEvent(client, 'connecting', { timeout: 15000 });
    const resubscribed = waitForEvent(sub, 'subscribed', { timeout: 15000, what: 'the resubscribe after restart' });
    const exit = await server.restart();
    assert.equal(exit.code, 0, 'SIGTERM exits 0');
    assert.equal((await connecting).code, 1001, 'clients are told the server is going away');
    const again = await resubscribed;
    assert.equal(again.wasRecovering, true, 'the resubscribe asked for recovery');
    // A memory broker loses history on restart: a new epoch, so recovery is
    // impossible and the application must be told (PROTOCOL.md section 4).
    assert.notEqual(again.epoch, before.epoch, 'a restarted memory node has a new epoch');
    assert.equal(again.recovered, false);

    for (let n = 6; n <= 10; n++) await server.publish(channel, n);
    await recorder.until(10);
    assert.deepEqual(recorder.data, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'each message once, in order');
    assert.deepEqual(recorder.offsets.slice(5), [1, 2, 3, 4, 5], 'offsets restart in the new epoch');
    assert.deepEqual(gaps, []);
  });

  test(`${encoding}: messages published while the client is away are recovered, each once, in order`, async (t) => {
    const server = await TestServer.start();
    t.after(() => server.dispose());
    const gate = gatedWebSocket();
    const client = await connectedClient(t, server, { encoding, websocket: gate.WebSocket });
    const channel = `feed:away-${encoding}`;
    const { sub } = await subscribed(client, channel, { recover: true });
    const recorder = new Recorder(sub);
    const gaps = collect(sub, 'gap');
    for (let n = 1; n <= 3; n++) await server.publish(channel, n);
    await recorder.until(3);

    gate.hold();
    const attempt = gate.nextAttempt();
    const connecting = waitForEvent(client, 'connecting');
    const res = await server.api('POST', '/api/disconnect', { client_id: client.clientId, reconnect: true });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal((await connecting).code, 4011);
    await attempt; // the client is offline, waiting at the gate
    for (let n = 4; n <= 8; n++) await server.publish(channel, n);
    assert.equal(recorder.messages.length, 3, 'nothing arrives while offline');

    const resubscribed = waitForEvent(sub, 'subscribed');
    gate.release();
    const event = await resubscribed;
    assert.equal(event.wasRecovering, true);
    assert.equal(event.recovered, true, 'history holds everything after the last offset');
    await recorder.until(8);
    await server.publish(channel, 9);
    await recorder.until(9);
    assert.deepEqual(recorder.data, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(recorder.offsets, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(gaps, []);
  });
}

test('a server that stops pinging is abandoned (3001) and the client reconnects', async (t) => {
  const server = await TestServer.start({ overrides: { client: { ping_interval_secs: 1, pong_timeout_secs: 1 } } });
  t.after(() => server.dispose());
  const client = await connectedClient(t, server);
  assert.equal(client.connectionInfo.pingInterval, 1);
  const { sub } = await subscribed(client, 'feed:watchdog');
  const first = client.clientId;
  const connecting = waitForEvent(client, 'connecting', { timeout: 6000, what: 'the watchdog to fire' });
  const stoppedAt = Date.now();
  server.pause();
  const event = await connecting;
  const silentFor = Date.now() - stoppedAt;
  server.resume();
  assert.equal(event.code, 3001);
  assert.ok(silentFor >= 1000, `not before a full ping interval: ${silentFor} ms`);
  await waitForEvent(sub, 'subscribed', { timeout: 10000, what: 'resubscribed after the watchdog reconnect' });
  assert.notEqual(client.clientId, first);
});

test('while the server is down, reconnect attempts back off with jitter', async (t) => {
  const server = await TestServer.start();
  t.after(() => server.dispose());
  const recording = recordingWebSocket();
  const client = new Client(server.wsUrl, { ...FAST, minReconnectDelay: 100, maxReconnectDelay: 800, websocket: recording.WebSocket });
  t.after(() => client.disconnect());
  client.connect();
  await waitForEvent(client, 'connected');
  const port = server.port;
  let closedAt = 0;
  const wentAway = waitForEvent(client, 'connecting', { what: 'the client to see the server go away' }).then(
    (event) => ((closedAt = Date.now()), event),
  );
  const times = [];
  recording.events.on('socket', () => times.push(Date.now()));
  await server.stop();
  assert.equal((await wentAway).code, 1001);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${times.length} attempts in 10 s`)), 10000);
    recording.events.on('socket', () => times.length >= 6 && (clearTimeout(timer), resolve()));
  });
  const gaps = [times[0] - closedAt, ...times.slice(1).map((time, i) => time - times[i])];
  // Attempt n waits within [100, min(800, 100 * 2^(n+1))), plus the time a
  // refused connection takes to fail and some scheduling slack.
  gaps.forEach((gap, n) => {
    assert.ok(gap >= 95, `attempt ${n} after ${gap} ms, floor 100 (gaps ${gaps})`);
    assert.ok(gap < Math.min(800, 100 * 2 ** (n + 1)) + 100, `attempt ${n} after ${gap} ms (gaps ${gaps})`);
  });
  // Jitter: the delays are not all the same.
  assert.ok(new Set(gaps.map((g) => Math.round(g / 10))).size > 1, `jittered gaps ${gaps}`);
  assert.equal(client.state, 'connecting');

  await server.launch(port);
  await waitForEvent(client, 'connected', { timeout: 5000, what: 'the reconnect once the server is back' });
});
