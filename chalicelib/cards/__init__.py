"""The share card: a clip as a 1200 x 630 PNG (titles, time range, waveform) for link previews. Text layout
(right-to-left lines, Arabic joining, a fallback font for CJK), the fonts the package carries with their licences
(``fonts/``), and the drawing, through Pillow. It takes plain values (text, the waveform's peaks) and returns bytes.

May import only the kernel (``settings``, ``errors``, ``deadlines``) and itself. Only ``cards.card`` and
``cards.fonts`` load Pillow: what needs just the names below stays light.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

WIDTH, HEIGHT = 1200, 630  # the card's size: what Open Graph and X's large image cards ask for


@dataclass(frozen=True)
class CardText:
    """What the card says: catalog titles (as ``attribution.clean_text`` left them) and the clip's time range."""

    episode_title: Optional[str]
    podcast_title: Optional[str]
    time_range: str  # "1:00–1:30 · 30 s"


def bar_levels(peaks: Sequence[Tuple[int, int]], bars: int) -> List[float]:
    """A waveform drawn as ``bars`` bars (the card's and the share page's): each the loudest of its share of the
    peaks, as a fraction of the clip's loudest (a quiet clip still shows its shape; silence stays flat)."""
    if not peaks:
        return []
    levels = []
    for bar in range(bars):
        first = bar * len(peaks) // bars
        last = max(first + 1, (bar + 1) * len(peaks) // bars)
        levels.append(max(max(-low, high) for low, high in peaks[first:last]))
    loudest = max(max(levels), 8)
    return [level / loudest for level in levels]
