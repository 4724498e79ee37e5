// A real EventSource in Debian's Chromium (playwright-core, never a downloaded
// browser). Usage: node sse_chromium.mjs <sse-url> <channel>...
// Serves a page from its own origin that opens `new EventSource(url)` (the node
// sends CORS headers) and relays what the page sees as JSON lines, like
// sse_node.mjs: {"open": n}, {"channel", "id", "data"}, {"event": "recovered", "data"}.
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, ...channels] = process.argv.slice(2);
const out = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

const page = `<!doctype html><meta charset="utf-8"><title>sse</title><script>
window.seen = [];
let opens = 0;
const es = new EventSource(${JSON.stringify(url)});
es.onopen = () => seen.push({ open: ++opens });
es.onerror = () => seen.push({ error: 'error', readyState: es.readyState });
for (const channel of ${JSON.stringify(channels)}) {
  es.addEventListener(channel, (e) => seen.push({ channel, id: e.lastEventId, data: JSON.parse(e.data) }));
}
es.addEventListener('recovered', (e) => seen.push({ event: 'recovered', data: JSON.parse(e.data) }));
</script>`;

const site = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(page);
});
await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
const profile = mkdtempSync(join(tmpdir(), 'pushwire-sse-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  timeout: 30000,
});
const tab = context.pages()[0] ?? (await context.newPage());
tab.on('pageerror', (err) => out({ pageerror: err.message }));
await tab.goto(`http://127.0.0.1:${site.address().port}/`);

let relayed = 0;
let stopping = false;
const stop = async () => {
  stopping = true;
  await context.close().catch(() => {});
  site.close();
  rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
  process.exit(0);
};
process.on('SIGTERM', stop);
while (!stopping) {
  const seen = await tab.evaluate(() => window.seen).catch(() => []);
  for (const item of seen.slice(relayed)) out(item);
  relayed = Math.max(relayed, seen.length);
  await new Promise((resolve) => setTimeout(resolve, 20));
}
