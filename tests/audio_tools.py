"""Real audio for tests: generated with FFmpeg, decoded with FFmpeg, compared sample by sample."""

from __future__ import annotations

import array
import os
import subprocess
from dataclasses import dataclass
from typing import Dict

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FRAME_MS = 1152 / 44.1  # one MPEG-1 frame at 44.1 kHz: 26.1 ms

# Noise under a varying envelope: every position is unambiguous, unlike a pure tone.
SIGNAL = "anoisesrc=d={seconds}:c=pink:r={rate}:a=0.5:seed=7,volume='0.15+0.85*abs(sin(t*2.3)*cos(t*0.71))':eval=frame"


@dataclass(frozen=True)
class Source:
    name: str
    path: str
    seconds: float
    encode: tuple  # FFmpeg output options
    content_type: str = "audio/mpeg"

    @property
    def data(self) -> bytes:
        with open(self.path, "rb") as handle:
            return handle.read()


KINDS = {
    "cbr": (40, 44100, ("-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k")),
    "vbr": (40, 44100, ("-ac", "2", "-c:a", "libmp3lame", "-q:a", "4")),
    "vbr_no_header": (40, 44100, ("-ac", "2", "-c:a", "libmp3lame", "-q:a", "4", "-write_xing", "0")),
    "mpeg2_mono": (40, 22050, ("-ac", "1", "-c:a", "libmp3lame", "-b:a", "48k")),
    "mpeg2_24k_vbr": (40, 24000, ("-ac", "1", "-c:a", "libmp3lame", "-q:a", "5")),
    "mpeg25_mono": (40, 11025, ("-ac", "1", "-c:a", "libmp3lame", "-b:a", "24k")),
    "m4a": (40, 44100, ("-ac", "2", "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart")),
}


def generate(directory: str, name: str, seconds: float, rate: int, options: tuple) -> Source:
    extension = "m4a" if name == "m4a" else "mp3"
    path = os.path.join(directory, f"{name}.{extension}")
    if not os.path.exists(path):
        subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                SIGNAL.format(seconds=seconds, rate=rate),
                *options,
                path + ".part." + extension,
            ],
            check=True,
        )
        os.replace(path + ".part." + extension, path)
    return Source(name, path, seconds, options, "audio/mp4" if name == "m4a" else "audio/mpeg")


def generate_all(directory: str) -> Dict[str, Source]:
    sources = {name: generate(directory, name, *spec) for name, spec in KINDS.items()}
    cbr = sources["cbr"]
    tagged = os.path.join(directory, "big_id3.mp3")
    if not os.path.exists(tagged):
        with open(tagged, "wb") as handle:
            handle.write(id3v2_tag(3 * 1024 * 1024) + cbr.data)
    sources["big_id3"] = Source("big_id3", tagged, cbr.seconds, cbr.encode)
    return sources


def id3v2_tag(payload_bytes: int) -> bytes:
    """An ID3v2.4 tag holding an APIC-like frame of ``payload_bytes`` (embedded artwork)."""
    body = b"\x00" + b"image/jpeg\x00" + b"\x03" + b"\x00" + os.urandom(payload_bytes)
    frame = b"APIC" + _syncsafe(len(body)) + b"\x00\x00" + body
    return b"ID3\x04\x00\x00" + _syncsafe(len(frame)) + frame


def _syncsafe(value: int) -> bytes:
    return bytes(((value >> 21) & 0x7F, (value >> 14) & 0x7F, (value >> 7) & 0x7F, value & 0x7F))


@dataclass
class Decoded:
    samples: array.array  # interleaved s16
    channels: int
    rate: int
    stderr: str

    @property
    def frames(self) -> int:
        return len(self.samples) // self.channels

    @property
    def duration_ms(self) -> float:
        return self.frames * 1000 / self.rate


def decode(path_or_bytes, channels: int = 1, rate: int = 44100, tmp_dir: str = "/tmp") -> Decoded:
    """Decode to s16 with FFmpeg, as a player honouring the LAME tag would (from a file, not a pipe)."""
    path = path_or_bytes
    if isinstance(path_or_bytes, (bytes, bytearray)):
        path = os.path.join(tmp_dir, f"decode-{os.getpid()}-{id(path_or_bytes)}.mp3")
        with open(path, "wb") as handle:
            handle.write(path_or_bytes)
    try:
        result = subprocess.run(
            [FFMPEG, "-v", "error", "-i", path, "-f", "s16le", "-ac", str(channels), "-ar", str(rate), "-"],
            capture_output=True,
        )
    finally:
        if path is not path_or_bytes:
            os.unlink(path)
    samples = array.array("h")
    samples.frombytes(result.stdout[: len(result.stdout) // 2 * 2])
    return Decoded(samples, channels, rate, result.stderr.decode("utf-8", "replace").strip())


def offset_of(clip: Decoded, source: Decoded, expected: int, window: int, probe: int = 4096) -> int:
    """Where, within ``expected ± window`` samples of the source, the clip's samples [2048, 2048+probe) match
    best (least squared error): the clip's real start."""
    part = clip.samples[2048 : 2048 + probe]
    best, best_error = None, None
    for start in range(max(0, expected - window), expected + window + 1):
        segment = source.samples[start + 2048 : start + 2048 + probe]
        if len(segment) < len(part):
            break
        error = sum((a - b) * (a - b) for a, b in zip(part[::8], segment[::8], strict=False))
        if best_error is None or error < best_error:
            best, best_error = start, error
            if error == 0:
                break
    return best
