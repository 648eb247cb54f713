// Viewers' and an admin's paths through the whole platform, in a real browser: Debian's
// Chromium, driven by playwright-core, against the stack `make run` starts (dime-edge in front
// of the web app, two streamers and the live packager). origin/e2e/run.sh starts that stack,
// runs this, stops it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { eventually, launchChromium } from './browser.mjs';

const EDGE = process.env.DIME_EDGE_URL || 'http://127.0.0.1:8080';
const ADMIN = process.env.DIME_ADMIN_URL || 'http://127.0.0.1:9090';
const VOD_SLUG = process.env.DIME_VOD_SLUG || 'sample';
const LIVE_SLUG = process.env.DIME_LIVE_SLUG || 'camera';
// The low-latency HLS channel (`make run` registers it); `none` where the stack has none.
const LL_SLUG = process.env.DIME_LL_SLUG || 'lowlatency';
const LL_SKIP = LL_SLUG === 'none' && 'this stack has no low-latency channel (DIME_LL_SLUG=none)';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// HTTPS with the certificate make run generates; run.sh makes Node trust its CA
// (NODE_EXTRA_CA_CERTS), so fetch() below verifies the chain and the name. `none`: an edge
// without HTTPS (the Kubernetes shield, k8s/play/test.sh), whose HTTPS test is skipped.
const EDGE_HTTPS = process.env.DIME_EDGE_HTTPS_URL || 'https://localhost:8443';
const HTTPS_SKIP = EDGE_HTTPS === 'none' && 'this edge serves HTTP only (DIME_EDGE_HTTPS_URL=none)';
// The admin make run created, and a video file to upload (run.sh sets both).
const ADMIN_USER = process.env.DIME_ADMIN_USER;
const ADMIN_PASSWORD = process.env.DIME_ADMIN_PASSWORD;
const UPLOAD_FILE = process.env.DIME_UPLOAD_FILE;

let browser;

before(async () => {
  browser = await launchChromium(chromium, CHROMIUM);
});

after(async () => {
  await browser?.close();
});

async function catalog() {
  const res = await fetch(`${EDGE}/api/catalog`);
  assert.equal(res.status, 200, `GET ${EDGE}/api/catalog`);
  return res.json();
}

function viewsOf(list, slug) {
  const items = [...(list.titles || []), ...(list.channels || [])];
  const item = items.find((i) => i.slug === slug);
  assert.ok(item, `catalog has no item with slug ${slug}: ${JSON.stringify(list)}`);
  return item.views;
}

// Opens a player page in a fresh context and records the X-Cache-Status of every segment.
async function openPlayer(path) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const segments = [];
  const playlists = [];
  const failures = [];
  page.on('response', (res) => {
    const seen = { url: res.url(), status: res.status(), cache: res.headers()['x-cache-status'] };
    if (/\.(ts|m4s|mp4)(\?|$)/.test(res.url())) {
      segments.push(seen);
    } else if (/\.m3u8(\?|$)/.test(res.url())) {
      playlists.push(seen);
    }
  });
  page.on('pageerror', (err) => failures.push(String(err)));
  const res = await page.goto(EDGE + path);
  assert.equal(res.status(), 200, `GET ${path}`);
  return { context, page, segments, playlists, failures };
}

// Waits until the <video id="player"> has played past `seconds` and is still advancing.
async function assertPlays(page, seconds, what) {
  const start = await eventually(
    () => page.evaluate(() => document.getElementById('player')?.currentTime || 0)
      .then((t) => (t > 0 ? t : 0)),
    30_000, `${what}: playback starts`);
  await eventually(
    () => page.evaluate(() => document.getElementById('player').currentTime)
      .then((t) => t >= start + seconds),
    30_000, `${what}: currentTime advances ${seconds} s past ${start}`);
}

test('the home page lists the live channel and the VoD title', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const res = await page.goto(`${EDGE}/`);
  assert.equal(res.status(), 200);
  assert.ok(res.headers()['x-cache-status'], 'the home page came through dime-edge');
  const hrefs = await page.$$eval('a', (links) => links.map((a) => a.getAttribute('href')));
  assert.ok(hrefs.some((h) => h && h.endsWith(`/titles/${VOD_SLUG}`)), `link to /titles/${VOD_SLUG} in ${hrefs}`);
  assert.ok(hrefs.some((h) => h && h.endsWith(`/live/${LIVE_SLUG}`)), `link to /live/${LIVE_SLUG} in ${hrefs}`);
  await context.close();
});

test('a VoD title plays through the edge and its view is counted', async () => {
  const before = viewsOf(await catalog(), VOD_SLUG);
  const viewer = await openPlayer(`/titles/${VOD_SLUG}`);
  await assertPlays(viewer.page, 2, 'VoD');
  await eventually(async () => viewsOf(await catalog(), VOD_SLUG) >= before + 1, 10_000,
    `view count of ${VOD_SLUG} goes above ${before}`);
  assert.ok(viewer.segments.length > 0, 'the player fetched segments');
  assert.ok(viewer.segments.every((s) => s.status === 200 || s.status === 206),
    `segment statuses: ${JSON.stringify(viewer.segments)}`);
  assert.deepEqual(viewer.failures, []);
  await viewer.context.close();
});

test('two live viewers play and the second is served segments from the edge cache', async () => {
  const before = viewsOf(await catalog(), LIVE_SLUG);
  const first = await openPlayer(`/live/${LIVE_SLUG}`);
  await assertPlays(first.page, 2, 'live viewer 1');
  const second = await openPlayer(`/live/${LIVE_SLUG}`);
  await assertPlays(second.page, 2, 'live viewer 2');
  // Both keep advancing together: the live edge moves, the players follow it.
  await assertPlays(first.page, 1, 'live viewer 1 still');
  const hits = second.segments.filter((s) => s.cache === 'HIT');
  assert.ok(hits.length > 0,
    `the second viewer got at least one segment from the cache: ${JSON.stringify(second.segments)}`);
  // Both viewers are this machine's address: one counted view an hour between them.
  await eventually(async () => viewsOf(await catalog(), LIVE_SLUG) === before + 1, 10_000,
    `view count of ${LIVE_SLUG} goes up by one (one address) from ${before}`);
  assert.deepEqual([...first.failures, ...second.failures], []);
  await first.context.close();
  await second.context.close();
});

// The player's latency behind the camera (its data-latency: now minus the playing frame's
// program date-time, stamped at capture) every 500 ms for `seconds`: the median and the worst.
async function latency(page, seconds) {
  const samples = [];
  for (let i = 0; i < seconds * 2; i += 1) {
    const value = await page.evaluate(() => document.getElementById('player').getAttribute('data-latency'));
    if (value !== null) samples.push(parseFloat(value));
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(samples.length >= seconds, `the player reported its latency: ${JSON.stringify(samples)}`);
  const sorted = [...samples].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)], worst: sorted[sorted.length - 1], samples };
}

test('the low-latency channel plays under 2 s behind the camera through the edge', { skip: LL_SKIP }, async () => {
  const ll = await openPlayer(`/live/${LL_SLUG}`);
  await assertPlays(ll.page, 2, 'low-latency viewer');
  // hls.js moves to its target latency within a few seconds of starting.
  await new Promise((r) => setTimeout(r, 4000));
  const low = await latency(ll.page, 10);
  // The player used LL-HLS through the edge: blocking reloads and parts, all answered.
  assert.ok(ll.playlists.some((p) => p.url.includes('_HLS_msn=')),
    `blocking playlist reloads: ${JSON.stringify(ll.playlists.slice(-5))}`);
  assert.ok(ll.segments.some((s) => /segment-\d+\.\d+\.m4s/.test(s.url)),
    `parts: ${JSON.stringify(ll.segments.slice(-5))}`);
  assert.ok([...ll.playlists, ...ll.segments].every((r) => r.status === 200 && r.cache),
    `every request answered 200 by the edge: ${JSON.stringify([...ll.playlists, ...ll.segments].filter((r) => r.status !== 200 || !r.cache))}`);
  assert.deepEqual(ll.failures, []);
  await ll.context.close();
  // The classic channel, for comparison (reported, not asserted).
  const classic = await openPlayer(`/live/${LIVE_SLUG}`);
  await assertPlays(classic.page, 2, 'classic live viewer');
  await new Promise((r) => setTimeout(r, 4000));
  const high = await latency(classic.page, 6);
  await classic.context.close();
  console.log(`e2e figure: latency behind the camera through the edge: low-latency HLS median ${low.median.toFixed(2)} s (worst ${low.worst.toFixed(2)} s); classic HLS median ${high.median.toFixed(2)} s (worst ${high.worst.toFixed(2)} s)`);
  assert.ok(low.median < 2, `low-latency median ${low.median} s: ${JSON.stringify(low.samples)}`);
  assert.ok(low.worst < 3, `low-latency worst ${low.worst} s: ${JSON.stringify(low.samples)}`);
});

test("the edge's metrics show cache hits on the stream route", async () => {
  const res = await fetch(`${ADMIN}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  const line = text.split('\n').find((l) =>
    l.startsWith('dime_cache_requests_total{') && l.includes('route="stream"') && l.includes('status="HIT"'));
  assert.ok(line, 'dime_cache_requests_total{route="stream",status="HIT"} is exported');
  assert.ok(parseFloat(line.split(' ').pop()) > 0, line);
});

test('the edge serves the site over HTTPS with HTTP/2 and a certificate from the local CA', { skip: HTTPS_SKIP }, async () => {
  // Node verifies the certificate chain (the local CA) and the name localhost.
  const res = await fetch(`${EDGE_HTTPS}/`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), new RegExp(`/titles/${VOD_SLUG}`));
  // Chromium negotiates h2 by ALPN and plays the VoD title over it. (The browser profile does
  // not trust the local CA; the chain was checked above.)
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const nav = await page.goto(`${EDGE_HTTPS}/titles/${VOD_SLUG}`);
  assert.equal(nav.status(), 200);
  const security = await nav.securityDetails();
  assert.ok(['TLS 1.2', 'TLS 1.3'].includes(security?.protocol), `TLS version ${security?.protocol}`);
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert.equal(protocol, 'h2');
  await assertPlays(page, 1, 'VoD over HTTPS');
  await context.close();
});

test('an admin logs in through the edge, uploads a video, and viewers play it', async () => {
  assert.ok(ADMIN_USER && ADMIN_PASSWORD && UPLOAD_FILE, 'run.sh passes the admin and a clip');
  const context = await browser.newContext();
  const page = await context.newPage();
  const login = await page.goto(`${EDGE}/admin/`);
  assert.match(page.url(), /\/admin\/login$/, 'the admin side starts at the login form');
  assert.equal(login.headers()['cache-control'], 'private, no-store');
  await page.fill('input[name=username]', ADMIN_USER);
  await page.fill('input[name=password]', ADMIN_PASSWORD);
  await Promise.all([page.waitForURL(`${EDGE}/admin/`), page.click('button[type=submit]')]);

  // Pages with a session are never served from the edge's cache.
  for (let i = 0; i < 2; i++) {
    const res = await context.request.get(`${EDGE}/admin/`);
    assert.equal(res.status(), 200);
    assert.equal(res.headers()['cache-control'], 'private, no-store');
    assert.notEqual(res.headers()['x-cache-status'], 'HIT', 'an admin page came from the cache');
  }

  await page.goto(`${EDGE}/admin/titles/upload`);
  await page.fill('input[name=title]', 'Uploaded in the browser test');
  await page.setInputFiles('input[name=file]', UPLOAD_FILE);
  // The upload form's own button (the page also has the log-out button).
  await Promise.all([
    page.waitForURL(/\/admin\/uploads\/\d+$/),
    page.click('form[action="/admin/titles/upload"] button[type=submit]'),
  ]);
  const jobUrl = page.url();
  const state = await eventually(async () => {
    const res = await context.request.get(jobUrl);
    const found = /id="upload-job" data-state="([a-z]+)"/.exec(await res.text());
    return found && found[1] !== 'packaging' ? found[1] : null;
  }, 120_000, 'the upload is packaged');
  assert.equal(state, 'done');
  await context.close();

  const titles = (await catalog()).titles || [];
  const uploaded = titles.find((t) => t.title === 'Uploaded in the browser test');
  assert.ok(uploaded, `the catalog lists the upload: ${JSON.stringify(titles)}`);
  const viewer = await openPlayer(`/titles/${uploaded.slug}`);
  await assertPlays(viewer.page, 1, 'the uploaded title');
  assert.deepEqual(viewer.failures, []);
  await viewer.context.close();
});
