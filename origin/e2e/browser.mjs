// What the browser tests share (viewer.test.mjs, failover.test.mjs, ansible/sim's
// failover.test.mjs): Debian's Chromium launched the same way, a bounded poll, and a hook that
// records what hls.js itself sees. No import of playwright-core here: ansible/sim's test loads
// it from origin/e2e/node_modules by path, and passes it in.
import assert from 'node:assert/strict';

/** Debian's Chromium, headless, autoplay allowed; `chromium` is playwright-core's. */
export function launchChromium(chromium, executablePath = process.env.CHROMIUM || '/usr/bin/chromium') {
  return chromium.launch({
    executablePath,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

/** Polls fn until it returns a truthy value or timeoutMs passes; returns the last value. */
export async function eventually(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`${what}: not true after ${timeoutMs} ms (last value ${JSON.stringify(last)})`);
}

/**
 * Makes `page` record hls.js's errors (with the wall clock time of each, `at`) and loaded
 * fragments in `window.__hls`.
 */
export async function watchHls(page) {
  await page.addInitScript(() => {
    window.__hls = { errors: [], fragsLoaded: 0 };
    let Hls;
    Object.defineProperty(window, 'Hls', {
      configurable: true,
      get: () => Hls,
      set: (value) => {
        Hls = value;
        const trigger = value.prototype.trigger;
        value.prototype.trigger = function (event, data) {
          if (event === value.Events.ERROR) {
            window.__hls.errors.push({ details: data.details, fatal: data.fatal, url: data.frag?.url || data.url, at: Date.now() });
          } else if (event === value.Events.FRAG_LOADED) {
            window.__hls.fragsLoaded += 1;
          }
          return trigger.apply(this, arguments);
        };
      },
    });
  });
}

/**
 * The errors hls.js reported that are failures. hls.js reports stepping over a small gap in the
 * buffered media as a non-fatal "error" (seen at the start of playback, before any edge was
 * killed): the player's own recovery. Anything else, network errors and stalls above all, is
 * one.
 */
export function hlsFailures(errors) {
  const gapSteps = new Set(['bufferSeekOverHole', 'bufferNudgeOnStall']);
  return errors.filter((e) => e.fatal || !gapSteps.has(e.details));
}

/** `errors` as text, each with its time in ms relative to `since` (e.g. an edge's death). */
export function describeHlsErrors(errors, since) {
  return JSON.stringify(errors.map((e) => ({ ...e, at: e.at - since })));
}
