"""Real podcast files as hosts stitch them: parts encoded by FFmpeg and LAME, tags written by mutagen, joined.

Each fixture is a file and the player times of its joins (FFmpeg's decode of the bytes before each join). Parts
use different noise seeds, so that every position of the whole file is unambiguous.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from tests.audio_tools import FFMPEG, decode

SIGNAL = (
    "anoisesrc=d={seconds}:c=pink:r={rate}:a=0.5:seed={seed},volume='0.15+0.85*abs(sin(t*2.3)*cos(t*0.71))':eval=frame"
)
LAME = shutil.which("lame")


@dataclass
class Joined:
    name: str
    path: str
    joins_ms: List[float] = field(default_factory=list)  # where each later part begins on the player's timeline
    rate: int = 44100  # the show's rate: clips of it are compared at this rate
    frame_copy: bool = True  # every clip is a copy of frames (no change of rate or channels)

    @property
    def data(self) -> bytes:
        with open(self.path, "rb") as handle:
            return handle.read()


def encode(
    directory: str, name: str, seconds: float, rate: int, channels: int, options: Tuple[str, ...], seed: int
) -> bytes:
    """One part as FFmpeg's muxer writes it: an ID3v2 tag, an Info/Xing frame with a LAME tag, the frames."""
    path = os.path.join(directory, f"part-{name}.mp3")
    if not os.path.exists(path):
        subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                SIGNAL.format(seconds=seconds, rate=rate, seed=seed),
                "-ac",
                str(channels),
                "-c:a",
                "libmp3lame",
                *options,
                path,
            ],
            check=True,
        )
    with open(path, "rb") as handle:
        return handle.read()


def lame_encode(directory: str, name: str, seconds: float, rate: int, options: Tuple[str, ...], seed: int) -> bytes:
    """A file written by LAME 3.100 itself (Debian's `lame`), which can protect frames with a CRC."""
    wav = os.path.join(directory, f"lame-{name}.wav")
    path = os.path.join(directory, f"lame-{name}.mp3")
    if not os.path.exists(path):
        subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                SIGNAL.format(seconds=seconds, rate=rate, seed=seed),
                "-ac",
                "2",
                wav,
            ],
            check=True,
        )
        subprocess.run([str(LAME), "--quiet", *options, wav, path], check=True)
    with open(path, "rb") as handle:
        return handle.read()


def id3_tag(directory: str, name: str, title: str, picture_bytes: int = 0, encoding: int = 3) -> bytes:
    """An ID3v2.4 tag written by mutagen: a title (UTF-8, so no FF FE byte-order marks) and maybe a picture whose
    bytes hold no 0xFF (a stray sync word in a tag can make FFmpeg decode a packet of the tag)."""
    from mutagen.id3 import APIC, ID3, TIT2

    path = os.path.join(directory, f"tag-{name}.id3")
    with open(path, "wb"):
        pass
    tag = ID3()
    tag.add(TIT2(encoding=encoding, text=title))
    if picture_bytes:
        picture = bytes((i * 131 + 17) % 251 for i in range(picture_bytes))
        tag.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=picture))
    tag.save(path, padding=lambda info: 0)
    with open(path, "rb") as handle:
        return handle.read()


def strip_id3(data: bytes) -> bytes:
    from chalicelib.audio.mp3 import id3v2_size

    return data[id3v2_size(data) :]


def _write(directory: str, name: str, parts: List[bytes]) -> str:
    path = os.path.join(directory, f"{name}.mp3")
    with open(path, "wb") as handle:
        handle.write(b"".join(parts))
    return path


def joined(directory: str, name: str, parts: List[bytes], rate: int = 44100, frame_copy: bool = True) -> Joined:
    """The parts joined, with the player time of each join measured by decoding the bytes before it."""
    path = _write(directory, name, parts)
    joins: List[float] = []
    for count in range(1, len(parts)):
        prefix = _write(directory, f"{name}-prefix{count}", parts[:count])
        at = decode(prefix, rate=rate).duration_ms
        if at > 0 and at not in joins:  # tags before the audio, or around a mid-file tag, join no audio
            joins.append(at)
    return Joined(name, path, joins, rate, frame_copy)


CBR = ("-b:a", "128k")


def _preroll_with_info(d: str) -> Joined:
    """A 5 s CBR pre-roll with its own ID3 tag and Info frame, then the show (bitrate differs: a frame copy)."""
    return joined(
        d,
        "preroll_info",
        [encode(d, "pre96", 5, 44100, 2, ("-b:a", "96k"), 11), encode(d, "show30", 30, 44100, 2, CBR, 12)],
    )


def _ad_48k_mono(d: str) -> Joined:
    """A 48 kHz mono ad (own ID3 tag and Info frame) stitched into the middle of a 44.1 kHz stereo show."""
    return joined(
        d,
        "ad_48k_mono",
        [
            encode(d, "show15a", 15, 44100, 2, CBR, 21),
            encode(d, "ad48", 6, 48000, 1, ("-b:a", "64k"), 22),
            encode(d, "show15b", 15, 44100, 2, CBR, 23),
        ],
        frame_copy=False,
    )


def _mono_preroll(d: str) -> Joined:
    return joined(
        d,
        "mono_preroll",
        [encode(d, "mono6", 6, 44100, 1, ("-b:a", "64k"), 31), encode(d, "show20", 20, 44100, 2, CBR, 32)],
        frame_copy=False,
    )


def _stereo_ad_in_mono_show(d: str) -> Joined:
    """A mono show, a stereo ad, the mono show again: only the channels change."""
    mono = ("-b:a", "64k")
    return joined(
        d,
        "stereo_ad_in_mono_show",
        [
            encode(d, "mono12a", 12, 44100, 1, mono, 35),
            encode(d, "stereo-ad", 8, 44100, 2, CBR, 36),
            encode(d, "mono12b", 12, 44100, 1, mono, 37),
        ],
        frame_copy=False,
    )


def _mpeg2_preroll(d: str) -> Joined:
    """An MPEG-2 (22.05 kHz) pre-roll before an MPEG-1 show."""
    return joined(
        d,
        "mpeg2_preroll",
        [encode(d, "mpeg2", 6, 22050, 1, ("-b:a", "48k"), 41), encode(d, "show20b", 20, 44100, 2, CBR, 42)],
        frame_copy=False,
    )


def _vbr_parts_without_headers(d: str) -> Joined:
    vbr = ("-q:a", "4", "-write_xing", "0")
    return joined(
        d, "vbr_no_headers", [encode(d, "vbr-a", 12, 44100, 2, vbr, 51), encode(d, "vbr-b", 12, 44100, 2, vbr, 52)]
    )


def _mid_file_picture(d: str) -> Joined:
    """One encoding with a 30 KB ID3 tag holding a picture inserted halfway; its Info tag counts every frame."""
    from chalicelib.audio import mp3

    whole = encode(d, "one30", 30, 44100, 2, CBR, 61)
    layout = mp3.read_layout(lambda start, end: whole[start:end])
    frames = list(mp3.walk_frames(whole, layout.audio_start))
    half = frames[len(frames) // 2][0]
    return joined(d, "mid_id3_picture", [whole[:half], id3_tag(d, "picture", "Chapter 2", 30_000), whole[half:]])


def utf16_tag_mid_file(d: str) -> Joined:
    """A 48 kHz ad, then a show whose own ID3v2 tag is UTF-16 (its text begins with the byte-order mark FF FE, which
    FFmpeg's parser takes for a Layer I header: the "frame" it reads runs past the tag and swallows the show's Info
    frame and first audio frame), then more of the show."""
    return joined(
        d,
        "utf16_tag_mid_file",
        [
            encode(d, "ad48u", 6, 48000, 1, ("-b:a", "64k"), 25),
            id3_tag(d, "utf16", "Show", encoding=1) + strip_id3(encode(d, "show12u", 12, 44100, 2, CBR, 26)),
            encode(d, "show8u", 8, 44100, 2, CBR, 27),
        ],
        frame_copy=False,
    )


def _two_id3_tags(d: str) -> Joined:
    body = encode(d, "two20", 20, 44100, 2, CBR, 71)
    return joined(d, "two_id3_tags", [id3_tag(d, "first", "Episode"), id3_tag(d, "art", "Art", 20_000), body])


def _zero_padding_after_tag(d: str) -> Joined:
    body = encode(d, "pad20", 20, 44100, 2, CBR, 72)
    return joined(d, "zero_padding_after_tag", [id3_tag(d, "padded", "Episode"), bytes(20_000), strip_id3(body)])


def _junk_before_first_frame(d: str) -> Joined:
    body = encode(d, "junk20", 20, 44100, 2, CBR, 73)
    return joined(
        d, "junk_before_first_frame", [id3_tag(d, "junk", "Episode"), bytes(range(1, 101)) * 3, strip_id3(body)]
    )


def _trailers(d: str) -> Joined:
    """ID3v1 and APEv2 tags at the end (mutagen writes both)."""
    from mutagen.apev2 import APEv2
    from mutagen.id3 import ID3, TIT2

    path = os.path.join(d, "trailers.mp3")
    with open(path, "wb") as handle:
        handle.write(encode(d, "trail20", 20, 44100, 2, CBR, 74))
    ape = APEv2()
    ape["Title"] = "Episode"
    ape.save(path)
    tag = ID3(path)
    tag.add(TIT2(encoding=3, text="Episode"))
    tag.save(path, v1=2)
    return Joined("trailers", path)


def _crc_cbr(d: str) -> Joined:
    return joined(d, "crc_cbr", [lame_encode(d, "crc-cbr", 20, 44100, ("-p", "-b", "128"), 81)])


def _crc_vbr(d: str) -> Joined:
    return joined(d, "crc_vbr", [lame_encode(d, "crc-vbr", 20, 44100, ("-p", "-V", "4"), 82)])


def _cbr_32k_stereo(d: str) -> Joined:
    """32 kbit/s stereo MPEG-1: frames so small that the bit reservoir reaches back many of them."""
    return joined(d, "cbr_32k_stereo", [encode(d, "32k", 20, 32000, 2, ("-b:a", "32k"), 91)], rate=32000)


FIXTURES: Dict[str, Callable[[str], Joined]] = {
    "preroll_info": _preroll_with_info,
    "ad_48k_mono": _ad_48k_mono,
    "mono_preroll": _mono_preroll,
    "stereo_ad_in_mono_show": _stereo_ad_in_mono_show,
    "mpeg2_preroll": _mpeg2_preroll,
    "vbr_no_headers": _vbr_parts_without_headers,
    "mid_id3_picture": _mid_file_picture,
    "two_id3_tags": _two_id3_tags,
    "zero_padding_after_tag": _zero_padding_after_tag,
    "junk_before_first_frame": _junk_before_first_frame,
    "trailers": _trailers,
    "crc_cbr": _crc_cbr,
    "crc_vbr": _crc_vbr,
    "cbr_32k_stereo": _cbr_32k_stereo,
}
NEEDS_LAME = {"crc_cbr", "crc_vbr"}


def build(directory: str, name: str) -> Optional[Joined]:
    """The fixture, or None when it needs `lame` and it is not installed."""
    if name in NEEDS_LAME and LAME is None:
        return None
    return FIXTURES[name](directory)


# ---------------------------------------------------------------- measuring a clip against the whole file


def best_offset(clip, source, expected: int, window: int, skip: int = 0, probe: int = 800) -> int:
    """Where, within ``expected ± window`` samples of the source, the clip's samples [skip, skip + probe) match
    best (least squared error, on every second sample): the clip's real start on the source's timeline."""
    part = clip.samples[skip : skip + probe : 2]
    best, best_error = expected, None
    for start in range(max(0, expected - window), expected + window + 1):
        segment = source.samples[start + skip : start + skip + probe : 2]
        if len(segment) < len(part):
            break
        error = 0
        for a, b in zip(part, segment, strict=False):
            error += (a - b) * (a - b)
            if best_error is not None and error >= best_error:
                break
        if best_error is None or error < best_error:
            best, best_error = start, error
    return best


# ---------------------------------------------------------------- the generated matrix of joins

HEADS = ("none", "id3", "id3_info", "info", "xing", "vbri")  # what a part starts with
FORMATS = {  # the middle part's format: (sample rate, channels, encoder options)
    "same": (44100, 2, CBR),
    "48k_mono": (48000, 1, ("-b:a", "64k")),
    "mono": (44100, 1, ("-b:a", "64k")),
}


def vbri_frame(frame: bytes, frames: int) -> bytes:
    """A Fraunhofer-style VBRI tag frame, as FFmpeg reads it: a silent frame of ``frame``'s header with "VBRI",
    version 1, and the frame count 32 bytes after the header."""
    import struct

    from chalicelib.audio.mp3 import parse_header

    header = parse_header(frame)
    assert header is not None
    body = bytearray(header.length)
    body[:4] = frame[:4]
    body[36:54] = b"VBRI" + struct.pack(">HHHII", 1, 576, 75, len(frame) * frames, frames)
    return bytes(body)


def headed_part(d: str, name: str, head: str, seconds: float, fmt: str, seed: int) -> bytes:
    """One part of ``seconds`` in format ``fmt``, starting with ``head``."""
    rate, channels, options = FORMATS[fmt]
    if head == "xing":
        return strip_id3(encode(d, f"{name}-vbr", seconds, rate, channels, ("-q:a", "4"), seed))
    if head in ("id3_info", "info"):
        whole = encode(d, name, seconds, rate, channels, options, seed)
        return whole if head == "id3_info" else strip_id3(whole)
    bare = strip_id3(encode(d, f"{name}-bare", seconds, rate, channels, (*options, "-write_xing", "0"), seed))
    if head == "id3":
        return id3_tag(d, name, "Part") + bare
    if head == "vbri":
        from chalicelib.audio.mp3 import parse_header

        first = parse_header(bare)
        assert first is not None
        return vbri_frame(bare[: first.length], len(bare) // first.length) + bare
    return bare


def matrix_fixture(d: str, head: str, fmt: str) -> Joined:
    """A show (FFmpeg's default head: ID3v2 + Info), a part of ``fmt`` that starts with ``head``, the show again."""
    show = encode(d, "mx-show", 4, 44100, 2, CBR, 101)
    middle = headed_part(d, f"mx-{head}-{fmt}", head, 3, fmt, 102)
    return joined(
        d, f"join_{head}_{fmt}", [show, middle, encode(d, "mx-show-b", 4, 44100, 2, CBR, 103)], frame_copy=fmt == "same"
    )


def matrix_extras(d: str) -> Dict[str, Callable[[], Optional[Joined]]]:
    """Joins beyond the matrix: a CRC-protected LAME part, and a part whose end carries ID3v1 and APEv2 tags."""

    def crc() -> Optional[Joined]:
        if LAME is None:
            return None
        show = encode(d, "mx-show", 4, 44100, 2, CBR, 101)
        return joined(d, "join_crc", [show, lame_encode(d, "mx-crc", 3, 44100, ("-p", "-b", "128"), 104), show])

    def trailing() -> Joined:
        from mutagen.apev2 import APEv2
        from mutagen.id3 import ID3, TIT2

        path = os.path.join(d, "mx-trailing.mp3")
        with open(path, "wb") as handle:
            handle.write(encode(d, "mx-tail", 3, 44100, 2, CBR, 105))
        ape = APEv2()
        ape["Title"] = "Part"
        ape.save(path)
        tag = ID3(path)
        tag.add(TIT2(encoding=3, text="Part"))
        tag.save(path, v1=2)
        with open(path, "rb") as handle:
            tagged = handle.read()
        show = encode(d, "mx-show", 4, 44100, 2, CBR, 101)
        return joined(d, "join_trailing_tags", [show, tagged, encode(d, "mx-show-b", 4, 44100, 2, CBR, 103)])

    return {"crc": crc, "trailing_tags": trailing}


MATRIX = [f"{head}-{fmt}" for head in HEADS for fmt in FORMATS] + ["crc", "trailing_tags"]


def build_matrix(d: str, name: str) -> Optional[Joined]:
    if name in ("crc", "trailing_tags"):
        return matrix_extras(d)[name]()
    head, fmt = name.split("-")
    return matrix_fixture(d, head, fmt)
