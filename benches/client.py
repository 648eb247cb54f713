#!/usr/bin/env python3
"""HTTP clients of benches/run.sh; each prints one JSON line about the answers it got.

burst URL -n 200       N concurrent GETs for one URL, released together: every connection is
                       opened first and a barrier lets all requests go at once, as when a live
                       stream's viewers all ask for a segment nobody has cached yet.
fetch -w 4 URL...      GETs each URL once over W keepalive connections (fills a cache).
fetch -w 8 -n 10000 URL
                       The same for URL with `{i}` replaced by 0 .. N-1.
post -n 1000 --over 8 URL
                       N POSTs, one at a time on one keepalive connection, evenly spread over
                       --over seconds (after --delay seconds), to URL with `{i}` replaced by
                       0 .. N-1 (--first K: K .. K+N-1): unsafe requests beside a hit benchmark;
                       --over 0 sends them back to back.
"""

import argparse
import http.client
import json
import queue
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


def target(url: str) -> tuple:
    u = urlsplit(url)
    return u.hostname, u.port, u.path + (f"?{u.query}" if u.query else "")


def get(conn: http.client.HTTPConnection, path: str) -> tuple:
    """One GET on an open connection: status, body bytes, X-Cache-Status."""
    conn.request("GET", path)
    resp = conn.getresponse()
    size = 0
    while chunk := resp.read(1 << 20):
        size += len(chunk)
    return resp.status, size, resp.getheader("x-cache-status", "-")


def summary(results: list) -> dict:
    """results: (status, bytes, cache status, seconds, error) per request."""
    times = sorted(r[3] for r in results if r[0])
    return {
        "requests": len(results),
        "status": dict(Counter(str(r[0]) for r in results)),
        "bytes": dict(Counter(str(r[1]) for r in results)),
        "cache": dict(Counter(r[2] for r in results)),
        "errors": dict(Counter(r[4] for r in results if r[4])),
        "median_s": round(times[len(times) // 2], 3) if times else None,
        "slowest_s": round(times[-1], 3) if times else None,
    }


def burst(args: argparse.Namespace) -> dict:
    host, port, path = target(args.url)
    barrier = threading.Barrier(args.n)
    lock = threading.Lock()
    results = []

    def one() -> None:
        status, size, cache, took, error = 0, 0, "-", 0.0, ""
        try:
            conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
            conn.connect()
            barrier.wait(timeout=args.timeout)
            start = time.monotonic()
            status, size, cache = get(conn, path)
            took = time.monotonic() - start
            conn.close()
        except Exception as err:  # counted, not raised: one failure must not hide the rest
            error = type(err).__name__
        with lock:
            results.append((status, size, cache, took, error))

    threads = [threading.Thread(target=one) for _ in range(args.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(results)


def expand(urls: list, n, first: int = 0) -> list:
    """URLs as given, or the one template URL for i in first .. first+n-1."""
    if n is None:
        return urls
    if len(urls) != 1 or "{i}" not in urls[0]:
        raise SystemExit("-n needs exactly one URL containing {i}")
    return [urls[0].replace("{i}", str(i)) for i in range(first, first + n)]


def fetch(args: argparse.Namespace) -> dict:
    todo: queue.Queue = queue.Queue()
    for url in expand(args.urls, args.n):
        todo.put(url)
    lock = threading.Lock()
    results = []

    def worker() -> None:
        conn = None
        while True:
            try:
                url = todo.get_nowait()
            except queue.Empty:
                break
            host, port, path = target(url)
            status, size, cache, took, error = 0, 0, "-", 0.0, ""
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
                start = time.monotonic()
                status, size, cache = get(conn, path)
                took = time.monotonic() - start
            except Exception as err:
                error = type(err).__name__
                conn.close()
                conn = None
            with lock:
                results.append((status, size, cache, took, error))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(args.w)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(results)


def post(args: argparse.Namespace) -> dict:
    urls = expand([args.url], args.n, args.first)
    host, port, _ = target(urls[0])
    conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
    results = []
    time.sleep(args.delay)
    start = time.monotonic()
    for i, url in enumerate(urls):
        # Evenly spread: request i leaves at start + i * over / n, or at once when late.
        wait = start + i * args.over / len(urls) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        status, took, error = 0, 0.0, ""
        try:
            sent = time.monotonic()
            conn.request("POST", target(url)[2], body=b"x", headers={"Content-Type": "text/plain"})
            resp = conn.getresponse()
            resp.read()
            status, took = resp.status, time.monotonic() - sent
        except Exception as err:
            error = type(err).__name__
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=args.timeout)
        results.append((status, 0, "-", took, error))
    conn.close()
    out = summary(results)
    out["elapsed_s"] = round(time.monotonic() - start, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per socket op")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("burst", help="N concurrent GETs for one URL")
    b.add_argument("url")
    b.add_argument("-n", type=int, default=200)
    f = sub.add_parser("fetch", help="GET each URL once")
    f.add_argument("-w", type=int, default=4, help="connections")
    f.add_argument("-n", type=int, help="expand the one URL's {i} to 0 .. N-1")
    f.add_argument("urls", nargs="+")
    p = sub.add_parser("post", help="N paced POSTs")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--over", type=float, default=8.0, help="seconds to spread them over")
    p.add_argument("--first", type=int, default=0, help="the first {i}")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before the first")
    p.add_argument("url")
    args = parser.parse_args()
    run = {"burst": burst, "fetch": fetch, "post": post}[args.command]
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
