"""What a clip says about itself: its titles, its time range, and the ID3v2 tag that carries them inside the file.

Catalog text is untrusted: ``clean_text`` drops control and bidi-override characters and bounds its length, so
that every place a title goes (the tag, the JSON answer, S3 metadata, the share page) gets the same, short text.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote, urlsplit

from mutagen.id3 import COMM, ID3, TALB, TIT2, TLEN, TPE1, WOAS, WXXX

MAX_TITLE_BYTES = 400  # UTF-8 bytes of one title: both titles fit S3's 2 KB of object metadata, base64-encoded
SOUNDBITE_TITLE_CHARS = 128  # Podcasting 2.0 limits a <podcast:soundbite>'s title to 128 characters
LINK_DESCRIPTION = "Full episode at this moment"
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
_SPACES = re.compile(r"\s+")
_NOT_ASCII = re.compile(r"[^\x21-\x7e]+")
MAX_URL_CHARS = 2000


def clean_text(text: Optional[str], max_bytes: int = MAX_TITLE_BYTES) -> Optional[str]:
    """Catalog text fit to show: no control characters or bidi overrides (an unclosed override would reverse the
    text after it), whitespace collapsed, at most ``max_bytes`` of UTF-8 (cut on a character, marked with '…')."""
    if not isinstance(text, str):
        return None
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text.translate(_BIDI_CONTROLS))
    text = _SPACES.sub(" ", text).strip()
    if len(text.encode("utf-8")) > max_bytes:
        text = text.encode("utf-8")[: max_bytes - 3].decode("utf-8", "ignore").rstrip() + "…"
    return text or None


def clean_url(url: Optional[str]) -> Optional[str]:
    """An absolute http(s) URL from the catalog, without its fragment, made ASCII (its host IDNA-encoded, any other
    non-ASCII percent-encoded as UTF-8), as ID3's URL frames (Latin-1) and every reader need; None for anything
    else (javascript:, a host IDNA cannot encode, ...)."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host or not url.isprintable() or " " in url:
        return None
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None  # e.g. a label longer than 63 characters once encoded
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (_ascii(userinfo) + "@" if userinfo else "") + host + (f":{port}" if port is not None else "")
    query = f"?{_ascii(parts.query)}" if parts.query else ""
    ascii_url = f"{parts.scheme.lower()}://{netloc}{_ascii(parts.path)}{query}"
    return ascii_url if len(ascii_url) <= MAX_URL_CHARS else None


def _ascii(text: str) -> str:
    """``text`` with every run of characters outside printable ASCII percent-encoded (UTF-8); escapes already in
    it are kept as they are."""
    return _NOT_ASCII.sub(lambda match: quote(match.group(), safe=""), text)


def clock(ms: int) -> str:
    """A time in an episode as a listener reads it: 12:30, or 1:02:05 past the hour."""
    seconds = ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def time_range(start_ms: int, duration_ms: int) -> str:
    return f"{clock(start_ms)}–{clock(start_ms + duration_ms)}"


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class ClipStory:
    """One clip as people are told about it."""

    start_ms: int
    duration_ms: int
    episode_title: Optional[str] = None
    podcast_title: Optional[str] = None
    episode_link: Optional[str] = None  # the episode's page or public audio, without a fragment

    @classmethod
    def of(
        cls,
        start_ms: int,
        duration_ms: int,
        episode_title: Optional[str] = None,
        podcast_title: Optional[str] = None,
        episode_link: Optional[str] = None,
    ) -> "ClipStory":
        return cls(start_ms, duration_ms, clean_text(episode_title), clean_text(podcast_title), clean_url(episode_link))

    @property
    def range(self) -> str:
        return time_range(self.start_ms, self.duration_ms)

    @property
    def title(self) -> str:
        """The episode's title with the time range, or the range alone."""
        return f"{self.episode_title} ({self.range})" if self.episode_title else f"Clip {self.range}"

    @property
    def description(self) -> str:
        where = f"“{self.episode_title}”" if self.episode_title else "an episode"
        podcast = f" of {self.podcast_title}" if self.podcast_title else ""
        return f"A clip of {where}{podcast}, from {clock(self.start_ms)} to {clock(self.start_ms + self.duration_ms)}."

    @property
    def link_at_moment(self) -> Optional[str]:
        """The full episode at the clip's start, as a media fragment (``#t=start,end`` in seconds)."""
        if not self.episode_link:
            return None
        end = self.start_ms + self.duration_ms
        return f"{self.episode_link}#t={_seconds(self.start_ms)},{_seconds(end)}"

    def soundbite(self) -> dict:
        """Podcasting 2.0: what a publisher pastes into ``<podcast:soundbite startTime duration>title</...>``."""
        title = self.title
        if len(title) > SOUNDBITE_TITLE_CHARS:
            title = title[: SOUNDBITE_TITLE_CHARS - 1].rstrip() + "…"
        return {
            "startTime": float(_seconds(self.start_ms)),
            "duration": float(_seconds(self.duration_ms)),
            "title": title,
        }


def id3_tag(story: ClipStory) -> bytes:
    """An ID3v2.4 tag (UTF-8 text, no padding) saying what the clip is and where it comes from."""
    tag = ID3()
    tag.add(TIT2(encoding=3, text=story.title))
    if story.podcast_title:
        tag.add(TALB(encoding=3, text=story.podcast_title))
        tag.add(TPE1(encoding=3, text=story.podcast_title))
    tag.add(TLEN(encoding=3, text=str(story.duration_ms)))
    tag.add(COMM(encoding=3, lang="eng", desc="", text=story.description))
    if story.episode_link and story.episode_link.isascii():  # clean_url made it ASCII: URL frames are Latin-1
        tag.add(WOAS(url=story.episode_link))
        tag.add(WXXX(encoding=3, desc=LINK_DESCRIPTION, url=story.link_at_moment))
    out = io.BytesIO()
    tag.save(out, v1=0, v2_version=4, padding=lambda info: 0)
    return out.getvalue()


def tagged(story: ClipStory, audio: bytes) -> bytes:
    """``audio`` with the clip's tag in front, in place of any ID3v2 tags it began with (FFmpeg's encoder writes
    one). What follows the tag is ``audio``'s own bytes, untouched."""
    return id3_tag(story) + memoryview(audio)[leading_id3_bytes(audio) :]  # one copy of the audio, not two


def leading_id3_bytes(data: bytes) -> int:
    """Bytes taken by the ID3v2 tags at the start of ``data`` (some writers put several in a row)."""
    position = 0
    while data[position : position + 3] == b"ID3" and len(data) >= position + 10:
        size = 0
        for byte in data[position + 6 : position + 10]:
            size = (size << 7) | (byte & 0x7F)
        position += 10 + size + (10 if data[position + 5] & 0x10 else 0)
    return min(position, len(data))
