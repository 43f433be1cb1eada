"""Source keys are taken from ``s3_audio_path`` as they are: episode titles end up in file names, with '#', '?',
'%', '+' and spaces, and each must reach S3 unchanged, on a miss, on a hit, and through FFmpeg."""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from app import app
from chalicelib.stores.keys import parse_s3_url
from tests.conftest import EPISODE, SOURCE_BUCKET, episode_doc

ODD_KEYS = [
    "show/ep-#123_audio.mp3",
    "show/what?-now_audio.mp3",
    "show/100%25 sure_audio.mp3",
    "show/100% sure_audio.mp3",
    "show/a+b c_audio.mp3",
    "show/Q&A #7? 50% + more_audio.mp3",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_parse_s3_url_keeps_every_character_of_the_key(key):
    assert parse_s3_url(f"s3://{SOURCE_BUCKET}/{key}") == (SOURCE_BUCKET, key)


@pytest.mark.parametrize("url", ["", "s3://", "s3:///key", "s3://bucket", "s3://bucket/", "https://b/k", "b/k"])
def test_parse_s3_url_refuses_what_names_no_object(url):
    with pytest.raises(ValueError):
        parse_s3_url(url)


def _serve(s3, catalog_file, audio, kind: str, key: str):
    s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio[kind].data, ContentType=audio[kind].content_type)
    catalog_file([episode_doc(EPISODE, key)])
    path = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=2000"
    with Client(app, stage_name="local") as client:
        first, second = client.http.get(path), client.http.get(path)
    return first, second


@pytest.mark.parametrize("key", ODD_KEYS)
def test_an_mp3_whose_key_holds_odd_characters_is_cut_then_served_from_the_cache(s3, catalog_file, audio, key):
    first, second = _serve(s3, catalog_file, audio, "cbr", key)
    assert first.status_code == 200, first.body
    assert json.loads(second.body)["cache_hit"] is True


def test_an_m4a_whose_key_holds_odd_characters_reaches_ffmpeg_intact(moto_server, catalog_file, audio):
    first, second = _serve(moto_server, catalog_file, audio, "m4a", "show/Q&A #7? 50% + more_audio.m4a")
    assert first.status_code == 200, first.body
    assert json.loads(second.body)["cache_hit"] is True
