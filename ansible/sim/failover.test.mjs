// The fleet's browser test, run by ansible/sim/test.sh inside the namespace of region a's
// viewers (dfl-view-a), in Debian's Chromium driven by playwright-core: the player page,
// loaded through edge A, plays the live channel from edge A (the viewer's region first);
// edge A is killed mid-play; the player goes on from edge B without reloading the page, and
// hls.js never sees a failed request (the player's loader moved each one to edge B).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describeHlsErrors, eventually, hlsFailures, launchChromium, watchHls } from '../../origin/e2e/browser.mjs';

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
  browser = await launchChromium(chromium, CHROMIUM);
});

after(async () => {
  await browser?.close();
});

const currentTime = (page) => page.evaluate(() => document.getElementById('player')?.currentTime || 0);

test('a viewer of region a plays from edge A, and from edge B once edge A dies, without a failed request', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await watchHls(page);
  const answered = [];
  const failed = [];
  const pageErrors = [];
  page.on('response', (res) => {
    if (res.url().includes('/stream/')) answered.push({ url: res.url(), status: res.status(), at: Date.now() });
  });
  page.on('requestfailed', (req) => {
    if (req.url().includes('/stream/')) failed.push(req.url());
  });
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  let navigations = 0;
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) navigations += 1;
  });
  const nav = await page.goto(`${SITE}/live/camera`);
  assert.equal(nav.status(), 200);

  // The web app put the viewer's own region first: edge A, then edge B.
  const bases = JSON.parse(await page.getAttribute('#player', 'data-bases'));
  assert.deepEqual(bases, [`${EDGE_A}/stream/`, `${EDGE_B}/stream/`]);

  const started = await eventually(async () => { const t = await currentTime(page); return t > 0 ? t : 0; },
    30_000, 'playback starts');
  await eventually(async () => (await currentTime(page)) >= started + 2, 30_000, 'playback advances on edge A');
  assert.ok(answered.length > 0 && answered.every((r) => r.url.startsWith(EDGE_A)),
    `everything so far came from edge A: ${JSON.stringify(answered.map((r) => r.url))}`);

  // dime-edge on edge A dies (SIGKILL) mid-play.
  execSync(KILL_EDGE_A);
  const killedAt = Date.now();
  const atKill = await currentTime(page);
  await eventually(async () => (await currentTime(page)) >= atKill + 8, 40_000,
    `playback goes on 8 s past ${atKill} after edge A died`);

  const hls = await page.evaluate(() => window.__hls);
  assert.ok(hls.fragsLoaded > 0, 'the hls.js hook saw fragments load');
  // Gap steps are hls.js's own recovery; anything else fails (times: ms after the kill).
  assert.deepEqual(hlsFailures(hls.errors), [],
    `hls.js saw no error (all it reported: ${describeHlsErrors(hls.errors, killedAt)})`);
  const fromB = answered.filter((r) => r.at >= killedAt && r.url.startsWith(EDGE_B) && /\.(ts|m4s)$/.test(r.url));
  assert.ok(fromB.length >= 4, `segments came from edge B after the kill: ${JSON.stringify(answered.map((r) => r.url))}`);
  assert.deepEqual(answered.filter((r) => r.status >= 400), [], 'no failed response');
  // Whatever failed failed on the dead edge A, and was asked again of edge B and answered there.
  for (const url of failed) {
    assert.ok(url.startsWith(EDGE_A), `a request failed on edge B: ${url}`);
    const onB = EDGE_B + url.slice(EDGE_A.length);
    assert.ok(answered.some((r) => r.url === onB && r.status === 200), `${url} was not retried on edge B`);
  }
  assert.deepEqual(pageErrors, []);
  assert.equal(navigations, 1, 'the page was not reloaded');
  await context.close();
});
