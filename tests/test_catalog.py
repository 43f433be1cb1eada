"""The catalog: queries against mongomock, faults against real sockets and a real wire-protocol server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from mockupdb import MockupDB

from chalicelib.errors import CatalogUnavailable, ConfigurationError, NotFound
from chalicelib.settings import Settings
from chalicelib.stores.catalog import Catalog, open_catalog
from tests.conftest import episode_doc, free_port

GUID = "substack:123456"
KEY = f"some-podcast/{GUID}/audio/file with spaces.mp3"


def embedded(catalog_file, documents) -> Catalog:
    path = catalog_file(documents)
    return open_catalog(Settings(local_catalog_file=str(path)))


def test_an_episode_is_found_by_guid(catalog_file):
    catalog = embedded(catalog_file, [episode_doc("other", "a/other/audio/x.mp3"), episode_doc(GUID, KEY)])
    episode = catalog.find_episode(GUID)
    assert (episode.guid, episode.source_bucket, episode.source_key) == (GUID, "pod-insights-raw", KEY)
    assert episode.podcast_title == "Test Podcast" and episode.episode_title == f"Episode {GUID}"


def test_the_audio_path_names_its_own_bucket(catalog_file):
    catalog = embedded(catalog_file, [episode_doc(GUID, KEY, bucket="another-bucket")])
    assert catalog.find_episode(GUID).source_bucket == "another-bucket"


def test_an_unknown_guid_is_not_found(catalog_file):
    with pytest.raises(NotFound, match="substack:9"):
        embedded(catalog_file, [episode_doc(GUID, KEY)]).find_episode("substack:9")


@pytest.mark.parametrize("path", [None, "", "https://example.com/a.mp3", "s3://bucket-only", "s3:///key"])
def test_an_episode_without_a_usable_audio_path_is_not_found(catalog_file, path):
    doc = episode_doc(GUID, KEY)
    doc["s3_audio_path"] = path
    with pytest.raises(NotFound, match="no source audio"):
        embedded(catalog_file, [doc]).find_episode(GUID)


def test_titles_are_optional(catalog_file):
    episode = embedded(catalog_file, [{"guid": GUID, "s3_audio_path": f"s3://b/{KEY}"}]).find_episode(GUID)
    assert episode.podcast_title is None and episode.episode_title is None


@pytest.mark.parametrize("content", ["not json", '{"guid": "x"}'])
def test_an_unreadable_local_catalog_fails_naming_the_variable(tmp_path, content):
    path = tmp_path / "catalog.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match="LOCAL_CATALOG_FILE"):
        open_catalog(Settings(local_catalog_file=str(path)))


def mongo(uri: str, timeout_ms: int = 500) -> Catalog:
    return open_catalog(Settings(mongodb_uri=uri, mongodb_timeout_ms=timeout_ms, mongodb_retry_after_seconds=17))


def timed_failure(catalog: Catalog):
    started = time.monotonic()
    with pytest.raises(CatalogUnavailable) as failure:
        catalog.find_episode(GUID)
    return failure.value, time.monotonic() - started


def test_a_closed_port_is_unavailable_within_the_timeout():
    error, elapsed = timed_failure(mongo(f"mongodb://127.0.0.1:{free_port()}/"))
    assert elapsed < 2.0
    assert error.headers == {"Retry-After": "17"} and error.status == 503


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (a paused or firewalled cluster looks like this)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_port_that_never_answers_is_unavailable_within_the_timeout(silent_port):
    error, elapsed = timed_failure(mongo(f"mongodb://127.0.0.1:{silent_port}/", timeout_ms=800))
    assert 0.5 < elapsed < 3.0, "bounded by the configured timeout, not pymongo's 30 s default"
    assert "unavailable" in error.message and "127.0.0.1" not in error.message


def test_an_unresolvable_host_is_unavailable_within_the_timeout():
    error, elapsed = timed_failure(mongo("mongodb://no-such-host.invalid:27017/"))
    assert elapsed < 3.0


@pytest.fixture
def wire_server():
    server = MockupDB(auto_ismaster={"maxWireVersion": 21})  # binds "localhost": loopback
    server.autoresponds("ping", ok=1)
    port = server.run()
    yield server, port
    server.stop()


def test_a_real_wire_protocol_server_is_queried_by_guid(wire_server):
    server, port = wire_server
    catalog = mongo(f"mongodb://127.0.0.1:{port}/", timeout_ms=2000)
    result = {}
    thread = threading.Thread(target=lambda: result.update(episode=catalog.find_episode(GUID)))
    thread.start()
    request = server.receives(timeout=5)
    assert request["find"] == "episode_metadata" and request["filter"] == {"guid": GUID}
    request.replies({"cursor": {"id": 0, "firstBatch": [episode_doc(GUID, KEY)], "ns": "podinsight.episode_metadata"}})
    thread.join(5)
    assert result["episode"].source_key == KEY


def test_a_server_that_answers_the_handshake_but_not_the_query_is_unavailable_in_time(wire_server):
    server, port = wire_server  # it never replies to find
    error, elapsed = timed_failure(mongo(f"mongodb://127.0.0.1:{port}/", timeout_ms=600))
    assert elapsed < 2.0
    assert error.status == 503


def test_ping_reaches_the_server(wire_server):
    server, port = wire_server
    mongo(f"mongodb://127.0.0.1:{port}/").ping()  # autoresponded: no error
