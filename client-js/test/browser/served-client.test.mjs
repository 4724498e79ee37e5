// The demo as README.md starts it: the server with examples/browser/pushwire.toml (on a
// free port instead of 8080) and examples/browser/serve.mjs, nothing built with npm. The
// page loads the client from the node's own URL (GET /client/pushwire.min.js), backfills
// the newest 20 stories newest first, and receives a publication live.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { TestServer } from '../support/server.mjs';
import { serveExample } from '../../examples/browser/serve.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const DEMO_CONFIG = fileURLToPath(new URL('../../examples/browser/pushwire.toml', import.meta.url));
const DEMO_KEY = 'demo-key'; // api.keys of the demo config, as README's curl uses it
const CHANNEL = 'feed:news';

async function publish(server, data) {
  const response = await fetch(`${server.httpUrl}/api/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${DEMO_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel: CHANNEL, data }),
  });
  assert.equal(response.status, 200, await response.text());
}

test('demo page: client served by the node, newest stories first, live publication', async (t) => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  let context;
  let site;
  const profile = mkdtempSync(join(tmpdir(), 'pushwire-chromium-'));
  const server = new TestServer({});
  server.configPath = DEMO_CONFIG; // exactly the demo's file; only the port differs
  t.after(async () => {
    await context?.close();
    await site?.close();
    await server.dispose();
    rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
  });
  await server.launch(0);
  for (let n = 1; n <= 25; n += 1) await publish(server, { category: 'World', headline: `Story ${n}`, at: Date.now() });
  site = await serveExample();

  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  const scripts = [];
  page.on('response', (r) => {
    if (r.request().resourceType() === 'script') scripts.push(`${r.status()} ${r.url()}`);
  });
  page.setDefaultTimeout(10000);

  await page.goto(`http://127.0.0.1:${site.port}/?ws=${encodeURIComponent(server.wsUrl)}&channel=${CHANNEL}`);
  await page.waitForSelector('#status[data-state="connected"]');
  await page.waitForFunction(() => document.querySelectorAll('.story').length === 20);
  assert.ok(scripts.includes(`200 ${server.httpUrl}/client/pushwire.min.js`), `scripts loaded: ${scripts.join(', ')}`);

  const backfill = await page.$$eval('.story h2', (nodes) => nodes.map((n) => n.textContent));
  const newest20 = Array.from({ length: 20 }, (_, i) => `Story ${25 - i}`);
  assert.deepEqual(backfill, newest20, 'the latest 20 stories, newest on top');

  await publish(server, { category: 'Tech', headline: 'Live from the API', at: Date.now() });
  await page.waitForSelector('.story h2:text("Live from the API")');
  const top = await page.$eval('.story h2', (n) => n.textContent);
  assert.equal(top, 'Live from the API');
  assert.deepEqual(pageErrors, []);
});
