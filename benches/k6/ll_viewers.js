// A crowd of low-latency HLS viewers (RFC 8216bis) in front of one dime-edge, each doing what
// hls.js does in low-latency mode: read the playlist once, then, part after part, ask for the
// part its preload hint names and, at the same time, for the playlist with
// `_HLS_msn`/`_HLS_part` of that part (a blocking reload): both are held until the packager
// writes the part. Run it against `make run`'s low-latency channel:
//
//   k6 run benches/k6/ll_viewers.js                          # 1,000 viewers, 60 s
//   k6 run -e VUS=100 -e DURATION=20s benches/k6/ll_viewers.js
//
// Reported: viewer errors (any answer but 200, a playlist that is not HLS or lacks the part it
// was asked for, an empty part), part delivery: from when a part existed (its end by the
// playlist's program date-time against this machine's clock: the packager writes a part
// within a few ms of its last frame), or when the viewer asked if that was later, to when the
// part and the playlist listing it had both arrived; the edge's hit ratio, and the origin
// requests per new part, from the edge's metrics. See benches/k6/README.md.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { originRequestCount, recordCache, thresholdLines, value } from './edge.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const ADMIN_URL = __ENV.ADMIN_URL || 'http://127.0.0.1:9090';
const LL_PATH = __ENV.LL_PATH || '/stream/live/lowlatency/index.m3u8';
const POOL = __ENV.POOL || 'streamers';
const VUS = int(__ENV.VUS, 1000);
const DURATION = __ENV.DURATION || '60s';
const RAMP = __ENV.RAMP || '10s';
// A part's last byte later than this after the part existed fails the run (at p95).
const P95_PART_MS = int(__ENV.P95_PART_MS, 500);

const partDelivery = new Trend('part_delivery', true);
const partTime = new Trend('part_time', true);
const reloadTime = new Trend('reload_time', true);
const viewerErrors = new Rate('viewer_errors');
const fellBehind = new Rate('fell_behind');
const edgeHit = new Rate('edge_hit');
const parts = new Counter('parts');
const reloads = new Counter('reloads');
const originRequests = new Counter('origin_requests');
const newParts = new Counter('new_parts');

function int(value, fallback) {
  const n = parseInt(value, 10);
  return Number.isFinite(n) ? n : fallback;
}

export const options = {
  scenarios: {
    ll: {
      executor: 'ramping-vus',
      exec: 'llViewer',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: VUS },
        { duration: DURATION, target: VUS },
      ],
      gracefulRampDown: '5s',
    },
  },
  discardResponseBodies: true,
  thresholds: {
    viewer_errors: [`rate<=${__ENV.MAX_ERROR_RATE || 0}`],
    part_delivery: [`p(95)<${P95_PART_MS}`],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

// --- playlists --------------------------------------------------------------------------------

// The value of NAME in an attribute list (`TYPE=PART,URI="x"`), unquoted.
function attribute(list, name) {
  const m = list.match(new RegExp(`(?:^|,)${name}=("[^"]*"|[^,]*)`));
  return m ? m[1].replace(/^"|"$/g, '') : null;
}

// Reads a low-latency media playlist: every part with its media sequence number, index, URI and
// the wall-clock time its media ends (from EXT-X-PROGRAM-DATE-TIME), and the preload hint.
export function parsePlaylist(text) {
  const playlist = { mediaSequence: 0, parts: [], hint: null, partTarget: 0 };
  let sequence = null;
  let index = 0;
  let clock = null; // ms: where the next media starts
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#EXT-X-MEDIA-SEQUENCE:')) {
      playlist.mediaSequence = parseInt(line.split(':')[1], 10);
      sequence = playlist.mediaSequence;
    } else if (line.startsWith('#EXT-X-PART-INF:')) {
      playlist.partTarget = parseFloat(attribute(line.slice(16), 'PART-TARGET'));
    } else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) {
      clock = Date.parse(line.slice(25));
    } else if (line.startsWith('#EXT-X-PART:')) {
      const duration = parseFloat(attribute(line.slice(12), 'DURATION')) * 1000;
      if (clock !== null) clock += duration;
      playlist.parts.push({ sequence, index, uri: attribute(line.slice(12), 'URI'), ends: clock });
      index += 1;
    } else if (line.startsWith('#EXTINF:')) {
      // The parts listed before it were this segment's: the clock is already at its end.
    } else if (line.startsWith('#EXT-X-PRELOAD-HINT:')) {
      playlist.hint = attribute(line.slice(20), 'URI');
    } else if (line !== '' && !line.startsWith('#')) {
      sequence += 1;
      index = 0;
    }
  }
  return playlist;
}

// --- viewers ----------------------------------------------------------------------------------

const base = (BASE_URL + LL_PATH).slice(0, (BASE_URL + LL_PATH).lastIndexOf('/') + 1);
let playlist = null; // per VU: the last playlist read

// The part the hint names: its media sequence number and index, from the packager's names
// (`segment-M.I.m4s`), which the blocking reload asks for.
function numbersOf(uri) {
  const m = uri.match(/(\d+)\.(\d+)\.m4s$/);
  return m ? { msn: parseInt(m[1], 10), part: parseInt(m[2], 10) } : null;
}

function firstPlaylist() {
  const res = http.get(BASE_URL + LL_PATH, { responseType: 'text', tags: { kind: 'playlist' } });
  reloads.add(1);
  recordCache(res, edgeHit);
  const ok = check(res, {
    'playlist 200': (r) => r.status === 200,
    'playlist is LL-HLS': (r) => typeof r.body === 'string' && r.body.includes('#EXT-X-PRELOAD-HINT:'),
  });
  viewerErrors.add(!ok);
  return ok ? parsePlaylist(res.body) : null;
}

// One part: the hinted part and the blocking reload for it, at once, as hls.js asks them.
export function llViewer() {
  if (playlist === null || playlist.hint === null) {
    playlist = firstPlaylist();
    if (playlist === null || playlist.hint === null) {
      sleep(1);
      return;
    }
  }
  const hint = playlist.hint;
  const want = numbersOf(hint);
  if (want === null) {
    viewerErrors.add(true);
    playlist = null;
    return;
  }
  const asked = Date.now();
  const [part, reload] = http.batch([
    ['GET', base + hint, null, { tags: { kind: 'part' } }],
    ['GET', `${BASE_URL}${LL_PATH}?_HLS_msn=${want.msn}&_HLS_part=${want.part}`, null,
      { responseType: 'text', tags: { kind: 'reload' } }],
  ]);
  const arrived = Date.now();
  parts.add(1);
  reloads.add(1);
  partTime.add(part.timings.duration);
  reloadTime.add(reload.timings.duration);
  recordCache(part, edgeHit);
  recordCache(reload, edgeHit);
  const next = reload.status === 200 && typeof reload.body === 'string' ? parsePlaylist(reload.body) : null;
  const listed = next && next.parts.find((p) => p.uri === hint);
  // A reload lists the parts of the last three target durations only: a viewer that fell
  // further behind (its load generator starved) gets a playlist past its part, and starts
  // again from the newest hint, as hls.js does.
  const passed = next !== null && !listed && next.parts.length > 0 && isBefore(want, next.parts[0]);
  const ok = check(null, {
    'part 200': () => part.status === 200,
    // The body is not kept (1,000 viewers): an empty part says it has no length.
    'part has bytes': () => part.headers['Content-Length'] !== '0',
    'reload 200': () => reload.status === 200,
    'reload lists the part': () => passed || (listed !== undefined && listed !== null),
  });
  viewerErrors.add(!ok);
  fellBehind.add(passed);
  if (listed && listed.ends !== null) {
    // From when the part existed (or, for a viewer catching up, when it asked) to when both
    // answers were in, the later being when the viewer could play the part.
    partDelivery.add(Math.max(0, arrived - Math.max(listed.ends, asked)));
  }
  playlist = next;
}

// Whether the part `want` comes before `part` (both by media sequence number and index).
function isBefore(want, part) {
  return want.msn < part.sequence || (want.msn === part.sequence && want.part < part.index);
}

// --- what the origin saw ----------------------------------------------------------------------

// The newest part's place: its media sequence number and index.
function newestPart() {
  const url = BASE_URL + LL_PATH;
  const res = http.get(url, { responseType: 'text', headers: { 'Cache-Control': 'no-cache' } });
  if (res.status !== 200 || !String(res.body).includes('#EXT-X-PART-INF')) {
    throw new Error(`${url}: HTTP ${res.status}, not a low-latency playlist; is the stack running (make run)?`);
  }
  const p = parsePlaylist(res.body);
  const last = p.parts[p.parts.length - 1];
  return { last, partTarget: p.partTarget };
}

export function setup() {
  return { origin: originRequestCount(ADMIN_URL, POOL), first: newestPart().last, started: Date.now() };
}

export function teardown(data) {
  originRequests.add(originRequestCount(ADMIN_URL, POOL) - data.origin);
  const now = newestPart();
  // New parts since the start: from the wall clock, at the part target each (the packager
  // writes one a part target apart).
  const seconds = (now.last.ends - data.first.ends) / 1000;
  newParts.add(Math.max(1, Math.round(seconds / now.partTarget)));
}

// --- report -----------------------------------------------------------------------------------

export function handleSummary(data) {
  const origin = value(data, 'origin_requests', 'count');
  const created = value(data, 'new_parts', 'count');
  const lines = [];
  lines.push('');
  lines.push(`dime LL-HLS viewers: ${VUS} for ${DURATION} (ramp ${RAMP}) against ${BASE_URL}${LL_PATH}`);
  lines.push(`  viewer requests      ${value(data, 'parts', 'count') + value(data, 'reloads', 'count')} (${value(data, 'parts', 'count')} parts, ${value(data, 'reloads', 'count')} playlists)`);
  lines.push(`  errors               ${(value(data, 'viewer_errors', 'rate') * 100).toFixed(3)} %`);
  lines.push(`  part delivery        after the part existed: p50 ${value(data, 'part_delivery', 'med').toFixed(1)} ms, p95 ${value(data, 'part_delivery', 'p(95)').toFixed(1)} ms, p99 ${value(data, 'part_delivery', 'p(99)').toFixed(1)} ms, max ${value(data, 'part_delivery', 'max').toFixed(1)} ms`);
  lines.push(`  held requests        part p50 ${value(data, 'part_time', 'med').toFixed(1)} ms, blocking reload p50 ${value(data, 'reload_time', 'med').toFixed(1)} ms`);
  lines.push(`  edge hit ratio       ${(value(data, 'edge_hit', 'rate') * 100).toFixed(2)} % (X-Cache-Status HIT/STALE/UPDATING)`);
  lines.push(`  fell behind          ${(value(data, 'fell_behind', 'rate') * 100).toFixed(3)} % of parts (a viewer more than three target durations late)`);
  if (ADMIN_URL === 'none') {
    lines.push('  origin requests      not measured here (ADMIN_URL=none)');
  } else {
    lines.push(`  origin requests      ${origin} (pool ${POOL}) for ${created} new parts: ${(origin / created).toFixed(2)} per part (a part and its blocking reload: 2.0, whatever the audience)`);
  }
  lines.push(...thresholdLines(data));
  lines.push('');
  const out = { stdout: lines.join('\n') };
  const settings = {
    base_url: BASE_URL, admin_url: ADMIN_URL, ll_path: LL_PATH, pool: POOL, vus: VUS,
    duration: DURATION, ramp: RAMP, p95_part_ms: P95_PART_MS,
  };
  if (__ENV.SUMMARY_JSON) {
    out[__ENV.SUMMARY_JSON] = JSON.stringify(Object.assign({ settings }, data), null, 2);
  }
  return out;
}
