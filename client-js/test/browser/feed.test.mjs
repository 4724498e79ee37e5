// The demo page in Debian's Chromium (playwright-core, no downloaded
// browser): it connects, subscribes, shows a story published through the HTTP
// API, and keeps working across a server restart. Saves a screenshot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { TestServer } from '../support/server.mjs';
import { serveExample } from '../../examples/browser/serve.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RESULTS = fileURLToPath(new URL('../../test-results/', import.meta.url));
const CHANNEL = 'feed:news';

const stories = [
  { category: 'Science', headline: 'Deep-sea probe returns first images from the Kermadec Trench', body: 'Footage shows a dense colony of amphipods at 9,800 metres.' },
  { category: 'Tech', headline: 'Open-source push server survives a restart without losing a story', body: 'Clients reconnected with backoff and resubscribed on their own.' },
  { category: 'Markets', headline: 'Copper climbs to a two-year high on grid investment', body: 'Analysts point to transformer and cable demand.' },
];

test('demo page: live feed in Chromium, across a server restart', async (t) => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  let context;
  let site;
  let server;
  const profile = mkdtempSync(join(tmpdir(), 'pushwire-chromium-'));
  // One hook, in order: the browser first (it holds the profile and a socket), the profile last.
  t.after(async () => {
    await context?.close();
    await site?.close();
    await server?.dispose();
    rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
  });
  server = await TestServer.start();
  site = await serveExample();

  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.setDefaultTimeout(10000);

  const url = `http://127.0.0.1:${site.port}/?ws=${encodeURIComponent(server.wsUrl)}&channel=${CHANNEL}`;
  await page.goto(url);
  await page.waitForSelector('#status[data-state="connected"]');
  // The subscription is live once a history backfill ran; wait for `subscribed` through the client's state.
  await page.waitForFunction(() => window.feedStats && window.feedStats.connects === 1);

  // A story published through the HTTP API shows up on the page.
  await server.publish(CHANNEL, { ...stories[0], at: Date.now() });
  await page.waitForSelector(`.story h2:text("${stories[0].headline}")`);

  // Restart the server on the same port; the page reconnects by itself.
  await server.restart();
  await page.waitForFunction(() => window.feedStats.connects === 2, null, { timeout: 20000 });
  await page.waitForSelector('#status[data-state="connected"]');
  const restartNotice = await page.textContent('#notice');
  assert.match(restartNotice, /lost its history|recovered/, 'the page says what the reconnect could recover');

  for (const story of stories.slice(1)) await server.publish(CHANNEL, { ...story, at: Date.now() });
  for (const story of stories.slice(1)) await page.waitForSelector(`.story h2:text("${story.headline}")`);

  // The page's own publish box (client publish over the WebSocket).
  const own = 'Reader report: the feed kept up through a server restart';
  await page.selectOption('#compose-category', 'World');
  await page.fill('#compose-headline', own);
  await page.press('#compose-headline', 'Enter');
  await page.waitForSelector(`.story h2:text("${own}")`);
  assert.equal(await page.inputValue('#compose-headline'), '', 'the box is cleared after publishing');

  const headlines = await page.$$eval('.story h2', (nodes) => nodes.map((n) => n.textContent));
  assert.deepEqual(headlines, [own, stories[2].headline, stories[1].headline, stories[0].headline], 'newest first, each once');
  assert.equal(await page.textContent('#stat-reconnects'), '1');

  mkdirSync(RESULTS, { recursive: true });
  const shot = join(RESULTS, 'browser-feed.png');
  await page.screenshot({ path: shot, fullPage: true, animations: 'disabled' });
  assert.ok(statSync(shot).size > 10000, 'a real screenshot');
  assert.deepEqual(pageErrors, []);
});
