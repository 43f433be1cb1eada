"""A lost conditional PUT: another request stored the same clip first. Its clip is served only if it was cut from
the same version (ETag) of the source as ours; a clip of replaced audio is overwritten with ours."""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from app import app
from chalicelib.clips.service import ClipService
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET

KEY = f"audio_clips/{EPISODE}/1000-3000.mp3"
PATH = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=2000"


@pytest.fixture
def rival(s3, monkeypatch):
    """While this request cuts, another one stores the same clip, cut from the source ETag given."""
    original = ClipService._cut

    def install(source_etag_of_rival):
        def cut_while_a_rival_stores(self, opened, request, deadline):
            clip = original(self, opened, request, deadline)
            audio = opened.audio
            etag = source_etag_of_rival(audio)
            s3.put_object(
                Bucket=CLIPS_BUCKET,
                Key=KEY,
                Body=b"rival's clip",
                ContentType="audio/mpeg",
                Metadata={
                    "episode-id": EPISODE,
                    "source-bucket": SOURCE_BUCKET,
                    "source-key": audio.source.key,
                    "source-etag": etag,
                    "duration-ms": "1234",
                },
            )
            return clip

        monkeypatch.setattr(ClipService, "_cut", cut_while_a_rival_stores)

    return install


def get():
    with Client(app, stage_name="local") as client:
        response = client.http.get(PATH)
    return response, json.loads(response.body)


def test_a_rivals_clip_of_replaced_audio_is_overwritten_with_ours(s3, episode, rival):
    _, key = episode("cbr")
    rival(lambda audio: '"etag-of-the-audio-before-it-was-replaced"')
    response, body = get()
    assert response.status_code == 200 and body["duration_ms"] == 2000
    stored = s3.get_object(Bucket=CLIPS_BUCKET, Key=KEY)
    current = s3.head_object(Bucket=SOURCE_BUCKET, Key=key)["ETag"]
    assert stored["Metadata"]["source-etag"] == current
    assert stored["Body"].read() != b"rival's clip"


def test_a_rivals_clip_of_the_same_audio_is_kept_and_served(s3, episode, rival):
    episode("cbr")
    rival(lambda audio: audio.source.etag)
    response, body = get()
    assert response.status_code == 200 and body["duration_ms"] == 1234
    assert s3.get_object(Bucket=CLIPS_BUCKET, Key=KEY)["Body"].read() == b"rival's clip"
