// The published shapes: ESM, CommonJS, type declarations and the IIFE bundle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import vm from 'node:vm';
import * as esm from 'pushwire-client';

const root = new URL('../../', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));

test('ESM and CommonJS entry points export the same API', () => {
  const require = createRequire(import.meta.url);
  const cjs = require('pushwire-client');
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  for (const name of ['Client', 'Subscription', 'ServerError', 'TimeoutError', 'ConnectionClosedError', 'ErrorCode']) {
    assert.equal(typeof cjs[name], typeof esm[name], name);
  }
  assert.equal(new cjs.Client('ws://h/ws').state, 'disconnected');
});

test('VERSION matches package.json', () => {
  assert.equal(esm.VERSION, pkg.version);
});

test('type declarations exist for both entry points', () => {
  for (const path of [pkg.exports['.'].import.types, pkg.exports['.'].require.types]) {
    assert.ok(existsSync(new URL(path, root)), path);
  }
  const dts = readFileSync(new URL('dist/esm/client.d.ts', root), 'utf8');
  assert.match(dts, /subscribe\(channel: string, options\?: SubscriptionOptions\): Subscription;/);
  assert.doesNotMatch(dts, /_onMessage/, '@internal members are not in the public types');
});

test('the IIFE bundle defines a global Pushwire with a working Client', () => {
  const code = readFileSync(new URL('dist/pushwire.iife.min.js', root), 'utf8');
  const sandbox = { TextDecoder, TextEncoder, atob, setTimeout, clearTimeout, queueMicrotask, console };
  sandbox.globalThis = sandbox;
  vm.runInNewContext(code, sandbox);
  assert.equal(typeof sandbox.Pushwire.Client, 'function');
  assert.equal(sandbox.Pushwire.ErrorCode.TokenExpired, 109);
  const client = new sandbox.Pushwire.Client('ws://h/ws', { encoding: 'msgpack' });
  assert.equal(client.encoding, 'msgpack');
});
