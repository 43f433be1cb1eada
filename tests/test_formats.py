"""Every format is cut on the timeline of FFmpeg's decode of the whole source, to the sample (issue 20).

For each source of tests/format_fixtures.py: clips at the start, in the middle and clamped at the end, each decoded
at the source's own rate and compared with FFmpeg's decode of the whole source: the clip starts on the sample where
that decode reaches ``start_time_ms`` and holds exactly the samples asked (clamped at the end). A clip that is a copy
of MP3 frames must equal the source's samples; a re-encoded one (AAC, ALAC) is placed by least squares, which must
find that same sample. The duration the service states for the episode is FFmpeg's decoded length within 1 ms.
mpg123, a second decoder, must play the clips as FFmpeg does.

Set FORMATS_REPORT=path to append one line per clip (source, position, start error, length error, in samples).
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List

import pytest
from chalice.test import Client

from app import app
from tests.audio_tools import Decoded, decode
from tests.chromium import chromium  # noqa: F401  (the fixture)
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, episode_doc, source_key
from tests.format_fixtures import FIXTURES, MPG123, Fixture, m4a, mpg123_decode, need_tool
from tests.joined_audio import best_offset, strip_id3, utf16_tag_mid_file


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> Dict[str, Fixture]:
    directory = str(tmp_path_factory.mktemp("formats"))
    return {name: fixture for name, build in FIXTURES.items() if (fixture := build(directory)) is not None}


@pytest.fixture
def put_source(moto_server, catalog_file):
    """The source in S3 (over HTTP: FFmpeg reads M4A through a pre-signed URL) and in the catalog."""

    def put(fixture: Fixture) -> None:
        key = source_key(EPISODE, "episode" + fixture.extension)
        moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=fixture.data)
        catalog_file([episode_doc(EPISODE, key)])

    return put


def at(ms: int, rate: int) -> int:
    """The sample where a decode at ``rate`` reaches ``ms``, rounded half up as FFmpeg's trim rounds it."""
    return (ms * rate * 2 + 1000) // 2000


def get(start_ms: int, duration_ms: int):
    with Client(app, stage_name="local") as client:
        return client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")


def stated_duration_ms(start_ms: int) -> int:
    response = get(start_ms, 1000)
    assert response.status_code == 400, response.body
    match = re.search(r"whose duration is (\d+) ms", json.loads(response.body)["Message"])
    assert match, response.body
    return int(match.group(1))


def clip_errors(s3, fixture: Fixture, whole: Decoded, start_ms: int, want_ms: int, tmp_path) -> Dict[str, int]:
    """Cut one clip; its start error and length error in samples, against FFmpeg's decode of the whole source."""
    response = get(start_ms, want_ms)
    assert response.status_code == 200, response.body
    body = json.loads(response.body)
    key = f"audio_clips/{EPISODE}/{start_ms}-{start_ms + want_ms}.mp3"
    data = s3.get_object(Bucket=CLIPS_BUCKET, Key=key)["Body"].read()
    path = tmp_path / f"{fixture.name}-{start_ms}.mp3"
    path.write_bytes(data)
    clip = decode(str(path), rate=fixture.rate)
    assert clip.stderr == "", clip.stderr
    first = at(start_ms, fixture.rate)
    expected = min(at(want_ms, fixture.rate), whole.frames - first)
    if fixture.frame_copy and clip.samples[:expected] == whole.samples[first : first + expected]:
        found = first
    else:
        found = best_offset(clip, whole, first, window=1500, skip=2048, probe=1600)
    errors = {
        "start": found - first,
        "length": clip.frames - expected,
        "served_ms": body["duration_ms"] - round(expected * 1000 / fixture.rate),
        "exact": int(fixture.frame_copy and clip.samples[:expected] == whole.samples[first : first + expected]),
        "path": str(path),  # type: ignore[dict-item]
    }
    report = os.environ.get("FORMATS_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write(
                f"{fixture.name:14} start {start_ms:7} ms  start error {errors['start']:+5}  "
                f"length error {errors['length']:+5}  samples\n"
            )
    return errors


def positions(whole_ms: float) -> List[tuple]:
    """(start_ms, duration_ms): at 0, in the middle, and clamped at the end (starts on whole 10 ms, so that no
    start falls half-way between two samples at 44.1 kHz)."""
    middle = int(whole_ms * 0.45) // 10 * 10
    end = int(whole_ms - 1500) // 10 * 10
    return [(0, 2000), (middle, 3000), (end, 3000)]


@pytest.mark.parametrize("name", list(FIXTURES))
def test_every_clip_starts_and_lasts_to_the_sample_on_ffmpegs_decode_of_the_whole_source(
    moto_server, put_source, formats, tmp_path, name
):
    if name not in formats:
        need_tool(None, "lame")
    fixture = formats[name]
    put_source(fixture)
    whole = decode(fixture.path, rate=fixture.rate)
    assert whole.frames, whole.stderr
    failures = []
    for start_ms, want_ms in positions(whole.duration_ms):
        errors = clip_errors(moto_server, fixture, whole, start_ms, want_ms, tmp_path)
        if errors["start"] or errors["length"] or abs(errors["served_ms"]) > 1:
            failures.append(f"clip at {start_ms} ms: {errors}")
        if fixture.frame_copy and not errors["exact"]:
            failures.append(f"clip at {start_ms} ms: a frame copy that is not the source's samples")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", list(FIXTURES))
def test_the_stated_duration_is_ffmpegs_decoded_length(moto_server, put_source, formats, name):
    if name not in formats:
        need_tool(None, "lame")
    fixture = formats[name]
    put_source(fixture)
    whole_ms = decode(fixture.path, rate=fixture.rate).duration_ms
    assert abs(stated_duration_ms(int(whole_ms) + 5000) - whole_ms) <= 1, "a start beyond the end"
    assert abs(stated_duration_ms(int(whole_ms) - 400) - whole_ms) <= 1, "a start within the last second"


def test_a_short_m4a_states_its_decoded_length_not_its_container_duration(put_source, tmp_path):
    """4.9655 s of audio: FFmpeg's "Duration:" line counts in 10 ms steps; the service counts samples."""
    fixture = m4a(str(tmp_path), "m4a_short", 4.9655, 44100)
    put_source(fixture)
    whole_ms = decode(fixture.path).duration_ms
    assert abs(stated_duration_ms(4990) - whole_ms) <= 1


@pytest.mark.parametrize("name", ["lame_zeros", "info_junk", "m4a_44k", "adts"])
def test_mpg123_plays_the_clips_as_ffmpeg_does(moto_server, put_source, formats, tmp_path, name):
    need_tool(MPG123, "mpg123")
    if name not in formats:
        need_tool(None, "lame")
    fixture = formats[name]
    put_source(fixture)
    whole = decode(fixture.path, rate=fixture.rate)
    for start_ms, want_ms in positions(whole.duration_ms):
        path = clip_errors(moto_server, fixture, whole, start_ms, want_ms, tmp_path)["path"]
        ffmpeg = decode(str(path), channels=2, rate=fixture.rate).samples
        mpg123 = mpg123_decode(str(path))
        assert len(mpg123) == len(ffmpeg), f"clip at {start_ms} ms: same length, in samples"
        assert max(abs(a - b) for a, b in zip(mpg123, ffmpeg, strict=True)) <= 2, "same samples, within 2 LSB"


@pytest.mark.slow
def test_a_twenty_minute_m4a_is_cut_to_the_sample_at_ten_minutes_and_at_its_end(moto_server, put_source, tmp_path):
    fixture = m4a(str(tmp_path), "m4a_20min", 1200, 44100)
    put_source(fixture)
    whole = decode(fixture.path)
    for start_ms, want_ms in [(600_000, 5000), (1_198_000, 5000)]:
        errors = clip_errors(moto_server, fixture, whole, start_ms, want_ms, tmp_path)
        assert (errors["start"], errors["length"]) == (0, 0), errors
    assert abs(stated_duration_ms(1_200_500) - whole.duration_ms) <= 1


def test_a_mid_file_utf16_tag_loses_the_frames_ffmpegs_parser_swallows(moto_server, put_source, tmp_path):
    """A 48 kHz ad, then a show behind its own UTF-16 ID3v2 tag: FFmpeg's parser takes the tag's byte-order mark
    FF FE for a Layer I header and reads a "frame" that swallows the show's Info frame and first audio frame. Clips
    after the join were one frame late. Compared at the show's rate: FFmpeg's resampler, reconfigured at the change
    of rate, leaves the decode of the whole file some 30 samples (under 1 ms) apart from the samples decoded."""
    joined = utf16_tag_mid_file(str(tmp_path))
    fixture = Fixture("utf16_tag", joined.path, 44100, False)
    put_source(fixture)
    whole = decode(fixture.path, rate=44100)
    for start_ms in (9000, int(joined.joins_ms[1]) + 500):
        errors = clip_errors(moto_server, fixture, whole, start_ms, 2000, tmp_path)
        assert abs(errors["start"]) <= 44 and errors["length"] == 0, (start_ms, errors)
    assert abs(stated_duration_ms(30_000) - whole.duration_ms) <= 1


DECODE_AUDIO_DATA = """(async () => {
  const bytes = Uint8Array.from(atob("%s"), (c) => c.charCodeAt(0));
  const buffer = await new OfflineAudioContext(2, 1, %d).decodeAudioData(bytes.buffer);
  const left = buffer.getChannelData(0);
  return {length: buffer.length, rate: buffer.sampleRate, left: Array.from(left.filter((_, i) => i %% 7 === 0))};
})()"""


@pytest.mark.parametrize("name", ["lame_zeros", "info_junk", "m4a_44k", "he_aac"])
def test_chromium_decodes_the_clips_as_ffmpeg_does(moto_server, put_source, formats, tmp_path, chromium, name):
    """Chromium's decodeAudioData (at the clip's own rate): the same length and the same samples as FFmpeg's decode
    of the clip, within 2 LSB of 16 bits."""
    import base64

    if name not in formats:
        need_tool(None, "lame")
    fixture = formats[name]
    put_source(fixture)
    whole = decode(fixture.path, rate=fixture.rate)
    start_ms = positions(whole.duration_ms)[1][0]
    path = clip_errors(moto_server, fixture, whole, start_ms, 3000, tmp_path)["path"]
    with open(str(path), "rb") as handle:
        encoded = base64.b64encode(handle.read()).decode()
    page = chromium.page()
    try:
        decoded = page.evaluate(DECODE_AUDIO_DATA % (encoded, fixture.rate))
    finally:
        page.close()
    ffmpeg = decode(str(path), channels=2, rate=fixture.rate)
    left = ffmpeg.samples[::2]
    assert (decoded["rate"], decoded["length"]) == (fixture.rate, ffmpeg.frames)
    worst = max(abs(a * 32768 - b) for a, b in zip(decoded["left"], left[::7], strict=True))
    assert worst <= 2, f"Chromium and FFmpeg differ by {worst:.1f} LSB"


def test_ffmpegs_parser_replayed_over_a_gap_loses_the_frames_it_swallows(tmp_path):
    """``_Packets`` on bytes made by hand: zeros before a frame lose nothing; a tag loses the frame after it; a
    UTF-16 byte-order mark (FF FE, a Layer I header) inside a tag swallows the frames its "frame" overlaps."""
    from chalicelib.audio.mp3.timeline import _Packets, any_layer_frame_length
    from tests.joined_audio import encode

    part = strip_id3(encode(str(tmp_path), "packets", 1, 44100, 2, ("-b:a", "128k"), 1))
    frames, at = [], 0
    while at + 4 <= len(part) and (size := any_layer_frame_length(part[at : at + 4])):
        frames.append(part[at : at + size])
        at += size

    def lost(gap: bytes) -> int:
        packets = _Packets(0)
        packets.feed(gap, 0)
        offset, following = len(gap), []
        for frame in frames[:6]:
            following.append((offset, frame))
            offset += len(frame)
        result = packets.lost_before(following)
        assert result is not None
        return result

    assert any_layer_frame_length(b"\xff\xfeS\x00") == 176, "FF FE 'S': MPEG-1 Layer I, 160 kbit/s, padded"
    assert lost(bytes(20_000)) == 0
    assert lost(b"ID3" + bytes(100)) == 1
    # the false frame (176 bytes from its FF FE) ends 10 bytes into the first real frame: that one is lost, and the
    # second too, whose packet starts with the rest of the first
    assert lost(b"ID3\x04" + bytes(26) + b"\xff\xfeS\x00" + bytes(176 - 4 - 10)) == 2
    # right after the last frame and ending where the next begins, the false frame is a packet of its own, which
    # the decoder plays (a stray: counted, not timed, see the README) and nothing is lost
    assert lost(b"\xff\xfeS\x00" + bytes(176 - 4)) == 0
    strays = _Packets(0)
    strays.feed(b"\xff\xfeS\x00" + bytes(176 - 4), 0)
    assert strays.strays == 1
