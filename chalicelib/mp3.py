"""MPEG audio Layer III, read and cut by hand: frame headers, ID3v2 and Xing/Info/LAME tags, clip assembly.

Pure functions on bytes; no I/O. Positions are counted in *decoder samples*: sample ``i`` of what a decoder
outputs when it decodes the frames from the first audio frame on, before any gapless trimming. A player that
honours the LAME tag (FFmpeg, browsers built on it) drops ``start_skip`` of them at the start, so audio time
``t`` of the episode sits at decoder sample ``t * sample_rate + start_skip``.

A clip is the source's own frames, copied, behind a fresh Info frame whose LAME tag tells a gapless decoder
how many samples to drop at each end. Frames borrow main data from the frames before them (the bit
reservoir), so a clip starts a few frames early: the earliest of those are silenced (their side information
zeroed, which decodes as silence without touching the reservoir) and serve only to carry the bytes the
first kept frame borrows; the encoder-delay field then skips them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

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

    @property
    def length(self) -> int:
        return _frame_length(self, self.bitrate_index) + self.padding

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
    b1, b2, b3 = data[pos + 1], data[pos + 2], data[pos + 3]
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
        raw=bytes(data[pos:pos + 4]),
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
    header: Optional[FrameHeader] = first
    for _ in range(count - 1):
        assert header is not None  # checked at the end of the previous round
        pos += header.length
        if pos == len(data):
            return True  # the data ends exactly after a whole frame
        header = parse_header(data, pos)
        if header is None or not header.same_stream(first):
            return False
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
    frame = bytes(data[pos:pos + header.length])
    at = header.main_data_offset
    tag = frame[at:at + 4]
    if tag in (b"Xing", b"Info"):
        flags = struct.unpack(">I", frame[at + 4:at + 8])[0]
        cursor = at + 8
        frames = size = None
        if flags & 1:
            frames = struct.unpack(">I", frame[cursor:cursor + 4])[0]
            cursor += 4
        if flags & 2:
            size = struct.unpack(">I", frame[cursor:cursor + 4])[0]
            cursor += 4
        cursor += 100 if flags & 4 else 0
        cursor += 4 if flags & 8 else 0
        encoder = frame[cursor:cursor + 9]
        if encoder[:4] in (b"LAME", b"Lavf", b"Lavc") and len(frame) >= cursor + 24:
            delays = int.from_bytes(frame[cursor + 21:cursor + 24], "big")
            return XingTag(tag.decode(), frames, encoder.decode("latin-1").rstrip("\0 "), delays >> 12, delays & 0xFFF, size)
        return XingTag(tag.decode(), frames, bytes=size)
    if frame[36:40] == b"VBRI":
        return XingTag("VBRI", struct.unpack(">I", frame[50:54])[0])
    return None


@dataclass(frozen=True)
class StreamLayout:
    """Where the audio frames of a file are and how to count time in them."""

    audio_start: int  # offset of the first audio frame (after ID3v2 and any tag frame)
    first: FrameHeader
    tag: Optional[XingTag]

    @property
    def constant_bitrate(self) -> bool:
        return self.tag is not None and self.tag.kind == "Info"

    @property
    def start_skip(self) -> int:
        """Decoder samples a gapless player drops before the episode's time 0."""
        if self.tag is not None and self.tag.encoder_delay is not None:
            return self.tag.encoder_delay + DECODER_DELAY
        return 0

    @property
    def gapless_trim(self) -> int:
        """Samples a gapless decoder drops in all (encoder delay and padding), 0 without a LAME tag."""
        if self.tag is None or self.tag.encoder_delay is None:
            return 0
        return self.tag.encoder_delay + (self.tag.encoder_padding or 0)


def parse_layout(head: bytes, head_offset: int) -> StreamLayout:
    """Read the layout from ``head``, the bytes that follow any ID3v2 tag, found at ``head_offset`` in the file."""
    pos = find_frame(head)
    if pos is None:
        raise NotMp3("no MPEG audio frames found")
    first = parse_header(head, pos)
    if first is None:  # find_frame found a chain of frames here: never, but say so rather than crash below
        raise NotMp3("no MPEG audio frames found")
    tag = parse_xing(head, pos, first)
    audio_start = pos + first.length if tag else pos
    if tag:
        after = parse_header(head, audio_start)
        if after is not None:
            first = after
    return StreamLayout(audio_start=head_offset + audio_start, first=first, tag=tag)


# ---------------------------------------------------------------- the bit reservoir

SETTLE_SAMPLES = 1088  # decoder samples after which the output no longer depends on frames before (576 + 512)


def main_data_begin(frame: bytes, header: FrameHeader) -> int:
    """How many bytes of main data this frame borrows from the frames before it."""
    at = header.side_info_offset
    if header.version == 1:
        return (frame[at] << 1) | (frame[at + 1] >> 7)
    return frame[at]


def carrier_frame(model: FrameHeader, payload: bytes) -> bytes:
    """A frame that decodes as silence (zeroed side information) and whose main data ends with ``payload``,
    so that the frame after it finds there the bytes it borrows."""
    index = next(i for i in range(1, 15) if _frame_length(model, i) - 4 - model.side_info_size >= len(payload))
    length = _frame_length(model, index)
    header = bytes((0xFF, model.raw[1] | 0x01, (index << 4) | (model.raw[2] & 0x0C), model.raw[3]))
    return header + bytes(length - 4 - len(payload)) + payload


def borrowed_bytes(frames: Sequence[Tuple[bytes, FrameHeader]], need: int) -> bytes:
    """The last ``need`` bytes of main data carried by ``frames`` (their bodies, without headers and side info)."""
    chunks, have = [], 0
    for frame, header in reversed(frames):
        if have >= need:
            break
        chunks.append(frame[header.main_data_offset:])
        have += len(chunks[-1])
    if have < need:
        raise ValueError(f"the frames before the clip carry {have} bytes of main data; {need} are borrowed")
    carried = b"".join(reversed(chunks))
    return carried[len(carried) - need:]


# ---------------------------------------------------------------- cutting

@dataclass
class Cut:
    """A clip assembled from frames: the bytes to serve and what they hold."""

    data: bytes
    frames: int  # audio frames, the carrier included, the Info frame not
    samples: int  # audio samples a gapless decoder outputs
    sample_rate: int
    preroll_frames: int  # frames before the one holding the first wanted sample, the carrier included
    start_error_samples: int  # how much later than asked the clip starts (only at the very start of an untagged file)


def frames_before_needed(header: FrameHeader) -> int:
    """How many whole frames before the first wanted one a cut needs: the settling frames plus enough to hold the
    largest reservoir (511 bytes) at the smallest frame size."""
    settle = -(-SETTLE_SAMPLES // header.samples)
    return settle + 8


def cut(frames: Sequence[Tuple[bytes, FrameHeader]], first_index: int, first_sample: int, sample_count: int) -> Cut:
    """Assemble a clip of ``sample_count`` decoder samples starting at decoder sample ``first_sample``.

    ``frames`` are whole consecutive source frames, the first being frame number ``first_index`` of the file;
    they must begin ``frames_before_needed`` frames before the one holding ``first_sample`` (or at the file's
    first frame) and reach the one holding the last wanted sample.
    """
    spf = frames[0][1].samples
    target = first_sample - first_index * spf  # the first wanted decoder sample, counted from frames[0]
    k = target // spf
    end_frame = -(-(target + sample_count) // spf)
    if k < 0 or end_frame > len(frames):
        raise ValueError(f"frames {first_index}..{first_index + len(frames)} do not cover the clip")

    audible = max(k - -(-SETTLE_SAMPLES // spf), 0)
    kept = list(frames[audible:end_frame])
    need = main_data_begin(*kept[0]) if first_index + audible > 0 else 0
    carrier = carrier_frame(kept[0][1], borrowed_bytes(frames[:audible], need)) if need else b""
    lead = spf if carrier else 0
    delay = target - audible * spf + lead - DECODER_DELAY
    start_error = max(0, -delay)
    delay += start_error
    count = len(kept) + (1 if carrier else 0)
    padding = count * spf - delay - sample_count
    body = [carrier] + [f for f, _ in kept] if carrier else [f for f, _ in kept]
    carrier_header = parse_header(carrier) if carrier else None
    headers = [carrier_header] + [h for _, h in kept] if carrier_header else [h for _, h in kept]
    info = info_frame(headers, [len(b) for b in body], delay, min(padding, MAX_GAPLESS_FIELD))
    return Cut(
        data=info + b"".join(body),
        frames=count,
        samples=sample_count,
        sample_rate=kept[0][1].sample_rate,
        preroll_frames=k - audible + (1 if carrier else 0),
        start_error_samples=start_error,
    )


def info_frame(headers: Sequence[FrameHeader], sizes: Sequence[int], delay: int, padding: int) -> bytes:
    """A Xing/Info tag frame with frame count, byte count, seek table and a LAME tag carrying delay and padding."""
    model = headers[0]
    constant = all(h.bitrate_index == model.bitrate_index for h in headers)
    size = 4 + model.side_info_size + 120 + 36
    index = next(i for i in range(1, 15) if _frame_length(model, i) >= size)
    length = _frame_length(model, index)
    b1 = model.raw[1] | 0x01  # no CRC
    b2 = (index << 4) | (model.raw[2] & 0x0C)
    header = bytes((0xFF, b1, b2, model.raw[3]))
    total = length + sum(sizes)
    toc = _toc(sizes, length, total)
    xing = (b"Info" if constant else b"Xing") + struct.pack(">IIII", 0x0F, len(sizes), total, 0)
    xing = xing[:16] + toc + struct.pack(">I", 0)
    side = bytes(model.side_info_size)
    lame = bytearray(36)
    lame[0:9] = b"LAME3.100"
    lame[9] = 0x01 if constant else 0x04  # tag revision 0; VBR method: CBR or VBR
    lame[21:24] = ((delay << 12) | padding).to_bytes(3, "big")
    lame[28:32] = struct.pack(">I", total)
    frame = bytearray(header + side + xing + bytes(lame))
    frame += bytes(length - len(frame))
    tag_crc_at = 4 + len(side) + len(xing) + 34
    frame[tag_crc_at:tag_crc_at + 2] = struct.pack(">H", crc16(bytes(frame[:tag_crc_at])))
    return bytes(frame)


def _frame_length(model: FrameHeader, bitrate_index: int) -> int:
    kbps = _BITRATES_KBPS[1 if model.version == 1 else 2][bitrate_index]
    return model.samples // 8 * kbps * 1000 // model.sample_rate


def _toc(sizes: Sequence[int], offset: int, total: int) -> bytes:
    starts, position = [], offset
    for size in sizes:
        starts.append(position)
        position += size
    entries = []
    for percent in range(100):
        at = starts[min(len(starts) - 1, percent * len(starts) // 100)]
        entries.append(min(255, at * 256 // total))
    return bytes(entries)


def _crc16_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC, which the LAME tag uses for its own checksum."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ byte) & 0xFF]
    return crc
