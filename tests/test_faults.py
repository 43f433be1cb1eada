"""S3 faults: throttling and 5xx retried by botocore with backoff, a body cut mid-read retried by the service,
and a clear 503 with no clip left behind when retries run out, in bounded time."""

from __future__ import annotations

import json
import time

from botocore.exceptions import ResponseStreamingError
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.stores.source import SourceAudio
from tests.audio_tools import FRAME_MS, decode
from tests.conftest import CLIPS_BUCKET, EPISODE, clip_objects
from tests.s3_faults import source_reads_answer

PATH = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=20000&duration_ms=5000"


def throttle_source_reads(times: int) -> list:
    """Answer the next ``times`` GetObject calls on the source bucket with 503 SlowDown, as S3 does under load."""
    return source_reads_answer(503, "SlowDown", "Please reduce your request rate.", times=times)


def get():
    with Client(app, stage_name="local") as client:
        response = client.http.get(PATH)
    return response, json.loads(response.body)


def test_throttled_reads_are_retried_and_the_clip_is_served(s3, episode):
    episode("cbr")
    throttled = throttle_source_reads(2)
    response, body = get()
    assert response.status_code == 200 and len(throttled) == 2
    data = s3.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/20000-25000.mp3")["Body"].read()
    assert abs(decode(data).duration_ms - 5000) <= FRAME_MS


def test_reads_that_stay_throttled_end_in_a_503_in_bounded_time_and_no_clip(s3, episode):
    episode("cbr")
    throttled = throttle_source_reads(100)
    started = time.monotonic()
    response, body = get()
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and body["Code"] == "ServiceUnavailableError"
    assert "storage" in body["Message"] and int(response.headers["Retry-After"]) > 0
    assert len(throttled) == 3, "three attempts in all (total_max_attempts), then give up"
    assert elapsed < 10
    assert clip_objects(s3) == []


def test_a_connection_reset_mid_read_is_retried(s3, episode, monkeypatch):
    episode("cbr")
    original = SourceAudio._get
    resets = []

    def reset_twice(self, byte_range):
        if len(resets) < 2:
            resets.append(byte_range)
            raise ResponseStreamingError(error="Connection reset by peer")
        return original(self, byte_range)

    monkeypatch.setattr(SourceAudio, "_get", reset_twice)
    response, body = get()
    assert response.status_code == 200 and len(resets) == 2


def test_a_connection_that_keeps_resetting_is_a_503_and_no_clip(s3, episode, monkeypatch):
    episode("cbr")

    def always_reset(self, byte_range):
        raise ResponseStreamingError(error="Connection reset by peer")

    monkeypatch.setattr(SourceAudio, "_get", always_reset)
    response, body = get()
    assert response.status_code == 503 and clip_objects(s3) == []


def test_a_failed_clip_upload_is_a_503_and_leaves_nothing(s3, episode, monkeypatch):
    """A PUT is one request: it stores the whole clip or nothing. (Real S3 may even store it and still answer 500;
    the clip is then complete and valid.) Raised at the client: in-process moto stores before any hook could fail."""
    from botocore.exceptions import ClientError

    episode("cbr")
    client = wiring.current().s3

    def refuse(**kwargs):
        raise ClientError(
            {"Error": {"Code": "InternalError", "Message": "We encountered an internal error."}}, "PutObject"
        )

    monkeypatch.setattr(client, "put_object", refuse)
    response, body = get()
    assert response.status_code == 503 and "writing the clip" in body["Message"]
    assert clip_objects(s3) == []
