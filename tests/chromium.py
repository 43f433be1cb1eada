"""A real headless Chromium, driven over its DevTools protocol (a websocket), for tests that need a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
]
START_TIMEOUT_S = 30


def chromium_binary() -> str:
    """Debian's chromium (installed by `make test` as root), else skip saying why."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no Chromium on this machine: `make test` installs Debian's chromium with apt-get when run as root "
        "(CI does); as another user, install it with `sudo apt-get install chromium`"
    )


class DevTools:
    """One page target's DevTools session: ``call`` a method and get its result; events are kept for ``wait``."""

    def __init__(self, websocket_url: str):
        import websocket  # websocket-client, a development dependency

        self._socket = websocket.create_connection(websocket_url, timeout=30, suppress_origin=True)
        self._next_id = 0
        self.events: List[Dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait(self, method: str, timeout_s: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event.get("params", {})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} within {timeout_s} s")
            self._socket.settimeout(remaining)
            self.events.append(json.loads(self._socket.recv()))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self._socket.close()


class Browser:
    def __init__(self, process: subprocess.Popen, port: int):
        self.process = process
        self.port = port

    def page(self) -> DevTools:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t.get("type") == "page")
        return DevTools(page["webSocketDebuggerUrl"])


def _devtools_port(profile: Path, process: subprocess.Popen, log: Path) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}: {log.read_text()[-2000:]}")
        lines = marker.read_text().splitlines() if marker.exists() else []
        if lines and lines[0].isdigit():
            return int(lines[0])
        time.sleep(0.05)
    raise TimeoutError(f"chromium wrote no DevToolsActivePort within {START_TIMEOUT_S} s")


@pytest.fixture
def chromium(tmp_path) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile, stopped by PID afterwards."""
    profile, log = tmp_path / "chromium-profile", tmp_path / "chromium.log"
    with log.open("wb") as output:  # a file, not a pipe: a chatty browser never blocks on a full pipe
        process = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    try:
        yield Browser(process, _devtools_port(profile, process, log))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def console_messages(events: List[Dict[str, Any]]) -> List[str]:
    """What the page logged (CSP refusals included)."""
    texts: List[Optional[str]] = []
    for event in events:
        if event.get("method") == "Log.entryAdded":
            texts.append(event["params"]["entry"].get("text"))
        elif event.get("method") == "Runtime.consoleAPICalled":
            texts.append(" ".join(str(a.get("value")) for a in event["params"].get("args", [])))
    return [t for t in texts if t]
