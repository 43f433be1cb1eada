"""FFmpeg's faults become the contract's errors in bounded time, with FFmpeg's own words in the log."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from chalice.test import Client

from app import app
from chalicelib.audio.ffmpeg import transcode_to_mp3
from chalicelib.errors import ClipTimeout, Undecodable
from tests.conftest import EPISODE, SOURCE_BUCKET, clip_objects, episode_doc, source_key


@pytest.fixture
def hanging_ffmpeg(tmp_path):
    path = tmp_path / "ffmpeg"
    path.write_text("#!/bin/sh\nexec sleep 60\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_a_hanging_ffmpeg_is_killed_at_the_deadline(hanging_ffmpeg):
    started = time.monotonic()
    with pytest.raises(ClipTimeout):
        transcode_to_mp3(hanging_ffmpeg, "http://127.0.0.1:9/x.m4a", 0, 5000, deadline=time.monotonic() + 1.0)
    assert time.monotonic() - started < 3.0


def test_the_route_leaves_time_to_answer_before_lambda_and_api_gateway_give_up():
    from types import SimpleNamespace

    from chalicelib.web.params import deadline

    now = time.monotonic()
    assert deadline(SimpleNamespace(get_remaining_time_in_millis=lambda: 28_000)) - now <= 26.1
    assert deadline(SimpleNamespace(get_remaining_time_in_millis=lambda: 900_000)) - now <= 27.1  # API Gateway: 29 s
    assert deadline(SimpleNamespace(get_remaining_time_in_millis=lambda: 5_000)) - now <= 3.1


def put_m4a(moto_server, catalog_file, data: bytes):
    key = source_key(EPISODE, "episode.m4a")
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=data, ContentType="audio/mp4")
    catalog_file([episode_doc(EPISODE, key)])


def test_an_undecodable_m4a_is_a_422_with_ffmpegs_message_in_the_log(moto_server, catalog_file, audio, caplog):
    caplog.set_level("INFO")
    broken = audio["m4a"].data[:64] + os.urandom(20_000)  # an ftyp box, then garbage
    put_m4a(moto_server, catalog_file, broken)
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=0&duration_ms=5000")
    assert response.status_code == 422
    assert json.loads(response.body)["Code"] == "UnprocessableEntityError"
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "chalicelib.audio.ffmpeg")
    assert "ffmpeg failed" in logged and "<source-url>" in logged, "FFmpeg's stderr, with the pre-signed URL masked"
    assert "X-Amz-Signature" not in logged
    assert clip_objects(moto_server) == []


def test_a_start_beyond_the_end_of_an_m4a_is_a_400_stating_its_duration(moto_server, catalog_file, audio):
    put_m4a(moto_server, catalog_file, audio["m4a"].data)
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=41000")
    assert response.status_code == 400
    assert json.loads(response.body)["Message"] == (
        "start_time_ms 41000 is at or beyond the end of the episode, whose duration is 40000 ms"
    )
    assert clip_objects(moto_server) == []


def test_an_ffmpeg_error_on_a_missing_url_is_not_called_undecodable(tmp_path):
    import imageio_ffmpeg

    with pytest.raises(Exception) as failure:
        transcode_to_mp3(
            imageio_ffmpeg.get_ffmpeg_exe(), "http://127.0.0.1:9/missing.m4a", 0, 5000, deadline=time.monotonic() + 20
        )
    assert not isinstance(failure.value, Undecodable), "a storage fault is a 503, not the audio's fault"
