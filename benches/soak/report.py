#!/usr/bin/env python3
"""The soak's report (benches/soak/run.sh): errors and p99 per k6 window, the edge's RSS and
open file descriptors with their slope after warm-up, the reloads and restarts. Printed, and
written between the <!-- soak:begin --> and <!-- soak:end --> marks of --doc."""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import sys


def slope_per_hour(points):
    """Least-squares slope of (second, value) points, per hour; 0 for fewer than 2."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / var * 3600


def metric(data, name, stat):
    m = data.get("metrics", {}).get(name)
    if m is None:
        return 0.0
    return float(m.get("values", {}).get(stat, 0.0) or 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--doc", default="")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--duration", required=True)
    ap.add_argument("--window", required=True)
    ap.add_argument("--live-vus", required=True)
    ap.add_argument("--vod-vus", required=True)
    ap.add_argument("--live", required=True)
    ap.add_argument("--cache", required=True)
    a = ap.parse_args()

    windows = []
    n = 1
    while os.path.exists(os.path.join(a.out, "k6", f"window-{n}.json")):
        with open(os.path.join(a.out, "k6", f"window-{n}.json")) as f:
            windows.append(json.load(f))
        n += 1
    if not windows:
        sys.exit(f"soak report: no k6 summary in {a.out}/k6 (see the window logs there)")

    with open(os.path.join(a.out, "samples.csv")) as f:
        samples = [
            (int(r["second"]), int(r["rss_kib"]), int(r["fds"]), int(r["cache_bytes"] or 0))
            for r in csv.DictReader(f)
        ]
    events = []
    with open(os.path.join(a.out, "events.tsv")) as f:
        for line in f:
            t, kind, what = line.rstrip("\n").split("\t")
            events.append((int(t), kind, what))

    # Warm-up: the first window, when the cache fills and the connections open.
    ends = [t for t, kind, _ in events if kind == "window"]
    warm = ends[0] if len(ends) > 1 else (samples[-1][0] // 6 if samples else 0)
    steady = [s for s in samples if s[0] >= warm]
    rss_slope = slope_per_hour([(t, rss / 1024) for t, rss, _, _ in steady])
    # The second half alone: a slope that is warm-up still settling shrinks there, a leak not.
    half = samples[-1][0] / 2 if samples else 0
    late_slope = slope_per_hour([(t, rss / 1024) for t, rss, _, _ in samples if t >= half])
    # RSS less the cache's own bytes: what the edge holds beside the objects.
    rest = [(t, rss / 1024 - cached / 2**20) for t, rss, _, cached in steady]
    rest_slope = slope_per_hour(rest)
    fd_slope = slope_per_hour([(t, fds) for t, _, fds, _ in steady])
    cached = [s[3] / 2**20 for s in steady] or [0]

    rows = []
    total_requests = total_errors = 0
    start = 0
    for i, (w, end) in enumerate(zip(windows, ends + [None] * len(windows)), 1):
        segs = metric(w, "segments", "count")
        lists = metric(w, "playlists", "count")
        errors = metric(w, "viewer_errors", "passes")
        total_requests += segs + lists
        total_errors += errors
        span = f"{start // 60}:{start % 60:02d}–{end // 60}:{end % 60:02d}" if end else "?"
        inside = [s for s in samples if start <= s[0] < (end or start + 1)]
        mean_rss = sum(s[1] for s in inside) / len(inside) / 1024 if inside else 0
        rows.append(
            f"| {i} | {span} | {int(segs + lists):,} | {int(errors)} | {mean_rss:.0f} MiB "
            f"| {metric(w, 'segment_time', 'med'):.0f} / {metric(w, 'segment_time', 'p(99)'):.0f} ms "
            f"| {metric(w, 'playlist_time', 'p(95)'):.0f} ms | {metric(w, 'edge_hit', 'rate') * 100:.2f} % |"
        )
        start = end or start

    reloads = [e for e in events if e[1] == "reload"]
    applied = sum(1 for e in reloads if e[2].endswith("applied yes"))
    restarts = [e for e in events if e[1] == "restart"]
    rss = [s[1] / 1024 for s in steady] or [0]
    fds = [s[2] for s in steady] or [0]
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass

    lines = [
        "<!-- soak:begin (written by make soak: benches/soak/run.sh) -->",
        f"Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit `{a.commit}`, "
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}: {a.duration} "
        f"(DURATION) of {a.live_vus} live and {a.vod_vus} VoD k6 viewers, the live channel at {a.live}, "
        f"one k6 run per {a.window} window, `cache.memory = \"{a.cache}\"`.",
        "",
        "| Window | Minutes | Viewer requests | Errors | Edge RSS, mean | Segment p50 / p99 | Playlist p95 | Hit ratio |",
        "|---:|---|---:|---:|---:|---|---:|---:|",
        *rows,
        "",
        f"- **Errors**: {int(total_errors)} of {int(total_requests):,} viewer requests.",
        f"- **Reloads**: {len(reloads)} config changes (the streamer pool's `read_timeout`, which "
        f"rebuilds the pool), {applied} applied as the edge's `dime_config_reloads_total` says.",
        f"- **Streamer restarts**: {len(restarts)} (SIGTERM, then a new process on the same port): "
        + (", ".join(f"{t // 60}:{t % 60:02d}" for t, _, _ in restarts) or "none") + ".",
        f"- **dime-edge RSS** after the first window (warm-up), sampled every 10 s: "
        f"{min(rss):.0f} to {max(rss):.0f} MiB, slope {rss_slope:+.1f} MiB per hour "
        f"({late_slope:+.1f} over the second half of the run); the cache "
        f"held {min(cached):.0f} to {max(cached):.0f} MiB of it; RSS less the cache's bytes "
        f"{min(v for _, v in rest or [(0, 0)]):.0f} to {max(v for _, v in rest or [(0, 0)]):.0f} MiB, "
        f"slope {rest_slope:+.1f} MiB per hour.",
        f"- **Open file descriptors** after warm-up: {min(fds)} to {max(fds)}, slope "
        f"{fd_slope:+.1f} per hour.",
        "<!-- soak:end -->",
    ]
    text = "\n".join(lines)
    print(text)
    if a.doc:
        with open(a.doc) as f:
            doc = f.read()
        pattern = re.compile(r"^<!-- soak:begin.*?<!-- soak:end -->", re.S | re.M)
        if not pattern.search(doc):
            sys.exit(f"soak report: {a.doc} has no <!-- soak:begin --> mark: not written")
        with open(a.doc, "w") as f:
            f.write(pattern.sub(lambda _: text, doc))
        print(f"soak report: written to {a.doc}", file=sys.stderr)
    if total_errors > 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
