"""Cutting a clip out of a source object while reading little more than the clip's own bytes.

MP3 sources are cut by hand (``chalicelib.audio.mp3``) on the player's timeline, FFmpeg's decode of the whole file.
A CBR file whose Info tag provably describes the whole object is cut by arithmetic; every other MP3 through a
per-episode seek index of uniform segments, built once by one streaming pass and kept beside the clips. A clip
inside one run of uniform frames is a copy of the source's frames; a clip that spans a change of sample rate or
channels (an ad stitched into a show) is decoded from exactly the bytes it spans and encoded once by FFmpeg.
Anything else (M4A/AAC, or what is not MP3) goes to FFmpeg over a pre-signed URL.

The engine knows nothing of S3: it reads through a ``SourceReader`` (``chalicelib.stores.source.SourceAudio`` is one),
and is handed a way to get the seek index (``chalicelib.clips.seek_index`` keeps and shares it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Protocol, Sequence, Tuple

from chalicelib.audio import mp3
from chalicelib.audio.ffmpeg import join_to_mp3
from chalicelib.audio.mp3 import TICKS_PER_SECOND, SeekIndex, Segment
from chalicelib.errors import BadRequest, ClipTimeout, ServiceError, Undecodable
from chalicelib.settings import MIN_CLIP_MS

log = logging.getLogger(__name__)

HEAD_BLOCK = 256 * 1024  # bytes read at once past the head while looking for the first frame
HEAD_READS = 4  # such reads: a real file's leading tags (artwork included) need one or two

__all__ = [
    "ClipAudio",
    "Mp3Source",
    "SeekIndex",
    "build_index",
    "cut_mp3",
    "duration_ms",
    "plan_samples",
    "tagged_duration_ms",
]


class ObjectVersion(Protocol):
    """The one version of a stored object that a reader reads."""

    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def etag(self) -> str: ...


class SourceReader(Protocol):
    """A source object read by byte range: its first bytes (``head``, read when it was opened), ranges, a stream."""

    head: bytes

    @property
    def source(self) -> ObjectVersion: ...
    def read(self, start: int, end: int) -> bytes: ...
    def stream(self, start: int) -> Iterator[bytes]: ...


IndexLoader = Callable[[], Tuple[SeekIndex, bool]]  # (the source's seek index, whether this call built it)


@dataclass
class ClipAudio:
    data: bytes
    duration_ms: int  # what is served: shorter than asked when clamped at the episode's end
    method: str  # "mp3-cbr", "mp3-index", "mp3-reencode", "ffmpeg"
    index_built: bool = False


class Mp3Source:
    """One MP3 source object, read by ranges; a file no longer than its head is never read again."""

    def __init__(self, audio: SourceReader, layout: mp3.StreamLayout):
        self.audio = audio
        self.layout = layout

    @classmethod
    def sniff(cls, audio: SourceReader) -> Optional["Mp3Source"]:
        """The source as MP3, or None if it is not MP3 (then FFmpeg gets it)."""
        head = audio.head
        if not head:
            raise Undecodable("The episode's source audio is empty")
        if head[4:8] == b"ftyp":
            return None
        try:
            return cls(audio, mp3.read_layout(_HeadReader(audio)))
        except mp3.NotMp3:
            return None

    def read(self, start: int, end: int) -> bytes:
        return _read(self.audio, start, end)

    def stream(self, start: int) -> Iterator[bytes]:
        if len(self.audio.head) >= self.audio.source.size:
            yield self.audio.head[start:]
        else:
            yield from self.audio.stream(start)


class _HeadReader:
    """How ``sniff`` reads up to the first frame: from the head in hand, then in blocks of HEAD_BLOCK bytes, at most
    HEAD_READS of them. The ID3v2 tags before the audio are walked in those bytes, never one read per tag (a crafted
    file of 2 MB of empty 10-byte tags took 208,080 ranged GETs); past the last block, the source is a 422."""

    def __init__(self, audio: SourceReader):
        self._audio = audio
        self._at = 0
        self._block = b""
        self.reads = 0

    def __call__(self, start: int, end: int) -> bytes:
        audio = self._audio
        if end <= len(audio.head) or len(audio.head) >= audio.source.size:
            return audio.head[start:end]
        block_end = self._at + len(self._block)
        if self._block and self._at <= start and (end <= block_end or block_end >= audio.source.size):
            return self._block[start - self._at : end - self._at]
        if self.reads == HEAD_READS:
            raise Undecodable(
                "The episode's source audio starts with more tags than this service reads before its audio",
                detail=f"no MPEG audio frame found by byte {start} after {HEAD_READS} reads of {HEAD_BLOCK} bytes",
            )
        self.reads += 1
        self._at, self._block = start, audio.read(start, max(end, start + HEAD_BLOCK))
        return self._block[: end - start]


def _read(audio: SourceReader, start: int, end: int) -> bytes:
    head = audio.head
    if end <= len(head) or len(head) >= audio.source.size:
        return head[start:end]
    return audio.read(start, end)


def duration_ms(samples: int, sample_rate: int) -> int:
    return round(samples * 1000 / sample_rate)


def plan_samples(start_ms: int, want_ms: int, total_samples: int, sample_rate: int) -> Tuple[int, int]:
    """(first sample, sample count) of the clip, clamped at the end; BadRequest past it (``check_start``). MP3 cuts
    plan in ticks (``sample_rate`` = TICKS_PER_SECOND), which every sample rate of a joined file divides."""
    check_start(start_ms, duration_ms(total_samples, sample_rate))
    first = round(start_ms * sample_rate / 1000)
    return first, min(round(want_ms * sample_rate / 1000), total_samples - first)


def check_start(start_ms: int, episode_ms: int) -> None:
    """The end-clamp rule, for every engine: a clip clamped at the end still holds at least MIN_CLIP_MS of audio
    (unless the episode is shorter, then a clip from 0 is all of it). A start at or beyond the end, or within the
    last MIN_CLIP_MS, is a BadRequest stating the episode's duration."""
    if start_ms >= episode_ms:
        raise BadRequest(
            f"start_time_ms {start_ms} is at or beyond the end of the episode, whose duration is {episode_ms} ms"
        )
    latest = max(episode_ms - MIN_CLIP_MS, 0)
    if start_ms > latest:
        raise BadRequest(
            f"start_time_ms {start_ms} leaves less than {MIN_CLIP_MS} ms of the episode, whose duration "
            f"is {episode_ms} ms: the latest start is {latest}"
        )


def build_index(source: Mp3Source, deadline: float) -> SeekIndex:
    """One streaming pass over the source (see ``chalicelib.audio.mp3.timeline``)."""
    audio = source.audio
    try:
        index = mp3.scan(
            source.stream(source.layout.audio_start),
            source.layout,
            audio.source.etag,
            audio.source.size,
            time.monotonic,
            deadline,
        )
    except mp3.IndexTimeout as timeout:
        raise ClipTimeout(
            "Indexing the episode took too long; try again shortly",
            detail=f"seek index incomplete at byte {timeout.position} of {audio.source.size}",
        ) from None
    except mp3.NotMp3:
        raise Undecodable("The episode's source audio holds no MP3 frames") from None
    return index


def cut_mp3(
    source: Mp3Source,
    start_ms: int,
    want_ms: int,
    load_index: IndexLoader,
    deadline: float,
    ffmpeg: Optional[Callable[[], Optional[str]]] = None,
) -> ClipAudio:
    cbr = _cut_cbr(source, start_ms, want_ms)
    if cbr is not None:
        return cbr
    index, built = load_index()
    if index.frames < 2 or not index.duration_ticks:
        raise Undecodable(
            "The episode's source audio is too short to decode",
            detail=f"{index.frames} frames, {index.duration_ticks} ticks of audio",
        )
    first_tick, count_ticks = plan_samples(start_ms, want_ms, index.duration_ticks, TICKS_PER_SECOND)
    begin = first_tick + index.start_skip_ticks
    end = begin + count_ticks
    spans = []
    for run in index.runs:
        run_start, run_end = run[0].tick, run[-1].tick + run[-1].ticks
        if begin < run_end and end > run_start:
            first_sample = _run_sample(run, max(begin, run_start))
            count = _run_sample(run, min(end, run_end)) - first_sample
            if count > 0:
                spans.append((run, first_sample, count))
    if len(spans) == 1:  # within one run: the clip lasts what was asked, though FFmpeg may time a frame at a join
        run, first_sample, count = spans[0]  # at another rate
        count = min(count, round(count_ticks / run[0].ticks_per_sample))
        spans = [(run, first_sample, count)]
    pieces = [_cut_run(source, run, index.every, first_sample, count) for run, first_sample, count in spans]
    served = duration_ms(count_ticks, TICKS_PER_SECOND)
    if len(pieces) == 1:
        piece = pieces[0]
        return ClipAudio(piece.data, duration_ms(piece.samples, piece.sample_rate), "mp3-index", built)
    return ClipAudio(_reencode(pieces, index, count_ticks, deadline, ffmpeg), served, "mp3-reencode", built)


# ---------------------------------------------------------------- the CBR fast path


def _cut_cbr(source: Mp3Source, start_ms: int, want_ms: int) -> Optional[ClipAudio]:
    """A CBR file cut by arithmetic, only where that is provably right: its Info tag's byte count matches the
    object's size and its frame count times the exact frame size, within one frame, and the fetched frames are
    uniform. None otherwise (then the seek index takes over)."""
    layout, header = source.layout, source.layout.first
    tag = layout.tag
    if tag is None or tag.kind != "Info" or not tag.frames or tag.frames < 2 or not tag.bytes:
        return None
    exact = header.samples / 8 * header.bitrate / header.sample_rate
    tag_frame = layout.audio_start - layout.tag_offset
    if abs(source.audio.source.size - (layout.tag_offset + tag.bytes)) > header.length:
        return None  # trailing tags, a truncated upload or joined parts: the index knows
    if abs(tag.frames * exact - (tag.bytes - tag_frame)) > header.length:
        return None
    total = tag.frames * header.samples - layout.start_skip - layout.end_trim
    if total <= 0:
        return None
    tps = TICKS_PER_SECOND // header.sample_rate
    first_tick, count_ticks = plan_samples(start_ms, want_ms, total * tps, TICKS_PER_SECOND)
    first_sample = round(first_tick / tps) + layout.start_skip
    count = round((first_tick + count_ticks) / tps) + layout.start_skip - first_sample
    first_frame, last_frame = _frame_span(header, first_sample, count, tag.frames)
    slack = max(2, min(64, int(exact) // 3))
    expected = layout.audio_start + round(first_frame * exact)
    read_from = max(layout.audio_start, expected - slack)
    data = source.read(read_from, layout.audio_start + round(last_frame * exact) + slack)
    found = mp3.find_frame(data, max(0, expected - read_from - slack), expected - read_from + slack + 1)
    frames = _take(data, found, last_frame - first_frame) if found is not None else None
    if frames is None or any(h.bitrate_index != header.bitrate_index or h.format != header.format for _, h in frames):
        log.warning("CBR arithmetic failed for %s; using a seek index", source.audio.source.key)
        return None
    piece = mp3.cut(frames, first_frame, first_sample, count)
    return ClipAudio(piece.data, duration_ms(count, header.sample_rate), "mp3-cbr")


def _frame_span(header: mp3.FrameHeader, first_sample: int, count: int, frames_total: int) -> Tuple[int, int]:
    """Frame numbers [from, to) that a cut of these decoder samples needs."""
    spf = header.samples
    first_frame = max(first_sample // spf - mp3.frames_before_needed(header), 0)
    last_frame = min(-(-(first_sample + count) // spf), frames_total)
    return first_frame, last_frame


def _take(data: bytes, pos: int, count: int, cut_short: bool = False) -> Optional[List[Tuple[bytes, mp3.FrameHeader]]]:
    """``count`` whole frames from ``pos``; with ``cut_short`` (the data ends the file), a last frame that the
    file cuts short is completed with zeros, as a decoder reads it."""
    frames = []
    for offset, header in mp3.walk_frames(data, pos):
        frames.append((data[offset : offset + header.length], header))
        pos = offset + header.length
        if len(frames) == count:
            return frames
    last = mp3.parse_header(data, pos)
    same_format = not frames or (last is not None and last.format == frames[0][1].format)
    if cut_short and last is not None and len(frames) == count - 1 and same_format:
        frames.append((data[pos:] + bytes(last.length - (len(data) - pos)), last))
        return frames
    return None


# ---------------------------------------------------------------- through the seek index


def _model(segment: Segment) -> mp3.FrameHeader:
    """A header of the segment's format at its smallest bitrate, with a CRC: the worst case for the reservoir."""
    return mp3.FrameHeader(segment.version, 1, segment.sample_rate, 0, segment.channels, True, b"")


def _run_sample(run: Sequence[Segment], tick: int) -> int:
    """The run's decoder sample (counted from its first frame) that the player plays at ``tick``."""
    before = 0
    for segment in run:
        if tick < segment.tick + segment.ticks or segment is run[-1]:
            return before + round(segment.sample_at(tick))
        before += segment.frames * segment.samples_per_frame
    raise AssertionError("unreachable")


def _cut_run(source: Mp3Source, run: Sequence[Segment], every: int, first_sample: int, count: int) -> mp3.Cut:
    """A frame copy of ``count`` decoder samples from ``first_sample`` of one run of uniform segments. A mid-file
    tag between its segments is left out, and so is the frame FFmpeg loses after it."""
    total = sum(s.frames for s in run)
    first_frame, last_frame = _frame_span(_model(run[0]), first_sample, count, total)
    frames: List[Tuple[bytes, mp3.FrameHeader]] = []
    at = 0  # run frame number of the segment's first frame
    for segment in run:
        lo, hi = max(first_frame - at, 0), min(last_frame - at, segment.frames)
        if lo < hi:
            checkpoint = lo // every
            stop = -(-hi // every)
            start = segment.checkpoints[checkpoint]
            end = segment.checkpoints[stop] if stop < len(segment.checkpoints) else segment.end
            taken = _take(
                source.read(start, end), 0, hi - checkpoint * every, cut_short=end >= source.audio.source.size
            )
            if taken is None:
                raise Undecodable(
                    "The episode's source audio has damaged frames at this position",
                    detail=f"frames {start}..{end} changed since the seek index was built",
                )
            frames.extend(taken[lo - checkpoint * every :])
        at += segment.frames
    return mp3.cut(frames, first_frame, first_sample, count)


def _reencode(
    pieces: Sequence[mp3.Cut],
    index: SeekIndex,
    count_ticks: int,
    deadline: float,
    ffmpeg: Optional[Callable[[], Optional[str]]],
) -> bytes:
    """One uniform MP3 from pieces of different formats, in the format and bitrate of the episode's main part."""
    binary = ffmpeg() if ffmpeg is not None else None
    if binary is None:
        raise ServiceError(
            "This service cannot cut across a change of sample rate: FFmpeg is missing",
            detail="no FFmpeg binary found (FFMPEG_PATH, /opt/bin/ffmpeg)",
        )
    main = index.main_format()
    samples = round(count_ticks / main.ticks_per_sample)
    return join_to_mp3(
        binary, [p.data for p in pieces], main.sample_rate, main.channels, main.bitrate, samples, deadline
    )


def tagged_duration_ms(data: bytes) -> int:
    """What a gapless decoder plays of an MP3 that carries a Xing/Info tag with a frame count; 0 if none."""
    try:
        layout = mp3.read_layout(lambda start, end: data[start:end])
    except mp3.NotMp3:
        return 0
    if layout.tag is None or not layout.tag.frames:
        return 0
    samples = layout.tag.frames * layout.first.samples - layout.start_skip - layout.end_trim
    return duration_ms(max(samples, 0), layout.first.sample_rate)
