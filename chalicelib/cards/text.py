"""Text for a renderer that lays glyphs out left to right, one after another (Pillow's basic layout: the same on a
laptop and on Lambda, whose runtime has no FriBiDi for Pillow's Raqm layout).

- ``visual``: a line of logical text in the order it is seen. A simplification of the Unicode Bidirectional
  Algorithm (UAX #9) that is right for titles: one paragraph whose direction is that of its first strong character,
  no explicit embeddings (``attribution.clean_text`` strips them), numbers and Latin words kept left to right inside
  right-to-left text, brackets mirrored.
- ``shape_arabic``: Arabic letters in their joined forms (Unicode's Arabic Presentation Forms-B, found by name in
  Python's own Unicode database), with the mandatory lam-alef ligatures. Scripts that need more shaping than that
  (Indic, for one) are drawn letter by letter.
- ``tame``: at most two combining marks on a letter, so that "Zalgo" text stays on its line.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import List, Optional, Tuple

MAX_MARKS = 2  # combining marks kept on one base character (Vietnamese needs two)
_MIRRORED = dict(zip("()[]{}<>«»‹›", ")(][}{><»«›‹", strict=True))
_RTL = ("R", "AL")
_NUMBERS = ("EN", "AN")


def is_rtl(text: str) -> bool:
    """The paragraph's direction: that of its first strong character (rule P2), left to right without one."""
    for char in text:
        direction = unicodedata.bidirectional(char)
        if direction in _RTL:
            return True
        if direction == "L":
            return False
    return False


def has_rtl(text: str) -> bool:
    return any(unicodedata.bidirectional(char) in _RTL for char in text)


def tame(text: str) -> str:
    """``text`` with at most MAX_MARKS combining marks after each character."""
    out, marks = [], 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) == "Me":
            marks += 1
            if marks > MAX_MARKS:
                continue
        else:
            marks = 0
        out.append(char)
    return "".join(out)


def visual(line: str, rtl: Optional[bool] = None) -> str:
    """``line`` in display order, left to right, Arabic shaped; a line without right-to-left letters as it is.
    ``rtl``: the paragraph's direction, when the line is part of a longer text (else the line's own)."""
    if not has_rtl(line):
        return line
    base = 1 if (is_rtl(line) if rtl is None else rtl) else 0
    chars = list(shape_arabic(line))
    levels = _levels(chars, base)
    for level in range(max(levels), 0, -1):  # rule L2: reverse every run at this level or higher
        i = 0
        while i < len(chars):
            if levels[i] < level:
                i += 1
                continue
            j = i
            while j < len(chars) and levels[j] >= level:
                j += 1
            chars[i:j], levels[i:j] = chars[i:j][::-1], levels[i:j][::-1]
            i = j
    return "".join(_MIRRORED.get(c, c) if lv % 2 else c for c, lv in zip(chars, levels, strict=True))  # rule L4


def _levels(chars: List[str], base: int) -> List[int]:
    """Embedding levels: right-to-left letters 1, left-to-right text 0 (2 inside a right-to-left paragraph), numbers
    as left-to-right text, neutrals those of the strong text around them when both sides agree (numbers count as
    right-to-left there: rule N1), else the paragraph's; combining marks those of their base."""
    kinds = [unicodedata.bidirectional(c) for c in chars]
    strong = ["R" if k in _RTL or k in _NUMBERS else ("L" if k == "L" else None) for k in kinds]
    paragraph = "R" if base else "L"
    levels = [0] * len(chars)
    previous = paragraph
    for i, kind in enumerate(kinds):
        if kind in _RTL:
            levels[i] = 1
        elif kind == "L":
            levels[i] = 2 if base else 0
        elif kind in _NUMBERS:
            levels[i] = 2 if (base or previous == "R") else 0
        elif kind == "NSM" and i:
            levels[i] = levels[i - 1]
        else:
            after = next((s for s in strong[i + 1 :] if s), paragraph)
            if previous == after:
                levels[i] = 1 if after == "R" else (2 if base else 0)
            else:
                levels[i] = base
        previous = strong[i] or previous
    return levels


# ---------------------------------------------------------------- Arabic joining

_FORMS = ("ISOLATED", "FINAL", "INITIAL", "MEDIAL")
_FORM_INDEX = {(False, False): 0, (True, False): 1, (False, True): 2, (True, True): 3}  # (joined before, after)
_TATWEEL = "\u0640"
_LAM = "\u0644"
_LAM_ALEF = {  # lam + alef, a mandatory ligature: (isolated, final)
    "\u0622": ("\ufef5", "\ufef6"),
    "\u0623": ("\ufef7", "\ufef8"),
    "\u0625": ("\ufef9", "\ufefa"),
    "\u0627": ("\ufefb", "\ufefc"),
}


@functools.lru_cache(maxsize=1024)
def _forms(char: str) -> Optional[Tuple[str, ...]]:
    """The presentation forms (isolated, final, initial, medial; '' where there is none) of an Arabic letter; None
    for a character that does not join. A letter with an initial form joins on both sides, one without it only to
    the letter before it (alef, dal, reh, waw...)."""
    name = unicodedata.name(char, "")
    if not name.startswith("ARABIC LETTER "):
        return None
    forms = []
    for form in _FORMS:
        try:
            forms.append(unicodedata.lookup(f"{name} {form} FORM"))
        except KeyError:
            forms.append("")
    return tuple(forms) if forms[0] else None


def _joins_next(char: Optional[str]) -> bool:
    """Whether ``char`` connects to the letter after it (a dual-joining letter or a tatweel)."""
    if char == _TATWEEL:
        return True
    forms = _forms(char) if char else None
    return bool(forms and forms[2])


def _joins_previous(char: Optional[str]) -> bool:
    if char == _TATWEEL:
        return True
    forms = _forms(char) if char else None
    return bool(forms and forms[1])


def shape_arabic(text: str) -> str:
    """Arabic letters replaced by their contextual forms (logical order kept); any other text as it is."""
    if not any("\u0600" <= c <= "\u06ff" for c in text):
        return text
    count = len(text)

    def neighbour(i: int, step: int) -> Tuple[Optional[str], int]:
        i += step
        while 0 <= i < count and unicodedata.category(text[i]) == "Mn":  # harakat do not break a join
            i += step
        return (text[i], i) if 0 <= i < count else (None, i)

    out, i = [], 0
    while i < count:
        char = text[i]
        forms = _forms(char)
        if forms is None:
            out.append(char)
            i += 1
            continue
        before, _ = neighbour(i, -1)
        after, after_at = neighbour(i, 1)
        joined_before = _joins_next(before) and bool(forms[1])
        if char == _LAM and after in _LAM_ALEF:
            out.append(_LAM_ALEF[after][1 if joined_before else 0])
            out.extend(text[i + 1 : after_at])  # harakat between them
            i = after_at + 1
            continue
        joined_after = bool(forms[2]) and _joins_previous(after)
        form = forms[_FORM_INDEX[joined_before, joined_after]]
        out.append(form or forms[0])
        i += 1
    return "".join(out)
