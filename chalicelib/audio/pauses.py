"""Pauses in speech, and where a clip asked with ``snap=pause`` starts and ends (contract section 6).

A pause is a stretch of at least 150 ms whose level stays well below the speech around it. Levels are measured
on a decoded mono 16 kHz stream in 10 ms hops (every second sample of a hop: an unbiased estimate of its power,
which keeps the fricatives above 4 kHz that an 8 kHz stream would lose and make look like silence), relative to
the window itself: the speech reference is the 95th percentile of its hops, the floor the 5th. A hop is quiet
below ``min(speech - 15 dB, floor + a quarter of the contrast, 6 to 12 dB)``; a window whose speech stands less
than 21 dB above its floor (music, noise, a bed with no speech) has no pauses. Gaps inside words (stop
closures, 30 to 120 ms) are shorter than 150 ms and do not count.

Pure Python on a few seconds of PCM around each boundary: no numpy in the Lambda package.
"""

from __future__ import annotations

import array
import math
import operator
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

PCM_RATE = 16_000  # what FFmpeg decodes the windows to: mono s16le
HOP_MS = 10
MIN_PAUSE_MS = 150  # contract: a pause lasts at least this long
START_BEFORE_MS, START_AFTER_MS = 2000, 250  # contract: a pause overlapping [start - 2000, start + 250]
START_LEAD_MAX_MS = 400  # contract: the clip starts at most this long before its pause ends
END_AROUND_MS = 2000  # contract: a pause overlapping [end - 2000, end + 2000]
END_TAIL_MIN_MS = 100  # contract: the clip ends at least this long after its pause begins
CONTEXT_MS = 2000  # decoded on each side of a window: the speech around it, and where its pauses end

SPEECH_PERCENTILE, FLOOR_PERCENTILE = 0.95, 0.05
MIN_CONTRAST_DB = 21.0  # speech this far above the floor, or the window has no pauses
BELOW_SPEECH_DB = 15.0  # a quiet hop is at least this far below the speech reference ("well below")

_HOP = PCM_RATE * HOP_MS // 1000
_STRIDE = 2
_FULL_SCALE_POWER = 32768.0 * 32768.0
END_SLACK_MS = 100  # a decoded window may come out this much short without the episode ending (an AAC frame)
SILENT_DB = -127.5  # a hop of digital silence; also the lowest level a stored byte holds


@dataclass(frozen=True)
class Pause:
    start_ms: int
    end_ms: int
    open_start: bool = False  # it began before the decoded window: its beginning is unknown
    open_end: bool = False  # it goes on past the decoded window: its end is unknown

    @property
    def ms(self) -> int:
        return self.end_ms - self.start_ms

    def distance(self, at_ms: int) -> int:
        return max(self.start_ms - at_ms, at_ms - self.end_ms, 0)


@dataclass(frozen=True)
class Window:
    """A stretch of the episode's timeline to decode, ``[from_ms, to_ms)``."""

    from_ms: int
    to_ms: int

    @property
    def ms(self) -> int:
        return self.to_ms - self.from_ms


def start_window(start_ms: int) -> Window:
    """What decides the start: the contract's window and the context on both sides."""
    return _aligned(start_ms - START_BEFORE_MS - CONTEXT_MS, start_ms + START_AFTER_MS + CONTEXT_MS)


def end_window(start_ms: int, duration_ms: int) -> Window:
    """What decides the end, wherever the start lands: the snapped start lies within ``[start - 2000 - 200,
    start + 250 + CONTEXT_MS]``, so the end's window does too, shifted by the duration."""
    earliest = start_ms - START_BEFORE_MS - START_LEAD_MAX_MS + duration_ms
    latest = start_ms + START_AFTER_MS + CONTEXT_MS + duration_ms
    return _aligned(earliest - END_AROUND_MS - CONTEXT_MS, latest + END_AROUND_MS + CONTEXT_MS)


def _aligned(from_ms: int, to_ms: int) -> Window:
    """Whole hops of the episode's timeline (stored levels are read by hop)."""
    return Window(max(0, from_ms // HOP_MS * HOP_MS), -(-to_ms // HOP_MS) * HOP_MS)


def hop_levels(pcm: bytes) -> List[float]:
    """dBFS of each whole 10 ms hop of mono s16le PCM at PCM_RATE."""
    meter = LevelMeter()
    meter.feed(pcm)
    return meter.levels


class LevelMeter:
    """Hop levels of a stream of mono s16le PCM at PCM_RATE, fed in chunks of any size (a whole episode's decode
    is never held)."""

    def __init__(self) -> None:
        self.levels: List[float] = []
        self._rest = b""

    def feed(self, pcm: bytes) -> None:
        data = self._rest + pcm
        whole = len(data) - len(data) % (2 * _HOP)
        self._rest = data[whole:]
        samples = array.array("h")
        samples.frombytes(data[:whole])
        if sys.byteorder != "little":
            samples.byteswap()
        mul, log10, count = operator.mul, math.log10, _HOP // _STRIDE
        append = self.levels.append
        for at in range(0, whole // 2, _HOP):
            hop = samples[at : at + _HOP : _STRIDE]
            power = sum(map(mul, hop, hop)) / count
            append(10 * log10(power / _FULL_SCALE_POWER) if power else SILENT_DB)


def encode_levels(levels: Sequence[float]) -> bytes:
    """One byte a hop: the level's attenuation in half decibels (0: full scale, 255: -127.5 dBFS or less)."""
    return bytes(min(255, max(0, round(-2 * level))) for level in levels)


def decode_levels(data: bytes) -> List[float]:
    return [-byte / 2 for byte in data]


def quiet_threshold(levels: Sequence[float]) -> Optional[float]:
    """The level below which a hop is quiet, or None when the window's contrast is too small for pauses."""
    if not levels:
        return None
    ordered = sorted(levels)
    speech = ordered[min(len(ordered) - 1, int(SPEECH_PERCENTILE * len(ordered)))]
    floor = ordered[min(len(ordered) - 1, int(FLOOR_PERCENTILE * len(ordered)))]
    contrast = speech - floor
    if contrast < MIN_CONTRAST_DB:
        return None
    return min(speech - BELOW_SPEECH_DB, floor + min(12.0, max(6.0, contrast / 4)))


def find_pauses(levels: Sequence[float], window: Window) -> List[Pause]:
    """The pauses in ``window`` from its hop levels, on the episode's timeline. A pause touching an edge of the
    window is open there, unless the edge is the episode's own start or end (levels short of the window by more
    than END_SLACK_MS: the episode ends inside it)."""
    threshold = quiet_threshold(levels)
    if threshold is None:
        return []
    episode_ends = len(levels) * HOP_MS < window.ms - END_SLACK_MS
    pauses = []
    run: Optional[int] = None
    for hop, level in enumerate([*levels, math.inf]):
        if level < threshold:
            if run is None:
                run = hop
            continue
        if run is not None and (hop - run) * HOP_MS >= MIN_PAUSE_MS:
            pauses.append(
                Pause(
                    window.from_ms + run * HOP_MS,
                    window.from_ms + hop * HOP_MS,
                    open_start=run == 0 and window.from_ms > 0,
                    open_end=hop == len(levels) and not episode_ends,
                )
            )
        run = None
    return pauses


def snap_start(pauses: Sequence[Pause], start_ms: int) -> int:
    """Inside the pause nearest ``start_ms`` among those overlapping ``[start - 2000, start + 250]``, a little
    before it ends (at most 200 ms, well within the contract's 400); ``start_ms`` when there is none."""
    low, high = start_ms - START_BEFORE_MS, start_ms + START_AFTER_MS
    near = [p for p in pauses if p.start_ms < high and p.end_ms > low and not p.open_end]
    if not near:
        return start_ms
    pause = min(near, key=lambda p: (p.distance(start_ms), p.start_ms))
    return max(0, pause.end_ms - min(200, max(100, pause.ms // 2)))


def snap_end(pauses: Sequence[Pause], start_ms: int, end_ms: int, min_clip_ms: int) -> int:
    """Inside the pause nearest ``end_ms`` among those overlapping ``[end - 2000, end + 2000]``, 150 to 300 ms
    after it begins (the contract asks at least 100) and before it ends; ``end_ms`` when there is none. A pause
    that would leave less than ``min_clip_ms`` after ``start_ms`` is not a candidate."""
    low, high = end_ms - END_AROUND_MS, end_ms + END_AROUND_MS
    best: Optional[Tuple[int, int, int]] = None
    for pause in pauses:
        if not (pause.start_ms < high and pause.end_ms > low) or pause.open_start:
            continue
        at = pause.start_ms + min(300, max(150, pause.ms // 2), pause.ms - 10)
        if at - start_ms < min_clip_ms:
            continue
        candidate = (pause.distance(end_ms), pause.start_ms, at)
        if best is None or candidate < best:
            best = candidate
    return end_ms if best is None else best[2]


def snap(
    start_pauses: Sequence[Pause], end_pauses: Sequence[Pause], start_ms: int, duration_ms: int, min_clip_ms: int
) -> Tuple[int, int]:
    """(served start, served duration) of a clip asked at ``start_ms`` for ``duration_ms``."""
    start = snap_start(start_pauses, start_ms)
    end = snap_end(end_pauses, start, start + duration_ms, min_clip_ms)
    return start, end - start
