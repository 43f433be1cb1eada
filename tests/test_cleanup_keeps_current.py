"""Cleanup keeps what is current (contract 6; issue 19, item 3): a late or replayed source event never deletes a
clip, seek index or lease made from the audio in the bucket now; only artefacts of other versions (recorded in
their ``source-etag`` metadata) go, and every artefact of a removed source."""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, source_key
from tests.test_cleanup import remaining
from tests.test_indexing import no_index_in_memory  # noqa: F401 (autouse: identical fixtures, identical ETags)

pytestmark = pytest.mark.usefixtures("stage_lambda_timeout")

PREFIX = f"audio_clips/{EPISODE}/"
INDEX, LEASE = PREFIX + "seek-index.json", PREFIX + "seek-index.lease"
LEVELS = PREFIX + "levels.bin"  # snap=pause's levels, measured when the audio's created event is handled


def s3_record(key: str, name: str, etag: str = "") -> dict:
    obj = {"key": quote_plus(key, safe="/"), "size": 1}
    if etag:
        obj["eTag"] = etag.strip('"')  # S3 notifications carry the ETag unquoted, and none for deletions
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": name,
        "s3": {"bucket": {"name": SOURCE_BUCKET, "arn": f"arn:aws:s3:::{SOURCE_BUCKET}"}, "object": obj},
    }


def eventbridge(key: str, detail_type: str, etag: str = "") -> dict:
    obj = {"key": quote_plus(key, safe="/"), "size": 1, "sequencer": "00617F"}
    if etag:
        obj["etag"] = etag.strip('"')
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-12-04T20:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{SOURCE_BUCKET}"],
        "detail": {"version": "0", "bucket": {"name": SOURCE_BUCKET}, "object": obj, "reason": "PutObject"},
    }


def deliver(event: dict) -> None:
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke("cleanup_clips", event)


def clip(start_ms: int) -> str:
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms=5000")
    assert response.status_code == 200, response.body
    return f"{PREFIX}{start_ms}-{start_ms + 5000}.mp3"


def keys(s3) -> set:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=CLIPS_BUCKET, Prefix=PREFIX).get("Contents", [])}


def recorded_etag(s3, key: str) -> str:
    return s3.head_object(Bucket=CLIPS_BUCKET, Key=key)["Metadata"]["source-etag"]


@pytest.fixture
def replaced(s3, episode, audio):
    """v1 (CBR) with a clip cut from it, then v2 (VBR) uploaded over it and a clip (and its seek index and lease)
    made from v2, before any event was handled: (key, v1's ETag, v2's ETag, the old clip, the new clip)."""
    _, key = episode("cbr")
    v1 = s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    old = clip(1000)
    s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["vbr"].data, ContentType="audio/mpeg")
    v2 = s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    new = clip(20_000)
    assert keys(s3) == {old, new, INDEX, LEASE} and v1 != v2
    return key, v1, v2, old, new


def test_every_artefact_records_the_source_version_it_was_made_from(s3, replaced):
    """The seek index and its lease carry the metadata clips carry: what the cleanup judges them by."""
    key, v1, v2, old, new = replaced
    assert {recorded_etag(s3, k) for k in (new, INDEX, LEASE)} == {v2} and recorded_etag(s3, old) == v1
    meta = s3.head_object(Bucket=CLIPS_BUCKET, Key=INDEX)["Metadata"]
    assert (meta["source-bucket"], meta["source-key"]) == (SOURCE_BUCKET, key)


@pytest.mark.parametrize("shape", ["s3", "eventbridge"])
def test_a_late_created_event_of_the_old_audio_keeps_what_was_made_from_the_new(s3, replaced, shape):
    key, v1, v2, old, new = replaced
    deliver(
        {"Records": [s3_record(key, "ObjectCreated:Put", v1)]}
        if shape == "s3"
        else eventbridge(key, "Object Created", v1)
    )
    assert keys(s3) == {new, INDEX, LEASE, LEVELS}, "the clip of v1 is gone; what was made from v2 stays"


def test_the_new_audios_own_event_replayed_twice_keeps_its_clip_and_index(s3, replaced, caplog):
    key, v1, v2, old, new = replaced
    for _ in range(2):
        deliver({"Records": [s3_record(key, "ObjectCreated:Put", v2)]})
    assert keys(s3) == {new, INDEX, LEASE, LEVELS}
    lines = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "cleanup"]
    assert [(line["clips_deleted"], line["kept"], line["index"]) for line in lines] == [
        (1, 3, "current"),
        (0, 4, "current"),  # the first one made the levels too
    ]
    assert lines[0]["source_etag"] == v2 and not lines[0].get("late")


def test_a_replayed_delete_of_audio_uploaded_again_since_keeps_the_new_audios_artefacts(s3, replaced):
    key, v1, v2, old, new = replaced
    deliver({"Records": [s3_record(key, "ObjectRemoved:Delete")]})
    assert keys(s3) == {new, INDEX, LEASE}


def test_a_clip_of_the_current_audio_is_served_after_the_late_event(s3, replaced):
    key, v1, v2, old, new = replaced
    deliver({"Records": [s3_record(key, "ObjectCreated:Put", v1)]})
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=20000&duration_ms=5000")
    assert response.status_code == 200 and b'"cache_hit":true' in response.body


def test_removing_the_source_purges_every_artefact_whatever_it_records(s3, replaced):
    key, v1, v2, old, new = replaced
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=key)
    deliver(eventbridge(key, "Object Deleted"))
    assert keys(s3) == set()


def test_artefacts_that_record_no_version_are_purged_and_those_of_another_live_key_kept(s3, replaced):
    key, v1, v2, old, new = replaced
    other = source_key(EPISODE, "other-take.mp3")
    s3.put_object(Bucket=SOURCE_BUCKET, Key=other, Body=b"another take")
    other_etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=other)["ETag"]
    meta = {"source-bucket": SOURCE_BUCKET, "source-key": quote_plus(other, safe="/"), "source-etag": other_etag}
    s3.put_object(Bucket=CLIPS_BUCKET, Key=PREFIX + "waveform-0-5000.json", Body=b"{}", Metadata=meta)
    s3.put_object(Bucket=CLIPS_BUCKET, Key=PREFIX + "legacy-index.json", Body=b"{}")
    deliver({"Records": [s3_record(key, "ObjectCreated:Put", v2)]})
    assert keys(s3) == {new, INDEX, LEASE, LEVELS, PREFIX + "waveform-0-5000.json"}
    assert remaining(s3, EPISODE) == 5


def test_each_delete_is_conditional_on_the_etag_the_artefact_was_looked_at_with(s3, replaced):
    """Real S3 refuses a conditional delete of an object rewritten since (a clip of the new audio stored in
    between): the request names each ETag. (moto does not check them, so the request itself is what is tested.)"""
    key, v1, v2, old, new = replaced
    bodies = []
    client = wiring.current().s3
    client.meta.events.register_last(
        "before-send.s3.DeleteObjects", lambda request, **kw: bodies.append(request.body.decode())
    )
    old_etag = s3.head_object(Bucket=CLIPS_BUCKET, Key=old)["ETag"]
    wiring.current().cleanup.purge_stale(EPISODE, SOURCE_BUCKET, key)
    assert len(bodies) == 1 and f"<Key>{old}</Key>" in bodies[0]
    assert f"<ETag>{old_etag.replace(chr(34), '&quot;')}</ETag>" in bodies[0] or f"<ETag>{old_etag}</ETag>" in bodies[0]
    assert new not in bodies[0]


def test_a_precondition_failure_on_delete_keeps_the_artefact_and_is_not_an_error(s3, replaced, monkeypatch):
    key, v1, v2, old, new = replaced
    client = wiring.current().s3
    monkeypatch.setattr(client, "delete_objects", lambda **kw: {"Errors": [{"Key": old, "Code": "PreconditionFailed"}]})
    purge = wiring.current().cleanup.purge_stale(EPISODE, SOURCE_BUCKET, key)
    assert (purge.deleted, purge.kept) == (0, 4)
