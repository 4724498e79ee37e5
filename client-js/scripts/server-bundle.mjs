// The browser bundle every pushwire node serves at GET /client/pushwire.min.js.
//
// The server embeds ../assets/pushwire.min.js at compile time (src/api/client_bundle.rs),
// so `cargo build` needs no npm. This script writes that file from a fresh build of
// client-js (run `npm run build` first, or `npm run bundle:server`, which does both);
// test/unit/server-bundle.test.mjs fails when the committed file is not what it builds.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url);
export const SERVER_BUNDLE = fileURLToPath(new URL('../assets/pushwire.min.js', root));

/** The bundle's text: the IIFE (global `Pushwire`), minified, with a version banner. */
export async function serverBundle() {
  const { version } = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
  const result = await build({
    entryPoints: [fileURLToPath(new URL('dist/esm/index.js', root))],
    bundle: true,
    format: 'iife',
    globalName: 'Pushwire',
    platform: 'browser',
    target: ['es2020'],
    legalComments: 'none',
    logLevel: 'warning',
    minify: true,
    write: false,
    banner: { js: `/*! pushwire-client ${version} (Apache-2.0), served by pushwire */` },
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(SERVER_BUNDLE, await serverBundle());
  console.log(`wrote ${SERVER_BUNDLE}`);
}
