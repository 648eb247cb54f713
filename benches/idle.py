#!/usr/bin/env python3
"""Idle viewer connections for benches/run.sh: what they cost a proxy in memory, and whether
hits on other connections stay fast beside them.

    idle.py memory --url URL --path PATH --count N --pids PID... [--h2]
        Opens N connections to URL (http:// for HTTP/1.1, https:// with --h2 for HTTP/2 over
        TLS: handshake, preface and SETTINGS, then nothing), waits, reads the RSS of PIDS, sends
        one GET of PATH on each, reads every response, waits, reads the RSS again. Prints JSON:
        {"count", "idle_kib", "after_request_kib"} per connection, over the RSS before.
    idle.py hold --url URL --count N
        Opens N HTTP/1.1 connections, prints "held N" once they are open, and keeps them until
        stdin closes (run.sh measures hits meanwhile); then prints "closed K", K the connections
        the proxy closed (or answered) meanwhile, which were not held through the whole test.

Connections take turns on 200 source addresses (127.0.0.2 to 127.0.0.201), so neither their count
nor the closed connections of an earlier test waiting in TIME_WAIT exhaust one address's
ephemeral ports (a full run failed so, binding 127.0.0.2).
"""

import argparse
import asyncio
import json
import ssl
import sys
from urllib.parse import urlsplit

# Source addresses the connections take turns on: 127.0.0.2 to 127.0.0.201.
SOURCES = 200


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def source(i):
    return f"127.0.0.{2 + i % SOURCES}"


async def open_all(url, count, h2):
    u = urlsplit(url)
    ctx = None
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"] if h2 else ["http/1.1"])
    conns = []
    for i in range(count):
        r, w = await asyncio.open_connection(u.hostname, u.port, ssl=ctx, local_addr=(source(i), 0))
        if h2:
            w.write(H2_PREFACE + frame(4, 0, 0, b""))  # an empty SETTINGS frame
            await w.drain()
        conns.append((r, w))
    if h2:
        # The server's SETTINGS (and its ACK of ours) arrive unasked: read them off.
        await asyncio.gather(*(read_frames_until(r, lambda t, f, s: t == 4 and f & 1) for r, _ in conns))
    return conns


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def literal(index, value):
    """An HPACK literal header field without indexing, its name from the static table."""
    v = value.encode()
    assert len(v) < 127
    return bytes([index]) + bytes([len(v)]) + v


async def read_frames_until(r, done):
    while True:
        head = await r.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        await r.readexactly(length)
        if done(kind, flags, stream):
            return


async def request_all(conns, url, path, h2):
    u = urlsplit(url)
    host = f"{u.hostname}:{u.port}"
    if h2:
        # :method GET and :scheme https are static table entries 2 and 7; :authority and :path
        # are literals named by entries 1 and 4.
        block = bytes([0x82, 0x87]) + literal(0x01, host) + literal(0x04, path)
        req = frame(1, 0x5, 1, block)  # HEADERS, END_STREAM | END_HEADERS, stream 1
    else:
        req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    for _, w in conns:
        w.write(req)

    async def one(r):
        if h2:
            # DATA or HEADERS with END_STREAM on stream 1 ends the response.
            await read_frames_until(r, lambda t, f, s: s == 1 and t in (0, 1) and f & 1)
            return
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await r.readexactly(length)

    await asyncio.gather(*(one(r) for r, _ in conns))


async def memory(args):
    before = rss_kib(args.pids)
    conns = await open_all(args.url, args.count, args.h2)
    await asyncio.sleep(2)
    idle = rss_kib(args.pids)
    await request_all(conns, args.url, args.path, args.h2)
    await asyncio.sleep(2)
    after = rss_kib(args.pids)
    for _, w in conns:
        w.close()
    print(json.dumps({
        "count": args.count,
        "idle_kib": round((idle - before) / args.count, 2),
        "after_request_kib": round((after - before) / args.count, 2),
    }))


async def hold(args):
    conns = await open_all(args.url, args.count, False)
    print(f"held {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    # A connection the proxy closed has its EOF (or a response, e.g. a 408) waiting to be read.
    async def closed(r):
        try:
            await asyncio.wait_for(r.read(1), 1)
            return True
        except asyncio.TimeoutError:
            return False
        except OSError:  # reset by the proxy
            return True

    gone = await asyncio.gather(*(closed(r) for r, _ in conns))
    print(f"closed {sum(gone)}", flush=True)
    for _, w in conns:
        w.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--url", required=True)
    m.add_argument("--path", required=True)
    m.add_argument("--count", type=int, required=True)
    m.add_argument("--pids", type=int, nargs="+", required=True)
    m.add_argument("--h2", action="store_true")
    h = sub.add_parser("hold")
    h.add_argument("--url", required=True)
    h.add_argument("--count", type=int, required=True)
    args = p.parse_args()
    asyncio.run(memory(args) if args.mode == "memory" else hold(args))


if __name__ == "__main__":
    main()
