"""A loopback HTTP proxy that makes every S3 request wait, and records when each one ran.

In an AWS region an S3 request waits tens of milliseconds for its first byte, while on loopback it waits almost
nothing: a local run cannot tell a request made after another from two made together. This proxy, put in front of
the local S3 (moto's server, or bench/s3proxy.py), holds every request ``delay_ms`` before passing it on, and
records its start and end. Then (latency with the delay - latency without) / delay counts the S3 round trips a
caller waited for one after another.

Control (never delayed nor recorded): ``POST /__latency__?ms=N`` sets the delay; ``POST /__requests__/reset``
forgets the record; ``GET /__requests__`` returns it as JSON: ``[{"method", "path", "start", "end", "status"}]``,
times in seconds of ``time.monotonic()`` on this machine.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Tuple
from urllib.parse import parse_qs, urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


class LatencyProxy:
    def __init__(self, upstream_port: int, delay_ms: float = 0.0):
        self.upstream_port = upstream_port
        self.delay_ms = delay_ms
        self.requests: List[dict] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LatencyProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def _handler(self):
        proxy = self
        local = threading.local()  # one upstream connection per serving thread, kept alive

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._serve()

            def do_HEAD(self):
                self._serve()

            def do_PUT(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def do_DELETE(self):
                self._serve()

            def _serve(self):
                parts = urlsplit(self.path)
                if parts.path.startswith("/__latency__") or parts.path.startswith("/__requests__"):
                    return self._control(parts)
                started = time.monotonic()
                # botocore turns Nagle on (its socket options are []): a PUT's body waits for the ACK of its headers,
                # which Linux delays up to 40 ms on loopback. S3 is not measured for that: acknowledge at once.
                if hasattr(socket, "TCP_QUICKACK"):
                    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                body = self._body()
                if proxy.delay_ms:
                    time.sleep(proxy.delay_ms / 1000)
                status, headers, data = self._forward(body)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                length = {k.lower(): v for k, v in headers}.get("content-length")
                self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
                proxy._record(  # before the answer goes out: its caller may ask for the record as soon as it has it
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": parts.query,
                        "range": self.headers.get("Range"),
                        "if_match": self.headers.get("If-Match"),
                        "start": started,
                        "end": time.monotonic(),
                        "status": status,
                    }
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                self.wfile.flush()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if not size:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length", 0) or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self, body: bytes):
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding")
                }
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    headers["Content-Length"] = str(len(body))
                for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
                    upstream = getattr(local, "upstream", None)
                    if upstream is None:
                        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                        upstream.connect()
                        upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        local.upstream = upstream
                    try:
                        upstream.request(self.command, self.path, body=body or None, headers=headers)
                        response = upstream.getresponse()
                        data = response.read()
                        if response.will_close:
                            upstream.close()
                            local.upstream = None
                        return response.status, response.getheaders(), data
                    except (http.client.HTTPException, OSError):
                        upstream.close()
                        local.upstream = None
                        if attempt == 2:
                            raise
                raise AssertionError("unreachable")

            def _control(self, parts):
                if parts.path == "/__latency__":
                    proxy.delay_ms = float(parse_qs(parts.query).get("ms", ["0"])[0])
                    data = json.dumps({"delay_ms": proxy.delay_ms}).encode()
                elif parts.path == "/__requests__/reset":
                    with proxy._lock:
                        proxy.requests = []
                    data = b"[]"
                else:
                    with proxy._lock:
                        data = json.dumps(proxy.requests).encode()
                self._body()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def sequential(requests: List[dict]) -> int:
    """The longest chain of requests each of which started after the one before it ended: the round trips a
    caller waited for, read from the record alone."""
    chain = 0
    done: List[Tuple[int, float]] = []  # (depth, end) of the requests seen so far
    for entry in sorted(requests, key=lambda r: r["start"]):
        depth = 1 + max((d for d, end in done if end <= entry["start"]), default=0)
        done.append((depth, entry["end"]))
        chain = max(chain, depth)
    return chain
