// After tsc: mark the CommonJS build as such, and bundle the browser IIFE.
//
// dist/cjs/package.json makes Node read dist/cjs/*.js as CommonJS although the
// package itself is "type": "module". The IIFE bundle (global `Pushwire`) is
// built from tsc's ESM output, so all three builds come from the same code.
import { writeFileSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url);

writeFileSync(new URL('dist/cjs/package.json', root), JSON.stringify({ type: 'commonjs' }, null, 2) + '\n');

const common = {
  entryPoints: [new URL('dist/esm/index.js', root).pathname],
  bundle: true,
  format: 'iife',
  globalName: 'Pushwire',
  platform: 'browser',
  target: ['es2020'],
  legalComments: 'none',
  logLevel: 'warning',
};
await build({ ...common, outfile: new URL('dist/pushwire.iife.js', root).pathname, sourcemap: true });
await build({ ...common, outfile: new URL('dist/pushwire.iife.min.js', root).pathname, minify: true });
