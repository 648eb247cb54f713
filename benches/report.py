#!/usr/bin/env python3
"""Turns the rows benches/run.sh measured into docs/benchmarks.md (and prints the tables).

Usage: report.py [--only invalidation|idle] RESULTS_DIR DOC
RESULTS_DIR (target/bench/full or target/bench/quick) holds results.tsv ("proxy round scenario
metric value" rows), machine.txt, notes.txt, burst.txt, memory.txt, invalidation.txt, load.txt
and perf-*.txt; DOC is the Markdown file to write. With --only invalidation (the results of
`BENCH_ONLY=invalidation bash benches/run.sh`), DOC holds that benchmark alone; likewise
--only idle.
"""

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

PROXIES = ["dime", "nginx", "varnish"]
NAMES = {"dime": "dime-edge", "nginx": "nginx", "varnish": "Varnish"}

# The hit tests: scenario, label, throughput metric ("rps" or "mibps"). Varnish has no TLS of
# its own, so its HTTPS and HTTP/2 cells stay empty.
HITS = [
    ("playlist_1k", "1 KB playlist hit, HTTP/1.1", "rps"),
    ("playlist_1k_tls", "1 KB playlist hit, HTTPS/1.1", "rps"),
    ("playlist_1k_h2", "1 KB playlist hit, HTTP/2 over TLS (8 connections × 32 streams)", "rps"),
    ("playlist_1k_log", "1 KB playlist hit, HTTP/1.1, access log on", "rps"),
    ("playlist_1k_tls_log", "1 KB playlist hit, HTTPS/1.1, access log on", "rps"),
    ("segment_1m", "1 MiB segment hit, HTTP/1.1", "mibps"),
    ("segment_1m_tls", "1 MiB segment hit, HTTPS/1.1", "mibps"),
    ("segment_4m", "4 MiB segment hit, HTTP/1.1", "mibps"),
]


def load(work: Path, max_other: float) -> tuple:
    """(proxy, scenario, metric) -> list of values, one per round; and the set of
    (proxy, round, scenario) runs that other processes disturbed."""
    values = defaultdict(list)
    rows = []
    disturbed = set()
    for line in (work / "results.tsv").read_text().splitlines():
        proxy, rnd, scenario, metric, value = line.split("\t")
        rows.append((proxy, rnd, scenario, metric, value))
        if metric == "other_cpu_pct" and float(value) > max_other:
            disturbed.add((proxy, rnd, scenario))
    for proxy, rnd, scenario, metric, value in rows:
        try:
            values[(proxy, scenario, metric)].append((rnd, float(value)))
        except ValueError:
            pass  # "None" and the like: a run that produced nothing is left out, and noted
    return values, disturbed


def keyvalues(path: Path) -> dict:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            out[key] = value
    return out


def counts(histogram: dict, prefix: str = "") -> str:
    """{"HIT": 199, "MISS": 1} -> "199 × HIT, 1 × MISS"."""
    ranked = sorted(histogram.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} × {prefix}{k}" for k, n in ranked)


def fmt(v, digits: int) -> str:
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


INVAL_TARGET_PCT = 5.0


def ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "n/a"


def verdict(ok) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def thousands(n: str) -> str:
    """"10000" -> "10,000"; anything else as it is."""
    return f"{int(n):,}" if n.isdigit() else n


def invalidation(median, values, disturbed, machine: dict) -> tuple:
    """The invalidation benchmark: (section text, target row), or ("", "") when it did not run."""
    phases = [("inval_before", "before"), ("inval_during", "during invalidating POSTs"),
              ("inval_control", "during POSTs to uncached URLs"),
              ("inval_direct", "during POSTs straight to the origin"), ("inval_after", "after")]
    if median("dime", "inval_before", "rps") is None:
        return "", ""
    objects = thousands(machine.get("inval_objects", "?"))
    posts = thousands(machine.get("inval_posts", "?"))

    def ratio(metric: str, phase: str) -> str:
        a, b = median("dime", phase, metric), median("dime", "inval_before", metric)
        return f"{a / b:.3f}×" if a is not None and b else "n/a"

    lines = [
        f"| 1 KB hits on one object, {objects} objects cached | "
        + " | ".join(name for _, name in phases)
        + " | invalidating / before | uncached / before | straight to the origin / before "
        "| after / before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, metric, digits in (("requests/s", "rps", 0),
                                  ("requests/s per proxy core-second", "rps_per_core", 0),
                                  ("p99 latency, ms", "p99_ms", 2),
                                  ("proxy CPU, % of its core", "proxy_cpu_pct", 0),
                                  ("wrk CPU, % of its core", "wrk_cpu_pct", 0)):
        cells = [fmt(median("dime", ph, metric), digits) for ph, _ in phases]
        lines.append(f"| {label} | {' | '.join(cells)} | {ratio(metric, 'inval_during')} "
                     f"| {ratio(metric, 'inval_control')} | {ratio(metric, 'inval_direct')} "
                     f"| {ratio(metric, 'inval_after')} |")
    rounds = []
    for ph, name in phases:
        vs = values.get(("dime", ph, "rps_per_core"), [])
        rounds.append(f"{name} " + " / ".join(
            fmt(v, 0) + ("*" if ("dime", r, ph) in disturbed else "") for r, v in vs))
    cached = median("dime", "invalidation", "objects_cached")
    after = median("dime", "invalidation", "objects_after_posts")
    ok = median("dime", "inval_during", "posts_ok")
    took = median("dime", "inval_during", "posts_elapsed_s")
    small_objects = median("dime", "invalidation", "objects_small")
    small = median("dime", "invalidation", "post_cpu_us_small")
    large = median("dime", "invalidation", "post_cpu_us_large")
    growth = f" ({large / small:.2f}×)" if small and large is not None else ""
    text = "\n".join(lines) + (
        f"\n\nInvalidating POSTs: {fmt(ok, 0)} of {posts} answered 200 by the origin, sent over "
        f"{fmt(took, 1)} s inside their run; objects cached {fmt(cached, 0)} before them, "
        f"{fmt(after, 0)} after (each POST invalidates its own URL). Requests/s per proxy "
        "core-second, per round: " + "; ".join(rounds) + " (a `*` marks a run during which other "
        f"processes used more than {float(machine.get('max_other', '15')):.0f} % of a core).\n\n"
        f"Edge CPU time per invalidating POST, {posts} sent back to back with nothing else "
        f"running: {fmt(small, 0)} µs with {fmt(small_objects, 0)} objects cached, {fmt(large, 0)} µs "
        f"with {fmt(after, 0)} objects cached{growth}.\n")
    before = median("dime", "inval_before", "rps_per_core")
    during = median("dime", "inval_during", "rps_per_core")
    control = median("dime", "inval_control", "rps_per_core")
    direct = median("dime", "inval_direct", "rps_per_core")
    # The drop is measured against the same POST traffic sent past the edge: on this 2-core
    # machine the POST client and the origin, on the load core, slow the edge's hits by about as
    # much with no POST in the edge at all (see benches/analysis.md), and the target is about
    # what invalidation costs the edge. Without that run, against "before".
    baseline, baseline_name = (direct, "the same POSTs sent past the edge") if direct else (before, "before")
    if baseline and during is not None:
        change = (during / baseline - 1) * 100
        measured = f"{change:+.1f} % ({during / baseline:.3f}×) against {baseline_name}"
        if before and direct:
            measured += f"; against no POSTs at all: {(during / before - 1) * 100:+.1f} %"
        if before and control is not None:
            measured += (f"; POSTs to uncached URLs against no POSTs: "
                         f"{(control / before - 1) * 100:+.1f} %")
        verdict = "**met**" if change > -INVAL_TARGET_PCT else "**missed**"
    else:
        measured, verdict = "n/a", "n/a"
    target = (f"| Hits while {posts} POSTs invalidate, {objects} objects cached: requests/s per "
              f"proxy core-second drop < {INVAL_TARGET_PCT:.0f} % | {measured} | {verdict} |")
    return text, target


INVAL_METHOD = """**Invalidation (dime-edge only).** A small Python origin (`benches/slow_origin.py
--delay 0 --size 1024 --max-age 3600`, route `/inval/`) serves 1 KiB objects and accepts POSTs
with `200`. In each round dime-edge, freshly started, first caches {posts} objects and takes
{posts} POSTs to them back to back, nothing else running (its CPU time per POST with a small
cache). Then it caches {objects} more distinct objects (`benches/client.py fetch -n`) and one
more, the hot object, and four {duration} s hit runs on the hot object (32 connections) follow:
before; during {posts} POSTs to the first {posts} cached URLs (`benches/client.py post`: one
connection, evenly spread over 80 % of the run, starting 0.5 s into it; each one invalidates its
URL, RFC 9111 §4.4); during {posts} POSTs to URLs that are not cached (the control: the same
proxying, nothing to invalidate); during {posts} POSTs sent straight to the origin, past the
edge (the second control: what the POST client and the origin on the other core cost the
edge's hits, with no POST in the edge; the three rotate in order between rounds); and after. Last,
{posts} POSTs back to back to the next {posts} cached URLs give the CPU time per POST with the
large cache. The script checks that the object count fell by exactly {posts}, a POSTed URL is a
MISS and an untouched one still a HIT. The target compares requests per proxy core-second
during the invalidating POSTs against the run with the same POSTs sent past the edge: the POST
client and the origin share wrk's core and slow the edge's hits by themselves (raw requests/s
can also measure wrk), so that run, not the quiet "before", isolates what the POSTs cost inside
the edge. nginx and Varnish do not invalidate on POST without
extra configuration, so they are not in this test. `BENCH_ONLY=invalidation bash
benches/run.sh` runs it alone (no nginx, Varnish or media), writing
`target/bench/invalidation/benchmarks.md`."""


IDLE_METHOD = """**Idle connections.** [benches/idle.py](../benches/idle.py) opens {idle_count} HTTP/1.1
connections to each proxy (from 200 source addresses in turn, so source ports never run out), sends nothing for
2 s, reads the RSS of the proxy's processes, sends one request of the 1 KB playlist on each,
reads every response, waits 2 s and reads the RSS again; both figures are per connection, over
the RSS before the connections were opened. Then half as many HTTP/2 connections over TLS
(handshake, preface and SETTINGS, then idle; one request each), for dime-edge and nginx. Then
{rounds} pair(s) of 1 KB hit runs on 32 connections: one alone, and right after it one while
{idle_hold} more idle HTTP/1.1 connections are held open by another process (opened before the
run, closed after it). A p99 of one run moves by tens of percent between runs on a shared host,
so the target reads the ratio within each pair, beside / alone, and takes the median over the
pairs. The issue asks for 100,000 held; one process here may
hold at most {nofile} open files (the hard limit, which only a process with `CAP_SYS_RESOURCE`
may raise), so the test holds what fits beside the measured connections, at most 100,000.
dime-edge runs with `max_connections` and nginx with `worker_connections` 3,000 above that.
`BENCH_ONLY=idle bash benches/run.sh` runs this test alone (all three proxies), writing
`target/bench/idle/benchmarks.md`."""


def idle_rows(median, machine: dict) -> list:
    """The idle test's rows of the main table: RSS per idle connection, RSS with the held
    connections, and the 1 KB hit p99 alone and beside them (medians over the rounds)."""
    hold = machine.get("idle_hold", "?")
    rows = []
    for label, metric, digits in (
        ("Idle HTTP/1.1 connection: RSS per connection before its first request, KiB", "h1_idle_kib", 1),
        ("… after one request on it, KiB", "h1_after_request_kib", 1),
        ("Idle HTTP/2 connection over TLS: RSS per connection before a request, KiB", "h2_idle_kib", 1),
        ("… after one request on it, KiB", "h2_after_request_kib", 1),
        (f"RSS with {thousands(hold)} idle HTTP/1.1 connections held, MiB", "held_rss_mib", 0),
    ):
        d, n, v = (median(p, "idle", metric) for p in PROXIES)
        rows.append(f"| {label} | {fmt(d, digits)} | {fmt(n, digits)} | {fmt(v, digits)} "
                    f"| {ratio(d, n)} | {ratio(v, n)} |")
    for label, scenario in (("1 KB hits, HTTP/1.1, alone (idle test): p99 latency, ms", "playlist_1k_alone"),
                            (f"… beside {thousands(hold)} idle connections: p99 latency, ms",
                             "playlist_1k_beside_idle")):
        d, n, v = (median(p, scenario, "p99_ms") for p in PROXIES)
        rows.append(f"| {label} | {fmt(d, 2)} | {fmt(n, 2)} | {fmt(v, 2)} | {ratio(d, n)} | {ratio(v, n)} |")
    return rows


def idle_pairs(values, disturbed, proxy: str) -> list:
    """(round, p99 alone, p99 beside, beside / alone, disturbed) for each pair of the idle test."""
    alone = dict(values.get((proxy, "playlist_1k_alone", "p99_ms"), []))
    beside = dict(values.get((proxy, "playlist_1k_beside_idle", "p99_ms"), []))
    return [(r, alone[r], beside[r], beside[r] / alone[r],
             (proxy, r, "playlist_1k_alone") in disturbed or (proxy, r, "playlist_1k_beside_idle") in disturbed)
            for r in sorted(alone) if r in beside and alone[r]]


def idle_spread(values, disturbed) -> list:
    """Every pair of the idle test, per proxy (a `*` marks a pair with a disturbed run): the p99s,
    their ratio, and the requests per proxy core-second of both runs, which tell more work per
    request (fewer per core-second beside) from the same work served later."""
    rows = ["| Proxy | p99 alone / beside, ms, per pair | beside / alone, per pair | median "
            "| requests per core-second alone / beside, per pair | held connections the proxy closed, per pair |",
            "|---|---|---|---:|---|---|"]
    for p in PROXIES:
        pairs = idle_pairs(values, disturbed, p)
        alone = dict(values.get((p, "playlist_1k_alone", "rps_per_core"), []))
        beside = dict(values.get((p, "playlist_1k_beside_idle", "rps_per_core"), []))
        rates = " · ".join(f"{alone[r]:,.0f} / {beside[r]:,.0f}" for r in sorted(alone) if r in beside)
        closed = " / ".join(f"{v:.0f}" for _, v in values.get((p, "idle", "held_closed"), []))
        rows.append(
            f"| {NAMES[p]} | {' · '.join(f'{a:.2f} / {b:.2f}' + ('*' if d else '') for _, a, b, _, d in pairs) or 'n/a'} "
            f"| {' / '.join(f'{x:.2f}×' for _, _, _, x, _ in pairs) or 'n/a'} "
            f"| {f'{statistics.median(x for _, _, _, x, _ in pairs):.2f}×' if pairs else 'n/a'} "
            f"| {rates or 'n/a'} | {closed or 'n/a'} |")
    return rows


def idle_target(median, values, disturbed, machine: dict) -> str:
    """The target row: dime-edge's p99 beside the held connections within 10 % of the run
    without, by the median of the ratios within each pair."""
    alone, beside = (median("dime", sc, "p99_ms") for sc in ("playlist_1k_alone", "playlist_1k_beside_idle"))
    pairs = idle_pairs(values, disturbed, "dime")
    clean = [x for _, _, _, x, d in pairs if not d] or [x for _, _, _, x, _ in pairs]
    within = statistics.median(clean) if clean else None
    return (
        f"| {thousands(machine.get('idle_hold', '?'))} idle connections held (100,000 asked; this machine allows "
        f"{thousands(machine.get('nofile', '?'))} open files per process): 1 KB hit p99 within 10 % "
        f"of the run without | {fmt(beside, 2)} ms vs {fmt(alone, 2)} ms (medians); beside / alone "
        f"within each pair, median of {len(clean)}: {fmt(within, 2)}× "
        f"| {verdict(None if within is None else within <= 1.1)} |"
    )


def alone_page(work: Path, doc: Path, machine: dict, only: str, title: str, runs: str, body: list,
               target: str, method: str) -> None:
    """Writes DOC for one test run alone (`BENCH_ONLY=ONLY`): what ran, BODY, the target row,
    what the run saw and the method."""
    notes = (work / "notes.txt").read_text().splitlines() if (work / "notes.txt").exists() else []
    out = "\n".join([
        f"# {title}",
        "",
        f"`BENCH_ONLY={only} bash benches/run.sh`, run of {machine.get('date', '?')}, commit "
        f"{machine.get('commit', '?')}: {runs}; {machine.get('cpu', '?')}, "
        f"{machine.get('cores', '?')} cores, {machine.get('wrk', '?')}.",
        "",
        *body,
        "| Target | Measured | Result |",
        "|---|---|---|",
        target,
        "",
        "## What the run saw",
        "",
        "\n".join(f"- {n}" for n in notes) or "- Nothing unexpected: every check passed.",
        "",
        "## Method",
        "",
        method,
        "",
    ])
    print(out)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(out)


def only_idle(work: Path, doc: Path, median, values, disturbed, machine: dict) -> None:
    alone_page(
        work, doc, machine, "idle", "Idle-connection benchmark",
        f"{machine.get('rounds', '?')} pair(s) of {machine.get('duration', '?')} s wrk runs per proxy",
        ["| Metric | dime-edge | nginx | Varnish | dime-edge / nginx | Varnish / nginx |",
         "|---|---|---|---|---|---|",
         *idle_rows(median, machine),
         "",
         *idle_spread(values, disturbed),
         ""],
        idle_target(median, values, disturbed, machine),
        IDLE_METHOD.format(idle_count=thousands(machine.get("idle_count", "?")),
                           idle_hold=thousands(machine.get("idle_hold", "?")),
                           nofile=thousands(machine.get("nofile", "?")),
                           rounds=machine.get("rounds", "?")),
    )


def only_invalidation(work: Path, doc: Path, median, values, disturbed, machine: dict) -> None:
    text, target = invalidation(median, values, disturbed, machine)
    alone_page(
        work, doc, machine, "invalidation", "Invalidation benchmark",
        f"{machine.get('rounds', '?')} round(s) of "
        f"{machine.get('inval_duration', machine.get('duration', '?'))} s per wrk run",
        [text or "(no results)"],
        target,
        INVAL_METHOD.format(objects=thousands(machine.get("inval_objects", "?")),
                            posts=thousands(machine.get("inval_posts", "?")),
                            duration=machine.get("inval_duration", "?")),
    )


def main() -> None:
    args = sys.argv[1:]
    only = None
    if args[:1] == ["--only"]:
        only, args = args[1], args[2:]
        if only not in ("invalidation", "idle"):
            raise SystemExit(f"--only {only}: unknown; the parts that run alone are invalidation and idle")
    work, doc = Path(args[0]), Path(args[1])
    machine = keyvalues(work / "machine.txt")
    max_other = float(machine.get("max_other", "15"))
    values, disturbed = load(work, max_other)

    def median(proxy: str, scenario: str, metric: str):
        """Median over the rounds; runs other processes disturbed count only if all were."""
        vs = values.get((proxy, scenario, metric), [])
        clean = [v for r, v in vs if (proxy, r, scenario) not in disturbed]
        vs = clean or [v for _, v in vs]
        return statistics.median(vs) if vs else None

    if only == "idle":
        only_idle(work, doc, median, values, disturbed, machine)
        return
    if only:
        only_invalidation(work, doc, median, values, disturbed, machine)
        return
    inval_text, inval_target = invalidation(median, values, disturbed, machine)

    def memory_mib(proxy: str):
        rss, tmpfs = median(proxy, "memory", "rss_mib"), median(proxy, "memory", "tmpfs_mib")
        return None if rss is None else rss + (tmpfs or 0)

    rounds = machine.get("rounds", "?")
    cached = median("dime", "memory", "cached_mib") or median("nginx", "memory", "cached_mib")
    # label, scenario, metric, digits
    hit_rows = []
    for scenario, label, metric in HITS:
        unit = "requests/s" if metric == "rps" else "MiB/s"
        hit_rows += [
            (f"{label}: {unit}", scenario, metric, 0),
            (f"{label}: p99 latency, ms", scenario, "p99_ms", 2),
            (f"{label}: {unit} per proxy core-second", scenario, f"{metric}_per_core", 0),
        ]
    rows = hit_rows + [
        (f"{200} concurrent cold requests: origin requests", "coalesce", "origin_requests", 0),
        ("… slowest of those responses, s", "coalesce", "slowest_s", 2),
    ]
    table = [
        "| Metric | dime-edge | nginx | Varnish | dime-edge / nginx | Varnish / nginx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, scenario, metric, digits in rows:
        d, n, v = (median(p, scenario, metric) for p in PROXIES)
        table.append(
            f"| {label} | {fmt(d, digits)} | {fmt(n, digits)} | {fmt(v, digits)} "
            f"| {ratio(d, n)} | {ratio(v, n)} |"
        )
    mem = {p: memory_mib(p) for p in PROXIES}
    table.append(
        f"| Memory holding {fmt(cached, 0)} MiB of objects, MiB | {fmt(mem['dime'], 0)} "
        f"| {fmt(mem['nginx'], 0)} | {fmt(mem['varnish'], 0)} "
        f"| {ratio(mem['dime'], mem['nginx'])} | {ratio(mem['varnish'], mem['nginx'])} |"
    )
    over = {p: median(p, "memory", "overhead_pct") for p in PROXIES}
    table.append(
        f"| … overhead over the cached bytes | {fmt(over['dime'], 1)} % | {fmt(over['nginx'], 1)} % "
        f"| {fmt(over['varnish'], 1)} % | | |"
    )
    table.extend(idle_rows(median, machine))

    # Every round, so the reader sees the spread behind each median.
    spread = ["| Metric | dime-edge | nginx | Varnish |", "|---|---|---|---|"]
    for label, scenario, metric, digits in hit_rows:
        cells = []
        for p in PROXIES:
            vs = values.get((p, scenario, metric), [])
            cells.append(" / ".join(fmt(v, digits) + ("*" if (p, r, scenario) in disturbed else "")
                                    for r, v in vs) or "n/a")
        spread.append(f"| {label} | {' | '.join(cells)} |")

    # The same ratios taken within each round: the rounds are interleaved, so a host that is
    # slower for a few minutes slows both proxies of one round, where the medians above may
    # pair one proxy's slow round with the other's fast one.
    paired = ["| Hit test, per proxy core-second | dime-edge / nginx, per round | median "
              "| Varnish / nginx, per round | median |", "|---|---|---:|---|---:|"]
    for scenario, label, metric in HITS:
        cells = []
        for p in ("dime", "varnish"):
            own = dict(values.get((p, scenario, f"{metric}_per_core"), []))
            base = dict(values.get(("nginx", scenario, f"{metric}_per_core"), []))
            rs = [(r, own[r] / base[r]) for r in sorted(own) if r in base and base[r]]
            cells.append(" / ".join(f"{x:.2f}×" + ("*" if (p, r, scenario) in disturbed
                                                     or ("nginx", r, scenario) in disturbed else "")
                                    for r, x in rs) or "n/a")
            cells.append(f"{statistics.median(x for _, x in rs):.2f}×" if rs else "n/a")
        paired.append(f"| {label} | {' | '.join(cells)} |")

    # Which side was busy: a proxy under 100 % of its core was not the limit; a wrk near
    # 100 % was.
    busy = ["| Hit test | dime-edge | nginx | Varnish |", "|---|---|---|---|"]
    for scenario, label, _ in HITS:
        cells = []
        for p in PROXIES:
            pc, wc = median(p, scenario, "proxy_cpu_pct"), median(p, scenario, "wrk_cpu_pct")
            oc = median(p, scenario, "other_cpu_pct")
            cells.append(f"{fmt(pc, 0)} % / {fmt(wc, 0)} % / {fmt(oc, 0)} %")
        busy.append(f"| {label} | {' | '.join(cells)} |")

    # Targets.
    targets = ["| Target | Measured | Result |", "|---|---|---|"]

    def per_core(proxy: str, scenario: str):
        metric = dict((h[0], h[2]) for h in HITS)[scenario]
        return median(proxy, scenario, f"{metric}_per_core")

    for scenario, want in (("playlist_1k", 1.0), ("playlist_1k_tls", 1.0), ("playlist_1k_h2", 1.0),
                           ("playlist_1k_log", 1.0), ("playlist_1k_tls_log", 1.0),
                           ("segment_1m_tls", 1.2)):
        d, n = per_core("dime", scenario), per_core("nginx", scenario)
        label = dict((h[0], h[1]) for h in HITS)[scenario]
        targets.append(
            f"| {label}: ≥ {want:.1f}× nginx per proxy core-second | {ratio(d, n)} "
            f"| {verdict(None if d is None or not n else d / n >= want)} |"
        )
    d, n = median("dime", "playlist_1k", "p99_ms"), median("nginx", "playlist_1k", "p99_ms")
    targets.append(
        f"| 1 KB playlist hit, HTTP/1.1: p99 latency no worse than nginx | {fmt(d, 2)} ms vs {fmt(n, 2)} ms "
        f"| {verdict(None if d is None or n is None else d <= n)} |"
    )
    for scenario in ("segment_1m", "segment_4m"):
        d, n, v = (per_core(p, scenario) for p in PROXIES)
        label = dict((h[0], h[1]) for h in HITS)[scenario]
        ok = None if d is None or not n or not v else d >= v and d >= 0.8 * n
        targets.append(
            f"| {label}: ≥ Varnish and ≥ 0.8× nginx per proxy core-second "
            f"| {ratio(d, v)} of Varnish, {ratio(d, n)} of nginx | {verdict(ok)} |"
        )
    d = median("dime", "coalesce", "origin_requests")
    ok = median("dime", "coalesce", "ok")
    targets.append(
        f"| 200 concurrent cold requests: exactly 1 origin request (and 200 × 200 OK) "
        f"| {fmt(d, 0)} request(s), {fmt(ok, 0)} × 200 OK "
        f"| {verdict(None if d is None else d == 1 and ok == 200)} |"
    )
    targets.append(
        f"| Memory overhead < 15 % of the cached bytes | {fmt(over['dime'], 1)} % "
        f"| {verdict(None if over['dime'] is None else over['dime'] < 15)} |"
    )
    if inval_target:
        targets.append(inval_target)
    h1 = [median("dime", "idle", m) for m in ("h1_idle_kib", "h1_after_request_kib")]
    targets.append(
        f"| RSS per idle HTTP/1.1 connection, before and after one request: ≤ 4 KiB "
        f"| {fmt(h1[0], 1)} / {fmt(h1[1], 1)} KiB "
        f"| {verdict(None if None in h1 else max(h1) <= 4)} |"
    )
    h2 = [(median("dime", "idle", m), median("nginx", "idle", m))
          for m in ("h2_idle_kib", "h2_after_request_kib")]
    worst = max((d / n for d, n in h2 if d is not None and n and n > 0), default=None)
    targets.append(
        f"| RSS per idle HTTP/2 connection over TLS: ≤ 4× nginx "
        f"| {' / '.join(ratio(d, n) for d, n in h2)} (before / after a request) "
        f"| {verdict(None if worst is None else worst <= 4)} |"
    )
    targets.append(idle_target(median, values, disturbed, machine))

    # What the run saw besides the numbers.
    observed = []
    notes = (work / "notes.txt").read_text().splitlines() if (work / "notes.txt").exists() else []
    observed += [f"- {n}" for n in notes] or ["- Every warmed object was a HIT before and after its runs; no wrk errors."]
    for line in (work / "burst.txt").read_text().splitlines() if (work / "burst.txt").exists() else []:
        proxy, _, js = line.partition(" ")
        b = json.loads(js)
        observed.append(
            f"- Cold burst, {NAMES[proxy]}: {counts(b['status'], 'HTTP ')}; X-Cache-Status "
            f"{counts(b['cache'])}; median {b['median_s']} s, slowest {b['slowest_s']} s"
            + (f"; client errors {counts(b['errors'])}" if b["errors"] else "")
        )
    for p in PROXIES:
        idle = median(p, "memory", "idle_rss_mib")
        rss, pss, tmpfs = (median(p, "memory", m) for m in ("rss_mib", "pss_mib", "tmpfs_mib"))
        hits = median(p, "memory", "second_pass_hits")
        observed.append(
            f"- Memory, {NAMES[p]}: RSS {fmt(idle, 0)} MiB idle, {fmt(rss, 0)} MiB full "
            f"(PSS {fmt(pss, 0)} MiB)" + (f", plus {fmt(tmpfs, 0)} MiB of cache files on tmpfs" if tmpfs else "")
            + f"; {fmt(hits, 0)} of {machine.get('rss_objects', '?')} objects were HITs on the second pass."
        )
    metrics = work / "dime-cache-metrics.txt"
    if metrics.exists() and metrics.read_text().strip():
        observed.append("- dime-edge's own cache gauges after the memory test: "
                        + ", ".join(f"`{l}`" for l in metrics.read_text().split("\n") if l.strip()))
    load_txt = (work / "load.txt").read_text().split("\n") if (work / "load.txt").exists() else []
    if load_txt:
        observed.append("- Load average (1, 5, 15 min) at start and end of the measurements: "
                        + "; ".join(l for l in load_txt if l))

    profiles = component_table(work)
    for scenario, label in (("playlist_1k", "1 KB playlist hits over HTTP/1.1"),
                            ("playlist_1k_h2", "1 KB playlist hits over HTTP/2 and TLS (h2load, 8 × 32 streams)"),
                            ("segment_4m", "4 MiB segment hits over HTTP/1.1")):
        f = work / f"perf-{scenario}.txt"
        if f.exists() and f.read_text().strip():
            profiles += [f"dime-edge serving {label}: `perf record -e cpu-clock`, self time,\n"
                         "symbols above 0.8 %:", "", "```", f.read_text().rstrip(), "```", ""]

    quick = machine.get("quick") == "1"
    minutes = int(machine.get("elapsed", "0")) / 60
    head = "\n".join(table)
    print(head)
    print()
    print("\n".join(targets))

    text = TEMPLATE.format(
        quick_warning=(
            "\n> **Smoke run (`BENCH_QUICK=1`)**: one short round; these numbers are not the "
            "benchmark.\n" if quick else ""
        ),
        date=machine.get("date", "?"),
        commit=machine.get("commit", "?"),
        rounds=rounds,
        duration=machine.get("duration", "?"),
        minutes=f"{minutes:.0f}",
        table=head,
        targets="\n".join(targets),
        spread="\n".join(spread),
        paired="\n".join(paired),
        idle_spread="\n".join(idle_spread(values, disturbed)),
        max_other=max_other,
        busy="\n".join(busy),
        invalidation=inval_text or "(not in this run)\n",
        idle_method=IDLE_METHOD.format(idle_count=thousands(machine.get("idle_count", "?")),
                                       idle_hold=thousands(machine.get("idle_hold", "?")),
                                       nofile=thousands(machine.get("nofile", "?")),
                                       rounds=rounds),
        inval_method=INVAL_METHOD.format(objects=thousands(machine.get("inval_objects", "?")),
                                         posts=thousands(machine.get("inval_posts", "?")),
                                         duration=machine.get("inval_duration", "?")),
        observed="\n".join(observed),
        profiles="\n".join(profiles) if profiles else "(no profile in this run: `perf` missing, or BENCH_PERF=0 / BENCH_QUICK=1)\n",
        analysis=analysis(quick, machine.get("commit", "?")),
        cpu=machine.get("cpu", "?"),
        cores=machine.get("cores", "?"),
        memory=machine.get("memory", "?"),
        kernel=machine.get("kernel", "?"),
        os=machine.get("os", "?"),
        dime=machine.get("dime", "?"),
        nginx=machine.get("nginx", "?"),
        varnish=machine.get("varnish", "?"),
        wrk=machine.get("wrk", "?"),
        h2load=machine.get("h2load", "?"),
        rss_objects=machine.get("rss_objects", "?"),
        cached=fmt(cached, 0),
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text + kept_sections(doc))


# Sections other benchmarks write into the same file between `<!-- NAME:begin ...-->` and
# `<!-- NAME:end -->` markers (benches/reload.py, the k6 viewers): a cache run keeps them.
SECTION = re.compile(r"<!-- ([a-z0-9-]+):begin.*?-->.*?<!-- \1:end -->\n?", re.S)


def kept_sections(doc: Path) -> str:
    if not doc.exists():
        return ""
    sections = [m.group(0) for m in SECTION.finditer(doc.read_text())]
    return "".join("\n" + section for section in sections)


# Which part of the process a symbol of dime-edge's profile belongs to, first match wins: our
# own code before the libraries it calls into (a pingora hook implemented by the edge is ours).
COMPONENTS = (
    ("dime-edge's own code", ("dime_edge", "dime_telemetry")),
    ("HTTP/2 (`h2` crate)", ("h2::", "hpack")),
    ("TLS (rustls and its crypto)", ("rustls", "ring::", "aws_lc", "ring_core")),
    ("pingora (proxy, cache, HTTP/1 and listeners)", ("pingora",)),
    ("tokio runtime", ("tokio::",)),
    ("memory allocator (mimalloc)", ("mi_", "_mi_", "mimalloc", "__rustc::__rust_")),
    ("cache store (moka) and key hash (blake2)", ("moka::", "blake2", "crossbeam")),
    ("HTTP/1 parser (httparse)", ("httparse::",)),
    ("metrics (prometheus)", ("prometheus::",)),
    ("Rust std, `http` and `bytes`", ("alloc::", "core::", "std::", "http::", "bytes::", "hashbrown")),
)


def component(dso, sym):
    if dso.startswith("[kernel") or sym.startswith("[k]"):
        return "kernel (TCP, syscalls)"
    name = sym.split("] ", 1)[-1]
    for label, prefixes in COMPONENTS:
        # A prefix counts at the start of a path segment: `ring::` is not `string::`.
        if any(re.search(r"(?<![A-Za-z0-9_])" + re.escape(p), name) for p in prefixes):
            return label
    if dso.startswith("libc") or dso == "[vdso]":
        return "libc (`memmove`, `memcpy`) and vdso (clock)"
    return "other"


def component_table(work):
    """Self time of dime-edge's profiles summed by component, one column per scenario."""
    columns = []
    for scenario, label in (("playlist_1k", "1 KB, HTTP/1.1"), ("playlist_1k_h2", "1 KB, HTTP/2 + TLS"),
                            ("segment_4m", "4 MiB, HTTP/1.1")):
        f = work / f"perf-{scenario}-all.txt"
        if not f.exists():
            continue
        sums = {}
        for line in f.read_text().splitlines():
            parts = line.split(None, 2)
            if len(parts) < 3 or not parts[0].endswith("%"):
                continue
            pct = float(parts[0].rstrip("%"))
            c = component(parts[1], parts[2])
            sums[c] = sums.get(c, 0.0) + pct
        columns.append((label, sums))
    if not columns:
        return []
    names = [l for l, _ in COMPONENTS] + ["kernel (TCP, syscalls)",
                                          "libc (`memmove`, `memcpy`) and vdso (clock)", "other"]
    rows = ["Where dime-edge's core goes, by component (self time, % of the samples; from the "
            "same `perf record` runs as the symbol lists below):", "",
            "| Component | " + " | ".join(l for l, _ in columns) + " |",
            "|---|" + "---:|" * len(columns)]
    for n in names:
        if any(sums.get(n, 0) >= 0.05 for _, sums in columns):
            rows.append(f"| {n} | " + " | ".join(f"{sums.get(n, 0):.1f}" for _, sums in columns) + " |")
    rows.append("")
    return rows


def analysis(quick: bool, commit: str) -> str:
    """The hand-written reading of a full run (benches/analysis.md), if there is one. Its first
    line names the run it read ("... (commit X) ..."); when that is not this run, the page says
    so above it."""
    if quick:
        return "(not for a smoke run)"
    path = Path(__file__).parent / "analysis.md"
    if not path.exists():
        return "(no notes yet: write benches/analysis.md)"
    text = path.read_text().strip()
    read = re.search(r"\(commit ([0-9a-f]{7,})\)", text.split("\n", 1)[0])
    this = commit.split()[0]
    if read is None or read.group(1) != this:
        about = f"commit {read.group(1)}" if read else "a run it does not name"
        text = (f"> **Written about an earlier run ({about}), not this one (commit {this}):** "
                "its figures may not match the tables above.\n\n" + text)
    return text


TEMPLATE = """# Benchmarks

dime-edge beside nginx and Varnish, each an in-memory cache on one CPU core in front of the
same origin, measured by `bash benches/run.sh` (`make bench`). This page is that script's
output; rerun it to refresh every number here.
{quick_warning}
Run of {date}, commit {commit}: {rounds} interleaved round(s) of {duration} s per
measured run (each after a 2 s warm-up run), {minutes} minutes in all.

## Results

Medians over the rounds (see "Every round" below); ratios are to nginx (for latency and
memory, lower is better).

{table}

CPU used during the hit runs, in % of one core, medians: the proxy (all its processes, on its
own core) / the load generator, wrk or h2load (on the other core) / every other process on the machine (kernel threads such
as ksoftirqd excluded, as they carry the benchmark's own loopback traffic; steal included). A
proxy below 100 % was waiting for something else, usually wrk; a wrk close to 100 % means the
load generator limited that run, and then "per proxy core-second" is the fairer comparison.

{busy}

### Hits while POSTs invalidate (dime-edge only)

Medians over the rounds; see "Invalidation" under Method.

{invalidation}
## Targets

{targets}

## What the run saw

{observed}

### Where dime-edge spends its core

{profiles}
### Reading these numbers

{analysis}

### Every round

Values per round, in order, behind the medians above. A `*` marks a run during which other
processes used more than {max_other:.0f} % of a core even after two repeats; the medians leave
those out when the other rounds of the same test were clean.

{spread}

The hit tests' ratios to nginx within each round (a `*` marks a round in which either run was
disturbed). The targets above read the medians of each proxy's own rounds; when the host's
speed drifts between rounds, these two can differ, and then neither alone settles a target.

{paired}

The idle test's pairs of 1 KB hit runs, alone and beside the held idle connections, and the
ratio within each pair:

{idle_spread}

## Machine

| | |
|---|---|
| CPU | {cpu} |
| Cores | {cores} (proxy pinned to CPU 0, wrk and the origins to CPU 1) |
| Memory | {memory} |
| Kernel | {kernel} |
| OS | {os} |
| dime-edge | {dime} (release build) |
| nginx | {nginx} |
| Varnish | {varnish} |
| wrk | {wrk} |
| h2load | {h2load} |

## Method

**One origin, three caches.** One `dime-origin streamer` on loopback serves the media:
`live/index.m3u8` (a 1 KiB playlist), `live/seg1m.ts` (1 MiB), `live/seg4m.ts` (4 MiB) and
{rss_objects} distinct 4 MiB segments under `rss/`. A small Python server (`benches/slow_origin.py`)
is the slow origin: it waits 1 s before answering any path with a 1 MiB body and
`Cache-Control: public, max-age=60`, and counts the requests per path. Each proxy in turn is
started alone, listens on the same loopback port, caches in memory and routes `/slow/` to the
slow origin and everything else to the streamer:

- **dime-edge**: `benches/conf/dime-edge.toml.in`; `[server] threads = 1`,
  `[cache] memory = "1GiB"`, both routes `mode = "rfc"`, `max_object_size = "64MiB"`; metrics
  on as always; the access log off (`RUST_LOG=info,access=off`), or on, to a file
  (`[log] access_log`), in the logged runs.
- **nginx**: `benches/conf/nginx.conf.in`; one worker, `proxy_cache_path` on tmpfs
  (`/dev/shm`) with a 64 MB `keys_zone`, `proxy_cache_lock on` (30 s timeout),
  `proxy_cache_valid 200 10m`, HTTP/1.1 keepalive to the origins, `access_log off` (or a file in
  the logged runs, nginx's `combined` format), `sendfile on`, `keepalive_requests` lifted so
  viewers' connections are not closed every 1000 requests.
- **Varnish**: `benches/conf/varnish.vcl.in` on top of the built-in VCL;
  `varnishd -F -s malloc,1G -p thread_pools=1 -p thread_pool_min=40`; in the logged runs
  `varnishncsa -w FILE`, Varnish's access log, runs as varnishd's child on the same core.

**HTTPS and HTTP/2.** dime-edge and nginx also listen with TLS (1.2 and 1.3; the load generators
negotiate TLS 1.3) on a second port, with one certificate `dime-edge cert generate` made, HTTP/1.1
and HTTP/2 by ALPN: dime-edge with rustls, nginx with OpenSSL. `wrk` measures HTTPS/1.1 like
plain HTTP; `h2load -t 1 -c 8 -m 32 -D {duration}` measures HTTP/2 (8 connections, 32 streams
each), its p99 from its per-request log. Varnish has no TLS of its own (it needs a TLS proxy such
as hitch in front), so it has no HTTPS rows.

**Access logs on.** Then each proxy starts again with its access log written to a file on
disk, and the 1 KB hits are measured over HTTP/1.1 and HTTPS; afterwards the log must hold a line
for every request measured.

Every proxy process (nginx master and worker, varnishd manager and child) runs under
`taskset -c 0`; `wrk` (one thread), the origins and the test clients run under `taskset -c 1`.
A machine with more cores gives the same split: the proxies are compared per core.

**Why the playlist is fresh for the whole run.** The streamer sends `max-age=1` for playlists
by default, so a 10 s run would measure one revalidation a second, differently timed in each
proxy, rather than hits. The script starts the streamer with `--playlist-max-age 3600`, and all
three proxies honour the origin's `Cache-Control`, as RFC 9111 says: the same rule and the same
freshness for all three, with no per-proxy override (dime-edge's `video` mode would cap a
playlist's freshness at half a target duration, so the routes use `rfc`).

**Hits.** For each proxy: start it with an empty cache, fetch the three objects until each
answers `X-Cache-Status: HIT` (dime-edge sets it; nginx adds `$upstream_cache_status`; the VCL
sets it from `obj.hits`), then measure with `wrk -t 1 -d {duration}s` and
`benches/wrk-report.lua` (which prints wrk's own latency percentiles): the playlist with 32
connections, each segment with 8. Each measured run follows a 2 s warm-up run of the same
load. After the runs each object must still be a HIT, and the origin must have seen no request
during them, for every proxy alike: the script counts the streamer's own access log lines for
`/live/`. Anything else is listed under "What the run saw". Proxies are interleaved, dime-edge,
nginx, Varnish, round after round, and the table shows medians, so a slow minute of the machine
falls on all three. Throughput is requests × object size per second; p99 is the load
generator's.

**Coalescing.** Each proxy, freshly started, gets 200 concurrent requests for a URL nobody has
asked for (`benches/client.py burst`: all 200 connections open first, then a barrier releases
the requests together); the slow origin's count for that path is the result. One is the goal:
a segment that a whole audience asks for at once costs the origin one fetch.

**Memory.** Each proxy, freshly started, fetches all {rss_objects} distinct 4 MiB objects twice
(4 connections; the second pass must be all HITs); then the script sums `VmRSS` of all of the
proxy's processes. nginx keeps its cache in files, here on tmpfs, which is memory too but not in
its RSS, so its tmpfs usage is added. Overhead = (memory − cached bytes) / cached bytes, where the
cached bytes are the object bodies ({cached} MiB; the start-up probe also leaves the 1 KiB
playlist in each cache). RSS includes what the process holds before
caching anything (see "What the run saw" for the idle RSS, and PSS, which does not count pages
shared between a master and its workers twice).

{idle_method}

{inval_method}

**Who was the limit.** For every run the script reads the CPU time of the proxy's processes
(`/proc/PID/stat`) and of wrk (`time`): "per proxy core-second" divides the requests or bytes
served by the proxy's CPU time, so it compares the proxies' capacity even when wrk, on its one
core, could not ask for more (here wrk saturates on large segments; it reads 8 KiB per `read`).
The profiles of dime-edge come from extra runs after the measured ones (`perf record` on the
pinned process), so profiling never slows a measured run.

**Noise.** Everything the script runs gets `nice -15` (as root). Before each wrk run the script
waits (at most 60 s) for a second in which other processes use at most {max_other:.0f} % of a core,
and a run during which they used more (the CPU time of every user process, exited ones included,
from `/proc/*/stat`, plus steal; kernel threads excluded) is repeated, at most twice; the CPU
table shows what was left, and the medians skip runs still disturbed when clean ones exist.
Everything is on loopback on one machine, so there is no network. The numbers compare the three
proxies here, not what they do in production.

## Running it

```
make bench                 # or: bash benches/run.sh
BENCH_QUICK=1 bash benches/run.sh   # smoke run: 1 round of 3 s, 16 memory objects,
                                    # report in target/bench/quick/benchmarks.md
BENCH_ONLY=invalidation bash benches/run.sh   # the invalidation test alone, dime-edge only;
                                              # report in target/bench/invalidation/benchmarks.md
BENCH_ONLY=idle bash benches/run.sh   # the idle-connection test alone, all three proxies;
                                      # report in target/bench/idle/benchmarks.md
```

Needs Linux, 2 or more cores, root or sudo for `apt-get` (it installs `nginx-light`, `varnish`,
`wrk`, `nghttp2-client` (h2load), and `linux-perf` for the profile, when missing; on a host with systemd the packages may
start their own services on ports 80 and 6081, which the benchmark does not use), Python 3,
and about 600 MiB in `target/bench/` for the media. Ports 18400–18405 on 127.0.0.1
(`BENCH_PORT_BASE` moves them; the tail run at the end uses the six from 100 above them).
Other knobs: `BENCH_ROUNDS`, `BENCH_DURATION` (seconds per wrk
run), `BENCH_RSS_OBJECTS`, `BENCH_INVAL_OBJECTS`, `BENCH_INVAL_POSTS`, `BENCH_PERF=0`, `BENCH_TAIL=0` (no
`benches/tail.sh` at the end), `BENCH_DOC` (where this report goes), `BENCH_NICE`,
`BENCH_MAX_OTHER` and `BENCH_QUIET_WAIT` (see "Noise"). A full run takes about 30 minutes on a
quiet machine, then two for the tail run, plus the release build; the first one also writes the 520 MiB of media. Every
process the script starts is stopped when it ends, however it ends. Configs and media stay in
`target/bench/`; raw results (`results.tsv`), logs and profiles in `target/bench/full/` (or
`quick/` for a smoke run).

The targets, per proxy core-second: 1 KB hits at least nginx's over HTTP/1.1, HTTPS/1.1 and
HTTP/2, and with access logs on in every proxy, with a p99 no worse than nginx's; 1 MiB HTTPS
segments at least 1.2× nginx's; plain 1 MiB and 4 MiB segments at least Varnish's and 0.8×
nginx's (which sends them from tmpfs with sendfile). And exactly one origin request for a cold
burst, memory overhead under 15 % of what is cached, and hits that lose less than 5 % while
POSTs invalidate.
"""


if __name__ == "__main__":
    main()
