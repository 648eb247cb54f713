#!/usr/bin/env python3
"""What sets the 1 KB hit's latency tail: the reader of benches/tail.sh's runs.

    tail.py run PROXY H2LOAD_LOG TIMEHIST OFFSET SECONDS PROXY_PIDS LOAD_PIDS > run.json
    tail.py section COMMIT DATE OFFERED RUN_JSON... > section.md

`run` reads one measured run (and says its p50, p99 and stalls on stderr): h2load's per-request log (start in microseconds since the epoch,
status, microseconds to the end of the response) and `perf sched timehist` of every CPU over the
same run (times on CLOCK_MONOTONIC; OFFSET is CLOCK_REALTIME minus CLOCK_MONOTONIC in seconds).
It finds the stalls: groups of requests above the run's p99 whose time in flight overlaps, with
at least STALL_REQUESTS of them, which only a pause of a whole side of the loop makes (32
connections, one request in flight on each). For every stall it looks at what held each CPU
while it lasted: runs of other tasks (not the proxy, not the load generator or the origin
streamer, not the tracer) of at least HELD_MS.

`section` turns the runs into the Markdown section of docs/benchmarks.md.
"""

import json
import statistics
import sys
from collections import defaultdict

# A stall: at least half the connections' requests slow at the same time.
STALL_REQUESTS = 16
# Slow requests closer than this (µs) belong to the same group.
GAP_US = 200
# A run of another task this long (ms) or longer counts as holding its CPU.
HELD_MS = 0.5


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def read_requests(path):
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) != 3:
                sys.exit(f"{path}:{number}: expected 3 fields (start, status, duration), got {line!r}")
            start, status, duration = (int(x) for x in fields)
            if status != 200:
                sys.exit(f"{path}:{number}: status {status}, not 200")
            rows.append((start, duration))
    if not rows:
        sys.exit(f"{path}: no requests logged")
    rows.sort()
    return rows


def read_runs(path, offset_us):
    """Every task's runs from `perf sched timehist`: (cpu, name, pid, start_us, end_us), times
    moved to the epoch."""
    runs = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            # time [cpu] name... [tid/pid] wait delay run; the header lines do not parse.
            if len(fields) < 6 or not fields[1].startswith("[") or not fields[0][0].isdigit():
                continue
            try:
                end = float(fields[0])
                run_ms = float(fields[-1])
                cpu = int(fields[1].strip("[]"))
            except ValueError:
                continue
            name = " ".join(fields[2:-3])
            pid = 0
            if name.endswith("]") and "[" in name:
                # [tid/pid], or [tid] for a kernel thread, whose tid is its pid.
                name, ids = name[: name.rindex("[")], name[name.rindex("[") + 1 : -1]
                last = ids.split("/")[-1]
                pid = int(last) if last.isdigit() else 0
            end_us = end * 1e6 + offset_us
            runs.append((cpu, name, pid, end_us - run_ms * 1000, end_us))
    if not runs:
        sys.exit(f"{path}: no scheduling events (perf sched timehist printed nothing)")
    return runs


def stalls(rows, threshold):
    """Groups of requests at or above `threshold` µs whose flight overlaps (within GAP_US):
    [start, end, requests]."""
    groups = []
    for start, duration in rows:
        if duration < threshold:
            continue
        if groups and start <= groups[-1][1] + GAP_US:
            groups[-1][1] = max(groups[-1][1], start + duration)
            groups[-1][2] += 1
        else:
            groups.append([start, start + duration, 1])
    return groups


def run(args):
    proxy_name, log, timehist, offset, seconds, proxy_pids, load_pids = args
    offset_us = float(offset) * 1e6
    proxy = {int(p) for p in proxy_pids.split(",") if p}
    load = {int(p) for p in load_pids.split(",") if p}
    rows = read_requests(log)
    durations = sorted(d for _, d in rows)
    p99 = percentile(durations, 0.99)
    big = [g for g in stalls(rows, p99) if g[2] >= STALL_REQUESTS]
    tail = sum(1 for d in durations if d >= p99)

    first, last = rows[0][0], max(s + d for s, d in rows)
    # What each core ran: the proxy, the load (h2load and the origin), idle, the tracer, or
    # another task; and whether that run held its core (another task's, HELD_MS or longer).
    spans = []
    for cpu, name, pid, start, end in read_runs(timehist, offset_us):
        if end < first or start > last:
            continue
        if name == "<idle>":
            what = "idle"
        elif pid in proxy:
            what = "proxy"
        elif pid in load or name == "h2load":
            what = "load"
        elif name == "perf":
            what = "tracer"
        else:
            what = "other"
        holds = what == "other" and end - start >= HELD_MS * 1000
        spans.append((cpu, what, name.split("/")[0], start, end, holds))
    held = defaultdict(lambda: [0, 0.0, 0.0])  # "cpu name" -> runs, total ms, longest ms
    for cpu, _what, name, start, end, holds in spans:
        if holds:
            h = held[f"{cpu} {name}"]
            h[0] += 1
            h[1] += (end - start) / 1000
            h[2] = max(h[2], (end - start) / 1000)
    # During the stalls, the share of time each core spent on each kind of work.
    during = defaultdict(float)
    with_other = 0
    for g in big:
        other = False
        for cpu, what, _name, start, end, holds in spans:
            overlap = min(end, g[1]) - max(start, g[0])
            if overlap > 0:
                during[f"{cpu} {what}"] += overlap
                other = other or holds
        with_other += other
    stalled = sum(g[1] - g[0] for g in big)
    print(
        f"  p50 {percentile(durations, 0.5) / 1000:.3f} ms, p99 {p99 / 1000:.3f} ms, "
        f"{len(big)} stalls ({with_other} with another task on a core)",
        file=sys.stderr,
    )
    json.dump(
        {
            "proxy": proxy_name,
            "seconds": int(seconds),
            "requests": len(rows),
            "rate": len(rows) / float(seconds),
            "p50_ms": percentile(durations, 0.5) / 1000,
            "p99_ms": p99 / 1000,
            "p999_ms": percentile(durations, 0.999) / 1000,
            "max_ms": durations[-1] / 1000,
            "stalls": len(big),
            "stalls_per_s": len(big) / float(seconds),
            "stalled_ms": stalled / 1000,
            "longest_stall_ms": max((g[1] - g[0] for g in big), default=0) / 1000,
            "tail_in_stalls": sum(g[2] for g in big) / tail,
            "stalls_with_other_task": with_other,
            "during_stalls": {k: v / stalled for k, v in during.items()} if stalled else {},
            "held": dict(held),
        },
        sys.stdout,
    )


def fmt(x, digits=2):
    return f"{x:,.{digits}f}"


def section(commit, date, offered, paths):
    runs = defaultdict(list)
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        runs[r["proxy"]].append(r)
    seconds = r["seconds"]
    names = [n for n in ("dime-edge", "nginx") if n in runs]
    med = lambda name, key: statistics.median(r[key] for r in runs[name])  # noqa: E731
    out = []
    out.append("<!-- tail:begin -->")
    out.append("## Where the 1 KB tail comes from")
    out.append("")
    out.append(
        f"Measured by `bash benches/tail.sh` (`make tail`) on {date} UTC, commit "
        f"{commit}: dime-edge and nginx in turn, {len(runs[names[0]])} round(s) each, "
        f"at the same offered load of {int(offered):,} 1 KB hits a second (h2load, HTTP/1.1, "
        f"32 connections, {seconds} s per run after a 2 s warm-up), below either's "
        "capacity; each proxy on core 0 with the configuration `make bench` gives it, h2load "
        "and the origin on core 1, `perf sched` tracing both cores. A *stall* is a group of at "
        f"least {STALL_REQUESTS} requests above the run's p99 in flight at the same time: "
        "half the connections held up at once, which only a pause on one side of the loop "
        "does. *Held by another task*: a run of at least "
        f"{HELD_MS} ms on either core by a task that is neither proxy, h2load, the origin nor "
        "the tracer (kernel threads, other processes), overlapping the stall."
    )
    out.append("")
    out.append("| Median over the rounds | " + " | ".join(names) + " |")
    out.append("|---|" + "---:|" * len(names))
    rows = (
        ("requests/s answered", "rate", 0),
        ("p50 latency, ms", "p50_ms", 3),
        ("p99 latency, ms", "p99_ms", 3),
        ("p99.9 latency, ms", "p999_ms", 3),
        ("slowest, ms", "max_ms", 2),
        ("stalls per second", "stalls_per_s", 2),
        ("longest stall, ms", "longest_stall_ms", 2),
    )
    for label, key, digits in rows:
        out.append(f"| {label} | " + " | ".join(fmt(med(n, key), digits) for n in names) + " |")
    out.append(
        "| requests above the p99 that were in a stall | "
        + " | ".join(f"{100 * med(n, 'tail_in_stalls'):.0f} %" for n in names)
        + " |"
    )
    out.append(
        "| stalls while another task held a core | "
        + " | ".join(
            f"{sum(r['stalls_with_other_task'] for r in runs[n])} of {sum(r['stalls'] for r in runs[n])}"
            for n in names
        )
        + " |"
    )
    def shares(name, cpu, kinds):
        total = sum(r["stalled_ms"] for r in runs[name]) or 1
        return " / ".join(
            f"{100 * sum(r['during_stalls'].get(f'{cpu} {k}', 0) * r['stalled_ms'] for r in runs[name]) / total:.0f} %"
            for k in kinds
        )

    out.append(
        "| in the stalls, core 0: the proxy / idle / another task | "
        + " | ".join(shares(n, 0, ("proxy", "idle", "other")) for n in names)
        + " |"
    )
    out.append(
        "| in the stalls, core 1: h2load and the origin / idle / another task | "
        + " | ".join(shares(n, 1, ("load", "idle", "other")) for n in names)
        + " |"
    )
    out.append("")
    out.append("Every round, in the order run (p50 / p99 / p99.9 ms, stalls):")
    out.append("")
    for n in names:
        cells = [
            f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f} / {r['p999_ms']:.3f}, {r['stalls']}"
            for r in runs[n]
        ]
        out.append(f"- {n}: " + "; ".join(cells))
    out.append("")
    held = defaultdict(lambda: [0, 0.0, 0.0])
    for n in names:
        for r in runs[n]:
            for k, (count, total, longest) in r["held"].items():
                h = held[k]
                h[0] += count
                h[1] += total
                h[2] = max(h[2], longest)
    top = sorted(held.items(), key=lambda kv: -kv[1][1])[:8]
    if top:
        out.append(
            "Other tasks that held a core for 0.5 ms or more at a time, all runs together "
            "(core: 0 the proxy's, 1 the load's; runs, time in all, longest):"
        )
        out.append("")
        out.append("| Core | Task | Runs | In all, ms | Longest, ms |")
        out.append("|---:|---|---:|---:|---:|")
        for k, (count, total, longest) in top:
            cpu, name = k.split(" ", 1)
            out.append(f"| {cpu} | `{name}` | {count} | {fmt(total, 1)} | {fmt(longest, 2)} |")
        out.append("")
    out.append("<!-- tail:end -->")
    print("\n".join(out))


def main():
    if len(sys.argv) == 9 and sys.argv[1] == "run":
        run(sys.argv[2:])
    elif len(sys.argv) >= 6 and sys.argv[1] == "section":
        section(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
