import { test } from 'node:test';
import assert from 'node:assert/strict';
import { actionForClose, actionForConnectError, closeCodeForConnectError } from '../../dist/esm/policy.js';

test('close codes follow the table of PROTOCOL.md section 7', () => {
  const table = {
    1000: 'stop',
    1001: 'reconnect',
    1009: 'stop',
    4000: 'stop',
    4001: 'stop',
    4002: 'refresh-token',
    4004: 'reconnect',
    4005: 'reconnect',
    4008: 'reconnect',
    4009: 'reconnect-throttled',
    4010: 'reconnect-throttled',
    4011: 'reconnect',
  };
  for (const [code, action] of Object.entries(table)) {
    assert.equal(actionForClose(Number(code)), action, `close ${code}`);
  }
});

test('4011 does what the disconnect op says', () => {
  assert.equal(actionForClose(4011, true), 'reconnect');
  assert.equal(actionForClose(4011, false), 'stop');
});

test("the disconnect op's reconnect flag wins over the table, for pushwire's own codes too", () => {
  // POST /api/disconnect may send any 4000-4999 code with either flag.
  assert.equal(actionForClose(4000, true), 'reconnect');
  assert.equal(actionForClose(4001, true), 'reconnect');
  assert.equal(actionForClose(4008, false), 'stop');
  assert.equal(actionForClose(4005, false), 'stop');
  assert.equal(actionForClose(1001, false), 'stop');
  // `true` keeps the table's kind of reconnect.
  assert.equal(actionForClose(4002, true), 'refresh-token');
  assert.equal(actionForClose(4009, true), 'reconnect-throttled');
  assert.equal(actionForClose(4008, true), 'reconnect');
});

test('unlisted codes (network drops, newer servers) reconnect unless told not to', () => {
  for (const code of [1006, 1005, 1011, 1012, 4099, 3001, 3002, 3003, 3004]) {
    assert.equal(actionForClose(code), 'reconnect', `close ${code}`);
  }
  assert.equal(actionForClose(4099, false), 'stop');
  assert.equal(actionForClose(3005), 'stop', '3005: getToken said the user is signed out');
});

test('errors answering connect', () => {
  assert.equal(actionForConnectError(109), 'refresh-token');
  assert.equal(actionForConnectError(101), 'stop');
  assert.equal(actionForConnectError(107), 'stop');
  assert.equal(actionForConnectError(110), 'reconnect-throttled');
  assert.equal(actionForConnectError(100), 'reconnect');
  assert.equal(closeCodeForConnectError(109), 4002);
  assert.equal(closeCodeForConnectError(101), 4001);
  assert.equal(closeCodeForConnectError(100), 3006);
});
