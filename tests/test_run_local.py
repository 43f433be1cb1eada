"""End to end through `make run`'s script: S3 on moto, the demo episode, chalice local, a real clip, a clean stop.

It runs scripts/run_local.py as a newcomer would (on free ports), waits for its READY line, asks for a clip over
HTTP, decodes the MP3 it gets, then sends SIGINT and checks that everything the script started is gone.
"""

from __future__ import annotations

import array
import itertools
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.local_stack import (
    DEMO_GUID,
    STOP_TIMEOUT_S,
    LocalStack,
    accepts_connections,
    ffmpeg_exe,
    local_stack,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT_S = 60

SAMPLE_RATE = 44_100
MP3_FRAME_SAMPLES = 1_152


def decode_mono(clip: Path, *, left_only: bool = False) -> bytes:
    """The clip as 16-bit mono PCM at 44.1 kHz; fails on any FFmpeg complaint."""
    command = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(clip)]
    if left_only:
        command += ["-af", "pan=mono|c0=c0"]
    command += ["-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert result.stderr == b"", result.stderr.decode("utf-8", "replace")
    return result.stdout


def tone_frequency(pcm: bytes, start_s: float, end_s: float) -> float:
    """The frequency of a pure tone in [start_s, end_s), from its zero crossings."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    window = samples[int(start_s * SAMPLE_RATE) : int(end_s * SAMPLE_RATE)]
    crossings = sum(1 for a, b in itertools.pairwise(window) if (a < 0) != (b < 0))
    return crossings / 2 / (end_s - start_s)


def get_clip(session: requests.Session, stack: LocalStack, **extra: str) -> requests.Response:
    params = {"start_time_ms": "60000", "duration_ms": "30000", **extra}
    return session.get(
        f"{stack.base_url}/api/v1/audio_clips/{DEMO_GUID}",
        params=params,
        timeout=REQUEST_TIMEOUT_S,
        allow_redirects=False,
    )


def test_make_run_serves_a_clip_and_stops_on_ctrl_c(local_stack: LocalStack, tmp_path: Path) -> None:
    stack = local_stack
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment between us and 127.0.0.1

    # First request: generated now.
    response = get_clip(session, stack)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{stack.output.text()}"
    body = response.json()
    assert body["cache_hit"] is False
    assert body["episode_id"] == DEMO_GUID
    assert body["start_time_ms"] == 60000
    assert body["duration_ms"] == 30000
    assert isinstance(body["generation_time_ms"], int) and not isinstance(body["generation_time_ms"], bool)
    assert body["generation_time_ms"] >= 0
    assert body["clip_url"].startswith("http")
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert expires_at.tzinfo is not None
    now = datetime.now(timezone.utc)
    assert now < expires_at <= now + timedelta(days=7, minutes=1)

    # The clip itself: an MP3 that decodes cleanly to 30 s, within one MP3 frame.
    download = session.get(body["clip_url"], timeout=REQUEST_TIMEOUT_S)
    assert download.status_code == 200, download.text[:500]
    clip = tmp_path / "clip.mp3"
    clip.write_bytes(download.content)
    samples = len(decode_mono(clip)) // 2
    assert abs(samples - 30 * SAMPLE_RATE) <= MP3_FRAME_SAMPLES, f"{samples} samples, {samples / SAMPLE_RATE:.3f} s"

    # ... cut from the right place: the demo's left channel is 440 Hz from 1:00 to 1:05 and 587 Hz from 1:25 to 1:30.
    left = decode_mono(clip, left_only=True)
    assert tone_frequency(left, 0.5, 4.5) == pytest.approx(440.0, rel=0.02)
    assert tone_frequency(left, 25.5, 29.5) == pytest.approx(587.3, rel=0.02)

    # The same request again: served from the cache.
    again = get_clip(session, stack)
    assert again.status_code == 200, again.text
    assert again.json()["cache_hit"] is True

    # redirect=true: a 302 to a URL that serves the same clip.
    redirect = get_clip(session, stack, redirect="true")
    assert redirect.status_code == 302, redirect.text
    location = redirect.headers.get("Location", "")
    assert location.startswith("http")
    followed = session.get(location, timeout=REQUEST_TIMEOUT_S)
    assert followed.status_code == 200
    assert followed.content == download.content

    # Ctrl-C: everything stops, exit code 0, both ports closed.
    assert accepts_connections(stack.api_port) and accepts_connections(stack.moto_port)
    stack.process.send_signal(signal.SIGINT)
    try:
        code = stack.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run_local.py still running {STOP_TIMEOUT_S} s after SIGINT. Output:\n{stack.output.text()}")
    assert code == 0, stack.output.text()
    assert not accepts_connections(stack.api_port), "chalice local still listening after the script exited"
    assert not accepts_connections(stack.moto_port), "the S3 server still listening after the script exited"


def test_make_run_audio_serves_your_own_file_as_one_more_episode(tmp_path: Path) -> None:
    from tests.local_stack import start_local_stack

    own = tmp_path / "My Show #12.mp3"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=40",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            str(own),
        ],
        check=True,
    )
    with start_local_stack("--audio", str(own)) as stack:
        stack.output.wait_for_line("Your audio", 10)
        curl = stack.output.wait_for_line("  curl -s '", 10)
        url = curl.strip().split("'")[1]
        assert "/api/v1/audio_clips/local%3AMy-Show-12?" in url
        session = requests.Session()
        session.trust_env = False
        response = session.get(url, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200, f"{response.text}\n{stack.output.text()}"
        body = response.json()
        assert body["episode_id"] == "local:My-Show-12" and body["duration_ms"] == 30000
        clip = tmp_path / "clip.mp3"
        clip.write_bytes(session.get(body["clip_url"], timeout=REQUEST_TIMEOUT_S).content)
        assert abs(tone_frequency(decode_mono(clip), 5, 25) - 440) < 5


def test_a_missing_audio_file_fails_before_anything_starts(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "run_local.py"
    result = subprocess.run(
        [sys.executable, str(script), "--audio", str(tmp_path / "nope.mp3"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "AUDIO=" in result.stderr and "no such file" in result.stderr


def test_mongodb_uri_from_the_shell_is_the_catalog(monkeypatch, tmp_path: Path) -> None:
    import scripts.run_local as run_local

    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:27017/")
    env = run_local.chalice_environment("http://127.0.0.1:1", tmp_path / "catalog.json", "/bin/ffmpeg", {})
    assert env["MONGODB_URI"] == "mongodb://127.0.0.1:27017/" and "LOCAL_CATALOG_FILE" not in env
    monkeypatch.delenv("MONGODB_URI")
    env = run_local.chalice_environment("http://127.0.0.1:1", tmp_path / "catalog.json", "/bin/ffmpeg", {})
    assert "MONGODB_URI" not in env and env["LOCAL_CATALOG_FILE"] == str((tmp_path / "catalog.json").resolve())
