// What the k6 crowds (viewers.js, ll_viewers.js) read from the edge and report alike: its cache
// status per answer, the origin requests its metrics count, and k6's summary values.
import http from 'k6/http';

// HIT, STALE and UPDATING were answered from the edge's cache; MISS, EXPIRED, REVALIDATED and
// BYPASS involved the origin. Adds one sample to `hits` (a k6 Rate) per answer that says.
export function recordCache(res, hits) {
  const status = res.headers['X-Cache-Status'];
  if (status !== undefined) {
    hits.add(status === 'HIT' || status === 'STALE' || status === 'UPDATING');
  }
}

// Sum of dime_upstream_requests_total for `pool`, from the edge's admin /metrics at `adminUrl`;
// 0 with `none` (viewers who cannot reach the admin listener, as in the fleet simulation, whose
// script reads the origin's side itself).
export function originRequestCount(adminUrl, pool) {
  if (adminUrl === 'none') return 0;
  const res = http.get(`${adminUrl}/metrics`, { responseType: 'text' });
  if (res.status !== 200) {
    throw new Error(`cannot read ${adminUrl}/metrics: HTTP ${res.status}`);
  }
  let total = 0;
  for (const line of res.body.split('\n')) {
    if (line.startsWith('dime_upstream_requests_total{') && line.includes(`pool="${pool}"`)) {
      total += parseFloat(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}

// One statistic of a metric in k6's end-of-test data, 0 when absent.
export function value(data, name, stat) {
  const metric = data.metrics[name];
  if (metric === undefined) return 0;
  return metric.values[stat] || 0;
}

// The summary's threshold lines: `ok` or `FAIL`, metric, expression.
export function thresholdLines(data) {
  const lines = ['  thresholds'];
  for (const [name, metric] of Object.entries(data.metrics)) {
    for (const [expr, result] of Object.entries(metric.thresholds || {})) {
      lines.push(`    ${result.ok ? 'ok  ' : 'FAIL'} ${name} ${expr}`);
    }
  }
  return lines;
}
