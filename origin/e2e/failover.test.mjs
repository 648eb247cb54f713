// An edge dies mid-play and the viewer does not notice: a real fleet on loopback (a streamer,
// two dime-edge processes in front of it, the web app with --edges), Debian's Chromium through
// playwright-core. The player page lists edge A then edge B; A is killed while the video
// plays; playback must go on from B with no error reaching hls.js, no failed response, no
// reload. Starts and stops its own processes (ports above 20000, state in a temporary
// directory), so it needs no stack: `node --test failover.test.mjs` after `cargo build`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { describeHlsErrors, hlsFailures, launchChromium, watchHls } from './browser.mjs';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.resolve(
  ROOT,
  process.env.DIME_BIN_DIR || `${process.env.CARGO_TARGET_DIR || 'target'}/debug`,
);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const dir = mkdtempSync(path.join(tmpdir(), 'dime-failover-'));
const children = new Map();
let browser;

// A port nobody listens on now (the kernel's ephemeral range, above 20000).
async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  assert.ok(port > 20000, `port ${port} is below 20000`);
  return port;
}

// Starts `bin args` with its output in dir/name.log.
function start(name, bin, args) {
  const log = openSync(path.join(dir, `${name}.log`), 'a');
  const child = spawn(path.join(BIN, bin), args, {
    stdio: ['ignore', log, log],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  children.set(name, child);
  return child;
}

function kill(name) {
  const child = children.get(name);
  children.delete(name);
  child?.kill('SIGKILL');
}

function logs() {
  return [...['streamer', 'edge-a', 'edge-b', 'web']]
    .map((name) => {
      try {
        return `--- ${name}\n${readFileSync(path.join(dir, `${name}.log`), 'utf8').slice(-3000)}`;
      } catch {
        return '';
      }
    })
    .join('\n');
}

// Polls fn until it returns a truthy value or timeoutMs passes.
async function eventually(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
    } catch (err) {
      last = String(err);
    }
    if (last && typeof last !== 'string') return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: not true after ${timeoutMs} ms (last: ${JSON.stringify(last)})\n${logs()}`);
}

function edgeConfig(http, admin, streamer) {
  return `[listen]
http = ["127.0.0.1:${http}"]
admin = "127.0.0.1:${admin}"

[pools.streamers]
backends = ["127.0.0.1:${streamer}"]

[pools.streamers.health_check]
type = "http"
path = "/healthz"
interval = "1s"

[[routes]]
name = "stream"
path = "/stream/"
pool = "streamers"
strip_prefix = true
# The page comes from the web app: the player's requests to the edges are cross-origin.
response_headers = { "Access-Control-Allow-Origin" = "*" }

[routes.cache]
mode = "video"
`;
}

const ports = {};

before(async () => {
  for (const name of ['streamer', 'aHttp', 'aAdmin', 'bHttp', 'bAdmin', 'web']) {
    ports[name] = await freePort();
  }
  const db = `sqlite://${path.join(dir, 'web.db')}`;
  const media = path.join(dir, 'media');
  mkdirSync(media);
  // 90 one-second segments: hls.js buffers 30 s ahead, so fragments are still being fetched
  // when the edge dies.
  execFileSync(path.join(BIN, 'dime-origin'), [
    'packager', 'sample', '--out', path.join(dir, 'clip.mp4'), '--duration', '90s',
    '--size', '320x180', '--no-audio',
  ], { stdio: 'ignore' });
  execFileSync(path.join(BIN, 'dime-origin'), [
    'web', 'import', path.join(dir, 'clip.mp4'), '--title', 'Clip', '--slug', 'clip',
    '--db', db, '--media-root', media, '--segment', '1',
  ], { stdio: 'ignore' });
  start('streamer', 'dime-origin', ['streamer', '--root', media, '--listen', `127.0.0.1:${ports.streamer}`]);
  for (const [name, http, admin] of [['edge-a', ports.aHttp, ports.aAdmin], ['edge-b', ports.bHttp, ports.bAdmin]]) {
    const config = path.join(dir, `${name}.toml`);
    writeFileSync(config, edgeConfig(http, admin, ports.streamer));
    start(name, 'dime-edge', ['run', '-c', config]);
  }
  // Loopback viewers are in region eu (edge A), falling back to us (edge B).
  const fleet = path.join(dir, 'edges.toml');
  writeFileSync(fleet, `default_region = "eu"

[poll]
interval = "500ms"
timeout = "500ms"

[regions.eu]
prefixes = ["127.0.0.0/8"]
fallback = ["us"]

[regions.us]
prefixes = ["192.0.2.0/24"]
fallback = ["eu"]

[[edges]]
name = "a"
region = "eu"
url = "http://127.0.0.1:${ports.aHttp}/stream/"
admin = "http://127.0.0.1:${ports.aAdmin}"

[[edges]]
name = "b"
region = "us"
url = "http://127.0.0.1:${ports.bHttp}/stream/"
admin = "http://127.0.0.1:${ports.bAdmin}"
`);
  start('web', 'dime-origin', ['web', '--listen', `127.0.0.1:${ports.web}`, '--db', db, '--edges', fleet]);
  await eventually(async () => {
    const res = await fetch(`http://127.0.0.1:${ports.web}/api/edges`);
    const { edges } = await res.json();
    return edges.every((e) => e.checked && e.up && !e.degraded && e.successes >= 1) && edges;
  }, 30000, 'both edges polled ready');

  browser = await launchChromium(chromium, CHROMIUM);
});

after(async () => {
  await browser?.close();
  for (const name of [...children.keys()]) kill(name);
  rmSync(dir, { recursive: true, force: true });
});

test('an edge killed mid-play: playback goes on from the next edge with no failed request', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // What hls.js itself sees, every event it triggers, errors in particular.
  await watchHls(page);
  const a = `http://127.0.0.1:${ports.aHttp}/stream/`;
  const b = `http://127.0.0.1:${ports.bHttp}/stream/`;
  const answered = [];
  const failed = [];
  page.on('response', (res) => {
    if (res.url().includes('/stream/')) answered.push({ url: res.url(), status: res.status() });
  });
  page.on('requestfailed', (req) => {
    if (req.url().includes('/stream/')) failed.push(req.url());
  });
  let navigations = 0;
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) navigations += 1;
  });

  const res = await page.goto(`http://127.0.0.1:${ports.web}/titles/clip`);
  assert.equal(res.status(), 200);
  assert.equal(res.headers()['cache-control'], 'private, max-age=10');
  const bases = JSON.parse(await page.getAttribute('#player', 'data-bases'));
  assert.deepEqual(bases, [a, b]);

  const time = () => page.evaluate(() => document.getElementById('player').currentTime);
  await eventually(async () => (await time()) > 2, 30000, 'playback started on edge A');
  assert.ok(answered.length > 0 && answered.every((r) => r.url.startsWith(a)), JSON.stringify(answered));

  kill('edge-a');
  const killedWall = Date.now();
  const killedAt = await time();
  const seenBefore = answered.length;
  // Ten more seconds of video: fragments past the buffer hls.js had must come from B.
  await eventually(async () => (await time()) > killedAt + 10, 60000, 'playback went on after edge A died');

  const hls = await page.evaluate(() => window.__hls);
  assert.ok(hls.fragsLoaded > 0, 'the hls.js hook saw fragments load');
  // Gap steps are hls.js's own recovery; anything else fails (times: ms after the kill).
  assert.deepEqual(hlsFailures(hls.errors), [],
    `hls.js saw no error (all it reported: ${describeHlsErrors(hls.errors, killedWall)})`);
  const after = answered.slice(seenBefore);
  assert.ok(after.some((r) => r.url.startsWith(b) && /\.ts$|\.m4s$|\.mp4$/.test(r.url)), `segments from B: ${JSON.stringify(after)}`);
  assert.deepEqual(answered.filter((r) => r.status >= 400), [], 'no failed response');
  // Requests in flight or sent to A after its death failed at the network level, and each was
  // sent again to B, the same path, and answered there.
  assert.ok(failed.length > 0, 'no request went to the dead edge: the test did not exercise the failover');
  for (const url of failed) {
    assert.ok(url.startsWith(a), `a request failed on B: ${url}`);
    const onB = b + url.slice(a.length);
    assert.ok(answered.some((r) => r.url === onB && r.status === 200), `${url} was not retried on B`);
  }
  assert.equal(await page.textContent('#player-status'), '', 'the player shows no error');
  assert.equal(navigations, 1, 'the page was not reloaded');
  await context.close();
});
