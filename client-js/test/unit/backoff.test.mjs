import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, jitteredDelay } from '../../dist/esm/backoff.js';

const bounds = { minDelayMs: 500, maxDelayMs: 20000 };

test('the window doubles per attempt from the floor and stops at the ceiling', () => {
  const top = (attempt) => jitteredDelay(attempt, bounds, () => 0.999999999);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 10, 100].map(top), [999, 1999, 3999, 7999, 15999, 19999, 19999, 19999, 19999]);
});

test('the floor is never undercut: random() = 0 gives exactly minDelayMs', () => {
  for (const attempt of [0, 1, 5, 40]) assert.equal(jitteredDelay(attempt, bounds, () => 0), 500);
});

test('full jitter: delays spread over the whole window', () => {
  const samples = Array.from({ length: 2000 }, () => jitteredDelay(4, bounds, Math.random));
  const min = Math.min(...samples);
  const max = Math.max(...samples);
  assert.ok(min >= 500 && max < 16000, `all within [500, 16000): ${min}..${max}`);
  // Uniform over 15500 ms: 2000 samples land near both ends and in the middle.
  assert.ok(min < 1500 && max > 15000, `spread to both ends: ${min}..${max}`);
  const middle = samples.filter((d) => d > 7000 && d < 9500).length;
  assert.ok(middle > 150 && middle < 500, `about a sixth in the middle: ${middle}`);
});

test('Backoff counts attempts and reset() starts over', () => {
  const backoff = new Backoff(bounds, () => 0.999999999);
  assert.deepEqual([backoff.next(), backoff.next(), backoff.next()], [999, 1999, 3999]);
  assert.equal(backoff.attempt, 3);
  backoff.reset();
  assert.equal(backoff.next(), 999);
});

test('degenerate and invalid bounds', () => {
  assert.equal(jitteredDelay(3, { minDelayMs: 100, maxDelayMs: 100 }, Math.random), 100);
  assert.equal(jitteredDelay(3, { minDelayMs: 0, maxDelayMs: 0 }, Math.random), 0);
  assert.throws(() => new Backoff({ minDelayMs: 10, maxDelayMs: 5 }), RangeError);
  assert.throws(() => new Backoff({ minDelayMs: -1, maxDelayMs: 5 }), RangeError);
});
