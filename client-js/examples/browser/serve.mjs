#!/usr/bin/env node
// Serves the demo page (the page loads the client from the pushwire node it connects to):
//   node examples/browser/serve.mjs [--port 8000]
// then open http://127.0.0.1:8000/?ws=ws://127.0.0.1:8080/ws&channel=feed:news
// (/pushwire.js serves this checkout's dist/ bundle, after `npm run build`, for development.)
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { extname, join, normalize } from 'node:path';

const here = fileURLToPath(new URL('.', import.meta.url));
const bundle = fileURLToPath(new URL('../../dist/pushwire.iife.js', import.meta.url));
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.map': 'application/json' };

/** Starts the static server; resolves with { port, close() }. */
export function serveExample({ port = 0, host = '127.0.0.1' } = {}) {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const file = path === '/' ? join(here, 'index.html')
      : path === '/pushwire.js' ? bundle
      : path === '/pushwire.iife.js.map' ? `${bundle}.map`
      : join(here, normalize(path).replace(/^([/\\]|\.\.)+/, ''));
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  return new Promise((resolve) => {
    server.listen(port, host, () => {
      resolve({ port: server.address().port, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--port');
  const { port } = await serveExample({ port: at > 0 ? Number(process.argv[at + 1]) : 8000 });
  console.log(`demo on http://127.0.0.1:${port}/?ws=ws://127.0.0.1:8080/ws&channel=feed:news`);
}
