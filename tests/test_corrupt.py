"""Damaged and unexpected sources, read over HTTP from moto's server so that FFmpeg meets the real bytes."""

from __future__ import annotations

import json
import subprocess

import pytest
from chalice.test import Client

from app import app
from tests.audio_tools import FFMPEG, FRAME_MS, decode
from tests.conftest import EPISODE, SOURCE_BUCKET, clip_objects, episode_doc, source_key


@pytest.fixture
def source(moto_server, catalog_file):
    def put(data: bytes, name: str = "episode.mp3"):
        key = source_key(EPISODE, name)
        moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=data)
        catalog_file([episode_doc(EPISODE, key)])

    return put


def get(start_ms: int, duration_ms: int = 5000):
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")
    return response, json.loads(response.body) if response.body else None


def generated(tmp_path, name: str, *options: str) -> bytes:
    path = tmp_path / name
    subprocess.run([FFMPEG, "-v", "error", "-y", *options, str(path)], check=True)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["cbr", "vbr"])
def test_a_truncated_mp3_lasts_what_it_holds_clamps_there_and_refuses_a_start_past_it(
    source, audio, moto_server, tmp_path, kind
):
    data = audio[kind].data[: len(audio[kind].data) // 2]  # the header still announces 40 s
    source(data)
    (tmp_path / "truncated.mp3").write_bytes(data)
    held_ms = decode(str(tmp_path / "truncated.mp3")).duration_ms  # what a player plays of it
    ok, body = get(5000)
    assert ok.status_code == 200 and body["duration_ms"] == 5000
    clamped, body = get(18000, 5000)
    assert clamped.status_code == 200 and abs(body["duration_ms"] - (held_ms - 18000)) <= 1.5
    response, body = get(30000)
    assert response.status_code == 400
    assert f"whose duration is {round(held_ms)} ms" in body["Message"]
    assert [k for k in clip_objects(moto_server) if "30000" in k] == []


@pytest.mark.parametrize(
    "name, options",
    [
        ("image.png", ("-f", "lavfi", "-i", "testsrc=s=32x32:d=1", "-frames:v", "1")),
        ("video-only.mp4", ("-f", "lavfi", "-i", "testsrc=s=32x32:d=2", "-c:v", "mpeg4")),
    ],
)
def test_something_that_is_not_audio_is_a_422_with_ffmpegs_words_logged(
    source, moto_server, tmp_path, caplog, name, options
):
    caplog.set_level("INFO")
    source(generated(tmp_path, name, *options))
    response, body = get(0)
    assert response.status_code == 422 and body["Code"] == "UnprocessableEntityError"
    assert any("ffmpeg failed" in r.getMessage() for r in caplog.records)
    assert clip_objects(moto_server) == []


@pytest.mark.parametrize(
    "name, options",
    [
        ("vorbis.ogg", ("-f", "lavfi", "-i", "sine=d=12", "-c:a", "libvorbis", "-f", "ogg")),
        ("pcm.wav", ("-f", "lavfi", "-i", "sine=d=12", "-c:a", "pcm_s16le", "-f", "wav")),
    ],
)
def test_audio_in_another_codec_under_an_mp3_name_is_transcoded(source, moto_server, tmp_path, name, options):
    source(generated(tmp_path, name, *options))  # stored as episode.mp3: the name lies, the bytes are audio
    response, body = get(3000, 4000)
    assert response.status_code == 200 and abs(body["duration_ms"] - 4000) <= FRAME_MS
    (key,) = clip_objects(moto_server)
    clip = decode(moto_server.get_object(Bucket="pod-insights-clips", Key=key)["Body"].read())
    assert clip.stderr == "" and abs(clip.duration_ms - 4000) <= FRAME_MS


def test_a_vbr_file_that_claims_to_be_cbr_is_still_cut_at_the_right_place(s3, episode, audio, catalog_file):
    """An Info tag (CBR) over VBR frames: arithmetic would land on the wrong frame; the bitrate check sends the
    cut through the seek index, and the clip is still the source's exact samples."""
    from tests.audio_tools import decode as decode_audio

    data = bytearray(audio["vbr"].data)
    at = data.find(b"Xing")
    data[at : at + 4] = b"Info"
    episode("vbr", data=bytes(data))
    response, body = get(17017, 7000)
    assert response.status_code == 200
    clip = decode_audio(
        s3.get_object(Bucket="pod-insights-clips", Key=f"audio_clips/{EPISODE}/17017-24017.mp3")["Body"].read()
    )
    source = decode_audio(audio["vbr"].path)
    first = round(17017 * 44.1)
    assert clip.samples[:1000] == source.samples[first : first + 1000]
