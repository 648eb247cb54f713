#!/usr/bin/env python3
"""A slow origin for the coalescing benchmark: counts the requests it gets for each path.
With --delay 0 it is also the small-object origin of the invalidation benchmark.

GET /count?path=/slow/x   -> how many requests /slow/x has received so far (plain integer)
GET /healthz              -> 200 "ok", not counted
GET anything else         -> counted, then after --delay seconds a --size byte body with
                             `Cache-Control: public, max-age=N` (--max-age, default 60), so
                             every proxy may cache it.
POST anything             -> counted, body read, `200` "accepted" with `no-store`: an unsafe
                             request the origin accepts, which makes an RFC 9111 cache
                             invalidate the URL (the invalidation benchmark).

Only the standard library; one thread per connection, so a proxy that does not coalesce
really does send its 200 requests at once.
"""

import argparse
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 would turn a 200-request burst into SYN retries.
    request_queue_size = 1024


def handler(delay: float, body: bytes, max_age: int) -> type:
    counts: Counter = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle and the
        # peer's delayed ACK hold every keepalive answer back about 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        def reply(self, status: int, payload: bytes, cache_control: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", cache_control)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/healthz":
                self.reply(200, b"ok\n", "no-store")
                return
            if url.path == "/count":
                wanted = parse_qs(url.query).get("path", [""])[0]
                with lock:
                    n = counts[wanted]
                self.reply(200, f"{n}\n".encode(), "no-store")
                return
            with lock:
                counts[url.path] += 1
            if delay:
                time.sleep(delay)
            self.reply(200, body, f"public, max-age={max_age}")

        do_HEAD = do_GET

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with lock:
                counts[urlsplit(self.path).path] += 1
            self.reply(200, b"accepted\n", "no-store")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="IP:port (loopback)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds before answering")
    parser.add_argument("--size", type=int, default=1 << 20, help="body bytes")
    parser.add_argument("--max-age", type=int, default=60, help="freshness of GET answers, s")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = Server((host, int(port)), handler(args.delay, bytes(args.size), args.max_age))
    print(f"slow origin on {host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
