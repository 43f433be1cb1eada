"""cleanup_clips: S3 events on the source bucket purge the episode's cached clips and derived artefacts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import quote_plus

import pytest
from chalice.test import Client

import app as app_module
from app import app
from chalicelib.clips.cleanup import episode_of_key
from tests.conftest import CLIPS_BUCKET, SOURCE_BUCKET

pytestmark = pytest.mark.usefixtures("stage_lambda_timeout")

A = "0e983347-7815-4b62-87a6-84d988a772b7"
B = "substack:123456"


def seed(s3, episode_id, clips, threads=1):
    keys = [f"audio_clips/{episode_id}/{i * 1000}-{i * 1000 + 30000}.mp3" for i in range(clips)]
    keys.append(f"audio_clips/{episode_id}/seek-index.json")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=CLIPS_BUCKET, Key=key, Body=b""), keys))


def remaining(s3, episode_id) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=CLIPS_BUCKET, Prefix=f"audio_clips/{episode_id}/")
    return sum(len(page.get("Contents", [])) for page in pages)


def record(key: str, name: str = "ObjectRemoved:Delete") -> dict:
    """One record as S3 sends it: the key URL-encoded, spaces as '+'."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": name,
        "s3": {
            "bucket": {"name": SOURCE_BUCKET, "arn": f"arn:aws:s3:::{SOURCE_BUCKET}"},
            "object": {"key": quote_plus(key, safe="/"), "size": 1},
        },
    }


def invoke(*records) -> None:
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke("cleanup_clips", {"Records": list(records)})


@pytest.mark.slow
def test_removing_a_source_purges_all_its_clips_and_nothing_else_and_a_repeat_is_a_no_op(s3, caplog):
    seed(s3, A, 2500)
    seed(s3, B, 10)
    event = record(f"a16z-podcast/{A}/audio/a16z_{A}_audio.mp3")
    invoke(event)
    assert remaining(s3, A) == 0
    assert remaining(s3, B) == 11
    invoke(event)
    lines = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "cleanup"]
    assert [(line["episode_id"], line["clips_deleted"]) for line in lines] == [(A, 2501), (A, 0)]
    assert all(line["ms"] >= 0 for line in lines)
    assert remaining(s3, B) == 11


def test_replacing_a_source_purges_its_clips(s3):
    seed(s3, B, 10)
    seed(s3, A, 3)
    invoke(record(f"the-slug/{B}/audio/new take.m4a", "ObjectCreated:Put"))
    assert remaining(s3, B) == 0 and remaining(s3, A) == 4


def test_encoded_keys_with_spaces_and_escapes_are_decoded(s3):
    seed(s3, B, 2)
    invoke(record(f"my podcast/{B}/audio/Épisode n°1 (final) 100%.mp3"))
    assert remaining(s3, B) == 0


@pytest.mark.parametrize(
    "key",
    [
        f"a16z-podcast/{A}/transcript/{A}.json",
        f"a16z-podcast/{A}/audio/cover.jpg",
        f"a16z-podcast/{A}/audio/nested/deeper.mp3",
        f"{A}.mp3",
        "a16z-podcast//audio/x.mp3",
        "a16z-podcast/../audio/x.mp3",
        "a16z-podcast/bad id!/audio/x.mp3",
    ],
)
def test_keys_outside_the_layout_are_logged_and_ignored(s3, key, caplog):
    seed(s3, A, 3)
    invoke(record(key))
    assert remaining(s3, A) == 4
    line = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "cleanup"][-1]
    assert line["key"] == key and line["episode_id"] is None and line["ignored"]


def test_every_record_of_an_event_is_handled(s3):
    seed(s3, A, 3)
    seed(s3, B, 3)
    invoke(
        record("elsewhere/file.txt"), record(f"p/{A}/audio/a.mp3"), record(f"q/{B}/audio/b.mp3", "ObjectCreated:Put")
    )
    assert remaining(s3, A) == 0 and remaining(s3, B) == 0


def test_the_handler_runs_as_lambda_calls_it(s3):
    seed(s3, A, 5)
    context = SimpleNamespace(aws_request_id="req-123", get_remaining_time_in_millis=lambda: 60_000)
    app_module.cleanup_clips({"Records": [record(f"p/{A}/audio/a.mp3")]}, context)
    assert remaining(s3, A) == 0


def test_a_refused_delete_raises_so_lambda_retries(s3, monkeypatch):
    seed(s3, A, 2)
    from chalicelib import wiring

    client = wiring.current().s3
    monkeypatch.setattr(client, "delete_objects", lambda **kw: {"Errors": [{"Key": "k", "Code": "AccessDenied"}]})
    with pytest.raises(RuntimeError, match="refused"):
        wiring.current().cleanup.purge_stale(A, SOURCE_BUCKET, f"p/{A}/audio/a.mp3")


@pytest.mark.parametrize(
    "key, expected",
    [
        (f"slug/{A}/audio/f.mp3", A),
        (f"slug/{B}/audio/f.M4A", B),
        ("slug/x/audio/f.mp3", "x"),
        ("slug/x/video/f.mp3", None),
        ("slug/x/audio/", None),
        ("/x/audio/f.mp3", None),
        ("slug/./audio/f.mp3", None),
    ],
)
def test_episode_of_key(key, expected):
    assert episode_of_key(key) == expected


@pytest.mark.slow
def test_purging_2500_clips_over_http(moto_server, capsys):
    seed(moto_server, A, 2500, threads=8)
    from chalicelib import wiring

    started = time.perf_counter()
    deleted = wiring.current().cleanup.purge_stale(A, SOURCE_BUCKET, f"p/{A}/audio/a.mp3").deleted
    elapsed = time.perf_counter() - started
    assert deleted == 2501 and remaining(moto_server, A) == 0
    with capsys.disabled():
        print(f"\n[measure] purged {deleted} clips over HTTP (moto server) in {elapsed * 1000:.0f} ms")


# ------------------------------------------------------------------ both event shapes, one handler


def eventbridge_event(key: str, detail_type: str = "Object Deleted", bucket: str = SOURCE_BUCKET) -> dict:
    """An EventBridge event from S3 as a rule delivers it (one object per event; the key URL-encoded)."""
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-30T20:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": quote_plus(key, safe="/"), "size": 1, "etag": "b1946ac9", "sequencer": "00617F"},
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "reason": "DeleteObject",
        },
    }


def test_an_eventbridge_event_purges_the_episode_through_the_same_handler(s3):
    seed(s3, A, 3)
    seed(s3, B, 3)
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke("cleanup_clips", eventbridge_event(f"my podcast/{A}/audio/take 2.mp3"))
    assert remaining(s3, A) == 0 and remaining(s3, B) == 4


def test_a_replayed_s3_notification_and_an_eventbridge_event_reach_one_handler_as_lambda_calls_it(moto_server):
    """Over HTTP against moto's server: the entry point Lambda calls (app.cleanup_clips), whichever trigger the
    stage deployed (moto cannot run the function itself: no Docker here)."""
    s3 = moto_server
    seed(s3, A, 3)
    seed(s3, B, 3)
    context = SimpleNamespace(aws_request_id="req-1", get_remaining_time_in_millis=lambda: 60_000)
    app_module.cleanup_clips({"Records": [record(f"p/{A}/audio/a.mp3", "ObjectCreated:Put")]}, context)
    assert remaining(s3, A) == 0 and remaining(s3, B) == 4
    app_module.cleanup_clips(eventbridge_event(f"q/{B}/audio/b.m4a", "Object Created"), context)
    assert remaining(s3, B) == 0


def test_both_shapes_read_as_the_same_records():
    from chalicelib.clips.cleanup import SourceRecord, source_records

    key = f"my podcast/{A}/audio/Épisode 100%.mp3"
    assert list(source_records({"Records": [record(key, "ObjectCreated:Put"), record(key)]})) == [
        SourceRecord(SOURCE_BUCKET, key, "created", "ObjectCreated:Put"),
        SourceRecord(SOURCE_BUCKET, key, "removed", "ObjectRemoved:Delete"),
    ]
    assert list(source_records(eventbridge_event(key, "Object Created"))) == [
        SourceRecord(SOURCE_BUCKET, key, "created", "Object Created")
    ]
    assert list(source_records(eventbridge_event(key))) == [
        SourceRecord(SOURCE_BUCKET, key, "removed", "Object Deleted")
    ]


@pytest.mark.parametrize(
    "event",
    [
        {"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
        {**eventbridge_event(f"p/{A}/audio/a.mp3"), "detail-type": "Object Restore Completed"},
        {},
    ],
)
def test_other_events_yield_nothing_and_purge_nothing(s3, event):
    from chalicelib.clips.cleanup import source_records

    seed(s3, A, 2)
    assert list(source_records(event)) == []
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke("cleanup_clips", event)
    assert remaining(s3, A) == 3


@pytest.mark.parametrize(
    "key, bucket, detail_type, matches",
    [
        (f"a16z-podcast/{A}/audio/a16z_{A}_audio.mp3", SOURCE_BUCKET, "Object Created", True),
        (f"a16z-podcast/{A}/audio/take 2.M4A", SOURCE_BUCKET, "Object Deleted", True),
        (f"a16z-podcast/{A}/audio/a.mp3", "another-bucket", "Object Created", False),
        (f"a16z-podcast/{A}/transcript/{A}.json", SOURCE_BUCKET, "Object Created", False),
        (f"{A}.mp3", SOURCE_BUCKET, "Object Created", False),
        (f"a16z-podcast/{A}/audio/a.mp3", SOURCE_BUCKET, "Object Restore Completed", False),
    ],
)
def test_the_eventbridge_rule_matches_audio_keys_of_the_source_bucket_only(key, bucket, detail_type, matches):
    """Evaluated by moto's EventBridge pattern matcher (moto 5.2.5 does not implement TestEventPattern's API, but
    matches rules with this code when events are put)."""
    import json

    from moto.events.models import EventPattern

    from chalicelib.clips.cleanup import event_pattern

    rule = EventPattern.load(json.dumps(event_pattern(SOURCE_BUCKET)))
    assert rule.matches_event(eventbridge_event(key, detail_type, bucket)) is matches


def test_source_events_is_eventbridge_unless_a_stage_says_s3():
    from chalicelib.errors import ConfigurationError
    from chalicelib.settings import Settings

    assert Settings.from_env({}).source_events == "eventbridge"
    assert Settings.from_env({"SOURCE_EVENTS": "s3"}).source_events == "s3"
    with pytest.raises(ConfigurationError, match="SOURCE_EVENTS must be one of eventbridge, s3"):
        Settings.from_env({"SOURCE_EVENTS": "sns"})
