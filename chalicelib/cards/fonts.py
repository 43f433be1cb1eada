"""The fonts the deployment package carries (``fonts/``, each with its licence) and which characters each draws.

- DejaVu Sans and DejaVu Sans Bold (Bitstream Vera licence; DejaVu's changes public domain): Latin, Greek,
  Cyrillic, Hebrew, Arabic (with its presentation forms), Armenian, Georgian and many symbols.
- Droid Sans Fallback (Apache-2.0): Chinese, Japanese and Korean (20,902 CJK ideographs, kana, 11,172 Hangul
  syllables), 3.4 MB: the smallest openly licensed font found that covers all three (Noto Sans CJK is ~16 MB a
  weight).

Text is drawn run by run, each run in the first font that has its characters; a character no font has is left out
(never drawn as an empty box).
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
import unicodedata
from typing import List, Sequence, Tuple

from PIL import ImageFont

FONT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fonts")
REGULAR = os.path.join(FONT_DIR, "DejaVuSans.ttf")
BOLD = os.path.join(FONT_DIR, "DejaVuSans-Bold.ttf")
CJK = os.path.join(FONT_DIR, "DroidSansFallback.ttf")


class Coverage:
    """The characters a TrueType font maps to a glyph, from its ``cmap`` table (formats 4 and 12)."""

    def __init__(self, ranges: Sequence[Tuple[int, int]]):
        self._starts = [start for start, _ in ranges]
        self._ends = [end for _, end in ranges]

    @classmethod
    def of(cls, path: str) -> "Coverage":
        with open(path, "rb") as handle:
            return cls(cmap_ranges(handle.read()))

    def __contains__(self, char: object) -> bool:
        if not isinstance(char, str) or len(char) != 1:
            return False
        code = ord(char)
        i = bisect.bisect_right(self._starts, code) - 1
        return i >= 0 and code <= self._ends[i]


def cmap_ranges(font: bytes) -> List[Tuple[int, int]]:
    """Sorted (first, last) code point ranges that the font's Unicode ``cmap`` maps to a glyph other than 0."""
    (tables,) = struct.unpack_from(">H", font, 4)
    directory = {font[12 + 16 * i : 16 + 16 * i]: struct.unpack_from(">I", font, 20 + 16 * i)[0] for i in range(tables)}
    cmap = directory[b"cmap"]
    (count,) = struct.unpack_from(">H", font, cmap + 2)
    subtables = {}
    for i in range(count):
        platform, encoding, offset = struct.unpack_from(">HHI", font, cmap + 4 + 8 * i)
        subtables[platform, encoding] = cmap + offset
    for key in ((3, 10), (0, 4), (0, 6)):
        if key in subtables and struct.unpack_from(">H", font, subtables[key])[0] == 12:
            return _format12(font, subtables[key])
    for key in ((3, 1), (0, 3), (0, 1), (0, 0)):
        if key in subtables and struct.unpack_from(">H", font, subtables[key])[0] == 4:
            return _format4(font, subtables[key])
    raise ValueError("the font has no Unicode cmap of format 4 or 12")


def _format12(font: bytes, at: int) -> List[Tuple[int, int]]:
    (groups,) = struct.unpack_from(">I", font, at + 12)
    ranges = []
    for i in range(groups):
        first, last, glyph = struct.unpack_from(">III", font, at + 16 + 12 * i)
        if glyph:
            ranges.append((first, last))
    return sorted(ranges)


def _format4(font: bytes, at: int) -> List[Tuple[int, int]]:
    (double,) = struct.unpack_from(">H", font, at + 6)
    n = double // 2
    ends = struct.unpack_from(f">{n}H", font, at + 14)
    starts = struct.unpack_from(f">{n}H", font, at + 16 + double)
    deltas = struct.unpack_from(f">{n}H", font, at + 16 + 2 * double)
    offsets_at = at + 16 + 3 * double
    offsets = struct.unpack_from(f">{n}H", font, offsets_at)
    codes = []
    for i in range(n):
        if starts[i] == 0xFFFF:
            continue
        for code in range(starts[i], ends[i] + 1):
            if offsets[i]:
                (glyph,) = struct.unpack_from(">H", font, offsets_at + 2 * i + offsets[i] + 2 * (code - starts[i]))
                glyph = (glyph + deltas[i]) & 0xFFFF if glyph else 0
            else:
                glyph = (code + deltas[i]) & 0xFFFF
            if glyph:
                codes.append(code)
    ranges: List[Tuple[int, int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return ranges


@functools.lru_cache(maxsize=None)
def coverage(path: str) -> Coverage:
    return Coverage.of(path)


@functools.lru_cache(maxsize=32)
def truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    """The font at ``size`` px, with Pillow's basic layout: the same glyphs in the same places everywhere."""
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


Run = Tuple[ImageFont.FreeTypeFont, str]


class Face:
    """A font and its fallbacks at one size: text in, runs of (font, text) out, and their width."""

    def __init__(self, paths: Sequence[str], size: int):
        self.size = size
        self._fonts = [(truetype(path, size), coverage(path)) for path in paths]

    def runs(self, text: str) -> List[Run]:
        runs: List[Tuple[ImageFont.FreeTypeFont, List[str]]] = []
        for char in text:
            font = self._font_for(char, runs[-1][0] if runs else None)
            if font is None:
                continue  # no font draws it: left out rather than drawn as a box
            if runs and runs[-1][0] is font:
                runs[-1][1].append(char)
            else:
                runs.append((font, [char]))
        return [(font, "".join(chars)) for font, chars in runs]

    def _font_for(self, char: str, current: "ImageFont.FreeTypeFont | None") -> "ImageFont.FreeTypeFont | None":
        if current is not None and unicodedata.combining(char):
            return current  # a mark stays with its letter
        for font, covered in self._fonts:
            if char in covered:
                return font
        return None

    def width(self, text: str) -> float:
        return sum(font.getlength(part) for font, part in self.runs(text))

    def draws(self, text: str) -> bool:
        """Whether any character of ``text`` other than spaces can be drawn."""
        return any(part.strip() for _, part in self.runs(text))
