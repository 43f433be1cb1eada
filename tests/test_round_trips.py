"""S3 round trips of a clip request, shown by structure, never by timing: which requests a request sends, and which
of them are in flight together (held at a barrier until all of them have been sent: requests made one after another
never meet there, and the barrier's deadline fails the test instead of hanging it)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Callable, List, Optional
from urllib.parse import unquote, urlsplit

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.audio.cutting import Mp3Source, SeekIndex, build_index
from chalicelib.clips.service import ClipRequest
from chalicelib.errors import StorageTimeout
from chalicelib.stores.catalog import Catalog
from chalicelib.stores.s3 import ATTEMPT_BUDGET_S
from chalicelib.stores.source import SourceAudio, SourceObject
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET

BARRIER_S = 10.0  # how long a held request waits for its partners: far longer than any S3 call to moto


class Requests:
    """Every S3 request the service's client sends, in order; ``together(n, which)`` holds the matching requests
    until ``n`` of them are in flight at once."""

    def __init__(self) -> None:
        self.sent: List[dict] = []
        self.alone: List[dict] = []  # held requests whose partners never came: they were sent one after another
        self._gate: Optional[threading.Barrier] = None
        self._which: Callable[[dict], bool] = lambda r: False
        self._lock = threading.Lock()
        wiring.current().s3.meta.events.register_last("before-send.s3", self._record)

    def together(self, parties: int, which: Callable[[dict], bool]) -> None:
        self._gate = threading.Barrier(parties, timeout=BARRIER_S)
        self._which = which

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()

    def _record(self, request, **kwargs) -> None:
        url = urlsplit(request.url)
        path = unquote(url.path).lstrip("/")
        if url.hostname and ".s3." in url.hostname:  # virtual-hosted style: the bucket is in the host name
            bucket, key = url.hostname.split(".s3.", 1)[0], path
        else:
            bucket, _, key = path.partition("/")
        entry = {
            "method": request.method,
            "bucket": bucket,
            "key": key,
            "range": request.headers.get("Range", b""),
            "if_match": request.headers.get("If-Match", b""),
            "if_none_match": request.headers.get("If-None-Match", b""),
        }
        entry = {k: v.decode() if isinstance(v, bytes) else v for k, v in entry.items()}
        with self._lock:
            self.sent.append(entry)
        if self._gate is not None and self._which(entry):
            try:
                self._gate.wait()
            except threading.BrokenBarrierError:
                self.alone.append(entry)

    def names(self) -> List[str]:
        return [f"{r['method']} {r['key'].rsplit('/', 1)[-1]}" for r in self.sent]


def clip_key(start_ms: int) -> str:
    return f"audio_clips/{EPISODE}/{start_ms}-{start_ms + 3000}.mp3"


def get(start_ms: int) -> dict:
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms=3000")
    assert response.status_code == 200, response.body
    return json.loads(response.body)


@pytest.fixture
def catalog_calls(monkeypatch):
    calls: List[str] = []
    original = Catalog.find_episode

    def counting(self, guid, **kwargs):
        calls.append(guid)
        return original(self, guid, **kwargs)

    monkeypatch.setattr(Catalog, "find_episode", counting)
    return calls


def is_head(entry: dict) -> bool:
    return entry["method"] == "HEAD"


def prepare_index(key: str) -> None:
    """What cleanup_clips does when audio arrives: the seek index of the audio now in the bucket, stored."""
    prepared = wiring.current().indexer.for_invocation(None)(SOURCE_BUCKET, key, EPISODE)
    assert prepared.outcome == "built", prepared


@pytest.mark.parametrize("kind", ["cbr", "vbr"])
def test_a_warm_hit_sends_the_heads_of_the_clip_and_of_the_source_together(s3, episode, kind, catalog_calls):
    _, source = episode(kind)
    get(1000)  # this process now knows where the episode's audio is
    requests = Requests()
    requests.together(2, is_head)
    body = get(1000)
    assert body["cache_hit"] is True
    assert sorted(requests.names()) == sorted(["HEAD 1000-4000.mp3", f"HEAD {source.rsplit('/', 1)[-1]}"])
    assert requests.alone == [], "the two HEADs were sent one after the other"
    assert catalog_calls == [EPISODE], "the hit asked the catalog"


@pytest.mark.parametrize("kind", ["cbr", "vbr"])
def test_a_warm_miss_is_the_heads_together_then_one_pinned_read_then_the_put(s3, episode, kind, catalog_calls):
    _, source = episode(kind)
    get(1000)
    etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=source)["ETag"]
    requests = Requests()
    requests.together(2, is_head)
    body = get(20_000)
    assert body["cache_hit"] is False
    heads, rest = requests.sent[:2], requests.sent[2:]
    assert {(r["bucket"], r["key"]) for r in heads} == {(CLIPS_BUCKET, clip_key(20_000)), (SOURCE_BUCKET, source)}
    assert requests.alone == []
    [read, put] = rest
    assert (read["method"], read["key"], read["if_match"]) == ("GET", source, etag), "one read, pinned to the ETag"
    assert not read["range"].startswith("bytes=0-"), "no head read: this process knew the version's layout"
    assert (put["method"], put["key"], put["if_none_match"]) == ("PUT", clip_key(20_000), "*")
    assert catalog_calls == [EPISODE, EPISODE]


@pytest.mark.parametrize("kind", ["cbr", "vbr"])
def test_a_cold_miss_sends_the_head_of_the_clip_with_the_stored_index_and_reads_no_head(s3, episode, kind):
    _, source = episode(kind)
    prepare_index(source)
    etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=source)["ETag"]
    wiring.reset()  # a fresh process
    requests = Requests()
    requests.together(2, lambda r: r["bucket"] == CLIPS_BUCKET and r["method"] in ("HEAD", "GET"))
    body = get(20_000)
    assert body["cache_hit"] is False
    first, rest = requests.sent[:2], requests.sent[2:]
    assert sorted(r["method"] + " " + r["key"].rsplit("/", 1)[-1] for r in first) == [
        "GET seek-index.json",
        "HEAD 20000-23000.mp3",
    ]
    assert requests.alone == []
    [read, put] = rest
    assert (read["method"], read["key"], read["if_match"]) == ("GET", source, etag)
    assert not read["range"].startswith("bytes=0-")
    assert put["method"] == "PUT" and put["key"] == clip_key(20_000)


def test_a_cold_miss_without_a_stored_index_reads_the_head_and_stays_two_above_the_floor(s3, episode):
    _, source = episode("cbr")  # a CBR file cut by arithmetic: no index is stored for it by a miss
    wiring.reset()
    requests = Requests()
    requests.together(2, lambda r: r["bucket"] == CLIPS_BUCKET and r["method"] in ("HEAD", "GET"))
    assert get(20_000)["cache_hit"] is False
    assert requests.alone == []
    assert sorted(requests.names()[:2]) == ["GET seek-index.json", "HEAD 20000-23000.mp3"]
    head, read, put = requests.sent[2:]
    assert head["key"] == source and head["range"].startswith("bytes=0-") and not head["if_match"]
    assert read["key"] == source and read["if_match"] and put["method"] == "PUT"


def test_a_cold_hit_learns_the_stored_index_so_the_next_miss_needs_no_head_read(s3, episode):
    _, source = episode("vbr")
    prepare_index(source)
    get(1000)
    wiring.reset()
    assert get(1000)["cache_hit"] is True  # sent the GET of the index beside its HEAD of the clip, not waited for
    head = s3.head_object(Bucket=SOURCE_BUCKET, Key=source)
    now = SourceObject(SOURCE_BUCKET, source, head["ContentLength"], head["ETag"])
    learnt_by = time.monotonic() + BARRIER_S
    while wiring.current().clips._known.version(now) is None:  # the pool's thread learns it once the GET answers
        assert time.monotonic() < learnt_by, "the hit never learnt the stored index"
        time.sleep(0.01)
    requests = Requests()
    assert get(20_000)["cache_hit"] is False
    assert [r["method"] for r in requests.sent] == ["HEAD", "HEAD", "GET", "PUT"], requests.names()
    assert requests.sent[2]["key"] == source and not requests.sent[2]["range"].startswith("bytes=0-")


def test_a_stored_index_of_a_replaced_source_never_makes_a_stale_clip(s3, episode, audio):
    _, source = episode("cbr")
    prepare_index(source)  # of the old audio; the new audio's event has not been handled yet
    old = s3.head_object(Bucket=SOURCE_BUCKET, Key=source)["ETag"]
    s3.put_object(Bucket=SOURCE_BUCKET, Key=source, Body=audio["vbr"].data)
    wiring.reset()
    requests = Requests()
    assert get(20_000)["cache_hit"] is False
    now = s3.head_object(Bucket=SOURCE_BUCKET, Key=source)["ETag"]
    assert s3.head_object(Bucket=CLIPS_BUCKET, Key=clip_key(20_000))["Metadata"]["source-etag"] == now
    pinned = [r["if_match"] for r in requests.sent if r["method"] == "GET" and r["key"] == source]
    assert pinned[0] == old and now in pinned, "the read pinned to the index's version was refused, then redone"


def test_an_answer_from_an_unconfirmed_index_is_checked_against_the_audio_now(s3, episode, audio, caplog):
    data = audio["vbr"].data
    _, source = episode("vbr", data=data[: len(data) // 4])  # about 10 s of the 40 s
    prepare_index(source)
    s3.put_object(Bucket=SOURCE_BUCKET, Key=source, Body=data)  # the whole episode replaces it
    wiring.reset()
    body = get(30_000)  # past the end of the old audio, as its index says without reading a byte
    assert body["cache_hit"] is False and body["duration_ms"] == 3000
    assert any("version was not confirmed" in r.getMessage() for r in caplog.records), "the old index answered first"


def test_the_calls_sent_together_are_bounded_by_the_request_deadline(s3, episode):
    episode("cbr")
    service = wiring.current().clips
    service.get_clip(ClipRequest(EPISODE, 1000, 3000), time.monotonic() + 30)
    requests = Requests()
    with pytest.raises(StorageTimeout):  # refused in the pool's threads, which see the caller's deadline
        service.get_clip(ClipRequest(EPISODE, 1000, 3000), time.monotonic() + ATTEMPT_BUDGET_S - 0.5)
    assert requests.sent == [], "an S3 attempt that could not end before the deadline was sent"


@pytest.mark.parametrize("kind", ["cbr", "vbr", "mpeg2_mono", "big_id3"])
def test_the_stored_index_carries_what_the_head_read_gives(s3, episode, kind):
    _, source = episode(kind)
    opened = SourceAudio.open(wiring.current().s3, SOURCE_BUCKET, source)
    sniffed = Mp3Source.sniff(opened)
    assert sniffed is not None
    index = SeekIndex.from_json(json.loads(json.dumps(build_index(sniffed, time.monotonic() + 30).to_json())))
    assert index is not None
    assert index.layout == sniffed.layout and index.source_size == opened.source.size
    older = {k: v for k, v in index.to_json().items() if k not in ("layout", "source_size")}
    assert SeekIndex.from_json(older) == replace(index, layout=None, source_size=None), "an older index still loads"
