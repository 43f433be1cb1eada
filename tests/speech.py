"""Speech for the pause tests: phrases spoken by Debian's espeak-ng, joined with gaps of known lengths, at about
-20 dBFS over a -50 dBFS noise floor (and a variant over a music bed), encoded as the service's sources are.

The truth is exact: each phrase is espeak-ng's output trimmed to its first and last audible sample and placed at a
known sample, so every gap between two phrases is known to the sample. Inside a phrase espeak-ng speaks the words
together, with the short gaps of stop consonants (under 150 ms) that must not count as pauses.
"""

from __future__ import annotations

import array
import math
import os
import shutil
import subprocess
import wave
from dataclasses import dataclass
from typing import List, Optional, Tuple

import pytest

from tests.audio_tools import FFMPEG

ESPEAK = shutil.which("espeak-ng")
RATE = 22_050  # espeak-ng's own rate
LEAD_MS = TAIL_MS = 1500
SPEECH_DBFS = -20.0
NOISE_DBFS = -50.0
BED_DBFS = -37.0  # a music bed 17 dB under the speech
CHORD_DBFS = -18.1  # the chord below before its volume filter (measured with astats)
PHRASES = (
    "Welcome back to the show where we talk about building things",
    "Today our guest has spent twenty years making software for hospitals",
    "She started as a nurse",
    "and then taught herself to program at night",
    "We talk about what that transition was like",
    "why most clinical software is so hard to use",
    "and what she would change if she could start again",
    "Let us get into it",
    "So tell me about the first program you ever wrote",
    "It was a tiny spreadsheet macro that counted medication doses",
    "Nobody asked for it but everybody started using it within a week",
    "That is when I realised that small tools can matter enormously",
    "What happened next",
    "The hospital hired me to maintain it and then to replace it",
)
GAPS_MS = (700, 350, 220, 900, 180, 450, 1200, 300, 600, 160, 500, 800, 400)
ENCODINGS = {  # FFmpeg output options, as tests/audio_tools.py encodes its sources
    "speech-cbr.mp3": ("-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"),
    "speech-vbr.mp3": ("-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-q:a", "4"),
    "speech.m4a": ("-ac", "2", "-ar", "44100", "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart"),
    "speech-bed.mp3": ("-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"),
    "music.mp3": ("-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"),
}


def require_espeak() -> str:
    """espeak-ng's path; without it the test skips on a laptop and fails under CI (make test-tools installs it)."""
    if ESPEAK is None:
        message = "needs Debian's espeak-ng (make test-tools installs it with apt-get as root)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return ESPEAK


@dataclass(frozen=True)
class Speech:
    directory: str
    seconds: float
    phrases: Tuple[Tuple[int, int], ...]  # [start, end) of each phrase, in ms (rounded outwards)
    gaps: Tuple[Tuple[int, int], ...]  # the silences between phrases and at both ends, in ms (rounded inwards)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def gap_at(self, ms: float) -> Optional[Tuple[int, int]]:
        return next((gap for gap in self.gaps if gap[0] <= ms <= gap[1]), None)


def _spoken(text: str, path: str) -> array.array:
    subprocess.run([require_espeak(), "-w", path, "-v", "en-us", "-s", "160", text], check=True, capture_output=True)
    with wave.open(path) as handle:
        assert handle.getframerate() == RATE and handle.getnchannels() == 1 and handle.getsampwidth() == 2
        samples = array.array("h", handle.readframes(handle.getnframes()))
    audible = [i for i, value in enumerate(samples) if abs(value) > 32]
    return samples[audible[0] : audible[-1] + 1]


def _silence(ms: int) -> array.array:
    return array.array("h", bytes(2 * (ms * RATE // 1000)))


def make_speech(directory: str) -> Speech:
    """Every encoding of ENCODINGS in ``directory`` (made once), and where its phrases and gaps are."""
    os.makedirs(directory, exist_ok=True)
    speech = _silence(LEAD_MS)
    bounds: List[Tuple[int, int]] = []
    for number, text in enumerate(PHRASES):
        phrase = _spoken(text, os.path.join(directory, f"phrase{number}.wav"))
        bounds.append((len(speech), len(speech) + len(phrase)))
        speech.extend(phrase)
        speech.extend(_silence(GAPS_MS[number]) if number < len(GAPS_MS) else _silence(TAIL_MS))
    active = sum(end - start for start, end in bounds)
    power = sum(v * v for start, end in bounds for v in speech[start:end]) / active
    gain = 10 ** (SPEECH_DBFS / 20) * 32768 / math.sqrt(power)
    scaled = array.array("h", (max(-32768, min(32767, round(v * gain))) for v in speech))
    clean = os.path.join(directory, "speech.wav")
    with wave.open(clean, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(scaled.tobytes())
    seconds = len(speech) / RATE
    for name, options in ENCODINGS.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            _mix(clean, seconds, name, options, path)
    to_ms = 1000 / RATE
    phrases = tuple((math.floor(a * to_ms), math.ceil(b * to_ms)) for a, b in bounds)
    ends = [0] + [b for _, b in phrases]
    starts = [a for a, _ in phrases] + [math.floor(seconds * 1000)]
    return Speech(directory, seconds, phrases, tuple((e, s) for e, s in zip(ends, starts, strict=True)))


def _mix(clean: str, seconds: float, name: str, options: tuple, out: str) -> None:
    """White noise at NOISE_DBFS (uniform in [-a, a]: RMS a/sqrt(3)); plus a chord with tremolo for the bed; the
    music has no speech at all."""
    noise = f"anoisesrc=d={seconds}:c=white:r={RATE}:a={math.sqrt(3) * 10 ** (NOISE_DBFS / 20):.6f}:seed=3"
    chord = (
        f"sine=f=220:r={RATE}:d={seconds},volume=1[s1];sine=f=277:r={RATE}:d={seconds}[s2];"
        f"sine=f=330:r={RATE}:d={seconds}[s3];[s1][s2][s3]amix=inputs=3:normalize=0,tremolo=f=2:d=0.3"
    )
    inputs = ["-i", clean, "-f", "lavfi", "-i", noise]
    if name == "speech-bed.mp3":
        graph = f"{chord},volume={BED_DBFS - CHORD_DBFS:.1f}dB[b];[0:a][1:a][b]amix=inputs=3:normalize=0:duration=first,pan=stereo|c0=c0|c1=c0[m]"
    elif name == "music.mp3":
        graph = f"{chord},volume={SPEECH_DBFS - CHORD_DBFS:.1f}dB[b];[1:a][b]amix=inputs=2:normalize=0:duration=first,pan=stereo|c0=c0|c1=c0[m]"
    else:
        graph = "[0:a][1:a]amix=inputs=2:normalize=0:duration=first,pan=stereo|c0=c0|c1=c0[m]"
    part = out + ".part" + os.path.splitext(out)[1]
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[m]", *options, part], check=True
    )
    os.replace(part, out)
