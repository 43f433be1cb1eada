"""A paused cluster never hangs a request, and the process recovers by itself when MongoDB is back.

The catalog's address is a TCP relay on 127.0.0.1 that first accepts connections and never answers (what a paused
or firewalled cluster looks like), then relays to mockupdb, which speaks MongoDB's wire protocol."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from chalice.test import Client
from mockupdb import MockupDB

from app import app
from tests.conftest import EPISODE, episode_doc, source_key


class Relay:
    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.target = None  # None: swallow everything
        self.held = []
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def answer_from(self, port: int) -> None:
        self.target = port
        for connection in self.held:  # the silent connections die, as they would when a cluster resumes
            connection.close()
        self.held = []

    def _accept(self):
        self.listener.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            if self.target is None:
                self.held.append(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass

    def stop(self):
        self.stopped.set()
        for connection in self.held:
            connection.close()
        self.listener.close()


@pytest.fixture
def relay():
    relay = Relay()
    yield relay
    relay.stop()


@pytest.fixture
def mongodb():
    server = MockupDB(auto_ismaster={"maxWireVersion": 21})
    server.autoresponds("ping", ok=1)
    yield server
    server.stop()


def test_misses_fail_fast_while_mongodb_is_silent_hits_keep_working_and_it_recovers(
    s3, audio, relay, mongodb, monkeypatch
):
    key = source_key(EPISODE)
    s3.put_object(Bucket="pod-insights-raw", Key=key, Body=audio["cbr"].data)
    doc = episode_doc(EPISODE, key)

    def find(request):  # mockupdb's autoresponds("find", ...) does not match pymongo 4's OP_MSG find; a function does
        if request.command_name != "find":
            return False
        return request.replies(cursor={"id": 0, "firstBatch": [doc], "ns": "podinsight.episode_metadata"})

    mongodb.autoresponds(find)
    port = mongodb.run()
    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{relay.port}/")
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "3000")
    from chalicelib import wiring

    wiring.reset()
    # a clip cached before the outage (stored through the service itself, while MongoDB answered)
    relay.answer_from(port)
    with Client(app, stage_name="local") as client:
        assert client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000").status_code == 200
    relay.target = None  # the outage begins: new connections are swallowed
    wiring.reset()  # and a fresh process meets it cold, as a new Lambda would

    with Client(app, stage_name="local") as client:
        started = time.monotonic()
        miss = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=2000")
        elapsed = time.monotonic() - started
        assert miss.status_code == 503 and int(miss.headers["Retry-After"]) > 0
        assert elapsed < 4.0, f"a miss took {elapsed:.1f} s against a silent catalog"
        hit = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000")
        assert hit.status_code == 200 and json.loads(hit.body)["cache_hit"] is True

        relay.answer_from(port)  # MongoDB is back, at the same address: no restart, no reset
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            status = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=2000").status_code
            if status == 200:
                break
        assert status == 200, "the same process recovered once MongoDB answered again"
