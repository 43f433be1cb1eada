"""The share card: 1200 x 630 (the size Open Graph and X's large cards ask for), drawn to stay legible when a link
preview shows it 400-500 px wide: the episode's title in bold at 64 px (46 px at the least, so ~18 px in a
preview), the podcast's title, the clip's time range, and the clip's waveform across the bottom.

Long titles wrap (at spaces, or between any two CJK characters) and end in '…'; right-to-left titles are drawn right
to left and aligned right; a title of which no character can be drawn is left out. Catalog text is only ever
drawn as glyphs: there is nothing in it to interpret.
"""

from __future__ import annotations

import io
import unicodedata
from typing import List, Sequence, Tuple

from PIL import Image, ImageDraw

from chalicelib.cards import HEIGHT, WIDTH, CardText, bar_levels
from chalicelib.cards.fonts import BOLD, CJK, REGULAR, Face
from chalicelib.cards.text import is_rtl, tame, visual

MARGIN = 64
BACKGROUND = (15, 23, 42)
TITLE_COLOUR = (248, 250, 252)
MUTED = (160, 174, 192)
ACCENT = (56, 189, 248)
EPISODE_SIZES = ((64, 2), (54, 3), (46, 3))  # (px, most lines): the largest that holds the whole title wins
PODCAST_SIZE = 36
RANGE_SIZE = 38
RANGE_TOP = 400
WAVE_TOP, WAVE_BOTTOM = 462, 590
BARS = 120
NO_TITLE = "A podcast clip"


def render_card(text: CardText, peaks: Sequence[Tuple[int, int]]) -> bytes:
    """The card as PNG bytes; ``peaks``: the waveform's (min, max) pairs, -128..127."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    column = WIDTH - 2 * MARGIN
    top = 52
    podcast = Face([REGULAR, CJK], PODCAST_SIZE)
    podcast_title = tame(text.podcast_title or "")
    if podcast.draws(podcast_title):
        (line,) = wrap(podcast, podcast_title, column, 1)
        _draw_line(draw, podcast, line, top, MUTED, is_rtl(podcast_title))
        top += 64
    episode_title = tame(text.episode_title or "")
    face = Face([BOLD, CJK], EPISODE_SIZES[0][0])
    if not face.draws(episode_title):
        episode_title = NO_TITLE
    lines: List[str] = []
    for size, most in EPISODE_SIZES:
        face = Face([BOLD, CJK], size)
        lines = wrap(face, episode_title, column, most)
        if not lines[-1].endswith("…"):
            break
    rtl = is_rtl(episode_title)
    for line in lines:
        _draw_line(draw, face, line, top, TITLE_COLOUR, rtl)
        top += round(face.size * 1.22)
    _draw_line(draw, Face([BOLD], RANGE_SIZE), text.time_range, RANGE_TOP, ACCENT, False)
    _draw_waveform(draw, peaks)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def wrap(face: Face, text: str, width: float, most: int) -> List[str]:
    """``text`` in lines no wider than ``width``, at most ``most`` of them (the last ending in '…' if cut)."""
    rtl = is_rtl(text)

    def fits(candidate: str) -> bool:
        return face.width(visual(candidate, rtl)) <= width

    lines: List[str] = []
    line = ""
    for word in _words(text):
        if fits((line + word).rstrip()):
            line += word
            continue
        if line.strip():
            lines.append(line.rstrip())
        line = word.lstrip()
        while not fits(line.rstrip()) and len(line) > 1:  # a word wider than a line: cut it where it must
            low, high = 1, len(line) - 1  # the longest head that fits, by bisection
            while low < high:
                middle = (low + high + 1) // 2
                low, high = (middle, high) if fits(line[:middle]) else (low, middle - 1)
            lines.append(line[:low])
            line = line[low:]
        if len(lines) > most:
            break
    if line.strip():
        lines.append(line.rstrip())
    lines = lines or [""]
    if len(lines) > most:
        last = lines[most - 1]
        while last and not fits(last + "…"):
            last = last[:-1]
        lines = [*lines[: most - 1], last.rstrip() + "…"]
    return lines


def _words(text: str) -> List[str]:
    """Pieces between break opportunities: after a space, and before each wide (CJK) character."""
    words: List[str] = []
    current = ""
    for char in text:
        if char == " ":
            words.append(current + " ")
            current = ""
        elif unicodedata.east_asian_width(char) in ("W", "F"):
            if current:
                words.append(current)
            current = char  # kept with the marks, digits and punctuation that follow it
        else:
            current += char
    words.append(current)
    return [w for w in words if w]


def _draw_line(draw: ImageDraw.ImageDraw, face: Face, line: str, top: int, colour: tuple, rtl: bool) -> None:
    runs = face.runs(visual(line, rtl))
    width = sum(font.getlength(part) for font, part in runs)
    x = float(WIDTH - MARGIN - width if rtl else MARGIN)
    for font, part in runs:
        draw.text((x, top), part, font=font, fill=colour)
        x += font.getlength(part)


def _draw_waveform(draw: ImageDraw.ImageDraw, peaks: Sequence[Tuple[int, int]]) -> None:
    """BARS bars, each the loudest of its share of the peaks, scaled to the clip's loudest (a quiet clip still
    shows its shape; silence stays a flat line)."""
    levels = bar_levels(peaks, BARS)
    middle = (WAVE_TOP + WAVE_BOTTOM) / 2
    step = (WIDTH - 2 * MARGIN) / BARS
    for bar, level in enumerate(levels):
        half = max(2.5, level * (WAVE_BOTTOM - WAVE_TOP) / 2)
        x = MARGIN + bar * step
        draw.rounded_rectangle((x, middle - half, x + step * 0.62, middle + half), radius=3, fill=ACCENT)
