// A crowd of viewers in front of one dime-edge: live viewers that behave like an HLS player
// (reload the playlist every target duration, fetch each new segment once) and VoD viewers
// (playlist, then segments in order, sometimes seeking). Run it against `make run`:
//
//   k6 run benches/k6/viewers.js                       # 1,000 live + 50 VoD viewers, 60 s
//   k6 run -e LIVE_VUS=200 -e DURATION=30s benches/k6/viewers.js
//
// The summary reports the edge's hit ratio as the viewers saw it (X-Cache-Status) and, from the
// edge's own metrics, how many requests reached the origin pool per new live segment and per
// playlist refresh interval. See benches/k6/README.md.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { originRequestCount, recordCache, thresholdLines, value } from './edge.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const ADMIN_URL = __ENV.ADMIN_URL || 'http://127.0.0.1:9090';
const LIVE_PATH = __ENV.LIVE_PATH || '/stream/live/camera/index.m3u8';
const VOD_PATH = __ENV.VOD_PATH || '/stream/vod/sample/index.m3u8';
const POOL = __ENV.POOL || 'streamers';
const LIVE_VUS = int(__ENV.LIVE_VUS, 1000);
const VOD_VUS = int(__ENV.VOD_VUS, 50);
const DURATION = __ENV.DURATION || '60s';
// New viewers arrive over this long rather than all in the same millisecond.
const RAMP = __ENV.RAMP || '10s';
const P95_SEGMENT_MS = int(__ENV.P95_SEGMENT_MS, 500);
// How many segments behind the live edge a player starts (hls.js liveSyncDurationCount).
const LIVE_START_SEGMENTS = 3;

const segmentTime = new Trend('segment_time', true);
const playlistTime = new Trend('playlist_time', true);
const viewerErrors = new Rate('viewer_errors');
const edgeHit = new Rate('edge_hit');
const segments = new Counter('segments');
const playlists = new Counter('playlists');
const originRequests = new Counter('origin_requests');
const liveNewSegments = new Counter('live_new_segments');
const liveRefreshIntervals = new Counter('live_refresh_intervals');

function int(value, fallback) {
  const n = parseInt(value, 10);
  return Number.isFinite(n) ? n : fallback;
}

const scenarios = {};
if (LIVE_VUS > 0) {
  scenarios.live = {
    executor: 'ramping-vus',
    exec: 'liveViewer',
    startVUs: 0,
    stages: [
      { duration: RAMP, target: LIVE_VUS },
      { duration: DURATION, target: LIVE_VUS },
    ],
    gracefulRampDown: '5s',
  };
}
if (VOD_VUS > 0) {
  scenarios.vod = {
    executor: 'ramping-vus',
    exec: 'vodViewer',
    startVUs: 0,
    stages: [
      { duration: RAMP, target: VOD_VUS },
      { duration: DURATION, target: VOD_VUS },
    ],
    gracefulRampDown: '5s',
  };
}

export const options = {
  scenarios,
  // Segment bodies are counted, not kept: 1,000 viewers would otherwise hold every byte.
  discardResponseBodies: true,
  thresholds: {
    viewer_errors: [`rate<=${__ENV.MAX_ERROR_RATE || 0}`],
    segment_time: [`p(95)<${P95_SEGMENT_MS}`],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

// --- playlists --------------------------------------------------------------------------------

// Parses an HLS media playlist (RFC 8216 §4.3): target duration, first media sequence number,
// and the segments with their sequence numbers, durations and absolute URLs.
function parsePlaylist(text, url) {
  const base = url.slice(0, url.lastIndexOf('/') + 1);
  const origin = url.match(/^https?:\/\/[^/]+/)[0];
  const lines = text.split('\n').map((l) => l.trim());
  const playlist = { targetDuration: 0, mediaSequence: 0, segments: [], ended: false };
  let duration = null;
  for (const line of lines) {
    if (line.startsWith('#EXT-X-TARGETDURATION:')) {
      playlist.targetDuration = parseFloat(line.split(':')[1]);
    } else if (line.startsWith('#EXT-X-MEDIA-SEQUENCE:')) {
      playlist.mediaSequence = parseInt(line.split(':')[1], 10);
    } else if (line.startsWith('#EXTINF:')) {
      duration = parseFloat(line.slice(8));
    } else if (line === '#EXT-X-ENDLIST') {
      playlist.ended = true;
    } else if (line !== '' && !line.startsWith('#')) {
      let absolute = line;
      if (line.startsWith('/')) absolute = origin + line;
      else if (!/^https?:\/\//.test(line)) absolute = base + line;
      playlist.segments.push({
        sequence: playlist.mediaSequence + playlist.segments.length,
        duration: duration || playlist.targetDuration,
        url: absolute,
      });
      duration = null;
    }
  }
  return playlist;
}

function fetchPlaylist(url, kind) {
  const res = http.get(url, { responseType: 'text', tags: { kind: 'playlist', viewer: kind } });
  playlists.add(1);
  playlistTime.add(res.timings.duration);
  recordCache(res, edgeHit);
  const ok = check(res, {
    'playlist 200': (r) => r.status === 200,
    'playlist is HLS': (r) => typeof r.body === 'string' && r.body.startsWith('#EXTM3U'),
  });
  viewerErrors.add(!ok);
  if (!ok) return null;
  return parsePlaylist(res.body, url);
}

function fetchSegment(segment, kind) {
  const res = http.get(segment.url, { tags: { kind: 'segment', viewer: kind } });
  segments.add(1);
  segmentTime.add(res.timings.duration);
  recordCache(res, edgeHit);
  const ok = check(res, {
    'segment 200': (r) => r.status === 200,
    'segment has bytes': (r) => parseInt(r.headers['Content-Length'] || '0', 10) > 0,
  });
  viewerErrors.add(!ok);
  return ok;
}

// --- viewers ----------------------------------------------------------------------------------

// Per-VU state: each VU is one viewer for the whole run.
let liveLastSequence = -1;

// One playlist refresh of a live viewer: fetch the playlist, download every segment newer than
// the last one played, then wait a target duration (RFC 8216 §6.3.4) before the next reload.
export function liveViewer() {
  const url = BASE_URL + LIVE_PATH;
  const playlist = fetchPlaylist(url, 'live');
  if (playlist === null) {
    sleep(1);
    return;
  }
  const fresh = playlist.segments.filter((s) => s.sequence > liveLastSequence);
  const start = liveLastSequence < 0 ? Math.max(0, fresh.length - LIVE_START_SEGMENTS) : 0;
  for (const segment of fresh.slice(start)) {
    fetchSegment(segment, 'live');
    liveLastSequence = segment.sequence;
  }
  sleep(playlist.targetDuration || 1);
}

// One VoD session: the playlist, then six segments in order from the start or, one time in
// three, from a random point (a seek), paced at real time but capped at 2 s per segment.
export function vodViewer() {
  const url = BASE_URL + VOD_PATH;
  const playlist = fetchPlaylist(url, 'vod');
  if (playlist === null || playlist.segments.length === 0) {
    viewerErrors.add(true);
    sleep(1);
    return;
  }
  let index = 0;
  if (Math.random() < 1 / 3) {
    index = Math.floor(Math.random() * playlist.segments.length);
  }
  for (let played = 0; played < 6 && index < playlist.segments.length; played++, index++) {
    const segment = playlist.segments[index];
    if (!fetchSegment(segment, 'vod')) break;
    sleep(Math.min(segment.duration, 2));
  }
}

// --- what the origin saw ----------------------------------------------------------------------

function liveState() {
  const url = BASE_URL + LIVE_PATH;
  const res = http.get(url, { responseType: 'text', headers: { 'Cache-Control': 'no-cache' } });
  if (res.status !== 200) {
    throw new Error(`live playlist ${url}: HTTP ${res.status}; is the stack running (make run)?`);
  }
  const playlist = parsePlaylist(res.body, url);
  const last = playlist.segments.length > 0
    ? playlist.segments[playlist.segments.length - 1].sequence
    : playlist.mediaSequence;
  return { last, targetDuration: playlist.targetDuration };
}

export function setup() {
  const live = LIVE_VUS > 0 ? liveState() : null;
  return { origin: originRequestCount(ADMIN_URL, POOL), live, started: Date.now() };
}

export function teardown(data) {
  originRequests.add(originRequestCount(ADMIN_URL, POOL) - data.origin);
  if (data.live !== null) {
    const live = liveState();
    liveNewSegments.add(live.last - data.live.last);
    // The edge keeps a live playlist fresh for half a target duration: at most one origin
    // fetch per half target duration, however many viewers ask.
    const seconds = (Date.now() - data.started) / 1000;
    liveRefreshIntervals.add(Math.ceil(seconds / (data.live.targetDuration / 2)));
  }
}

// --- report -----------------------------------------------------------------------------------

export function handleSummary(data) {
  const origin = value(data, 'origin_requests', 'count');
  const newSegments = value(data, 'live_new_segments', 'count');
  const intervals = value(data, 'live_refresh_intervals', 'count');
  const segs = value(data, 'segments', 'count');
  const lists = value(data, 'playlists', 'count');
  const viewerRequests = segs + lists;
  const lines = [];
  lines.push('');
  lines.push(`dime viewers: ${LIVE_VUS} live + ${VOD_VUS} VoD for ${DURATION} (ramp ${RAMP}) against ${BASE_URL}`);
  lines.push(`  viewer requests      ${viewerRequests} (${segs} segments, ${lists} playlists)`);
  lines.push(`  errors               ${(value(data, 'viewer_errors', 'rate') * 100).toFixed(3)} %`);
  lines.push(`  segment time         p50 ${value(data, 'segment_time', 'med').toFixed(1)} ms, p95 ${value(data, 'segment_time', 'p(95)').toFixed(1)} ms, p99 ${value(data, 'segment_time', 'p(99)').toFixed(1)} ms, max ${value(data, 'segment_time', 'max').toFixed(1)} ms`);
  lines.push(`  playlist time        p50 ${value(data, 'playlist_time', 'med').toFixed(1)} ms, p95 ${value(data, 'playlist_time', 'p(95)').toFixed(1)} ms`);
  lines.push(`  edge hit ratio       ${(value(data, 'edge_hit', 'rate') * 100).toFixed(2)} % (X-Cache-Status HIT/STALE/UPDATING)`);
  if (ADMIN_URL === 'none') {
    lines.push('  origin requests      not measured here (ADMIN_URL=none)');
  } else {
    lines.push(`  origin requests      ${origin} (pool ${POOL}), ${(viewerRequests > 0 ? origin / viewerRequests : 0).toFixed(5)} per viewer request`);
  }
  if (newSegments > 0) {
    lines.push(`  live new segments    ${newSegments}; refresh intervals ${intervals}`);
    if (VOD_VUS === 0) {
      lines.push(`  origin per (segment + interval)  ${(origin / (newSegments + intervals)).toFixed(2)} (1.0 = one origin request each, whatever the audience)`);
    }
  }
  lines.push(...thresholdLines(data));
  lines.push('');
  const out = { stdout: lines.join('\n') };
  // The run's settings go with k6's summary, so a report written from the file (compare.sh)
  // says what was run without being told again.
  const settings = {
    base_url: BASE_URL, admin_url: ADMIN_URL, live_path: LIVE_PATH, vod_path: VOD_PATH,
    pool: POOL, live_vus: LIVE_VUS, vod_vus: VOD_VUS, duration: DURATION, ramp: RAMP,
    p95_segment_ms: P95_SEGMENT_MS,
  };
  if (__ENV.SUMMARY_JSON) {
    out[__ENV.SUMMARY_JSON] = JSON.stringify(Object.assign({ settings }, data), null, 2);
  }
  return out;
}
