#!/usr/bin/env python3
"""The k6-viewers section of docs/benchmarks.md, written from compare.sh's two runs.

Reads, from compare.sh's work directory: edge.json and nginx.json (k6's summaries, with the
run's settings), edge.status and nginx.status (k6's exit status), edge.cpu_ms and nginx.cpu_ms
(the proxy's CPU time over its run), *.other_ms (other work's), *.window (each run's start and
end, for the streamers' logs), run.txt (date, commit, versions, the stack's settings) and
nginx/access.log (nginx's requests to the streamers). Prints the table and replaces the section
between the k6-viewers markers of the page (appended when missing); the rest is left as it is.
Every number in the section comes from those files.

Usage: python3 benches/k6/report.py --work target/k6 --doc docs/benchmarks.md
"""

import argparse
import json
import re
import shlex
import textwrap
from datetime import datetime, timezone
from pathlib import Path

BEGIN = "<!-- k6-viewers:begin (written by benches/k6/compare.sh: make viewers) -->"
END = "<!-- k6-viewers:end -->"
SECTION = re.compile(r"<!-- k6-viewers:begin.*?-->.*?<!-- k6-viewers:end -->\n?", re.S)
PROXIES = (("edge", "dime-edge"), ("nginx", "nginx"))
# nginx.conf's log_format k6.
NGINX_LOG = re.compile(
    r'^(?P<msec>\S+) (?P<status>\d+) (?P<cache>\S+) "(?P<upstream>[^"]*)" (?P<bytes>\d+) '
    r'"(?P<request>[^"]*)" "(?P<agent>[^"]*)" "(?P<cache_control>[^"]*)"$'
)
# Prose is wrapped as the rest of the page is.
WIDTH = 96
UPSTREAM = re.compile(r"\d+\.\d+\.\d+\.\d+:\d+|\[[0-9a-fA-F:]+\]:\d+|unix:\S+")


def read_kv(path: Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def metric(summary: dict, name: str, stat: str) -> float:
    values = summary.get("metrics", {}).get(name, {}).get("values", {})
    return float(values.get(stat, 0) or 0)


def metric_seconds(summary: dict) -> float:
    """How long the k6 run took, in seconds."""
    return float(summary.get("state", {}).get("testRunDurationMs", 0)) / 1000


def thresholds(summary: dict) -> list:
    """The thresholds the run crossed, as `metric expression`."""
    crossed = []
    for name, data in summary.get("metrics", {}).items():
        for expr, result in (data.get("thresholds") or {}).items():
            if not result.get("ok", True):
                crossed.append(f"`{name} {expr}`")
    return crossed


def nginx_origin(log: Path, agent: str, live_path: str) -> dict:
    """Requests nginx sent to the streamers during the k6 run, from its access log: one per
    address in $upstream_addr (a retry lists two). compare.sh's own requests (User-Agent `agent`:
    its start-up check and warm-up) and k6's own reads of
    the live playlist in setup and teardown (Cache-Control: no-cache) are left out, as the edge's
    count (taken after setup's read, before teardown's) leaves them out."""
    total = 0
    live_playlist = []
    for line in log.read_text().splitlines():
        m = NGINX_LOG.match(line)
        if m is None:
            raise SystemExit(f"{log}: a line not in nginx.conf's k6 format: {line!r}")
        if m["agent"] == agent or "no-cache" in m["cache_control"]:
            continue
        n = len(UPSTREAM.findall(m["upstream"]))
        total += n
        parts = m["request"].split(" ")
        if n and len(parts) > 1 and parts[1].split("?")[0] == live_path:
            live_playlist.append(float(m["msec"]))
    gaps = sorted(b - a for a, b in zip(sorted(live_playlist), sorted(live_playlist)[1:]))
    return {
        "requests": total,
        "live_playlist": len(live_playlist),
        "live_playlist_gap": gaps[len(gaps) // 2] if gaps else 0.0,
    }


# dime_origin's access log: `2026-12-01T05:25:35.124000Z  INFO dime_origin::access: ... path="/x"`.
STREAMER_LOG = re.compile(r'^(\S+)Z\s+\S+\s+dime_origin::access:.*? path="([^"]*)"')


def streamer_requests(logs: Path, window: Path) -> int:
    """Requests the streamers logged between a run's start and end, health checks left out."""
    start, end = (float(v) for v in window.read_text().split())
    count = 0
    for log in sorted(logs.glob("streamer-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            m = STREAMER_LOG.match(line)
            if m is None or m[2] == "/healthz":
                continue
            t = datetime.fromisoformat(m[1]).replace(tzinfo=timezone.utc).timestamp()
            if start <= t <= end:
                count += 1
    return count


def spaced(value: str) -> str:
    """A number and its unit apart, as the page writes them: `1s` as `1 s`, `2500k` as `2,500 k`."""
    m = re.fullmatch(r"(\d+)([a-z]+)", value)
    return f"{int(m[1]):,} {m[2]}" if m else value


def num(n: float) -> str:
    return f"{round(n):,}"


def ms(v: float) -> str:
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def wrap(text: str, first: str = "", rest: str = "") -> str:
    """`text` wrapped at WIDTH, never inside a `code span`."""
    kept = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\0"), text)
    wrapped = textwrap.fill(
        kept, WIDTH, initial_indent=first, subsequent_indent=rest,
        break_long_words=False, break_on_hyphens=False,
    )
    return wrapped.replace("\0", " ")


def para(text: str) -> str:
    return wrap(text)


def bullet(text: str) -> str:
    return wrap(text, "- ", "  ")


def packager_settings(args: str) -> dict:
    words = shlex.split(args)
    flags = {}
    for i, word in enumerate(words):
        if word.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
            flags[word[2:]] = words[i + 1]
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--doc", type=Path, required=True)
    opts = parser.parse_args()
    work = opts.work

    run = read_kv(work / "run.txt")
    summaries = {key: json.loads((work / f"{key}.json").read_text()) for key, _ in PROXIES}
    settings = summaries["edge"]["settings"]
    for key in ("live_vus", "vod_vus", "duration", "ramp"):
        if summaries["nginx"]["settings"][key] != settings[key]:
            raise SystemExit(f"the two runs differ in {key}: not a comparison")
    nginx_log = nginx_origin(
        work / "nginx" / "access.log", run["agent"], settings["live_path"]
    )

    logs = Path(run["streamer_logs"]) if run.get("streamer_logs") else None
    if logs is not None and not any(logs.glob("streamer-*.log")):
        logs = None
    rows = {}
    for key, label in PROXIES:
        s = summaries[key]
        segs = metric(s, "segments", "count")
        lists = metric(s, "playlists", "count")
        seconds = metric_seconds(s)
        origin = metric(s, "origin_requests", "count") if key == "edge" else nginx_log["requests"]
        rows[key] = {
            "label": label,
            "requests": segs + lists,
            "segments": segs,
            "errors": metric(s, "viewer_errors", "passes"),
            "error_rate": metric(s, "viewer_errors", "rate"),
            "p50": metric(s, "segment_time", "med"),
            "p95": metric(s, "segment_time", "p(95)"),
            "p99": metric(s, "segment_time", "p(99)"),
            "playlist_p99": metric(s, "playlist_time", "p(99)"),
            "hit": metric(s, "edge_hit", "rate"),
            "origin": origin,
            "cpu_s": int((work / f"{key}.cpu_ms").read_text()) / 1000,
            "other_s": int((work / f"{key}.other_ms").read_text()) / 1000,
            "seconds": seconds,
            "gbps": metric(s, "data_received", "count") * 8 / seconds / 1e9 if seconds else 0,
            "new_segments": metric(s, "live_new_segments", "count"),
            "streamer_logged": streamer_requests(logs, work / f"{key}.window") if logs else None,
            "intervals": metric(s, "live_refresh_intervals", "count"),
            "crossed": thresholds(s),
            "status": int((work / f"{key}.status").read_text()),
        }

    table = [
        "| Proxy | Viewer requests (segments) | Errors | Segment time p50 / p95 / p99 | Playlist p99 | Hit ratio | Origin requests | Proxy CPU |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for key, _ in PROXIES:
        r = rows[key]
        errors = num(r["errors"])
        if r["errors"]:
            errors += f" ({r['error_rate'] * 100:.3f} %)"
        table.append(
            f"| {r['label']} | {num(r['requests'])} ({num(r['segments'])}) | {errors} | "
            f"{ms(r['p50'])} / {ms(r['p95'])} / {ms(r['p99'])} ms | {ms(r['playlist_p99'])} ms | "
            f"{r['hit'] * 100:.2f} % | {num(r['origin'])} | {r['cpu_s']:.1f} core-s |"
        )
    table = "\n".join(table)
    print(table)

    e, n = rows["edge"], rows["nginx"]
    pk = packager_settings(run.get("packager_args", ""))
    try:
        health = json.loads(run.get("packager_health") or "{}")
    except json.JSONDecodeError:
        health = {}
    source = health.get("source") or f"--device {pk.get('device', '?')}"
    source = "its test pattern" if source == "test-pattern" else f"`{source}`"
    edge_fresh = int(run["edge_fresh_ms"]) / 1000
    ttl = int(run["nginx_ttl"])
    live, vod = settings["live_vus"], settings["vod_vus"]
    nginx_version = run["nginx"].removeprefix("nginx/")

    def verdict(r):
        if not r["crossed"]:
            return f"{r['label']} met them"
        return f"{r['label']} crossed {', '.join(r['crossed'])}"

    def per(r):
        return f"one per {r['requests'] / r['origin']:,.0f}" if r["origin"] else "none"

    if e["p99"] < n["p99"]:
        p99 = f"{ms(n['p99'] - e['p99'])} ms lower than nginx's"
    elif e["p99"] > n["p99"]:
        p99 = f"{ms(e['p99'] - n['p99'])} ms higher than nginx's"
    else:
        p99 = "the same as nginx's"
    if vod == 0 and e["new_segments"] > 0:
        origin_detail = (
            f"With live viewers only, the edge's count is "
            f"{e['origin'] / (e['new_segments'] + e['intervals']):.2f} origin requests per (new "
            f"segment + {edge_fresh:g} s freshness interval): {num(e['new_segments'])} new "
            f"segments and {num(e['intervals'])} intervals in its run, where 1.00 is one request "
            f"each."
        )
    else:
        origin_detail = (
            f"Both counts include the VoD viewers' playlist refreshes; a live-only run "
            f"(`-e VOD_VUS=0`) also gives the edge's origin requests per new segment and "
            f"freshness interval. {num(e['new_segments'])} new live segments appeared during the "
            f"edge's run."
        )
    if nginx_log["live_playlist"] > 1:
        origin_detail += (
            f" nginx fetched the live playlist {num(nginx_log['live_playlist'])} times, "
            f"typically {nginx_log['live_playlist_gap']:.2f} s apart (the median gap)."
        )
    if e["streamer_logged"] is not None:
        origin_detail += (
            f" The streamers' own access logs, over each k6 run from its start to its end (with "
            f"k6's setup and teardown reads), show {num(e['streamer_logged'])} "
            f"requests during the edge's run and {num(n['streamer_logged'])} during nginx's."
        )

    paragraphs = [
        BEGIN,
        "## A crowd of viewers (k6)",
        para(
            "**Goal:** 1,000 live viewers (the k6 script's default crowd) on one edge with zero "
            "errors, their segment p99 reported beside nginx's in front of the same streamers "
            "under the same k6 script, and the origin seeing about one request per new segment "
            "and per playlist refresh interval, not one per viewer. This section is written by "
            "`bash benches/k6/compare.sh` (`make viewers`) from the two runs' k6 summaries; "
            "nothing in it is typed by hand."
        ),
        para(
            f"Run of {run['date']}, commit {run['commit']}, {run['cores']} cores "
            f"({run['cpu']}); k6 {run['k6']}, {run['dime']}, nginx {nginx_version}. The stack "
            f"is `make run` (release build): the packager's live channel from {source} at "
            f"{pk.get('size', '?')}, {pk.get('fps', '?')} fps, {spaced(pk.get('bitrate', '?'))}bit/s, "
            f"{spaced(pk.get('segment', '?'))} segments, a window of {pk.get('window', '?')}; the VoD title "
            f"`sample`; two streamers ({', '.join(run['streamers'].split())}). The edge runs "
            f"`{run['edge_config']}`: its video policy keeps a live playlist fresh "
            f"{edge_fresh:g} s (half the route's target duration, {spaced(run['target_duration'])}). "
            f"[nginx](../benches/k6/nginx.conf) caches in front of the same streamers with "
            f"`proxy_cache_lock`, `proxy_cache_use_stale updating error timeout`, kept-alive "
            f"upstream connections, segments as fresh as the origin says (a year) and playlists "
            f"`proxy_cache_valid 200 {ttl}s`, the shortest it can say: nginx counts lifetimes in "
            f"whole seconds and a copy stays fresh until its clock's second has moved past the "
            f"expiry, so a stored playlist is fresh for {ttl} to {ttl + 1} s, and close to "
            f"{ttl + 1} s when it is refetched as a second turns, against the edge's "
            f"{edge_fresh:g} s (fewer origin fetches and more hits for nginx). Its cache lock "
            f"makes a waiting request look again every 500 ms, where the edge wakes its waiters "
            f"when the response header arrives."
        ),
        para(
            f"[benches/k6/viewers.js](../benches/k6/viewers.js) played {num(live)} live and "
            f"{num(vod)} VoD viewers, arriving over {spaced(settings['ramp'])} and then staying "
            f"{spaced(settings['duration'])}, against the edge and, {run['pause']} s later, against nginx "
            f"started for its run with an empty cache. Before each run the VoD title's playlist "
            f"and {run.get('vod_segments', '?')} segments were fetched once through the proxy, "
            f"so both began with it stored."
        ),
        table,
        bullet(
            "**Segment time, playlist p99**: from sending the request to the last byte of the "
            "answer, as k6 times it. Everything (k6, the proxy, the packager's encoder, both "
            f"streamers) shares the {run['cores']} cores, so these include waiting for a CPU."
        )
        + "\n"
        + bullet(
            "**Errors**: viewer requests answered other than 200, a playlist that is not HLS, "
            "an empty segment."
        )
        + "\n"
        + bullet(
            "**Hit ratio**: viewer responses whose `X-Cache-Status` is HIT, STALE or UPDATING; "
            "nginx sends its `$upstream_cache_status` under that name, in the same words."
        )
        + "\n"
        + bullet(
            "**Origin requests**: for the edge, the growth of "
            '`dime_upstream_requests_total{pool="streamers"}` on its admin `/metrics` over the '
            "run; for nginx, the addresses in `$upstream_addr` of its access log (a retry names "
            "two), without compare.sh's start-up check and warm-up and k6's own reads in setup "
            "and teardown, which the edge's count leaves out too."
        )
        + "\n"
        + bullet(
            "**Proxy CPU**: user and system CPU time of the proxy's processes over the k6 run "
            "(the edge's one process; nginx's master and workers), from `/proc`. *Other work* "
            "below is the machine's busy CPU time (`/proc/stat`) over the run less that of the "
            "stack, nginx, k6 and the script: whatever else the machine was doing."
        ),
        para(
            f"dime-edge's segment p99 was {ms(e['p99'])} ms, {p99} {ms(n['p99'])} ms (p95 "
            f"{ms(e['p95'])} against {ms(n['p95'])} ms), for {e['cpu_s']:.1f} against "
            f"{n['cpu_s']:.1f} core-seconds of proxy CPU. Other work on the machine took "
            f"{e['other_s']:.1f} core-seconds during the edge's run and {n['other_s']:.1f} during "
            f"nginx's, of the {e['seconds'] * int(run['cores']):.0f} and "
            f"{n['seconds'] * int(run['cores']):.0f} its cores had. The viewers received "
            f"{e['gbps']:.2f} Gbit/s from the edge and {n['gbps']:.2f} Gbit/s from nginx. "
            f"viewers.js's thresholds (no viewer error, segment p95 under "
            f"{settings['p95_segment_ms']} ms): {verdict(e)}; {verdict(n)}."
        ),
        para(
            f"The origin line is the point of a cache: {num(e['requests'])} viewer requests cost "
            f"the streamers {num(e['origin'])} requests through the edge ({per(e)}) and "
            f"{num(n['requests'])} cost {num(n['origin'])} through nginx ({per(n)}): new "
            f"segments and playlist refreshes, each fetched once however many viewers ask, so "
            f"origin load does not grow with the audience. {origin_detail}"
        ),
    ]
    section = "\n\n".join(paragraphs[1:])
    section = f"{BEGIN}\n{section}\n{END}\n"
    doc = opts.doc
    text = doc.read_text() if doc.exists() else ""
    if SECTION.search(text):
        text = SECTION.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)
    print(f"wrote the k6-viewers section of {doc}")


if __name__ == "__main__":
    main()
