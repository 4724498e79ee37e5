import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenRefresher, refreshDelay } from '../../dist/esm/refresh.js';
import { ConnectionClosedError, ServerError } from '../../dist/esm/errors.js';
import { FakeClock } from '../support/fake-clock.mjs';

const settle = () => new Promise((resolve) => setImmediate(resolve));

test('refreshDelay: the margin before expiry, but never before halfway', () => {
  const now = 1_700_000_000_000;
  const inSecs = (s) => now / 1000 + s;
  assert.equal(refreshDelay(inSecs(3600), now, 30000), 3570000, 'an hour-long token: 30 s before expiry');
  assert.equal(refreshDelay(inSecs(40), now, 30000), 20000, 'a 40 s token: halfway, not after 10 s');
  assert.equal(refreshDelay(inSecs(-5), now, 30000), 0, 'already expired: now');
  assert.equal(refreshDelay(now + 60000, now, 30000), 30000, 'milliseconds are accepted');
});

function host(clock, tokens) {
  const calls = { sent: [], refreshed: [], errors: [], signedOut: 0, tokens: [] };
  const h = {
    calls,
    timers: clock,
    marginMs: 10000,
    retryBounds: { minDelayMs: 1000, maxDelayMs: 1000 },
    getToken: async () => {
      const next = tokens.shift();
      if (next instanceof Error) throw next;
      return next;
    },
    send: (token, callback) => calls.sent.push({ token, callback }),
    onToken: (token) => calls.tokens.push(token),
    onRefreshed: (expiresAt) => calls.refreshed.push(expiresAt),
    onError: (error) => calls.errors.push(error),
    onSignedOut: () => calls.signedOut++,
  };
  return h;
}

test('refreshes at the scheduled time, then reschedules from the new expiry', async () => {
  const clock = new FakeClock();
  const h = host(clock, ['t2', 't3']);
  const refresher = new TokenRefresher(h);
  const exp = clock.now() / 1000 + 60;
  refresher.start(exp);
  clock.advance(49999);
  await settle();
  assert.equal(h.calls.sent.length, 0);
  clock.advance(1);
  await settle();
  assert.deepEqual(h.calls.sent.map((s) => s.token), ['t2']);
  assert.deepEqual(h.calls.tokens, ['t2']);
  h.calls.sent[0].callback(null, { op: 'refreshed', id: 1, expires_at: clock.now() / 1000 + 60 });
  assert.equal(h.calls.refreshed.length, 1);
  clock.advance(50000);
  await settle();
  assert.deepEqual(h.calls.sent.map((s) => s.token), ['t2', 't3']);
});

test('a failing getToken or an error reply is retried after the backoff delay', async () => {
  const clock = new FakeClock();
  const h = host(clock, [new Error('auth down'), 't2', 't3']);
  const refresher = new TokenRefresher(h);
  refresher.start(clock.now() / 1000);
  clock.advance(0);
  await settle();
  assert.equal(h.calls.errors.length, 1);
  clock.advance(1000);
  await settle();
  assert.equal(h.calls.sent.length, 1);
  h.calls.sent[0].callback(new ServerError(109, 'token expired'));
  assert.equal(h.calls.errors.length, 2);
  clock.advance(1000);
  await settle();
  assert.deepEqual(h.calls.sent.map((s) => s.token), ['t2', 't3']);
});

test('stop() cancels a pending refresh and ignores late replies', async () => {
  const clock = new FakeClock();
  const h = host(clock, ['t2']);
  const refresher = new TokenRefresher(h);
  refresher.start(clock.now() / 1000 + 20);
  clock.advance(10000);
  await settle();
  assert.equal(h.calls.sent.length, 1);
  refresher.stop();
  h.calls.sent[0].callback(null, { op: 'refreshed', id: 1, expires_at: 0 });
  h.calls.sent[0].callback(new ConnectionClosedError('gone'));
  assert.deepEqual(h.calls.refreshed, []);
  assert.deepEqual(h.calls.errors, []);
  assert.deepEqual(clock.pendingDelays(), []);
});

test('getToken resolving to "" means signed out', async () => {
  const clock = new FakeClock();
  const h = host(clock, ['']);
  new TokenRefresher(h).start(clock.now() / 1000);
  clock.advance(0);
  await settle();
  assert.equal(h.calls.signedOut, 1);
  assert.equal(h.calls.sent.length, 0);
});
