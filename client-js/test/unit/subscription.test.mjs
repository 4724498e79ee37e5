import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Subscription } from '../../dist/esm/subscription.js';
import { ConnectionClosedError, ServerError, TimeoutError } from '../../dist/esm/errors.js';
import { FakeClock } from '../support/fake-clock.mjs';
import { collect } from '../support/wait.mjs';

/** Plays the client for a subscription: records requests, answers on demand. */
function fakeHost({ connected = true } = {}) {
  const clock = new FakeClock();
  const host = {
    timers: clock,
    clock,
    reconnectBounds: { minDelayMs: 100, maxDelayMs: 1000 },
    connected,
    requests: [],
    removed: [],
    isConnected: () => host.connected,
    request: (op, fields, callback) => host.requests.push({ op, fields, callback }),
    remove: (sub) => host.removed.push(sub),
    publish: async (channel, data) => ({ channel, data }),
    presence: async (channel) => ({ channel, clients: [] }),
    presenceStats: async () => ({ clients: 0, users: 0 }),
    history: async (channel) => ({ channel, epoch: 'e', offset: 0, messages: [] }),
    /** Answers the last request. */
    reply: (reply) => host.requests.at(-1).callback(null, { id: 1, ...reply }),
    fail: (error) => host.requests.at(-1).callback(error),
  };
  return host;
}

/** Lets the async subscribe path (token fetch) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

function message(offset, epoch = 'e1', data = offset) {
  return { channel: 'news', data, offset, epoch };
}

test('subscribe → subscribing → subscribed, with state events', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  const states = collect(sub, 'state');
  sub._start();
  await settle();
  assert.equal(sub.state, 'subscribing');
  assert.deepEqual(host.requests.map((r) => [r.op, r.fields]), [['subscribe', { channel: 'news' }]]);
  const subscribed = collect(sub, 'subscribed');
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'e1', offset: 10 });
  assert.equal(sub.state, 'subscribed');
  assert.deepEqual(subscribed, [{ channel: 'news', wasRecovering: false, recovered: false, offset: 10, epoch: 'e1' }]);
  assert.deepEqual(sub.position, { offset: 10, epoch: 'e1' });
  assert.deepEqual(states.map((s) => s.newState), ['subscribing', 'subscribed']);
});

test('not connected: nothing is sent until the client connects', async () => {
  const host = fakeHost({ connected: false });
  const sub = new Subscription('news', {}, host);
  sub._start();
  await settle();
  assert.equal(host.requests.length, 0);
  host.connected = true;
  sub._onConnected();
  await settle();
  assert.equal(host.requests.length, 1);
});

test('messages advance the position; duplicates are dropped; offset jumps are reported as gaps', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  sub._start();
  await settle();
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'e1', offset: 10 });
  const messages = collect(sub, 'message');
  const gaps = collect(sub, 'gap');
  for (const offset of [11, 12, 12, 11, 13, 15, 14, 16]) sub._onMessage(message(offset));
  assert.deepEqual(messages.map((m) => m.offset), [11, 12, 13, 15, 16]);
  assert.deepEqual(gaps, [{ channel: 'news', expected: { offset: 14, epoch: 'e1' }, received: { offset: 15, epoch: 'e1' } }]);
  assert.deepEqual(sub.position, { offset: 16, epoch: 'e1' });
});

test('messages without offsets (channels without history) pass straight through', async () => {
  const host = fakeHost();
  const sub = new Subscription('chat', {}, host);
  sub._start();
  await settle();
  host.reply({ op: 'subscribed', channel: 'chat' });
  const messages = collect(sub, 'message');
  sub._onMessage({ channel: 'chat', data: 'a' });
  sub._onMessage({ channel: 'chat', data: 'a' });
  assert.equal(messages.length, 2);
  assert.equal(sub.position, undefined);
});

test('after a drop the resubscribe carries recover {offset, epoch} of the last message', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', { recover: true }, host);
  sub._start();
  await settle();
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'e1', offset: 3 });
  sub._onMessage(message(4));
  sub._onMessage(message(5));
  const subscribing = collect(sub, 'subscribing');
  host.connected = false;
  sub._onDisconnected(1001, 'going away');
  assert.equal(sub.state, 'subscribing');
  assert.deepEqual(subscribing, [{ code: 1001, reason: 'going away' }]);
  host.connected = true;
  sub._onConnected();
  await settle();
  assert.deepEqual(host.requests.at(-1).fields, { channel: 'news', recover: { offset: 5, epoch: 'e1' } });
});

test('recovered: true keeps the position, so recovered messages are delivered once each', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', { since: { offset: 5, epoch: 'e1' } }, host);
  const messages = collect(sub, 'message');
  const subscribed = collect(sub, 'subscribed');
  sub._start();
  await settle();
  assert.deepEqual(host.requests[0].fields.recover, { offset: 5, epoch: 'e1' });
  // The reply names the channel's top (9); 6..9 follow it as message ops.
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'e1', offset: 9, recovered: true });
  for (const offset of [6, 7, 8, 9, 9, 10]) sub._onMessage(message(offset));
  assert.equal(subscribed[0].recovered, true);
  assert.equal(subscribed[0].wasRecovering, true);
  assert.deepEqual(messages.map((m) => m.offset), [6, 7, 8, 9, 10]);
});

test('recovered: false (new epoch) surfaces it and restarts from the reply position', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', { since: { offset: 50, epoch: 'old' } }, host);
  const messages = collect(sub, 'message');
  const subscribed = collect(sub, 'subscribed');
  const gaps = collect(sub, 'gap');
  sub._start();
  await settle();
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'new', offset: 2, recovered: false });
  assert.deepEqual(subscribed, [{ channel: 'news', wasRecovering: true, recovered: false, offset: 2, epoch: 'new' }]);
  sub._onMessage(message(3, 'new'));
  assert.deepEqual(messages.map((m) => m.offset), [3], 'offset 3 < 50 is not taken for a duplicate');
  assert.deepEqual(gaps, []);
});

test('an epoch change mid-stream is a gap and the new epoch is followed', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  sub._start();
  await settle();
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'e1', offset: 7 });
  const gaps = collect(sub, 'gap');
  const messages = collect(sub, 'message');
  sub._onMessage(message(1, 'e2'));
  sub._onMessage(message(2, 'e2'));
  assert.deepEqual(gaps, [{ channel: 'news', expected: { offset: 8, epoch: 'e1' }, received: { offset: 1, epoch: 'e2' } }]);
  assert.deepEqual(messages.map((m) => m.offset), [1, 2]);
});

test('messages that arrive before the subscribed reply are held and delivered after it', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  const events = [];
  sub.on('subscribed', () => events.push('subscribed'));
  sub.on('message', (m) => events.push(m.offset));
  sub._start();
  await settle();
  sub._onMessage(message(11));
  assert.deepEqual(events, []);
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'e1', offset: 10 });
  assert.deepEqual(events, ['subscribed', 11]);
});

test('a permanent error (103) ends the subscription with the code', async () => {
  const host = fakeHost();
  const sub = new Subscription('secret', {}, host);
  const errors = collect(sub, 'error');
  const unsubscribed = collect(sub, 'unsubscribed');
  sub._start();
  await settle();
  host.fail(new ServerError(103, 'permission denied'));
  assert.equal(sub.state, 'unsubscribed');
  assert.equal(errors.length, 1);
  assert.equal(errors[0].error.code, 103);
  assert.deepEqual(unsubscribed, [{ code: 103, reason: 'permission denied' }]);
  assert.deepEqual(host.removed, [sub]);
  host.clock.advance(60000);
  assert.equal(host.requests.length, 1, 'no retry');
});

test('temporary errors (100, 110) and timeouts retry after a backoff delay', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  const errors = collect(sub, 'error');
  sub._start();
  await settle();
  host.fail(new ServerError(110, 'too many requests'));
  assert.equal(sub.state, 'subscribing');
  const [delay] = host.clock.pendingDelays();
  assert.ok(delay >= 100 && delay < 200, `first retry within [min, 2*min): ${delay}`);
  host.clock.advance(delay - 1);
  await settle();
  assert.equal(host.requests.length, 1);
  host.clock.advance(1);
  await settle();
  assert.equal(host.requests.length, 2);
  host.fail(new TimeoutError('subscribe', 1000));
  host.clock.advance(1000);
  await settle();
  assert.equal(host.requests.length, 3);
  host.reply({ op: 'subscribed', channel: 'news' });
  assert.equal(sub.state, 'subscribed');
  assert.equal(errors.length, 2);
});

test('a lost connection during subscribe is not an error; the reconnect resubscribes', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  const errors = collect(sub, 'error');
  sub._start();
  await settle();
  const first = host.requests[0];
  host.connected = false;
  sub._onDisconnected(1006, '');
  first.callback(new ConnectionClosedError('closed', 1006));
  first.callback(null, { op: 'subscribed', channel: 'news' }); // a stale reply changes nothing
  assert.equal(sub.state, 'subscribing');
  assert.deepEqual(errors, []);
  host.connected = true;
  sub._onConnected();
  await settle();
  assert.equal(host.requests.length, 2);
});

test('subscription tokens: fetched through getToken, refetched after error 109', async () => {
  const host = fakeHost();
  const asked = [];
  let n = 0;
  const sub = new Subscription('private:1', { getToken: async (channel) => (asked.push(channel), `tok${++n}`) }, host);
  sub._start();
  await settle();
  assert.equal(host.requests[0].fields.token, 'tok1');
  host.fail(new ServerError(109, 'token expired'));
  host.clock.advance(1000);
  await settle();
  assert.equal(host.requests[1].fields.token, 'tok2');
  assert.deepEqual(asked, ['private:1', 'private:1']);
  host.reply({ op: 'subscribed', channel: 'private:1' });
  assert.equal(sub.state, 'subscribed');
});

test('error 109 without getToken ends the subscription', async () => {
  const host = fakeHost();
  const sub = new Subscription('private:1', { token: 'old' }, host);
  sub._start();
  await settle();
  host.fail(new ServerError(109, 'token expired'));
  assert.equal(sub.state, 'unsubscribed');
});

test('unsubscribe() ends at once and sends unsubscribe when connected', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  sub._start();
  await settle();
  host.reply({ op: 'subscribed', channel: 'news' });
  const unsubscribed = collect(sub, 'unsubscribed');
  const done = sub.unsubscribe();
  assert.equal(sub.state, 'unsubscribed');
  assert.deepEqual(unsubscribed, [{ code: 0, reason: 'unsubscribe called' }]);
  assert.deepEqual(host.requests.at(-1).fields, { channel: 'news' });
  assert.equal(host.requests.at(-1).op, 'unsubscribe');
  host.reply({ op: 'unsubscribed', channel: 'news' });
  await done;
  const messages = collect(sub, 'message');
  sub._onMessage(message(1));
  assert.deepEqual(messages, [], 'no events after unsubscribe');
  await sub.unsubscribe();
});

test('server-side unsubscribe ends the subscription', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', {}, host);
  sub._start();
  await settle();
  host.reply({ op: 'subscribed', channel: 'news' });
  sub._onServerUnsubscribe('unsubscribed by the server');
  assert.equal(sub.state, 'unsubscribed');
  assert.deepEqual(host.removed, [sub]);
});

test('join and leave are delivered while subscribed', async () => {
  const host = fakeHost();
  const sub = new Subscription('room', {}, host);
  const joins = collect(sub, 'join');
  sub._start();
  await settle();
  sub._onPresence('join', { channel: 'room', clientId: 'x', user: 'u' });
  host.reply({ op: 'subscribed', channel: 'room' });
  sub._onPresence('join', { channel: 'room', clientId: 'y', user: 'v' });
  assert.deepEqual(joins.map((j) => j.clientId), ['y']);
});

test('recovery the server never delivers (4008 each time) is given up after 3 tries', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', { since: { offset: 5, epoch: 'e1' } }, host);
  const subscribed = collect(sub, 'subscribed');
  sub._start();
  for (let i = 0; i < 3; i++) {
    await settle();
    assert.deepEqual(host.requests.at(-1).fields.recover, { offset: 5, epoch: 'e1' }, `try ${i + 1} recovers`);
    host.connected = false;
    sub._onDisconnected(4008, 'slow consumer');
    host.connected = true;
    sub._onConnected();
  }
  await settle();
  assert.equal(host.requests.length, 4);
  assert.equal(host.requests.at(-1).fields.recover, undefined, 'the fourth subscribe starts afresh');
  host.reply({ op: 'subscribed', channel: 'news', epoch: 'e1', offset: 900 });
  assert.deepEqual(subscribed, [{ channel: 'news', wasRecovering: true, recovered: false, offset: 900, epoch: 'e1' }]);
});

test('other drops during recovery keep the position', async () => {
  const host = fakeHost();
  const sub = new Subscription('news', { since: { offset: 5, epoch: 'e1' } }, host);
  sub._start();
  for (let i = 0; i < 5; i++) {
    await settle();
    host.connected = false;
    sub._onDisconnected(1006, '');
    host.connected = true;
    sub._onConnected();
  }
  await settle();
  assert.deepEqual(host.requests.at(-1).fields.recover, { offset: 5, epoch: 'e1' });
});
