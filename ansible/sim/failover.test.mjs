// The fleet's browser test, run by ansible/sim/test.sh inside the namespace of region a's
// viewers (dfl-view-a), in Debian's Chromium driven by playwright-core: the player page,
// loaded through edge A, plays the live channel from edge A (the viewer's region first);
// edge A is killed mid-play; the player goes on from edge B without reloading the page, and
// hls.js never sees a failed segment (the player's loader moved the request to edge B).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

// playwright-core is installed for the platform's browser test (origin/e2e).
const require = createRequire(path.resolve(process.env.DIME_E2E_MODULES, 'playwright-core', 'package.json'));
const { chromium } = require('playwright-core');

const SITE = process.env.DIME_SITE_URL;
const EDGE_A = process.env.DIME_EDGE_A;
const EDGE_B = process.env.DIME_EDGE_B;
const KILL_EDGE_A = process.env.DIME_KILL_EDGE_A;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

let browser;

before(async () => {
  assert.ok(SITE && EDGE_A && EDGE_B && KILL_EDGE_A, 'test.sh passes the site, both edges and the kill command');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
});

after(async () => {
  await browser?.close();
});

async function eventually(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`${what}: not true after ${timeoutMs} ms (last value ${JSON.stringify(last)})`);
}

const currentTime = (page) => page.evaluate(() => document.getElementById('player')?.currentTime || 0);

test('a viewer of region a plays from edge A, and from edge B once edge A dies, without a failed segment', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const segments = [];
  const pageErrors = [];
  page.on('response', (res) => {
    if (/\.(ts|m4s)(\?|$)/.test(res.url())) segments.push({ url: res.url(), status: res.status(), at: Date.now() });
  });
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  const nav = await page.goto(`${SITE}/live/camera`);
  assert.equal(nav.status(), 200);

  // The page's edge list puts the viewer's own region first.
  const edges = await page.evaluate(() => window.dimePlayer?.edges || null);
  assert.ok(Array.isArray(edges) && edges.length === 2, `the player knows both edges: ${JSON.stringify(edges)}`);
  assert.ok(edges[0].startsWith(EDGE_A) && edges[1].startsWith(EDGE_B), `edge A first, then edge B: ${JSON.stringify(edges)}`);

  const started = await eventually(async () => { const t = await currentTime(page); return t > 0 ? t : 0; },
    30_000, 'playback starts');
  await eventually(async () => (await currentTime(page)) >= started + 2, 30_000, 'playback advances on edge A');
  assert.ok(segments.length > 0 && segments.every((s) => s.url.startsWith(EDGE_A)),
    `every segment so far came from edge A: ${JSON.stringify(segments.map((s) => s.url))}`);

  // Edge A dies mid-play.
  execSync(KILL_EDGE_A);
  const killedAt = Date.now();
  const atKill = await currentTime(page);
  await eventually(async () => (await currentTime(page)) >= atKill + 8, 40_000,
    `playback goes on 8 s past ${atKill} after edge A died`);

  const fromB = segments.filter((s) => s.at >= killedAt && s.url.startsWith(EDGE_B));
  assert.ok(fromB.length >= 4, `segments came from edge B after the kill: ${JSON.stringify(segments.map((s) => s.url))}`);
  assert.ok(segments.every((s) => s.status === 200), `every segment the player received was a 200: ${JSON.stringify(segments)}`);
  const player = await page.evaluate(() => ({
    errors: window.dimePlayer?.errors || null,
    failovers: window.dimePlayer?.failovers || null,
    videoError: document.getElementById('player')?.error?.code || null,
  }));
  assert.deepEqual(player.errors, [], `hls.js reported no error: ${JSON.stringify(player.errors)}`);
  assert.ok(player.failovers >= 1, `the player moved to the next edge: ${JSON.stringify(player)}`);
  assert.equal(player.videoError, null);
  assert.deepEqual(pageErrors, []);
  assert.equal(page.url(), `${SITE}/live/camera`, 'the page was not reloaded');
  await context.close();
});
