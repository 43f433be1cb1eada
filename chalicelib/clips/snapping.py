"""``snap=pause``: where a clip asked at (start, duration) starts and ends once snapped to pauses in speech
(contract section 6; the rules and the pause finder are the engine's, ``chalicelib.audio.pauses``).

The levels come from the episode's stored levels (``levels.bin`` beside its clips: one byte a 10 ms hop, measured
once when its audio arrived, by ``cleanup_clips``), read for both windows with one ranged GET of a few KB. An
episode without them (audio older than this feature, or levels that could not be made) has its two windows
decoded on the request path by one FFmpeg process: for MP3 from the window's own frames, cut by the engine (so
the timeline is the one clips are cut on); for other formats from a pre-signed URL with ``-ss``/``-t``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from chalicelib.audio.cutting import IndexLoader, Mp3Source, cut_mp3
from chalicelib.audio.ffmpeg import PcmInput, decode_pcm, input_format, stream_pcm
from chalicelib.audio.pauses import (
    HOP_MS,
    PCM_RATE,
    LevelMeter,
    Window,
    decode_levels,
    encode_levels,
    end_window,
    find_pauses,
    hop_levels,
    snap,
    start_window,
)
from chalicelib.errors import BadRequest, NotFound, ServiceError
from chalicelib.ops import logs
from chalicelib.settings import MIN_CLIP_MS
from chalicelib.stores.clip_cache import ClipStore, LevelsArtefact
from chalicelib.stores.source import SourceAudio

log = logging.getLogger("audio_clips.snapping")

SNAP_PAUSE = "pause"
SNAP_VALUES = (SNAP_PAUSE,)


@dataclass(frozen=True)
class Served:
    start_ms: int
    duration_ms: int  # before any clamping at the episode's end (the cut clamps)
    levels: str  # where the levels came from: "stored" or "decoded"


def levels_span(start_ms: int, duration_ms: int) -> Tuple[int, int]:
    """The hops ``[first, end)`` of the stored levels that snapping a clip asked at ``start_ms`` reads: both
    windows, in one ranged GET (it does not depend on the source, so it may go out beside the source's first read)."""
    windows = [start_window(start_ms), end_window(start_ms, duration_ms)]
    return min(w.from_ms for w in windows) // HOP_MS, max(w.to_ms for w in windows) // HOP_MS


def read_levels(levels: LevelsArtefact, start_ms: int, duration_ms: int) -> Optional[Tuple[bytes, str]]:
    return levels.read(*levels_span(start_ms, duration_ms))


def served_range(
    audio: SourceAudio,
    mp3: Optional[Mp3Source],
    start_ms: int,
    duration_ms: int,
    levels: Optional[Tuple[bytes, str]],
    load_index: IndexLoader,
    ffmpeg: Callable[[], Optional[str]],
    deadline: float,
) -> Served:
    """The served (start, duration) of a clip asked at ``start_ms`` for ``duration_ms`` of this version of the
    source (``mp3``: the same source read as MP3, None for other formats). ``levels``: what ``read_levels`` found
    (used when they measured this version of the source), else the windows are decoded."""
    windows = [start_window(start_ms), end_window(start_ms, duration_ms)]
    stored = None
    if levels is not None and levels[1] == audio.source.etag:
        hops, first = decode_levels(levels[0]), levels_span(start_ms, duration_ms)[0]
        stored = [hops[w.from_ms // HOP_MS - first : w.to_ms // HOP_MS - first] for w in windows]
    where = "stored"
    if stored is None:
        stored = _decoded_levels(audio, mp3, windows, load_index, ffmpeg, deadline)
        where = "decoded"
    start_pauses = find_pauses(stored[0], windows[0])
    end_pauses = find_pauses(stored[1], windows[1])
    start, duration = snap(start_pauses, end_pauses, start_ms, duration_ms, MIN_CLIP_MS)
    return Served(start, duration, where)


def _decoded_levels(
    audio: SourceAudio,
    mp3: Optional[Mp3Source],
    windows: Sequence[Window],
    load_index: IndexLoader,
    ffmpeg: Callable[[], Optional[str]],
    deadline: float,
) -> List[List[float]]:
    binary = ffmpeg()
    if binary is None:
        raise ServiceError(
            "This service cannot find pauses: FFmpeg is missing",
            detail="no FFmpeg binary found (FFMPEG_PATH, /opt/bin/ffmpeg)",
        )
    with tempfile.TemporaryDirectory(prefix="snap-") as work:
        inputs: List[Optional[PcmInput]] = []
        for number, window in enumerate(windows):
            if mp3 is None:
                inputs.append(PcmInput(audio.presigned_url(), input_format(audio.head), window.from_ms, window.ms))
                continue
            try:
                cut = cut_mp3(mp3, window.from_ms, window.ms, load_index, deadline, ffmpeg)
            except BadRequest:  # the window starts within the episode's last second: the clip is clamped there
                inputs.append(None)
                continue
            path = os.path.join(work, f"window{number}.mp3")
            with open(path, "wb") as handle:
                handle.write(cut.data)
            inputs.append(PcmInput(path, "mp3"))
        wanted = [item for item in inputs if item is not None]
        decoded = iter(decode_pcm(binary, wanted, PCM_RATE, deadline) if wanted else [])
        return [hop_levels(next(decoded)) if item is not None else [] for item in inputs]


# ------------------------------------------------------------------ at upload: cleanup_clips


def _whole(audio: SourceAudio) -> Iterator[bytes]:
    """The source's bytes in order: the head already read, then the rest in one streamed GET."""
    yield audio.head
    if len(audio.head) < audio.source.size:
        yield from audio.stream(len(audio.head))


@dataclass
class LevelsPrepared:
    outcome: str  # "built", "source-gone", "failed"
    ms: float
    hops: int = 0
    error: Optional[str] = None


def prepare_levels(
    s3: Any, clips: ClipStore, bucket: str, key: str, episode_id: str, ffmpeg: Optional[str], deadline: float
) -> LevelsPrepared:
    """Measure and store the levels of an episode's new audio (any format FFmpeg decodes from a stream), read
    once from S3 into FFmpeg: about 12 s of one vCPU per hour of audio (README, "snap=pause"). Never raises:
    without levels a snapped miss decodes its windows instead; a failure is logged."""
    started = time.perf_counter()

    def result(outcome: str, hops: int = 0, error: Optional[str] = None) -> LevelsPrepared:
        return LevelsPrepared(outcome, round((time.perf_counter() - started) * 1000, 1), hops, error)

    try:
        if ffmpeg is None:
            raise ServiceError("FFmpeg is missing", detail="no FFmpeg binary found (FFMPEG_PATH, /opt/bin/ffmpeg)")
        audio = SourceAudio.open(s3, bucket, key)  # as the seek index's build: FFmpeg's kill bounds the stream
        meter = LevelMeter()
        stream_pcm(ffmpeg, _whole(audio), input_format(audio.head), PCM_RATE, deadline, meter.feed)
        if not clips.levels(episode_id).save(encode_levels(meter.levels), audio.source):
            raise ServiceError("The levels were measured but could not be stored")
        return result("built", len(meter.levels))
    except NotFound:
        return result("source-gone")
    except Exception as error:
        detail = getattr(error, "detail", None) or repr(error)
        logs.emit(log, logging.ERROR, event="levels_failed", episode_id=episode_id, key=key, error=detail)
        return result("failed", error=detail)
