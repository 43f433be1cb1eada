"""Frames and tags: MPEG audio Layer III frame headers, ID3v2 tags, Xing/Info/LAME tag frames, and where the
audio of a file begins as FFmpeg (the player's decoder) sees it. Pure functions on bytes; no I/O.

Positions are counted in *decoder samples*: sample ``i`` of what a decoder outputs when it decodes the frames
from the first audio frame on, before any gapless trimming. A player that honours the LAME tag drops
``start_skip`` of them at the start.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

DECODER_DELAY = 529  # samples an MP3 decoder's filter banks lag behind the encoder's input (LAME: 528 + 1)
MAX_GAPLESS_FIELD = 4095  # the LAME tag stores encoder delay and padding in 12 bits each

_BITRATES_KBPS = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {1: (44100, 48000, 32000), 2: (22050, 24000, 16000), 25: (11025, 12000, 8000)}
_VERSIONS = {0b11: 1, 0b10: 2, 0b00: 25}


class NotMp3(ValueError):
    """The bytes are not MPEG audio Layer III that this module can cut."""


@dataclass(frozen=True)
class FrameHeader:
    version: int  # 1, 2 or 25 (MPEG-2.5)
    bitrate_index: int
    sample_rate: int
    padding: int
    channels: int
    protected: bool  # a CRC-16 follows the header
    raw: bytes

    @property
    def samples(self) -> int:
        return 1152 if self.version == 1 else 576

    @property
    def bitrate(self) -> int:
        return _BITRATES_KBPS[1 if self.version == 1 else 2][self.bitrate_index] * 1000

    @functools.cached_property
    def length(self) -> int:
        return frame_length(self, self.bitrate_index) + self.padding

    @property
    def format(self) -> Tuple[int, int, int]:
        """What must stay the same for frames to be copied into one stream: MPEG version, sample rate, channels."""
        return self.version, self.sample_rate, self.channels

    @property
    def side_info_offset(self) -> int:
        return 4 + (0 if not self.protected else 2)

    @property
    def side_info_size(self) -> int:
        if self.version == 1:
            return 17 if self.channels == 1 else 32
        return 9 if self.channels == 1 else 17

    @property
    def main_data_offset(self) -> int:
        return self.side_info_offset + self.side_info_size

    def same_stream(self, other: "FrameHeader") -> bool:
        return (self.version, self.sample_rate, self.channels) == (other.version, other.sample_rate, other.channels)


def parse_header(data: bytes, pos: int = 0) -> Optional[FrameHeader]:
    """The Layer III frame header at ``pos``, or None if there is none (free format is not supported)."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    return _header(bytes(data[pos : pos + 4]))


@functools.lru_cache(maxsize=4096)
def _header(raw: bytes) -> Optional[FrameHeader]:
    """One header per distinct 4 bytes: a stream repeats a handful of them, and a cut walks every frame."""
    b1, b2, b3 = raw[1], raw[2], raw[3]
    version = _VERSIONS.get((b1 >> 3) & 0b11)
    layer = (b1 >> 1) & 0b11
    bitrate_index = b2 >> 4
    rate_index = (b2 >> 2) & 0b11
    if version is None or layer != 0b01 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    return FrameHeader(
        version=version,
        bitrate_index=bitrate_index,
        sample_rate=_SAMPLE_RATES[version][rate_index],
        padding=(b2 >> 1) & 1,
        channels=1 if (b3 >> 6) == 0b11 else 2,
        protected=not (b1 & 1),
        raw=raw,
    )


def find_frame(data: bytes, start: int = 0, end: Optional[int] = None, confirm: int = 3) -> Optional[int]:
    """The first offset in ``data[start:end]`` where ``confirm`` consecutive consistent frames begin."""
    end = len(data) if end is None else min(end, len(data))
    pos = data.find(b"\xff", start, end)
    while pos != -1:
        if _chain_holds(data, pos, confirm):
            return pos
        pos = data.find(b"\xff", pos + 1, end)
    return None


def _chain_holds(data: bytes, pos: int, count: int) -> bool:
    first = parse_header(data, pos)
    if first is None:
        return False
    header = first
    for _ in range(count - 1):
        pos += header.length
        if pos == len(data):
            return True  # the data ends exactly after a whole frame
        following = parse_header(data, pos)
        if following is None or not following.same_stream(first):
            return False
        header = following
    return True


def walk_frames(data: bytes, pos: int) -> Iterator[Tuple[int, FrameHeader]]:
    """Yield (offset, header) of consecutive whole frames from ``pos`` until the data or the frames end."""
    first = None
    while True:
        header = parse_header(data, pos)
        if header is None or (first is not None and not header.same_stream(first)):
            return
        if pos + header.length > len(data):
            return
        first = first or header
        yield pos, header
        pos += header.length


# ---------------------------------------------------------------- the head of a file: ID3v2, Xing/Info, LAME


def id3v2_size(data: bytes) -> int:
    """Bytes taken by a leading ID3v2 tag (0 without one); needs only the first 10 bytes."""
    if len(data) < 10 or data[:3] != b"ID3":
        return 0
    size = 0
    for b in data[6:10]:
        size = (size << 7) | (b & 0x7F)
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


@dataclass(frozen=True)
class XingTag:
    kind: str  # "Xing" (VBR), "Info" (CBR) or "VBRI"
    frames: Optional[int]
    encoder: str = ""
    encoder_delay: Optional[int] = None  # from a LAME tag (LAME, Lavf, Lavc), which gapless decoders honour
    encoder_padding: Optional[int] = None
    bytes: Optional[int] = None  # the whole stream's length, this tag's frame included


def parse_xing(data: bytes, pos: int, header: FrameHeader) -> Optional[XingTag]:
    """The Xing/Info (and LAME) or VBRI tag inside the frame at ``pos``, if that frame is a tag frame."""
    frame = bytes(data[pos : pos + header.length])
    at = 4 + header.side_info_size  # LAME writes the tag here with or without a CRC (`lame -p`); FFmpeg reads it here
    tag = frame[at : at + 4]
    if tag in (b"Xing", b"Info"):
        flags = struct.unpack(">I", frame[at + 4 : at + 8])[0]
        cursor = at + 8
        frames = size = None
        if flags & 1:
            frames = struct.unpack(">I", frame[cursor : cursor + 4])[0]
            cursor += 4
        if flags & 2:
            size = struct.unpack(">I", frame[cursor : cursor + 4])[0]
            cursor += 4
        cursor += 100 if flags & 4 else 0
        cursor += 4 if flags & 8 else 0
        encoder = frame[cursor : cursor + 9]
        if encoder[:4] in (b"LAME", b"Lavf", b"Lavc") and len(frame) >= cursor + 24:
            delays = int.from_bytes(frame[cursor + 21 : cursor + 24], "big")
            return XingTag(
                tag.decode(), frames, encoder.decode("latin-1").rstrip("\0 "), delays >> 12, delays & 0xFFF, size
            )
        return XingTag(tag.decode(), frames, bytes=size)
    if frame[36:40] == b"VBRI":
        return XingTag("VBRI", struct.unpack(">I", frame[50:54])[0])
    return None


@dataclass(frozen=True)
class StreamLayout:
    """Where the audio frames of a file begin and how a player counts time in them."""

    audio_start: int  # offset of the first audio frame (after ID3v2 tags, junk and any tag frame)
    first: FrameHeader
    tag: Optional[XingTag]  # the Xing/Info tag FFmpeg honours: only one right after the leading ID3v2 tags
    tag_offset: int = -1  # where that tag's frame begins

    @property
    def start_skip(self) -> int:
        """Decoder samples a gapless player drops before the episode's time 0."""
        if self.tag is not None and self.tag.encoder_delay is not None:
            return self.tag.encoder_delay + DECODER_DELAY
        return 0

    @property
    def end_trim(self) -> int:
        """Decoder samples FFmpeg drops after the tag's last frame: the padding less the decoder delay."""
        if self.tag is None or self.tag.encoder_delay is None:
            return 0
        return max((self.tag.encoder_padding or 0) - DECODER_DELAY, 0)

    def to_json(self) -> dict:
        """What a reader of the file's head learns, kept in the seek index so that a miss need not read it again."""
        tag = self.tag
        return {
            "audio_start": self.audio_start,
            "first": self.first.raw.hex(),
            "tag_offset": self.tag_offset,
            "tag": None
            if tag is None
            else [tag.kind, tag.frames, tag.encoder, tag.encoder_delay, tag.encoder_padding, tag.bytes],
        }

    @classmethod
    def from_json(cls, doc: object) -> Optional["StreamLayout"]:
        """The layout ``to_json`` wrote; None for anything else (then the head is read again)."""
        try:
            assert isinstance(doc, dict)
            first = parse_header(bytes.fromhex(doc["first"]))
            tag = doc["tag"]
            if first is None or not isinstance(doc["audio_start"], int) or not isinstance(doc["tag_offset"], int):
                return None
            return cls(
                audio_start=doc["audio_start"],
                first=first,
                tag=None if tag is None else XingTag(*tag),
                tag_offset=doc["tag_offset"],
            )
        except (AssertionError, KeyError, TypeError, ValueError):
            return None

    def concatenated(self, file_size: int) -> bool:
        """FFmpeg's test for "invalid concatenated file detected": the file holds much more than the tag's byte
        count; then it ignores the tag's frame count and trims nothing at the end."""
        if self.tag is None or not self.tag.bytes:
            return False
        held = file_size - self.tag_offset
        return held > self.tag.bytes and held - self.tag.bytes > min(held, self.tag.bytes) >> 4


def parse_layout(head: bytes, head_offset: int) -> StreamLayout:
    """Read the layout from ``head``, the bytes that follow any ID3v2 tag, found at ``head_offset`` in the file."""
    return read_layout(lambda start, end: head[start - head_offset : end - head_offset], head_offset)


RESYNC_WINDOW = 64 * 1024  # how far FFmpeg looks for the first frame after the ID3v2 tags


def read_layout(read: Callable[[int, int], bytes], offset: int = 0) -> StreamLayout:
    """The layout of a file whose bytes ``read(start, end)`` returns, starting at ``offset``.

    As FFmpeg's MP3 demuxer reads a file's head: several ID3v2 tags in a row are all skipped (WMP and some DAI tools
    write more than one); a Xing/Info/VBRI frame is honoured only right after them, even when junk follows it (the
    tag frame of mutagen's apev2-lyricsv2.mp3 is followed by 585 bytes of junk); then the first frame is the first
    one whose next frame has the same header under FFmpeg's mask (``resync``). A tag frame found there, after junk,
    is not a tag: it is played as a frame of silence when its header matches the next frame's (LAME's own Info
    frame), and skipped as junk when it does not (FFmpeg's muxer writes its Info frame in plain stereo mode)."""
    while True:
        size = id3v2_size(read(offset, offset + 10))
        if not size:
            break
        offset += size
    pos = tag = None
    for size in (8 * 1024, RESYNC_WINDOW):  # mostly within the head already read; farther only after junk
        window = read(offset, offset + size)
        lead = parse_header(window, 0)
        tag = parse_xing(window, 0, lead) if lead is not None else None
        after = lead.length if tag is not None and lead is not None else 0
        pos = resync(window, after)
        if pos is None:
            pos = find_frame(window, after)
        if pos is not None or len(window) < size:
            break
    if pos is None:
        raise NotMp3("no MPEG audio frames found")
    first = parse_header(window, pos)
    assert first is not None
    return StreamLayout(audio_start=offset + pos, first=first, tag=tag, tag_offset=offset if tag else -1)


MP3_MASK = 0xFFFE0CCF  # header bits FFmpeg's demuxer needs equal in two frames in a row (not bitrate, padding, CRC)


def resync(data: bytes, start: int = 0) -> Optional[int]:
    """The first offset from ``start`` where a frame begins whose next frame's header equals its own under
    ``MP3_MASK``: where FFmpeg's MP3 demuxer starts reading frames after the head of a file."""
    pos = data.find(b"\xff", start)
    while pos != -1:
        header = parse_header(data, pos)
        if header is not None:
            following = parse_header(data, pos + header.length)
            if following is not None and _masked(header) == _masked(following):
                return pos
        pos = data.find(b"\xff", pos + 1)
    return None


def _masked(header: FrameHeader) -> int:
    return int.from_bytes(header.raw, "big") & MP3_MASK


def frame_length(model: FrameHeader, bitrate_index: int) -> int:
    """Bytes in a frame of ``model``'s format at this bitrate, without the padding byte."""
    kbps = _BITRATES_KBPS[1 if model.version == 1 else 2][bitrate_index]
    return model.samples // 8 * kbps * 1000 // model.sample_rate


TICKS_PER_SECOND = 14_112_000  # the least common multiple of the nine sample rates: time without rounding
