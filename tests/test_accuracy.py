"""Clips start where asked and last as long as asked, measured on decoded audio against the decoded source.

MP3 clips are the source's own frames, so a decoder that honours the LAME tag must output exactly the source's
samples: the test demands sample equality, not just closeness. The M4A clip is re-encoded, so its start is found
by matching its samples against the source's within a window.
"""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from app import app
from tests.audio_tools import decode, offset_of
from tests.conftest import CLIPS_BUCKET, EPISODE

RATES = {"mpeg2_mono": 22050, "mpeg2_24k_vbr": 24000, "mpeg25_mono": 11025}
POSITIONS = {"start": (0, 5000), "middle": (17017, 7000), "end": (38500, 5000)}  # the end clamps: sources last 40 s


@pytest.fixture(scope="module")
def decoded_sources(audio):
    return {name: decode(source.path, rate=RATES.get(name, 44100)) for name, source in audio.items()}


def cut(s3, kind, start_ms, duration_ms):
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")
    assert response.status_code == 200, response.body
    body = json.loads(response.body)
    key = f"audio_clips/{EPISODE}/{start_ms}-{start_ms + duration_ms}.mp3"
    return body, s3.get_object(Bucket=CLIPS_BUCKET, Key=key)["Body"].read()


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize(
    "kind", ["cbr", "vbr", "vbr_no_header", "mpeg2_mono", "mpeg2_24k_vbr", "mpeg25_mono", "big_id3"]
)
def test_mp3_clips_are_the_sources_samples_exactly(s3, episode, decoded_sources, kind, position):
    episode(kind)
    start_ms, want_ms = POSITIONS[position]
    body, data = cut(s3, kind, start_ms, want_ms)
    source = decoded_sources[kind]
    rate = source.rate
    clip = decode(data, rate=rate)
    assert clip.stderr == "", "the first frames must decode without errors"
    first = round(start_ms * rate / 1000)
    expected = min(round(want_ms * rate / 1000), source.frames - first)
    assert clip.frames == expected, "exact length, in samples"
    assert body["duration_ms"] == round(expected * 1000 / rate)
    assert clip.samples[:expected] == source.samples[first : first + expected], "sample for sample (untagged at 0 too)"
    assert_info_header_describes(data, expected, rate)


def assert_info_header_describes(data: bytes, samples: int, rate: int) -> None:
    """The clip's own Xing/Info frame counts its frames and bytes, so players show its true duration."""
    from chalicelib.audio import mp3
    from chalicelib.audio.cutting import tagged_duration_ms

    data = data[mp3.id3v2_size(data) :]  # the clip's ID3 tag (chalicelib/attribution.py) comes first
    layout = mp3.parse_layout(data[:16384], 0)
    frames = list(mp3.walk_frames(data, layout.audio_start))
    assert layout.tag.frames == len(frames)
    assert frames[-1][0] + frames[-1][1].length == len(data), "nothing after the last frame"
    assert layout.tag.bytes == len(data)
    assert tagged_duration_ms(data) == round(samples * 1000 / rate)


@pytest.mark.parametrize("position", POSITIONS)
def test_m4a_clips_start_and_last_within_one_frame(moto_server, audio, catalog_file, decoded_sources, position):
    from tests.conftest import SOURCE_BUCKET, episode_doc, source_key

    key = source_key(EPISODE, "episode.m4a")
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["m4a"].data, ContentType="audio/mp4")
    catalog_file([episode_doc(EPISODE, key)])
    start_ms, want_ms = POSITIONS[position]
    body, data = cut(moto_server, "m4a", start_ms, want_ms)
    source = decoded_sources["m4a"]
    clip = decode(data)
    frame = 1152
    first = round(start_ms * 44.1)
    expected = min(round(want_ms * 44.1), source.frames - first)
    assert abs(clip.frames - expected) <= frame
    assert abs(body["duration_ms"] - expected / 44.1) <= 26.2
    assert abs(offset_of(clip, source, first, window=3 * frame) - first) <= frame
