"""The cut: a clip assembled from the source's own frames, sample-exact on a gapless decoder.

A clip is the source's frames, copied, behind a fresh Info frame whose LAME tag tells a gapless decoder
how many samples to drop at each end. Frames borrow main data from the frames before them (the bit
reservoir), so a clip starts a few frames early: the earliest of those are silenced (their side information
zeroed, which decodes as silence without touching the reservoir) and serve only to carry the bytes the
first kept frame borrows; the encoder-delay field then skips them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from chalicelib.audio.mp3.frames import DECODER_DELAY, MAX_GAPLESS_FIELD, FrameHeader, frame_length, parse_header

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
    index = next(i for i in range(1, 15) if frame_length(model, i) - 4 - model.side_info_size >= len(payload))
    length = frame_length(model, index)
    header = bytes((0xFF, model.raw[1] | 0x01, (index << 4) | (model.raw[2] & 0x0C), model.raw[3]))
    return header + bytes(length - 4 - len(payload)) + payload


def borrowed_bytes(frames: Sequence[Tuple[bytes, FrameHeader]], need: int) -> bytes:
    """The last ``need`` bytes of main data carried by ``frames`` (their bodies, without headers and side info)."""
    chunks, have = [], 0
    for frame, header in reversed(frames):
        if have >= need:
            break
        chunks.append(frame[header.main_data_offset :])
        have += len(chunks[-1])
    if have < need:
        raise ValueError(f"the frames before the clip carry {have} bytes of main data; {need} are borrowed")
    carried = b"".join(reversed(chunks))
    return carried[len(carried) - need :]


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
    largest reservoir (511 bytes in MPEG-1, 255 in MPEG-2) at this format's smallest frame (8 or 32 kbit/s,
    where a frame carries only a few bytes of main data)."""
    settle = -(-SETTLE_SAMPLES // header.samples)
    reservoir = 511 if header.version == 1 else 255
    smallest = max(frame_length(header, 1) - header.main_data_offset, 1)
    return settle + min(-(-reservoir // smallest), 256)


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
    need = main_data_begin(*kept[0])
    # the first frame of a run borrows nothing from the part before a join
    payload = bytes(need) if first_index + audible == 0 else borrowed_bytes(frames[:audible], need)
    delay = target - audible * spf - DECODER_DELAY
    carrier = b""
    if need or delay < 0:
        # A silent frame first: it carries the borrowed bytes, and gives the delay field room to skip the
        # decoder delay, so that even a cut at an untagged file's sample 0 starts on that sample.
        carrier = carrier_frame(kept[0][1], payload)
        delay += spf
    start_error = max(0, -delay)
    delay += start_error
    count = len(kept) + (1 if carrier else 0)
    padding = count * spf - delay - sample_count
    body = [carrier] + [f for f, _ in kept] if carrier else [f for f, _ in kept]
    headers = [h for _, h in kept]
    carrier_header = parse_header(carrier) if carrier else None
    if carrier_header is not None:
        headers.insert(0, carrier_header)
    constant = all(h.bitrate_index == kept[0][1].bitrate_index for _, h in kept)
    info = info_frame(headers, [len(b) for b in body], delay, min(padding, MAX_GAPLESS_FIELD), constant)
    return Cut(
        data=info + b"".join(body),
        frames=count,
        samples=sample_count,
        sample_rate=kept[0][1].sample_rate,
        preroll_frames=k - audible + (1 if carrier else 0),
        start_error_samples=start_error,
    )


def info_frame(headers: Sequence[FrameHeader], sizes: Sequence[int], delay: int, padding: int, constant: bool) -> bytes:
    """A Xing/Info tag frame with frame count, byte count, seek table and a LAME tag carrying delay and padding.
    ``constant``: the source's frames share one bitrate (the silent carrier aside), so the tag says Info (CBR)."""
    model = headers[0]
    size = 4 + model.side_info_size + 120 + 36
    index = next(i for i in range(1, 15) if frame_length(model, i) >= size)
    length = frame_length(model, index)
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
    frame[tag_crc_at : tag_crc_at + 2] = struct.pack(">H", crc16(bytes(frame[:tag_crc_at])))
    return bytes(frame)


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
