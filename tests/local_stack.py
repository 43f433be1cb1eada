"""The local stack `make run` starts (scripts/run_local.py on free ports), as a pytest fixture for tests that
need the service over real HTTP: chalice local, moto's S3 server, the demo episode."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "run_local.py"
DEMO_GUID = "0e983347-7815-4b62-87a6-84d988a772b7"
READY_TIMEOUT_S = 90  # the first run on a machine also makes the demo episode
STOP_TIMEOUT_S = 30


def free_ports(count: int) -> List[int]:
    """Ports nobody listens on now (held open together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def ffmpeg_exe() -> str:
    explicit = os.environ.get("FFMPEG_PATH", "").strip()
    if explicit:
        return explicit
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class ProcessOutput:
    """Reads a child's output on a thread, so its pipe never fills, and keeps every line for failure messages."""

    def __init__(self, stream) -> None:
        self.lines: List[str] = []
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)  # end of output

    def wait_for_line(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line starting with {prefix!r} within {timeout_s} s. Output:\n{self.text()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"run_local.py ended its output before {prefix!r}. Output:\n{self.text()}")
            if line.startswith(prefix):
                return line

    def text(self) -> str:
        return "".join(self.lines)


class LocalStack(NamedTuple):
    process: subprocess.Popen
    output: ProcessOutput
    api_port: int
    moto_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@pytest.fixture
def local_stack() -> Iterator[LocalStack]:
    with start_local_stack() as stack:
        yield stack


@contextlib.contextmanager
def start_local_stack(*extra_args: str) -> Iterator[LocalStack]:
    """run_local.py on free ports (with ``extra_args``, such as ``--audio FILE``), until its READY line."""
    api_port, moto_port = free_ports(2)
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", str(api_port), "--moto-port", str(moto_port), *extra_args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group: the kill below reaches chalice local and FFmpeg too
    )
    try:
        output = ProcessOutput(process.stdout)
        ready = output.wait_for_line("READY", READY_TIMEOUT_S)
        assert ready.strip() == f"READY http://127.0.0.1:{api_port}"
        yield LocalStack(process, output, api_port, moto_port)
    finally:
        try:  # the whole group, in case the script is stuck or left a child behind
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=STOP_TIMEOUT_S)
        process.stdout.close()
