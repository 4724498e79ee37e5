// The bundle the server embeds (assets/pushwire.min.js, served at
// GET /client/pushwire.min.js) is exactly what this client builds to, and carries the
// version the server has (Cargo.toml): run `npm run bundle:server` after changing src/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SERVER_BUNDLE, serverBundle } from '../../scripts/server-bundle.mjs';

test('assets/pushwire.min.js is a fresh build of client-js', async () => {
  const committed = readFileSync(SERVER_BUNDLE, 'utf8');
  const fresh = await serverBundle();
  assert.ok(committed === fresh, 'assets/pushwire.min.js is stale: run `npm run bundle:server` in client-js/ and commit it');
});

test('the client is versioned with the server', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  const cargo = readFileSync(new URL('../../../Cargo.toml', import.meta.url), 'utf8');
  const server = /\[workspace\.package\][^[]*?\nversion\s*=\s*"([^"]+)"/.exec(cargo)?.[1];
  assert.equal(pkg.version, server, 'client-js/package.json and Cargo.toml agree on the version');
  assert.match(readFileSync(SERVER_BUNDLE, 'utf8'), new RegExp(`^/\\*! pushwire-client ${pkg.version.replaceAll('.', '\\.')} `));
});
