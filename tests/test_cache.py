"""The clip cache: what a hit costs, when a clip is regenerated, and how little of the source a miss reads."""

from __future__ import annotations

import json
import os
import time

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.stores.catalog import Catalog
from chalicelib.stores.source import SourceAudio
from tests.audio_tools import FRAME_MS, decode, generate
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, clip_objects

KEY = f"audio_clips/{EPISODE}/1000-4000.mp3"
PATH = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=3000"


def get(path=PATH):
    with Client(app, stage_name="local") as client:
        response = client.http.get(path)
    return response, json.loads(response.body) if response.body else None


@pytest.fixture
def catalog_calls(monkeypatch):
    calls = []
    original = Catalog.find_episode

    def counting(self, guid, **kwargs):
        calls.append(guid)
        return original(self, guid, **kwargs)

    monkeypatch.setattr(Catalog, "find_episode", counting)
    return calls


def count_get_object_bytes() -> list:
    """Bytes of every GetObject body from the source bucket that S3 sends the service's current client, as botocore
    sees them: a count kept apart from the service's own."""
    sent = []

    def count(http_response, parsed, model, **kwargs):
        if http_response.status_code in (200, 206) and SOURCE_BUCKET in http_response.url:
            sent.append(int(http_response.headers.get("content-length", 0)))

    wiring.current().s3.meta.events.register("after-call.s3.GetObject", count)
    return sent


def test_a_hit_makes_no_mongodb_call(s3, episode, catalog_calls):
    episode("cbr")
    assert get()[0].status_code == 200
    assert catalog_calls == [EPISODE]
    response, body = get()
    assert response.status_code == 200 and body["cache_hit"] is True
    assert catalog_calls == [EPISODE], "the hit asked the catalog"


def test_a_hit_is_served_while_mongodb_is_unreachable(s3, episode, monkeypatch):
    episode("cbr")
    assert get()[0].status_code == 200
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "300")
    wiring.reset()
    response, body = get()
    assert response.status_code == 200 and body["cache_hit"] is True
    miss = get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=2000")
    assert miss[0].status_code == 503, "a miss does need the catalog"


def test_a_clip_records_the_source_version_it_was_cut_from(s3, episode):
    _, key = episode("cbr")
    get()
    meta = s3.head_object(Bucket=CLIPS_BUCKET, Key=KEY)["Metadata"]
    source = s3.head_object(Bucket=SOURCE_BUCKET, Key=key)
    assert meta["source-bucket"] == SOURCE_BUCKET and meta["source-key"] == key
    assert meta["source-etag"] == source["ETag"]
    assert meta["duration-ms"] == "3000" and meta["episode-id"] == EPISODE


def test_a_hit_whose_source_changed_is_regenerated_not_served_stale(s3, episode, audio, catalog_calls):
    _, key = episode("cbr")
    get()
    old_clip = s3.get_object(Bucket=CLIPS_BUCKET, Key=KEY)["Body"].read()
    s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["vbr"].data)  # replaced: a new ETag
    response, body = get()
    assert response.status_code == 200 and body["cache_hit"] is False
    new_clip = s3.get_object(Bucket=CLIPS_BUCKET, Key=KEY)["Body"].read()
    assert new_clip != old_clip
    meta = s3.head_object(Bucket=CLIPS_BUCKET, Key=KEY)["Metadata"]
    assert meta["source-etag"] == s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    assert get()[1]["cache_hit"] is True
    assert len(catalog_calls) == 2


def test_a_hit_whose_source_is_gone_asks_the_catalog_and_answers_404(s3, episode):
    _, key = episode("cbr")
    get()
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=key)
    response, body = get()
    assert response.status_code == 404 and "source audio" in body["Message"]


def test_a_clip_another_request_stored_first_is_served_not_overwritten(s3, episode, monkeypatch):
    _, source = episode("cbr")
    from chalicelib.stores.clip_cache import ClipStore

    etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=source)["ETag"]  # cut from the same version as ours
    s3.put_object(
        Bucket=CLIPS_BUCKET,
        Key=KEY,
        Body=b"the winner's clip",
        Metadata={"source-bucket": SOURCE_BUCKET, "source-key": source, "source-etag": etag, "duration-ms": "2999"},
    )
    original_lookup = ClipStore.lookup
    looks = []

    def first_lookup_misses(self, key, deadline=None):
        looks.append(key)
        return None if len(looks) == 1 else original_lookup(self, key, deadline)

    monkeypatch.setattr(ClipStore, "lookup", first_lookup_misses)
    response, body = get()
    assert response.status_code == 200 and body["duration_ms"] == 2999
    assert s3.get_object(Bucket=CLIPS_BUCKET, Key=KEY)["Body"].read() == b"the winner's clip"


def test_a_source_replaced_while_being_read_is_cut_again_from_the_new_version(s3, episode, audio, monkeypatch):
    _, key = episode("cbr")
    original_read = SourceAudio.read
    replaced = []

    def replace_once(self, start, end):
        if not replaced:
            replaced.append(True)
            s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["vbr"].data)
        return original_read(self, start, end)

    monkeypatch.setattr(SourceAudio, "read", replace_once)
    response, body = get()
    assert response.status_code == 200
    meta = s3.head_object(Bucket=CLIPS_BUCKET, Key=KEY)["Metadata"]
    assert meta["source-etag"] == s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    assert decode(s3.get_object(Bucket=CLIPS_BUCKET, Key=KEY)["Body"].read()).stderr == ""


@pytest.fixture(scope="module")
def long_sources(tmp_path_factory):
    """Ten-minute episodes: each far larger (9.6 MB CBR) than any clip."""
    directory = str(tmp_path_factory.mktemp("long"))
    fast = ("-compression_level", "9")
    return {
        "cbr": generate(directory, "long_cbr", 600, 44100, ("-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", *fast)),
        "vbr": generate(directory, "long_vbr", 600, 44100, ("-ac", "2", "-c:a", "libmp3lame", "-q:a", "4", *fast)),
    }


def logged_request(caplog) -> dict:
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "request"][-1]


@pytest.mark.slow
def test_a_cbr_miss_reads_the_clip_not_the_episode(s3, episode, long_sources, caplog):
    episode("cbr", data=long_sources["cbr"].data)
    get_object_bytes = count_get_object_bytes()
    size = os.path.getsize(long_sources["cbr"].path)
    for start_ms in (1000, 300_000, 590_000):
        get_object_bytes.clear()
        response, body = get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms=5000")
        assert response.status_code == 200
        clip_bytes = len(
            s3.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/{start_ms}-{start_ms + 5000}.mp3")[
                "Body"
            ].read()
        )
        read = sum(get_object_bytes)
        assert read <= clip_bytes + 256 * 1024, (
            f"read {read} bytes of a {size}-byte source for a {clip_bytes}-byte clip"
        )
        assert logged_request(caplog)["source_bytes_read"] == read


@pytest.mark.slow
def test_a_vbr_episode_is_indexed_once_then_every_miss_reads_only_its_clip(s3, episode, long_sources, caplog):
    episode("vbr", data=long_sources["vbr"].data)
    get_object_bytes = count_get_object_bytes()
    size = os.path.getsize(long_sources["vbr"].path)
    assert get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=5000")[0].status_code == 200
    assert sum(get_object_bytes) >= size, "the first miss scans the episode once to build its seek index"
    assert logged_request(caplog)["index_built"] is True
    index = s3.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/seek-index.json")["Body"].read()
    assert len(index) < 20_000
    for start_ms in (300_000, 590_000):
        get_object_bytes.clear()
        response, body = get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms=5000")
        assert response.status_code == 200
        clip = s3.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/{start_ms}-{start_ms + 5000}.mp3")[
            "Body"
        ].read()
        read = sum(get_object_bytes)
        assert read <= len(clip) + 256 * 1024
        assert logged_request(caplog)["index_built"] is False
        assert abs(decode(clip).duration_ms - 5000) <= FRAME_MS


def test_identical_concurrent_misses_cut_once_and_all_answer(s3, episode, monkeypatch):
    import threading

    from chalicelib.audio import cutting as audio
    from chalicelib.clips.service import ClipRequest

    episode("cbr")
    cuts = []
    original = audio.cut_mp3

    def counting_cut(*args, **kwargs):
        cuts.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr("chalicelib.clips.service.cut_mp3", counting_cut)
    service = wiring.current().clips
    barrier = threading.Barrier(12)
    results, errors = [], []

    def request():
        barrier.wait()
        try:
            results.append(service.get_clip(ClipRequest(EPISODE, 1000, 3000), time.monotonic() + 20))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(results) == 12
    assert len(cuts) == 1, "one generation for twelve identical requests"
    assert sum(not r.cache_hit for r in results) == 1 and all(r.duration_ms == 3000 for r in results)
    assert clip_objects(s3) == [KEY]
