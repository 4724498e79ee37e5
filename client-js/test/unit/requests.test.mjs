import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PendingRequests } from '../../dist/esm/requests.js';
import { ConnectionClosedError, ServerError, TimeoutError } from '../../dist/esm/errors.js';
import { FakeClock } from '../support/fake-clock.mjs';

function recorder() {
  const calls = [];
  return { calls, callback: (error, reply) => calls.push({ error, reply }) };
}

test('ids are unique and increasing', () => {
  const requests = new PendingRequests(new FakeClock());
  const ids = Array.from({ length: 5 }, () => requests.nextId());
  assert.deepEqual(ids, [1, 2, 3, 4, 5]);
});

test('a reply settles the request with the same id only', () => {
  const clock = new FakeClock();
  const requests = new PendingRequests(clock);
  const a = recorder();
  const b = recorder();
  requests.add(1, 'publish', 1000, a.callback);
  requests.add(2, 'presence', 1000, b.callback);
  assert.equal(requests.settle({ op: 'presence', id: 2, clients: [] }), true);
  assert.deepEqual(b.calls, [{ error: null, reply: { op: 'presence', id: 2, clients: [] } }]);
  assert.deepEqual(a.calls, []);
  assert.equal(requests.size, 1);
  assert.deepEqual(clock.pendingDelays(), [1000], 'the settled request no longer has a timer');
});

test('an error reply rejects with a ServerError carrying the protocol code', () => {
  const requests = new PendingRequests(new FakeClock());
  const r = recorder();
  requests.add(7, 'publish', 1000, r.callback);
  requests.settle({ op: 'error', id: 7, code: 103, message: 'permission denied' });
  const [{ error }] = r.calls;
  assert.ok(error instanceof ServerError);
  assert.equal(error.code, 103);
  assert.equal(error.message, 'permission denied');
  assert.equal(error.temporary, false);
  assert.equal(new ServerError(110, '').temporary, true);
});

test('no reply in time: TimeoutError, and a late reply is reported as unmatched', () => {
  const clock = new FakeClock();
  const requests = new PendingRequests(clock);
  const r = recorder();
  requests.add(3, 'history', 500, r.callback);
  clock.advance(499);
  assert.equal(r.calls.length, 0);
  clock.advance(1);
  assert.equal(r.calls.length, 1);
  assert.ok(r.calls[0].error instanceof TimeoutError);
  assert.match(r.calls[0].error.message, /history timed out after 500 ms/);
  assert.equal(requests.settle({ op: 'history', id: 3 }), false);
  assert.equal(r.calls.length, 1, 'callbacks run exactly once');
});

test('messages without a waiting id are not consumed', () => {
  const requests = new PendingRequests(new FakeClock());
  assert.equal(requests.settle({ op: 'error', id: 42, code: 100, message: 'x' }), false);
  assert.equal(requests.settle({ op: 'message', channel: 'c' }), false);
});

test('rejectAll fails everything waiting and clears the timers', () => {
  const clock = new FakeClock();
  const requests = new PendingRequests(clock);
  const r = recorder();
  requests.add(1, 'a', 1000, r.callback);
  requests.add(2, 'b', 1000, r.callback);
  requests.rejectAll(new ConnectionClosedError('gone', 1001));
  assert.equal(r.calls.length, 2);
  assert.ok(r.calls.every((c) => c.error instanceof ConnectionClosedError && c.error.closeCode === 1001));
  assert.deepEqual(clock.pendingDelays(), []);
  clock.advance(5000);
  assert.equal(r.calls.length, 2);
});
