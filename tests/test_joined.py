"""Joined podcast files are cut the way players hear them: on FFmpeg's decode of the whole file.

For every fixture of tests/joined_audio.py: clips at the start, just before and just after every join, across
every join, and at the end. Each clip's start is found by matching its decoded samples against the decoded
whole file; its decoded length is compared with what was asked (clamped at the real end). A clip that is a copy
of frames must be the whole file's samples exactly. A start past the real end is the contract's 400.

Set JOINED_REPORT=path to append one line per clip (fixture, position, start error, duration error) to a file.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Tuple

import pytest
from chalice.test import Client

from app import app
from tests.audio_tools import decode
from tests.conftest import CLIPS_BUCKET, EPISODE
from tests.joined_audio import FIXTURES, MATRIX, Joined, best_offset, build, build_matrix

MEASURE_RATE = 16000  # what transcription stacks decode to: 1 sample = 0.0625 ms
FAST = ["ad_48k_mono", "mid_id3_picture", "crc_cbr", "junk_before_first_frame"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Dict[str, Joined]:
    directory = str(tmp_path_factory.mktemp("joined"))
    built = {}
    for name in FIXTURES:
        fixture = build(directory, name)
        if fixture is not None:
            built[name] = fixture
    return built


def fixture_or_skip(fixtures: Dict[str, Joined], name: str) -> Joined:
    if name not in fixtures:
        pytest.skip(f"{name} needs Debian's `lame` (make test installs it as root: apt-get install -y lame)")
    return fixtures[name]


def positions(whole_ms: float, joins: List[float]) -> List[Tuple[str, int, int]]:
    """(label, start_ms, duration_ms) of the clips to check."""
    cases = [("start", 0, 2000), ("middle", int(whole_ms * 0.45), 3000)]
    for number, join in enumerate(joins, 1):
        cases += [
            (f"before join {number}", int(join) - 1100, 1000),
            (f"at join {number}", round(join), 1000),
            (f"after join {number}", int(join) + 100, 1000),
            (f"across join {number}", int(join) - 1000, 2000),
        ]
    cases.append(("end", int(whole_ms) - 1500, 3000))
    return cases


def get(start_ms: int, duration_ms: int):
    with Client(app, stage_name="local") as client:
        return client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")


def clip_bytes(s3, start_ms: int, duration_ms: int) -> bytes:
    key = f"audio_clips/{EPISODE}/{start_ms}-{start_ms + duration_ms}.mp3"
    return s3.get_object(Bucket=CLIPS_BUCKET, Key=key)["Body"].read()


def check_fixture(s3, episode, fixture: Joined, tmp_path) -> List[str]:
    episode("cbr", data=fixture.data)
    whole = decode(fixture.path, rate=MEASURE_RATE)
    native = decode(fixture.path, rate=fixture.rate)
    assert whole.frames, whole.stderr
    whole_ms = whole.duration_ms
    lines, failures = [], []
    for label, start_ms, want_ms in positions(whole_ms, fixture.joins_ms):
        response = get(start_ms, want_ms)
        if response.status_code != 200:
            failures.append(f"{label}: {response.status_code} {response.body!r}")
            continue
        body = json.loads(response.body)
        data = clip_bytes(s3, start_ms, want_ms)
        clip = decode(data, rate=MEASURE_RATE, tmp_dir=str(tmp_path))
        expected_ms = min(want_ms, whole_ms - start_ms)
        skip = 160  # the resampler's first 10 ms of a clip differ from the middle of a stream
        found = best_offset(clip, whole, round(start_ms * 16), window=48 * 16, skip=skip)
        start_error = (found - start_ms * 16) / 16
        duration_error = clip.duration_ms - expected_ms
        near_join = any(abs(start_ms - join) < 30 for join in fixture.joins_ms)
        lines.append(
            f"{fixture.name:24} {label:16} start {start_ms:6} ms  start error {start_error:+6.2f} ms  "
            f"duration error {duration_error:+6.2f} ms  served {body['duration_ms']} ms"
        )
        start_limit = 26.2 if near_join else 1.0 + _drift_allowance(fixture, start_ms)
        if abs(start_error) > start_limit:
            failures.append(f"{label}: starts {start_error:+.2f} ms off (limit {start_limit} ms)")
        duration_limit = 1.0 + (_drift_allowance(fixture, start_ms) if label == "end" else 0.0)
        if abs(duration_error) > duration_limit or abs(body["duration_ms"] - expected_ms) > duration_limit:
            failures.append(
                f"{label}: lasts {clip.duration_ms:.1f} ms, served {body['duration_ms']}, expected {expected_ms:.1f}"
            )
        if fixture.frame_copy and not near_join:
            failures += _frame_copy_exact(label, data, native, start_ms, fixture, tmp_path)
    beyond = math.ceil(whole_ms + _drift_allowance(fixture, whole_ms)) + 1
    response = get(beyond, 1000)
    if response.status_code != 400 or "whose duration is" not in json.loads(response.body)["Message"]:
        failures.append(f"start {beyond} beyond the end: {response.status_code} {response.body!r}")
    report = os.environ.get("JOINED_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write("\n".join(lines) + "\n")
    assert not failures, "\n".join([*lines, "FAILURES:", *failures])
    return lines


def _drift_allowance(fixture: Joined, start_ms: float) -> float:
    """Each change of format before ``start_ms`` reconfigures FFmpeg's resampler, which loses a few samples when
    its output rate differs from the part's (about 1 ms per change at 16 kHz, 0 at the part's own rate)."""
    if fixture.frame_copy:
        return 0.0
    return sum(2.5 for join in fixture.joins_ms if join < start_ms)


def _frame_copy_exact(label: str, data: bytes, native, start_ms: int, fixture: Joined, tmp_path) -> List[str]:
    clip = decode(data, rate=fixture.rate, tmp_dir=str(tmp_path))
    if clip.stderr:
        return [f"{label}: the clip decodes with errors: {clip.stderr[:200]}"]
    rate_k = fixture.rate / 1000
    first = round(start_ms * rate_k)
    found = best_offset(clip, native, first, window=round(30 * rate_k), skip=0, probe=2000)
    count = min(clip.frames, native.frames - found)
    if clip.samples[:count] != native.samples[found : found + count]:
        return [f"{label}: a frame copy, but not the whole file's samples (offset {found - first} samples)"]
    return []


@pytest.mark.parametrize("name", FAST)
def test_joined_file_clips_start_and_last_on_the_players_timeline(s3, episode, fixtures, tmp_path, name):
    check_fixture(s3, episode, fixture_or_skip(fixtures, name), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in FIXTURES if name not in FAST])
def test_more_joined_files_clips_start_and_last_on_the_players_timeline(s3, episode, fixtures, tmp_path, name):
    check_fixture(s3, episode, fixture_or_skip(fixtures, name), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", MATRIX)
def test_a_matrix_of_joins_is_cut_on_the_players_timeline(s3, episode, tmp_path_factory, tmp_path, name):
    """Every head a part can start with (nothing, ID3v2, ID3v2 + Info, Info alone, Xing, VBRI), after a show and
    before it again, in the show's format, at another rate and mono, or at another channel count; a CRC-protected
    part; a part that ends with ID3v1 and APEv2 tags. Each compared with FFmpeg's decode of the whole file."""
    directory = tmp_path_factory.getbasetemp() / "matrix"
    directory.mkdir(exist_ok=True)
    fixture = build_matrix(str(directory), name)
    if fixture is None:
        pytest.skip("needs Debian's `lame` (make test installs it as root: apt-get install -y lame)")
    check_fixture(s3, episode, fixture, tmp_path)
