"""FFmpeg: where the binary is, and transcoding a clip of what is not MP3 (M4A/AAC) into MP3."""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from chalicelib.errors import ClipTimeout, ConfigurationError, NotFound, StorageUnavailable, Undecodable

log = logging.getLogger(__name__)

LAYER_FFMPEG = "/opt/bin/ffmpeg"
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_HTTP_MISSING = re.compile(r"HTTP error 404|Server returned 404")
_HTTP_FAULT = re.compile(r"HTTP error|Server returned|Connection refused|Connection reset|Connection timed out|timed out|"
                         r"I/O error|Failed to resolve hostname|Name or service not known|Network is unreachable")


def find_ffmpeg(explicit: Optional[str]) -> Optional[str]:
    """``FFMPEG_PATH``, else the layer's ``/opt/bin/ffmpeg``, else imageio-ffmpeg's binary, else one on PATH."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ConfigurationError(f"FFMPEG_PATH is set to {explicit!r}, which is not an executable file")
        return explicit
    if os.access(LAYER_FFMPEG, os.X_OK):
        return LAYER_FFMPEG
    try:
        import imageio_ffmpeg  # a development dependency: local runs and tests

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=4)
def ffmpeg_version(path: str) -> str:
    result = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=10)
    first = (result.stdout or "").splitlines()[:1]
    return first[0].removeprefix("ffmpeg version ").split(" Copyright")[0] if first else "unknown"


@dataclass
class Transcoded:
    data: bytes
    episode_duration_ms: Optional[int]


def transcode_to_mp3(ffmpeg: str, url: str, start_ms: int, duration_ms: int, deadline: float) -> Transcoded:
    """An MP3 clip of ``duration_ms`` from ``start_ms`` of the audio at ``url`` (FFmpeg seeks MP4 by its sample
    tables and reads it by ranges). Written to a file so that FFmpeg adds the Info header; killed at ``deadline``
    (a ``time.monotonic()`` value)."""
    with tempfile.TemporaryDirectory(prefix="clip-") as work:
        out = os.path.join(work, "clip.mp3")
        command = [
            ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-rw_timeout", "5000000",
            "-ss", f"{start_ms / 1000:.3f}", "-i", url, "-t", f"{duration_ms / 1000:.3f}",
            "-map", "0:a:0", "-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "-y", out,
        ]
        env = dict(os.environ)
        env.setdefault("SSL_CERT_FILE", _ca_bundle() or "")
        started = time.monotonic()
        try:
            result = subprocess.run(command, capture_output=True, timeout=max(0.1, deadline - started), env=env)
        except subprocess.TimeoutExpired:
            raise ClipTimeout("Cutting the clip took too long; try again shortly",
                              detail=f"ffmpeg killed after {time.monotonic() - started:.1f}s") from None
        stderr = result.stderr.decode("utf-8", "replace").replace(url, "<source-url>")
        duration = _episode_duration_ms(stderr)
        data = Path(out).read_bytes() if os.path.exists(out) else b""
    if result.returncode != 0:
        log.warning("ffmpeg failed (exit %s): %s", result.returncode, stderr[-2000:])
        if _HTTP_MISSING.search(stderr):
            raise NotFound("The episode's source audio is missing from storage")
        if _HTTP_FAULT.search(stderr):
            raise StorageUnavailable("Audio storage is unavailable; try again shortly", detail=stderr[-500:])
        raise Undecodable("The episode's source audio cannot be decoded", detail=stderr[-500:])
    return Transcoded(data, duration)


def _episode_duration_ms(stderr: str) -> Optional[int]:
    match = _DURATION.search(stderr)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000)


def _ca_bundle() -> Optional[str]:
    try:
        import certifi

        return certifi.where()
    except ImportError:
        return None
