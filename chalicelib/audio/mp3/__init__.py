"""MPEG audio Layer III, read and cut by hand, as a package by structure:

- ``frames``: frame headers, ID3v2 and Xing/Info/LAME tags, where a file's audio begins;
- ``timeline``: the player's timeline of a whole file, kept as a seek index of uniform segments;
- ``cut``: a clip assembled from the source's own frames, and the bit reservoir it must carry.
"""

from chalicelib.audio.mp3.cut import (
    SETTLE_SAMPLES,
    Cut,
    borrowed_bytes,
    carrier_frame,
    crc16,
    cut,
    frames_before_needed,
    info_frame,
    main_data_begin,
)
from chalicelib.audio.mp3.frames import (
    DECODER_DELAY,
    MAX_GAPLESS_FIELD,
    TICKS_PER_SECOND,
    FrameHeader,
    NotMp3,
    StreamLayout,
    XingTag,
    find_frame,
    frame_length,
    id3v2_size,
    parse_header,
    parse_layout,
    parse_xing,
    read_layout,
    walk_frames,
)
from chalicelib.audio.mp3.timeline import INDEX_FORMAT, IndexTimeout, SeekIndex, Segment, scan

__all__ = [
    "DECODER_DELAY",
    "INDEX_FORMAT",
    "MAX_GAPLESS_FIELD",
    "SETTLE_SAMPLES",
    "TICKS_PER_SECOND",
    "Cut",
    "FrameHeader",
    "IndexTimeout",
    "NotMp3",
    "SeekIndex",
    "Segment",
    "StreamLayout",
    "XingTag",
    "borrowed_bytes",
    "carrier_frame",
    "crc16",
    "cut",
    "find_frame",
    "frame_length",
    "frames_before_needed",
    "id3v2_size",
    "info_frame",
    "main_data_begin",
    "parse_header",
    "parse_layout",
    "parse_xing",
    "read_layout",
    "scan",
    "walk_frames",
]
