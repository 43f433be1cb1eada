"""A clip's waveform in the audiowaveform JSON format (version 2, as BBC's audiowaveform writes it and peaks.js and
wavesurfer.js read it): one decode of the clip's own MP3 by FFmpeg, mono at a low rate, then the lowest and highest
sample of each pixel, 8-bit.

    {"version": 2, "channels": 1, "sample_rate": 8000, "samples_per_pixel": 240, "bits": 8, "length": 1000,
     "data": [min0, max0, min1, max1, ...]}

``sample_rate`` is the decode's rate, so ``samples_per_pixel / sample_rate`` is each pixel's duration in seconds, as
those players read it. About TARGET_POINTS pixels whatever the clip's length (always 100..2000).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from array import array
from typing import Any, Dict, List, Tuple

from chalicelib.audio.ffmpeg import run
from chalicelib.errors import ServiceError

RATE = 8000  # Hz: peaks to the pixel, at a sixth of the work of 44.1 kHz (a 60 s clip decodes to 480,000 samples)
TARGET_POINTS = 1000
MIN_POINTS, MAX_POINTS = 100, 2000


def decode_mono(ffmpeg: str, mp3: bytes, deadline: float, rate: int = RATE) -> array:
    """The clip's samples, mono s16 at ``rate``. Decoded from a file, not a pipe: FFmpeg trims the encoder's delay
    and padding (the LAME tag) only when it can seek, so the samples are the clip's own, no more."""
    with tempfile.TemporaryDirectory(prefix="waveform-") as work:
        path = os.path.join(work, "clip.mp3")
        with open(path, "wb") as handle:
            handle.write(mp3)
        command = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-f", "mp3", "-i", path]
        command += ["-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-c:a", "pcm_s16le", "pipe:1"]
        result = run(command, deadline, "Drawing the clip's waveform", "ffmpeg (waveform)")
    if result.returncode != 0:
        raise ServiceError(
            "The clip's waveform could not be computed",
            detail=f"ffmpeg exit {result.returncode}: {result.stderr.decode('utf-8', 'replace')[-500:]}",
        )
    samples = array("h")
    samples.frombytes(result.stdout[: len(result.stdout) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def peaks(samples: array, rate: int = RATE, target: int = TARGET_POINTS) -> Dict[str, Any]:
    """The audiowaveform v2 document of ``samples`` (mono s16): whole samples per pixel, about ``target`` pixels.
    A clip shorter than MIN_POINTS samples (a few ms) is padded with silent pixels to the format's minimum here."""
    per_pixel = max(1, math.ceil(len(samples) / target))
    data: List[int] = []
    for start in range(0, len(samples), per_pixel):
        chunk = samples[start : start + per_pixel]
        data += (min(chunk) >> 8, max(chunk) >> 8)  # s16 to 8 bits, as audiowaveform does: -128..127
    data += [0, 0] * max(0, MIN_POINTS - len(data) // 2)
    return {
        "version": 2,
        "channels": 1,
        "sample_rate": rate,
        "samples_per_pixel": per_pixel,
        "bits": 8,
        "length": len(data) // 2,
        "data": data,
    }


def waveform(ffmpeg: str, mp3: bytes, deadline: float) -> Dict[str, Any]:
    """The clip's waveform document: one decode, one pass."""
    return peaks(decode_mono(ffmpeg, mp3, deadline))


def is_waveform(document: Any) -> bool:
    """Whether ``document`` is a waveform this module wrote (a cached one is checked before it is served)."""
    if not isinstance(document, dict):
        return False
    data, length = document.get("data"), document.get("length")
    return (
        document.get("version") == 2
        and document.get("channels") == 1
        and document.get("bits") == 8
        and isinstance(length, int)
        and MIN_POINTS <= length <= MAX_POINTS
        and isinstance(data, list)
        and len(data) == 2 * length
        and all(isinstance(v, int) and -128 <= v <= 127 for v in data)
    )


def pairs(document: Dict[str, Any]) -> List[Tuple[int, int]]:
    """The (min, max) of each pixel."""
    data = document["data"]
    return list(zip(data[::2], data[1::2], strict=True))
