import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PingWatchdog } from '../../dist/esm/watchdog.js';
import { FakeClock } from '../support/fake-clock.mjs';

test('fires after ping_interval + pong_timeout of silence', () => {
  const clock = new FakeClock();
  let fired = 0;
  const watchdog = new PingWatchdog(clock, () => fired++);
  watchdog.start(35000);
  clock.advance(34999);
  assert.equal(fired, 0);
  clock.advance(1);
  assert.equal(fired, 1);
  assert.equal(watchdog.running, false);
  clock.advance(100000);
  assert.equal(fired, 1, 'fires once');
});

test('each ping moves the deadline a full timeout forward', () => {
  const clock = new FakeClock();
  let fired = 0;
  const watchdog = new PingWatchdog(clock, () => fired++);
  watchdog.start(1000);
  for (let i = 0; i < 10; i++) {
    clock.advance(900);
    watchdog.feed();
  }
  assert.equal(fired, 0);
  clock.advance(1000);
  assert.equal(fired, 1);
});

test('stop() disarms; a zero timeout disables; feed() before start does nothing', () => {
  const clock = new FakeClock();
  let fired = 0;
  const watchdog = new PingWatchdog(clock, () => fired++);
  watchdog.feed();
  assert.equal(watchdog.running, false);
  watchdog.start(1000);
  watchdog.stop();
  clock.advance(5000);
  watchdog.start(0);
  clock.advance(5000);
  assert.equal(fired, 0);
  assert.deepEqual(clock.pendingDelays(), []);
});
