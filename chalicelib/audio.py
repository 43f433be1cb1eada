"""Cutting a clip out of a source object while reading little more than the clip's own bytes.

MP3 sources are cut by hand (``chalicelib.mp3``): the clip's frames are found by arithmetic for CBR files
(Info tag) and through a per-episode seek index for every other MP3, built once by one streaming pass and
kept beside the clips. Anything else (M4A/AAC, or what is not MP3) goes to FFmpeg over a pre-signed URL.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from chalicelib import mp3
from chalicelib.errors import BadRequest, ClipTimeout, Undecodable
from chalicelib.storage import EpisodeArtefact, SourceAudio

log = logging.getLogger(__name__)

HEAD_BYTES = 16 * 1024
INDEX_EVERY = 32  # frames between two checkpoints of a seek index
INDEX_FORMAT = 1


@dataclass
class ClipAudio:
    data: bytes
    duration_ms: int  # what is served: shorter than asked when clamped at the episode's end
    method: str  # "mp3-cbr", "mp3-index", "ffmpeg"
    index_built: bool = False


@dataclass(frozen=True)
class SeekIndex:
    """Where frames lie in one version of an MP3 source: the offset of every ``every``-th frame."""

    source_etag: str
    audio_start: int
    audio_end: int
    frames: int
    samples_per_frame: int
    sample_rate: int
    start_skip: int
    duration_samples: int
    every: int
    offsets: Tuple[int, ...]

    def to_json(self) -> dict:
        return {"format": INDEX_FORMAT, **{k: getattr(self, k) for k in self.__dataclass_fields__}}

    @classmethod
    def from_json(cls, doc: Optional[dict]) -> Optional["SeekIndex"]:
        if not doc or doc.get("format") != INDEX_FORMAT:
            return None
        try:
            return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k != "offsets"}, offsets=tuple(doc["offsets"]))
        except (KeyError, TypeError):
            return None


class Mp3Source:
    """One MP3 source object, read by ranges."""

    def __init__(self, audio: SourceAudio, layout: mp3.StreamLayout):
        self.audio = audio
        self.layout = layout

    @classmethod
    def sniff(cls, audio: SourceAudio) -> Optional["Mp3Source"]:
        """The source as MP3, or None if it is not MP3 (then FFmpeg gets it)."""
        head = audio.head
        if not head:
            raise Undecodable("The episode's source audio is empty")
        if head[4:8] == b"ftyp":
            return None
        skip = mp3.id3v2_size(head)
        if skip:
            head = head[skip:] if skip + HEAD_BYTES // 2 <= len(head) else audio.read(skip, skip + HEAD_BYTES)
        try:
            return cls(audio, mp3.parse_layout(head, skip))
        except mp3.NotMp3:
            return None


def duration_ms(samples: int, sample_rate: int) -> int:
    return round(samples * 1000 / sample_rate)


def plan_samples(start_ms: int, want_ms: int, total_samples: int, sample_rate: int) -> Tuple[int, int]:
    """(first sample, sample count) of the clip, clamped at the end; BadRequest past it."""
    first = round(start_ms * sample_rate / 1000)
    if first >= total_samples:
        raise BadRequest(
            f"start_time_ms {start_ms} is at or beyond the end of the episode, "
            f"whose duration is {duration_ms(total_samples, sample_rate)} ms"
        )
    return first, min(round(want_ms * sample_rate / 1000), total_samples - first)


class _Recent:
    """The last few seek indexes this process used: a warm Lambda skips fetching them again."""

    def __init__(self, size: int):
        self._items: "OrderedDict[tuple, SeekIndex]" = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # chalice local serves requests on threads

    def get(self, key: tuple) -> Optional[SeekIndex]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: tuple, index: SeekIndex) -> None:
        with self._lock:
            self._items[key] = index
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_recent_indexes = _Recent(16)


@dataclass
class Located:
    """The whole source frames a cut needs, and which decoder samples of them to keep."""

    first_index: int  # frame number of frames[0] in the file
    frames: List[Tuple[bytes, mp3.FrameHeader]]
    first_sample: int  # decoder sample where the clip starts
    count: int
    method: str


def cut_mp3(source: Mp3Source, start_ms: int, want_ms: int, index_store: EpisodeArtefact,
            deadline: float) -> ClipAudio:
    located = _locate_cbr(source, start_ms, want_ms) if source.layout.constant_bitrate else None
    built = False
    if located is None:
        object_id = (source.audio.source.bucket, source.audio.source.key, source.audio.source.etag)
        index = _recent_indexes.get(object_id)
        if index is None:
            index = SeekIndex.from_json(index_store.load())
            if index is None or index.source_etag != source.audio.source.etag:
                index, built = build_index(source, deadline), True
                index_store.save(index.to_json())
            _recent_indexes.put(object_id, index)
        located = _locate_indexed(source, index, start_ms, want_ms)
    clip = mp3.cut(located.frames, located.first_index, located.first_sample, located.count)
    return ClipAudio(clip.data, duration_ms(located.count, clip.sample_rate), located.method, built)


def _frame_span(header: mp3.FrameHeader, first_sample: int, count: int, frames_total: int) -> Tuple[int, int]:
    """Frame numbers [from, to) that a cut of these decoder samples needs."""
    spf = header.samples
    first_frame = max(first_sample // spf - mp3.frames_before_needed(header), 0)
    last_frame = min(-(-(first_sample + count) // spf), frames_total)
    return first_frame, last_frame


def _locate_cbr(source: Mp3Source, start_ms: int, want_ms: int) -> Optional[Located]:
    """Frames of a CBR file by arithmetic: frame i starts within a byte of ``audio_start + i * exact``.
    None when the file is not the regular CBR its Info tag claims (then the seek index takes over)."""
    layout, header, tag = source.layout, source.layout.first, source.layout.tag
    frames_total = (tag.frames or 0) if tag else 0
    if not frames_total:
        return None
    total = frames_total * header.samples - layout.gapless_trim
    begin, count = plan_samples(start_ms, want_ms, total, header.sample_rate)
    first_sample = begin + layout.start_skip
    first_frame, last_frame = _frame_span(header, first_sample, count, frames_total)
    exact = header.samples / 8 * header.bitrate / header.sample_rate
    slack = max(2, min(64, int(exact) // 3))
    expected = layout.audio_start + round(first_frame * exact)
    read_from = max(layout.audio_start, expected - slack)
    data = source.audio.read(read_from, layout.audio_start + round(last_frame * exact) + slack)
    found = mp3.find_frame(data, max(0, expected - read_from - slack), expected - read_from + slack + 1)
    frames = _take(data, found, last_frame - first_frame) if found is not None else None
    if frames is not None and any(h.bitrate_index != header.bitrate_index for _, h in frames):
        frames = None  # not constant after all: arithmetic could land on the wrong frame
    if frames is None:
        if tag and tag.bytes and source.audio.source.size < tag.bytes:  # cut short: the tag says how long
            _refuse_past_end(source, round((source.audio.source.size - layout.audio_start) / exact) * header.samples,
                             begin + count + layout.start_skip)
        log.warning("CBR arithmetic failed for %s; using a seek index", source.audio.source.key)
        return None
    return Located(first_frame, frames, first_sample, count, "mp3-cbr")


def _refuse_past_end(source: Mp3Source, available: int, needed: int) -> None:
    """In a file cut short (its tag announces more than it holds), nothing past where it ends can be served."""
    layout = source.layout
    if needed > available:
        announced = ((layout.tag.frames or 0) if layout.tag else 0) * layout.first.samples - layout.gapless_trim
        holds = max(available - layout.start_skip, 0)
        raise Undecodable(
            f"The episode's source audio is truncated: it holds {duration_ms(holds, layout.first.sample_rate)} ms "
            f"of the {duration_ms(announced, layout.first.sample_rate)} ms its header announces"
        )


def _take(data: bytes, pos: int, count: int) -> Optional[List[Tuple[bytes, mp3.FrameHeader]]]:
    frames = []
    for offset, header in mp3.walk_frames(data, pos):
        frames.append((data[offset:offset + header.length], header))
        if len(frames) == count:
            return frames
    return None


def _locate_indexed(source: Mp3Source, index: SeekIndex, start_ms: int, want_ms: int) -> Located:
    tag = source.layout.tag
    if tag is not None and tag.frames and tag.frames > index.frames:  # cut short: fewer frames than announced
        first_needed = round((start_ms + 1) * index.sample_rate / 1000) + index.start_skip  # the clip's first ms
        _refuse_past_end(source, index.frames * index.samples_per_frame, first_needed)
    begin, count = plan_samples(start_ms, want_ms, index.duration_samples, index.sample_rate)
    first_sample = begin + index.start_skip
    first_frame, last_frame = _frame_span(source.layout.first, first_sample, count, index.frames)
    checkpoint = first_frame // index.every
    end_checkpoint = -(-last_frame // index.every)
    start = index.offsets[checkpoint]
    end = index.offsets[end_checkpoint] if end_checkpoint < len(index.offsets) else index.audio_end
    frames = _take(source.audio.read(start, end), 0, last_frame - checkpoint * index.every)
    if frames is None:
        raise Undecodable("The episode's source audio has damaged frames at this position")
    return Located(first_frame, frames[first_frame - checkpoint * index.every:], first_sample, count, "mp3-index")


def build_index(source: Mp3Source, deadline: float) -> SeekIndex:
    """One streaming pass over the source, keeping the offset of every INDEX_EVERY-th frame."""
    layout = source.layout
    first = layout.first
    lengths: Dict[bytes, int] = {}  # frame length by the 4 header bytes; 0 for what is not a frame of this stream
    offsets: List[int] = []
    frames = 0
    buffer = b""
    base = layout.audio_start  # file offset of buffer[0]
    pos = 0
    for chunk in source.audio.stream(layout.audio_start):
        if time.monotonic() > deadline:
            raise ClipTimeout("Indexing the episode took too long; try again shortly",
                              detail=f"seek index incomplete at byte {base + pos} of {source.audio.source.size}")
        buffer = buffer[pos:] + chunk
        base += pos
        pos = 0
        limit = len(buffer)
        while pos + 4 <= limit:
            raw = buffer[pos:pos + 4]
            length = lengths.get(raw)
            if length is None:
                header = mp3.parse_header(raw)
                length = lengths[raw] = header.length if header and header.same_stream(first) else 0
            if not length:
                found = mp3.find_frame(buffer, pos + 1)
                if found is None:
                    pos = max(pos, limit - 8192)  # keep a tail: a frame chain may straddle chunks
                    break
                pos = found
                continue
            if pos + length > limit:
                break
            if frames % INDEX_EVERY == 0:
                offsets.append(base + pos)
            frames += 1
            pos += length
    if not frames:
        raise Undecodable("The episode's source audio holds no MP3 frames")
    spf = first.samples
    return SeekIndex(
        source_etag=source.audio.source.etag,
        audio_start=layout.audio_start,
        audio_end=base + pos,
        frames=frames,
        samples_per_frame=spf,
        sample_rate=first.sample_rate,
        start_skip=layout.start_skip,
        duration_samples=frames * spf - layout.gapless_trim,
        every=INDEX_EVERY,
        offsets=tuple(offsets),
    )


def tagged_duration_ms(data: bytes) -> int:
    """What a gapless decoder plays of an MP3 that carries a Xing/Info tag with a frame count; 0 if none."""
    skip = mp3.id3v2_size(data)
    try:
        layout = mp3.parse_layout(data[skip:skip + HEAD_BYTES], skip)
    except mp3.NotMp3:
        return 0
    if layout.tag is None or not layout.tag.frames:
        return 0
    samples = layout.tag.frames * layout.first.samples - layout.gapless_trim
    return duration_ms(max(samples, 0), layout.first.sample_rate)
