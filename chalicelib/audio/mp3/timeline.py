"""The seek index: the player's timeline of a whole file, as segments of uniform frames.

The timeline is FFmpeg's decode of the whole file (browsers and transcription stacks decode MP3 with FFmpeg):
every frame it decodes counts at its own duration, whatever its sample rate; the first frame's LAME delay is
skipped at the start and the last frame's padding trimmed at the end only when FFmpeg honours that tag. Time is
counted in ticks of 1/TICKS_PER_SECOND s, a unit every MPEG sample rate divides.

One streaming pass records segments: runs of consecutive frames of one format (MPEG version, sample rate,
channels) with nothing between them, each with its byte offset, its start time and a checkpoint every
``every`` frames. A change of format, an ID3v2 tag or junk starts a new segment. Quirks of FFmpeg's decode,
each measured on FFmpeg 9.0.2 (see FACTS.md):

- FFmpeg's MPEG audio parser cuts the bytes into packets: it looks for the next valid header (of any layer),
  takes that frame's length, and puts everything since the last packet (tags, junk) in front of it. The decoder
  rejects a packet that does not start with a header ("Header missing"), so the frame that follows a mid-file
  ID3v2 tag or other non-zero junk is *lost*, whether the next part's Info frame or audio; ``_Packets`` replays the
  parser over every gap: a tag whose bytes look like a header (UTF-16 text starts with FF FE, a Layer I sync)
  makes it take a "frame" that runs past the tag's end and swallows the real frames it overlaps, which are lost too;
- zero bytes before a frame are skipped by the decoder: nothing is lost;
- a Xing/Info frame in the middle of the file without a tag before it decodes as one frame of silence;
- the first frame decoded after a change of sample rate is timed at the old rate (its samples play as if at the
  rate before): 26.12 ms more after an MPEG-2 22.05 kHz pre-roll, 2.12 ms less after a 48 kHz ad.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from chalicelib.audio.mp3.frames import (
    TICKS_PER_SECOND,
    NotMp3,
    StreamLayout,
    find_frame,
    id3v2_size,
    parse_header,
    walk_frames,
)

INDEX_FORMAT = 3  # 1: one uniform stream, a checkpoint every 32 frames; 2: segments; 3: FFmpeg's parser replayed over
# the gaps between frames (issue 20): an index of format 2 may time a file with a UTF-16 mid-file tag a frame off
INDEX_EVERY = 32  # frames between two checkpoints of a segment


class IndexTimeout(Exception):
    """The pass did not finish before its deadline."""

    def __init__(self, position: int):
        super().__init__(f"seek index incomplete at byte {position}")
        self.position = position


@dataclass(frozen=True)
class Segment:
    offset: int  # the first frame's byte offset
    end: int  # the byte after the last frame
    frames: int
    tick: int  # start on the decoder's timeline, in ticks, before the start skip
    version: int
    sample_rate: int
    channels: int
    checkpoints: Tuple[int, ...]  # byte offsets of frames 0, every, 2 * every, ...
    lead_rate: int = 0  # the rate the first frame is timed at, when FFmpeg times it at the previous segment's

    @property
    def format(self) -> Tuple[int, int, int]:
        return self.version, self.sample_rate, self.channels

    @property
    def samples_per_frame(self) -> int:
        return 1152 if self.version == 1 else 576

    @property
    def ticks_per_sample(self) -> int:
        return TICKS_PER_SECOND // self.sample_rate

    @property
    def first_frame_ticks(self) -> int:
        return self.samples_per_frame * TICKS_PER_SECOND // (self.lead_rate or self.sample_rate)

    @property
    def ticks(self) -> int:
        return self.first_frame_ticks + (self.frames - 1) * self.samples_per_frame * self.ticks_per_sample

    def sample_at(self, tick: int) -> float:
        """The segment's decoder sample (from its first frame) that the player plays at ``tick``."""
        local = tick - self.tick
        first = self.first_frame_ticks
        if local < first:
            return local * self.samples_per_frame / first
        return self.samples_per_frame + (local - first) / self.ticks_per_sample

    @property
    def bitrate(self) -> int:
        seconds = self.ticks / TICKS_PER_SECOND
        return round((self.end - self.offset) * 8 / seconds) if seconds else 0

    def to_json(self) -> list:
        return [
            self.offset,
            self.end,
            self.frames,
            self.tick,
            self.version,
            self.sample_rate,
            self.channels,
            list(self.checkpoints),
            self.lead_rate,
        ]

    @classmethod
    def from_json(cls, row: list) -> "Segment":
        offset, end, frames, tick, version, rate, channels, checkpoints, lead_rate = row
        return cls(offset, end, frames, tick, version, rate, channels, tuple(checkpoints), lead_rate)


@dataclass(frozen=True)
class SeekIndex:
    """Where frames lie in one version (ETag) of an MP3 source, and the player's time of each."""

    source_etag: str
    start_skip_ticks: int  # dropped at the start (the honoured LAME tag's delay + the decoder delay)
    end_trim_ticks: int  # dropped at the end (the honoured LAME tag's padding less the decoder delay)
    lost_frames: int  # frames FFmpeg rejects (the frame right after a mid-file tag or junk)
    every: int
    segments: Tuple[Segment, ...] = field(default_factory=tuple)
    # What reading the file's head gives (its size and layout), so that a miss with this index reads only the clip.
    # None in an index written before they were kept: then the head is read, as before.
    source_size: Optional[int] = None
    layout: Optional[StreamLayout] = None

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.segments)

    @property
    def stream_ticks(self) -> int:
        return sum(s.ticks for s in self.segments)

    @property
    def duration_ticks(self) -> int:
        """The episode's duration on the player's timeline."""
        return max(self.stream_ticks - self.start_skip_ticks - self.end_trim_ticks, 0)

    @property
    def runs(self) -> List[List[Segment]]:
        """Consecutive segments of one format: within a run, a clip is a copy of frames."""
        runs: List[List[Segment]] = []
        for segment in self.segments:
            if runs and runs[-1][-1].format == segment.format:
                runs[-1].append(segment)
            else:
                runs.append([segment])
        return runs

    def main_format(self) -> Segment:
        """A segment of the format that holds the most time (the show, not its ads): what a re-encoded clip
        that spans a change of format is encoded as."""
        totals: Dict[Tuple[int, int, int], int] = {}
        for segment in self.segments:
            totals[segment.format] = totals.get(segment.format, 0) + segment.ticks
        best = max(totals, key=lambda f: totals[f])
        return max((s for s in self.segments if s.format == best), key=lambda s: s.ticks)

    def to_json(self) -> dict:
        return {
            "format": INDEX_FORMAT,
            "source_etag": self.source_etag,
            "start_skip_ticks": self.start_skip_ticks,
            "end_trim_ticks": self.end_trim_ticks,
            "lost_frames": self.lost_frames,
            "every": self.every,
            "segments": [s.to_json() for s in self.segments],
            **({"source_size": self.source_size} if self.source_size is not None else {}),
            **({"layout": self.layout.to_json()} if self.layout is not None else {}),
        }

    @classmethod
    def from_json(cls, doc: Optional[dict]) -> Optional["SeekIndex"]:
        if not doc or doc.get("format") != INDEX_FORMAT:
            return None
        try:
            return cls(
                doc["source_etag"],
                doc["start_skip_ticks"],
                doc["end_trim_ticks"],
                doc["lost_frames"],
                doc["every"],
                tuple(Segment.from_json(row) for row in doc["segments"]),
                doc["source_size"] if isinstance(doc.get("source_size"), int) else None,
                StreamLayout.from_json(doc.get("layout")),
            )
        except (KeyError, TypeError, ValueError):
            return None


_BITRATES = {  # kbit/s by (MPEG-1 or not, layer)
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {0b11: (44100, 48000, 32000), 0b10: (22050, 24000, 16000), 0b00: (11025, 12000, 8000)}


def any_layer_frame_length(raw: bytes) -> int:
    """Bytes in the frame whose header is ``raw``, for any MPEG audio layer, as FFmpeg's parser reads headers; 0
    when ``raw`` is not a valid header (free format included)."""
    b1, b2 = raw[1], raw[2]
    if raw[0] != 0xFF or b1 & 0xE0 != 0xE0:
        return 0
    version, layer_bits, bitrate_index, rate_index = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if version == 0b01 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return 0
    layer, mpeg1, padding = 4 - layer_bits, version == 0b11, (b2 >> 1) & 1
    rate = _RATES[version][rate_index]
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    if layer == 1:
        return (bitrate * 12 // rate + padding) * 4
    if layer == 2 or mpeg1:
        return bitrate * 144 // rate + padding
    return bitrate * 72 // rate + padding


class _Packets:
    """FFmpeg's MPEG audio parser replayed over a gap between frames (a tag, junk, padding), from the end of the last
    frame (a packet boundary) on: where its packets begin and end, and whether the bytes of the current packet in
    front of its header are all zeros (the decoder skips zeros; anything else makes it reject the packet)."""

    def __init__(self, boundary: int):
        self.at = boundary  # the next byte the parser examines
        self.frame_end = -1  # inside a frame (of a header it found) until this offset
        self.dirty = False  # non-zero bytes in the current packet before its header
        self.strays = 0  # packets of headers found in the gap that start with their header (decoded: not modelled)
        self._tail = b""  # the last bytes fed, for a header that straddles two feeds

    def feed(self, data: bytes, offset: int) -> None:
        """The next bytes, at file ``offset`` (each feed follows the last)."""
        end = offset + len(data)
        if end <= self.at:
            return
        window = self._tail + data[max(self.at - offset, 0) :]
        base = max(self.at, offset) - len(self._tail)  # file offset of window[0]
        pos = 0
        while True:
            if self.frame_end > base + pos:  # inside the frame of a header the parser found
                pos = self.frame_end - base
                if pos >= len(window):
                    self._tail, self.at = b"", end
                    return
                continue
            found = window.find(b"\xff", pos)
            while found != -1 and found + 4 <= len(window) and not any_layer_frame_length(window[found : found + 4]):
                found = window.find(b"\xff", found + 1)
            if found == -1 or found + 4 > len(window):  # no header here; its last bytes may begin one
                keep = max(pos, len(window) - 3)
                self.dirty = self.dirty or bool(window[pos:keep].strip(b"\0"))
                self._tail, self.at = window[keep:], end
                return
            self.dirty = self.dirty or bool(window[pos:found].strip(b"\0"))
            if not self.dirty:
                self.strays += 1
            self.frame_end = base + found + any_layer_frame_length(window[found : found + 4])
            self.dirty = False  # the next packet begins where this frame ends

    def lost_before(self, frames: Sequence[Tuple[int, bytes]]) -> Optional[int]:
        """How many of ``frames`` (offset, bytes: the real frames right after the gap) the decoder loses before the
        parser is back in step with them; None if these frames are too few to tell."""
        probe = copy.deepcopy(self)
        for lost, (offset, frame) in enumerate(frames):
            if probe.frame_end <= offset:  # the parser is looking for a header: it finds this frame's
                return lost + (1 if probe.dirty or probe._tail.strip(b"\0") else 0)
            probe.feed(frame, offset)  # swallowed by the "frame" of a header found in the gap
        return None


def _with_last(chunks: Iterable[bytes]) -> Iterator[Tuple[bytes, bool]]:
    previous = None
    for chunk in chunks:
        if previous is not None:
            yield previous, False
        previous = chunk
    if previous is not None:
        yield previous, True


def scan(
    chunks: Iterable[bytes], layout: StreamLayout, etag: str, size: int, clock: Callable[[], float], deadline: float
) -> SeekIndex:
    """One streaming pass over ``chunks``, the file's bytes from ``layout.audio_start`` on."""
    known: Dict[bytes, Tuple[int, int]] = {}  # by the 4 header bytes: frame length, format id (0, -1: no frame)
    formats: List[Tuple[int, int, int]] = []
    segments: List[Segment] = []
    tick = 0
    buffer = b""
    base = layout.audio_start  # file offset of buffer[0]
    pos = 0
    current = -1  # format id of the open segment, -1 when none is open
    seg_offset = seg_frames = 0
    checkpoints: List[int] = []
    last_end = base  # the byte after the last frame
    gap_dirty = False  # non-zero bytes (a tag, junk) since the last frame
    gap: Optional[_Packets] = None  # FFmpeg's parser over the bytes since the last frame, when there are any
    lost = 0
    skip = 0  # bytes of a tag still to skip in the next chunk
    every = INDEX_EVERY

    def close() -> None:
        nonlocal tick, current
        if current >= 0:
            version, rate, channels = formats[current]
            before = segments[-1].sample_rate if segments else rate
            segment = Segment(
                seg_offset,
                last_end,
                seg_frames,
                tick,
                version,
                rate,
                channels,
                tuple(checkpoints),
                before if before != rate else 0,
            )
            segments.append(segment)
            tick += segment.ticks
        current = -1

    for chunk, last in _with_last(chunks):
        if clock() > deadline:
            raise IndexTimeout(base + pos)
        buffer = buffer[pos:] + chunk
        base += pos
        pos = 0
        if skip:
            pos = min(skip, len(buffer))
            skip -= pos
            if gap is not None:
                gap.feed(buffer[:pos], base)
        limit = len(buffer)
        margin = 0 if last else 8192  # room to confirm a chain of frames before the buffer ends
        while pos + 4 <= limit:
            raw = buffer[pos : pos + 4]
            entry = known.get(raw)
            if entry is None:
                header = parse_header(raw)
                if header is None:
                    entry = (0, -1)
                else:
                    if header.format not in formats:
                        formats.append(header.format)
                    entry = (header.length, formats.index(header.format))
                known[raw] = entry
            length, fmt = entry
            if length and fmt == current and last_end == base + pos:  # the next frame of the open segment
                if pos + length > limit:
                    break
                if seg_frames % every == 0:
                    checkpoints.append(base + pos)
                seg_frames += 1
                pos += length
                last_end = base + pos
                continue
            if length and pos + length > limit:
                break
            if length and not gap_dirty:
                if pos + margin > limit:
                    break
                if not _confirmed(buffer, pos):
                    length = 0  # a lone header-like pattern in junk: not a frame
            if length:  # a frame after a change of format, a tag or junk: a new segment
                close()
                if gap is not None:  # how many frames FFmpeg rejects together with the bytes before them
                    ahead = [(base + at, buffer[at : at + h.length]) for at, h in islice(walk_frames(buffer, pos), 8)]
                    lose = gap.lost_before(ahead)
                    if lose is None and not last:
                        break
                    gap, gap_dirty = None, False
                    for _, frame in ahead if lose is None else ahead[:lose]:
                        lost += 1
                        pos += len(frame)
                        last_end = base + pos
                    if lose:
                        continue
                current, seg_offset, seg_frames, checkpoints = fmt, base + pos, 0, []
                last_end = base + pos
                continue
            # not a frame: an ID3v2 tag, a trailer, padding or junk
            if gap is None:
                gap = _Packets(last_end)
            if buffer[pos : pos + 3] == b"ID3":
                if pos + 10 > limit:
                    break
                tag_size = id3v2_size(buffer[pos : pos + 10])
                if tag_size:
                    gap_dirty = True
                    gap.feed(buffer[pos : pos + tag_size], base + pos)
                    if pos + tag_size > limit:
                        skip = pos + tag_size - limit
                        pos = limit
                        break
                    pos += tag_size
                    continue
            found = find_frame(buffer, pos + 1)
            if found is None:
                keep = max(pos + 1, limit - margin)
                gap_dirty = gap_dirty or bool(buffer[pos:keep].strip(b"\0"))
                gap.feed(buffer[pos:keep], base + pos)
                pos = keep
                break
            gap_dirty = gap_dirty or bool(buffer[pos:found].strip(b"\0"))
            gap.feed(buffer[pos:found], base + pos)
            pos = found
    tail = buffer[pos : pos + 4]
    if current >= 0 and last_end == base + pos and len(tail) == 4 and known.get(tail, (0, -1))[1] == current:
        seg_frames += 1  # an upload cut short inside its last frame: FFmpeg still decodes that frame
        last_end = base + len(buffer)
    close()
    if not segments:
        raise NotMp3("no MPEG audio frames found")
    tps = segments[0].ticks_per_sample
    packets = sum(s.frames for s in segments) + lost
    tag = layout.tag
    end_trim = 0
    if tag is not None and tag.frames and packets >= tag.frames and not layout.concatenated(size):
        end_trim = layout.end_trim * tps
    return SeekIndex(etag, layout.start_skip * tps, end_trim, lost, every, tuple(segments), size, layout)


def _confirmed(buffer: bytes, pos: int) -> bool:
    """A new segment is believed only if two more frames of its format follow (or the data ends)."""
    return find_frame(buffer, pos, pos + 1) == pos
