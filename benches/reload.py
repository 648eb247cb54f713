#!/usr/bin/env python3
"""How long a config change takes to reach requests: measured, written to docs/benchmarks.md.

Starts two loopback origins that answer with their name and one dime-edge routing `/` to one
of them, then 20 times (BENCH_RELOAD_ROUNDS) moves the route to the other origin and polls
the edge every millisecond until the new origin answers:

  * "file write": the new config is written to a temporary file and renamed over the config
    (what most editors and config tools do); the clock starts just before the write. This is
    the watcher's path: event, debounce, read, compile, swap.
  * "admin API": the file is written with watching off, then `POST /config/reload`; the clock
    starts just before the POST. The same reload without the watcher's debounce.

Prints p50/p95/max and replaces the "Config reload" section of docs/benchmarks.md (between
the reload markers; appended when missing). BENCH_RELOAD_DOC names another file; BENCH_RELOAD_BIN
uses a built binary instead of `cargo build --release -p dime-edge`.

Usage: python3 benches/reload.py
"""

import http.server
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_RELOAD_ROUNDS", "20"))
DOC = Path(os.environ.get("BENCH_RELOAD_DOC", ROOT / "docs" / "benchmarks.md"))
BEGIN = "<!-- config-reload:begin (written by benches/reload.py) -->"
END = "<!-- config-reload:end -->"
TOKEN = "bench-reload-token-0123456789"
LIMIT_MS = 200.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def origin(name: str) -> int:
    """An HTTP origin on loopback that answers every GET with its name."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle and delayed ACKs add
        # 40 ms to answers on a kept-alive connection, and the measurement with them.
        disable_nagle_algorithm = True

        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("x-upstream", name)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def config(http_port: int, admin_port: int, origins: dict, to: str, watch: bool) -> str:
    pools = "".join(
        f'[pools.{n}]\nbackends = ["127.0.0.1:{p}"]\n[pools.{n}.health_check]\n'
        f'type = "tcp"\ninterval = "1s"\n\n'
        for n, p in origins.items()
    )
    return (
        f'[listen]\nhttp = ["127.0.0.1:{http_port}"]\nadmin = "127.0.0.1:{admin_port}"\n\n'
        f'[admin]\ntoken = "{TOKEN}"\n\n[reload]\nwatch = {"true" if watch else "false"}\n\n'
        f'{pools}[[routes]]\npath = "/"\npool = "{to}"\n[routes.cache]\nmode = "off"\n'
    )


def write_renamed(path: Path, text: str) -> None:
    tmp = path.with_name(".edge.toml.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def who(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.headers.get("x-upstream", "")
    except OSError:
        return ""


def wait_for(url: str, name: str, started: float, limit_s: float = 5.0) -> float:
    while time.monotonic() - started < limit_s:
        if who(url) == name:
            return (time.monotonic() - started) * 1000
        time.sleep(0.001)
    raise SystemExit(f"the route never moved to {name} within {limit_s} s")


def admin_reload(admin_port: int) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/config/reload",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def percentile(values: list, p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def measure(binary: str, watch: bool) -> list:
    origins = {"a": origin("a"), "b": origin("b")}
    http_port, admin_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="dime-reload-bench-"))
    cfg = work / "edge.toml"
    cfg.write_text(config(http_port, admin_port, origins, "a", watch))
    log = open(work / "edge.log", "w")
    edge = subprocess.Popen([binary, "run", "-c", str(cfg)], stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{http_port}/"
        wait_for(url, "a", time.monotonic(), 15)
        times = []
        for i in range(ROUNDS):
            to = "b" if i % 2 == 0 else "a"
            text = config(http_port, admin_port, origins, to, watch)
            time.sleep(0.3)  # let the previous round's events settle
            if watch:
                started = time.monotonic()
                write_renamed(cfg, text)
            else:
                write_renamed(cfg, text)
                started = time.monotonic()
                admin_reload(admin_port)
            times.append(wait_for(url, to, started))
        return times
    finally:
        edge.send_signal(signal.SIGTERM)
        try:
            edge.wait(10)
        except subprocess.TimeoutExpired:
            edge.kill()
        log.close()


def main() -> None:
    binary = os.environ.get("BENCH_RELOAD_BIN")
    if not binary:
        subprocess.run(
            ["cargo", "build", "--release", "-p", "dime-edge"], cwd=ROOT, check=True
        )
        binary = str(ROOT / "target" / "release" / "dime-edge")
    rows = []
    for label, watch in [("file write (rename over), watcher", True), ("POST /config/reload", False)]:
        t = measure(binary, watch)
        rows.append((label, statistics.median(t), percentile(t, 95), max(t)))
        print(f"{label}: p50 {rows[-1][1]:.1f} ms, p95 {rows[-1][2]:.1f} ms, max {rows[-1][3]:.1f} ms")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "met" if rows[0][3] <= LIMIT_MS else "missed"
    table = "\n".join(
        f"| {label} | {p50:.1f} | {p95:.1f} | {mx:.1f} |" for label, p50, p95, mx in rows
    )
    section = f"""{BEGIN}
## Config reload

How long a config change takes to reach requests: `python3 benches/reload.py` moves a route
between two loopback origins {ROUNDS} times per row and polls the edge every millisecond until
the new origin answers. Run of {when}, commit {commit}, `{Path(binary).name}` built
{"in release mode" if "release" in binary else "as given"}, on this page's machine.

| Change made by | p50, ms | p95, ms | max, ms |
|---|---:|---:|---:|
{table}

Goal: a config change takes effect within {LIMIT_MS:.0f} ms of the file write: **{verdict}**
(max {rows[0][3]:.1f} ms). Most of the file-write time is the watcher's deliberate wait for
50 ms of quiet after the last event, so that an editor's several writes make one reload;
the admin API row is the same reload without that wait (read, compile, health-check new
backends, swap).
{END}
"""
    text = DOC.read_text() if DOC.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)
    print(f"wrote {DOC}")
    sys.exit(0 if verdict == "met" else 1)


if __name__ == "__main__":
    main()
