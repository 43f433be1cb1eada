"""The end-clamp rule, the same for every engine: a clip clamped at the episode's end holds at least 1000 ms (the
shortest duration_ms); a start that leaves less is a 400 stating the episode's duration and the latest start.
The test sources last 40 000 ms."""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from app import app
from chalicelib.audio.cutting import check_start
from chalicelib.errors import BadRequest
from tests.audio_tools import decode
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, clip_objects, episode_doc, source_key


def get(start_ms: int, duration_ms: int = 30000):
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")
    return response, json.loads(response.body)


@pytest.fixture
def source(request, s3, episode, moto_server_if_m4a):
    kind = request.param
    if kind == "m4a":
        client = moto_server_if_m4a
        key = source_key(EPISODE, "episode.m4a")
        client.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=request.getfixturevalue("audio")["m4a"].data)
        request.getfixturevalue("catalog_file")([episode_doc(EPISODE, key)])
        return client
    episode(kind)
    return s3


@pytest.fixture
def moto_server_if_m4a(request):
    return request.getfixturevalue("moto_server") if request.node.callspec.params.get("source") == "m4a" else None


ENGINES = ["cbr", "vbr", "m4a"]  # arithmetic, seek index, FFmpeg


@pytest.mark.parametrize("source", ENGINES, indirect=True)
@pytest.mark.parametrize("start", [39001, 39999])
def test_a_start_within_the_last_second_is_a_400_naming_the_latest_start(source, start):
    response, body = get(start, 1000)
    assert response.status_code == 400 and body["Code"] == "BadRequestError"
    assert body["Message"] == (
        f"start_time_ms {start} leaves less than 1000 ms of the episode, whose duration is "
        "40000 ms: the latest start is 39000"
    )
    assert clip_objects(source) == []


@pytest.mark.parametrize("source", ENGINES, indirect=True)
def test_the_latest_start_serves_a_clip_of_one_second(source):
    response, body = get(39000)
    assert response.status_code == 200
    # both cut to the sample: an M4A's length is its decoded length (edit list applied), not its container's
    assert body["duration_ms"] == 1000
    data = source.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/39000-69000.mp3")["Body"].read()
    assert decode(data).frames == 44100


def test_an_episode_shorter_than_a_second_is_served_whole_from_0_only():
    check_start(0, 700)
    with pytest.raises(BadRequest, match="the latest start is 0"):
        check_start(1, 700)
    with pytest.raises(BadRequest, match="at or beyond the end of the episode, whose duration is 700 ms"):
        check_start(700, 700)
