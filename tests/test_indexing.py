"""The seek index: built by cleanup_clips when an episode's audio arrives, and by one process at a time when a
miss finds none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from chalicelib import wiring
from chalicelib.audio import cutting as audio_module
from chalicelib.audio.cutting import SeekIndex
from chalicelib.clips import seek_index as indexing
from chalicelib.clips.service import ClipRequest
from chalicelib.errors import Unavailable
from chalicelib.stores.source import SourceAudio
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET
from tests.test_cleanup import invoke, record, remaining, seed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INDEX_KEY = f"audio_clips/{EPISODE}/seek-index.json"
LEASE_KEY = f"audio_clips/{EPISODE}/seek-index.lease"
LEVELS_KEY = f"audio_clips/{EPISODE}/levels.bin"
SLACK = 64 * 1024

pytestmark = pytest.mark.usefixtures("stage_lambda_timeout")


@pytest.fixture(autouse=True)
def no_index_in_memory(monkeypatch):
    """Every test starts without the warm process's indexes: identical fixtures have identical ETags."""
    monkeypatch.setattr(indexing, "_recent_indexes", indexing._Recent(16))


@pytest.fixture(autouse=True)
def atomic_conditional_puts(monkeypatch):
    """moto checks If-None-Match / If-Match and then writes, so two racing PUTs can both pass; S3 decides
    atomically. Serialising moto's PutObject (in-process and its server in this process) gives S3's behaviour."""
    from moto.s3.responses import S3Response

    original, lock = S3Response.put_object, threading.Lock()

    def put_object(self):
        with lock:
            return original(self)

    monkeypatch.setattr(S3Response, "put_object", put_object)


@pytest.fixture
def streams(monkeypatch):
    """Every full scan of a source: the bytes each ``SourceAudio.stream`` call yielded."""
    scans: list = []
    original = SourceAudio.stream

    def counted(self, start, chunk_size=1 << 20):
        scans.append(0)
        slot = len(scans) - 1
        for chunk in original(self, start, chunk_size):
            scans[slot] += len(chunk)
            yield chunk

    monkeypatch.setattr(SourceAudio, "stream", counted)
    return scans


def stored_index(s3):
    return SeekIndex.from_json(json.loads(s3.get_object(Bucket=CLIPS_BUCKET, Key=INDEX_KEY)["Body"].read()))


def has(s3, key) -> bool:
    return s3.list_objects_v2(Bucket=CLIPS_BUCKET, Prefix=key).get("KeyCount", 0) > 0


def cleanup_lines(caplog) -> list:
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "cleanup"]


def write_lease(s3, source_etag: str, expires_in_s: float, owner: str = "another-lambda") -> None:
    s3.put_object(
        Bucket=CLIPS_BUCKET,
        Key=LEASE_KEY,
        Body=json.dumps(
            {"source_etag": source_etag, "expires_at": time.time() + expires_in_s, "owner": owner}
        ).encode(),
    )


def miss(start_ms: int, seconds: float = 20.0, duration_ms: int = 5000):
    return wiring.current().clips.get_clip(ClipRequest(EPISODE, start_ms, duration_ms), time.monotonic() + seconds)


# ------------------------------------------------------------------ built when the audio arrives


def test_created_mp3_audio_is_indexed_after_its_clips_are_purged(s3, episode, caplog):
    seed(s3, EPISODE, 3)  # clips and an index of the old audio
    _, key = episode("vbr")
    invoke(record(key, "ObjectCreated:Put"))
    assert remaining(s3, EPISODE) == 3, "only the new index, its (released) lease and the new levels are left"
    index = stored_index(s3)
    assert index is not None and index.frames > 1000
    assert index.source_etag == s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    line = cleanup_lines(caplog)[-1]
    assert line["clips_deleted"] == 4 and line["index"] == "built" and line["levels"] == "built"
    assert line["index_source_bytes_read"] >= s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ContentLength"]


def test_the_first_miss_after_upload_reads_only_the_clip(s3, episode, streams):
    _, key = episode("vbr")
    invoke(record(key, "ObjectCreated:Put"))
    streams.clear()
    for start_ms in (1000, 20_000, 34_000):
        result = miss(start_ms)
        clip = s3.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/{start_ms}-{start_ms + 5000}.mp3")
        clip_bytes = clip["ContentLength"]
        assert result.method == "mp3-index" and not result.index_built
        assert result.source_bytes_read <= clip_bytes + SLACK, (start_ms, result.source_bytes_read, clip_bytes)
    assert streams == [], "no miss scanned the episode"


def test_constant_bitrate_audio_is_indexed_too(s3, episode):
    """CBR files need no index today, but an engine that routes more files through it finds one ready."""
    _, key = episode("cbr")
    invoke(record(key, "ObjectCreated:Put"))
    assert stored_index(s3).source_etag == s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]


def test_replaced_audio_gets_the_new_versions_index(s3, episode, audio):
    _, key = episode("vbr")
    invoke(record(key, "ObjectCreated:Put"))
    old = stored_index(s3)
    s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["vbr_no_header"].data)
    invoke(record(key, "ObjectCreated:Put"))
    new = stored_index(s3)
    assert new.source_etag != old.source_etag
    assert new.source_etag == s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]


def test_removed_audio_builds_nothing(s3, episode, caplog, streams):
    _, key = episode("vbr")  # still readable: only the event's kind keeps it from being indexed
    seed(s3, EPISODE, 2)
    invoke(record(key, "ObjectRemoved:Delete"))
    assert remaining(s3, EPISODE) == 0 and streams == []
    assert "index" not in cleanup_lines(caplog)[-1]


def test_m4a_audio_builds_no_index_only_its_levels(s3, episode, caplog, streams):
    _, key = episode("m4a")
    seed(s3, EPISODE, 2)
    invoke(record(key, "ObjectCreated:Put"))
    listing = s3.list_objects_v2(Bucket=CLIPS_BUCKET, Prefix=f"audio_clips/{EPISODE}/")["Contents"]
    assert [item["Key"].rsplit("/", 1)[-1] for item in listing] == ["levels.bin"]
    assert len(streams) == 1, "the levels read the source once; the index none"
    assert cleanup_lines(caplog)[-1]["index"] == "not-mp3" and cleanup_lines(caplog)[-1]["levels"] == "built"


def test_a_failed_build_is_logged_and_the_purge_stands(s3, episode, caplog, monkeypatch):
    def broken(source, deadline):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(indexing, "build_index", broken)
    _, key = episode("vbr")
    seed(s3, EPISODE, 3)
    invoke(record(key, "ObjectCreated:Put"))  # does not raise: Lambda does not retry
    assert not has(s3, INDEX_KEY)
    assert [k["Key"] for k in s3.list_objects_v2(Bucket=CLIPS_BUCKET)["Contents"]] == [LEVELS_KEY, LEASE_KEY], (
        "every clip purged; only the released lease (and the levels, made apart from the index) remain"
    )
    failure = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "index_failed"][-1]
    assert failure.levelname == "ERROR" and "disk on fire" in failure.fields["error"]
    assert cleanup_lines(caplog)[-1]["index"] == "failed"


def test_an_index_that_cannot_be_stored_is_logged_as_a_failure(s3, episode, caplog, monkeypatch):
    from chalicelib.stores.clip_cache import EpisodeArtefact

    monkeypatch.setattr(EpisodeArtefact, "save", lambda self, document: None)  # S3 refused: save logs, returns
    _, key = episode("vbr")
    invoke(record(key, "ObjectCreated:Put"))
    assert not has(s3, INDEX_KEY)
    assert cleanup_lines(caplog)[-1]["index"] == "failed"


def test_an_audio_deleted_before_its_created_event_is_handled_builds_nothing(s3, caplog):
    seed(s3, EPISODE, 2)
    invoke(record(f"p/{EPISODE}/audio/gone.mp3", "ObjectCreated:Put"))
    assert remaining(s3, EPISODE) == 0
    assert cleanup_lines(caplog)[-1]["index"] == "source-gone"


def test_the_build_deadline_comes_from_the_lambdas_remaining_time(s3, episode, monkeypatch):
    import app as app_module

    given = []
    real_build = indexing.build_index
    monkeypatch.setattr(
        indexing, "build_index", lambda source, deadline: given.append(deadline) or real_build(source, deadline)
    )
    _, key = episode("vbr")
    context = SimpleNamespace(aws_request_id="req-1", get_remaining_time_in_millis=lambda: 60_000)
    called = time.monotonic()
    app_module.cleanup_clips({"Records": [record(key, "ObjectCreated:Put")]}, context)
    assert called + 55 <= given[0] <= time.monotonic() + 55, "60 s left, 5 s kept to log and return"
    assert stored_index(s3) is not None


# ------------------------------------------------------------------ concurrent first misses


def test_concurrent_first_misses_scan_the_episode_once_and_all_answer(s3, episode, audio, streams, monkeypatch):
    clients = 6
    episode("vbr")
    waiting, ready = set(), threading.Event()
    real_build, real_pause = indexing.build_index, indexing._pause

    def pause(seconds):
        waiting.add(threading.get_ident())
        if len(waiting) >= clients - 1:
            ready.set()
        real_pause(min(seconds, 0.05))

    def build_while_others_wait(source, deadline):
        assert ready.wait(15), "the other misses never waited"
        return real_build(source, deadline)

    monkeypatch.setattr(indexing, "_pause", pause)
    monkeypatch.setattr(indexing, "build_index", build_while_others_wait)
    barrier = threading.Barrier(clients)
    results, errors = [], []

    def one(n):
        barrier.wait()
        try:
            results.append(miss(1000 + n * 4000))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(results) == clients
    assert len(streams) == 1, f"{len(streams)} full scans"
    assert sum(r.index_built for r in results) == 1
    assert streams[0] >= len(audio["vbr"].data) - 16 * 1024, "that one scan read the whole episode"


def test_a_miss_that_cannot_wait_for_the_builder_answers_503_with_retry_after(s3, episode, streams):
    _, key = episode("vbr")
    write_lease(s3, s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"], expires_in_s=30)
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:  # the lease's ClipTimeout, or S3's own deadline guard near the end
        miss(1000, seconds=4.5)
    assert time.monotonic() - started < 4.5, "never waits past its deadline"
    assert raised.value.status == 503
    assert 1 <= int(raised.value.headers["Retry-After"]) <= indexing.RETRY_AFTER_MAX_S
    assert streams == [] and not has(s3, f"audio_clips/{EPISODE}/1000-6000.mp3")


def test_a_waiter_serves_the_index_the_holder_stores(s3, episode, streams, monkeypatch):
    _, key = episode("vbr")
    write_lease(s3, s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"], expires_in_s=30)
    real_pause = indexing._pause
    polls = []

    def pause(seconds):  # meanwhile the lease's holder, another Lambda, stores the index
        polls.append(seconds)
        if len(polls) == 2:
            source = audio_module.Mp3Source.sniff(SourceAudio.open(wiring.current().s3, SOURCE_BUCKET, key))
            index = audio_module.build_index(source, time.monotonic() + 20)
            wiring.current().clip_store.artefact(EPISODE, "seek-index.json").save(index.to_json())
        real_pause(min(seconds, 0.05))

    monkeypatch.setattr(indexing, "_pause", pause)
    result = miss(1000)
    assert not result.index_built and len(polls) == 2 and len(streams) == 1


def test_an_expired_lease_is_taken_over(s3, episode):
    _, key = episode("vbr")
    etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    write_lease(s3, etag, expires_in_s=-1, owner="crashed-lambda")
    started = time.monotonic()
    result = miss(1000)
    assert result.index_built and time.monotonic() - started < 5
    assert stored_index(s3).source_etag == etag
    lease = json.loads(s3.get_object(Bucket=CLIPS_BUCKET, Key=LEASE_KEY)["Body"].read())
    assert lease["owner"] != "crashed-lambda" and lease["released"] is True


def test_a_lease_for_the_previous_audio_is_taken_over(s3, episode):
    episode("vbr")
    write_lease(s3, '"etag-of-the-old-audio"', expires_in_s=30)
    assert miss(1000, seconds=5).index_built


def test_of_two_takers_of_an_expired_lease_only_one_wins(s3, episode, monkeypatch):
    _, key = episode("vbr")
    etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    write_lease(s3, etag, expires_in_s=-1, owner="crashed-lambda")
    artefact = wiring.current().clip_store.artefact(EPISODE, "seek-index.json").beside(indexing.LEASE_NAME)
    both_read = threading.Barrier(2)
    real_load = type(artefact).load_versioned

    def load_then_meet(self):
        current = real_load(self)
        if threading.current_thread().name.startswith("taker"):
            both_read.wait(10)  # both have seen the expired lease before either writes
            threading.current_thread().name = "done"
        return current

    monkeypatch.setattr(type(artefact), "load_versioned", load_then_meet)
    outcomes = {}

    def take(n):
        outcomes[n] = indexing._Lease(artefact, etag).acquire(time.time() + 30)

    threads = [threading.Thread(target=take, args=(n,), name=f"taker-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(o is None for o in outcomes.values()) == [False, True], outcomes


def test_the_lease_lives_beside_the_index_so_the_cleanup_purges_it(s3, episode):
    _, key = episode("vbr")
    assert miss(1000).index_built
    assert has(s3, LEASE_KEY) and LEASE_KEY.startswith(f"audio_clips/{EPISODE}/")
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=key)
    invoke(record(key, "ObjectRemoved:Delete"))
    assert remaining(s3, EPISODE) == 0


@pytest.mark.slow
def test_two_processes_missing_at_once_scan_the_episode_once(moto_server, audio, tmp_path):
    key = f"p/{EPISODE}/audio/episode.mp3"
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["vbr"].data)
    env = dict(os.environ, PYTHONPATH=ROOT)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.lease_worker", SOURCE_BUCKET, key, EPISODE, str(tmp_path)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in reports) == [False, True]
    assert sorted(r["scans"] for r in reports) == [0, 1]
    builder, waiter = sorted(reports, key=lambda r: not r["built"])
    assert builder["bytes_read"] >= len(audio["vbr"].data) and waiter["bytes_read"] <= 16 * 1024, reports
    assert all(r["frames"] == reports[0]["frames"] > 1000 for r in reports)


def test_a_warm_process_keeps_the_index_it_used(s3, episode, streams):
    episode("vbr")
    assert miss(1000).index_built
    s3.delete_object(Bucket=CLIPS_BUCKET, Key=INDEX_KEY)
    second = miss(20_000)
    assert second.method == "mp3-index" and not second.index_built and len(streams) == 1
    assert not has(s3, INDEX_KEY), "served from memory: nothing fetched or rebuilt"
