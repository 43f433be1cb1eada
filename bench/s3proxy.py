"""A byte-counting S3 front for the benchmark, on 127.0.0.1.

Source objects (``/{source bucket}/{key}``, path-style) are served from files on disk with S3's semantics for
HEAD, ranged GET (206, Content-Range, 416) and If-Match (412), so that a range costs what it costs on S3: moto's
own ranged GET reads the whole object first (165 MB for 500 KB: ~120 ms), which would blame the service for
moto's cost. Everything else is forwarded to moto's server. ``GET /__stats__`` returns the source bytes sent so
far; ``POST /__reset__`` zeroes them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Tuple
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def etag_of(path: str) -> str:
    cache = path + ".etag"
    if os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(path):
        return open(cache).read()
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    etag = f'"{digest.hexdigest()}"'
    with open(cache, "w") as handle:
        handle.write(etag)
    return etag


class S3Proxy:
    def __init__(self, moto_port: int, sources: Dict[Tuple[str, str], str]):
        self.moto_port = moto_port
        self.sources = {key: (path, os.path.getsize(path), etag_of(path)) for key, path in sources.items()}
        self.source_bytes = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "S3Proxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, sent: int) -> None:
        with self.lock:
            self.source_bytes += sent

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # headers and body go out in separate writes: without this, Nagle meets delayed ACK (+40 ms)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._route(body=False)

            def do_GET(self):
                self._route(body=True)

            def do_PUT(self):
                self._forward()

            def do_POST(self):
                if self.path == "/__reset__":
                    with proxy.lock:
                        proxy.source_bytes = 0
                    return self._reply(200, b"{}")
                self._forward()

            def do_DELETE(self):
                self._forward()

            def _route(self, body: bool):
                if self.path == "/__stats__":
                    return self._reply(200, json.dumps({"source_bytes": proxy.source_bytes}).encode())
                parts = unquote(urlsplit(self.path).path).lstrip("/").split("/", 1)
                source = proxy.sources.get(tuple(parts)) if len(parts) == 2 else None
                if source is None:
                    return self._forward()
                self._serve_file(*source, body=body)

            def _serve_file(self, path: str, size: int, etag: str, body: bool):
                if self.headers.get("If-Match") not in (None, etag):
                    return self._reply(412, b"<Error><Code>PreconditionFailed</Code></Error>")
                start, end, status = 0, size - 1, 200
                match = _RANGE.fullmatch(self.headers.get("Range", "") or "")
                if match:
                    start = int(match.group(1))
                    end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
                    if start >= size:
                        return self._reply(416, b"<Error><Code>InvalidRange</Code></Error>")
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Last-Modified", "Tue, 24 Nov 2026 00:00:00 GMT")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as handle:
                    handle.seek(start)
                    remaining = end - start + 1
                    while remaining:
                        block = handle.read(min(remaining, 64 * 1024))
                        proxy.count(len(block))  # before sending: a client may ask for stats as soon as it has all
                        try:
                            self.wfile.write(block)
                        except (BrokenPipeError, ConnectionResetError):
                            break  # the client stopped reading (FFmpeg does): at most one block over-counted
                        remaining -= len(block)

            def _forward(self):
                length = int(self.headers.get("Content-Length", 0) or 0)
                payload = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.moto_port, timeout=60)
                upstream.connect()
                upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=payload, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                # a HEAD answer has no body but tells the object's length: pass that on
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            def _reply(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
