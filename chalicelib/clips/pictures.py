"""What a clip looks like: its waveform (audiowaveform JSON) and its share card (a 1200 x 630 PNG), each derived
from the served clip's own audio, computed on first request and cached beside the clip
(``audio_clips/{guid}/{start}-{end}.waveform.json`` and ``.card.png``), so that the cleanup purges them with it.

Each costs at most one decode of the clip (FFmpeg, mono at 8 kHz) and one render; the card draws the cached
waveform when there is one, so it costs no decode then. A cached artefact is served only when the source version
(ETag) in its metadata is that of the clip now served, which the clip service has just checked against the source;
otherwise it is computed again and replaces the stale one.

Which range is served is the clip service's to decide (``ClipService.get_clip``: clamped at the episode's end
and, with ``snap=pause``, snapped to pauses there, inside ``get_clip``). This
module only ever derives from the clip ``get_clip`` returned (``ClipResult.key``), so a snapped clip's waveform
and card follow it with no change here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, Optional

from chalicelib.audio.attribution import time_range
from chalicelib.audio.waveform import is_waveform, pairs, waveform
from chalicelib.cards import CardText
from chalicelib.clips.service import ClipRequest, ClipResult, ClipService, Timer
from chalicelib.deadlines import until
from chalicelib.errors import ClipTimeout, ServiceError
from chalicelib.stores.clip_cache import ClipStore, Provenance
from chalicelib.stores.keys import CARD_NAME, WAVEFORM_NAME, beside_clip

log = logging.getLogger(__name__)

WAVEFORM_TYPE = "application/json"
CARD_TYPE = "image/png"


@dataclass
class Waveform:
    document: Dict[str, Any]
    clip: ClipResult
    cache_hit: bool
    provenance: Provenance  # the source version the clip, and so this waveform, came from
    timings_ms: Dict[str, float] = field(default_factory=dict)


@dataclass
class Card:
    url: str
    expires_at: datetime
    clip: ClipResult
    cache_hit: bool
    png_bytes: Optional[int] = None  # when rendered by this request
    timings_ms: Dict[str, float] = field(default_factory=dict)
    png: Optional[bytes] = None  # the card itself, when asked for (``with_png``)


def card_text(clip: ClipResult) -> CardText:
    return CardText(clip.episode_title, clip.podcast_title, range_text(clip.start_ms, clip.duration_ms))


def range_text(start_ms: int, duration_ms: int) -> str:
    """The clip's range as the share page says it: '1:00–1:30 · 30 s'."""
    seconds = duration_ms / 1000
    length = f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{time_range(start_ms, duration_ms)} · {length}"


class ClipPictures:
    def __init__(self, clips: ClipService, store: ClipStore, ffmpeg: Callable[[], Optional[str]]):
        self._clips = clips
        self._store = store
        self._ffmpeg = ffmpeg

    def waveform(self, request: ClipRequest, deadline: float) -> Waveform:
        """``GET /api/v1/audio_clips/{episode_id}/waveform``: the served clip (cut if need be), then its waveform."""
        return self.waveform_of(self._clips.get_clip(request, deadline), deadline)

    def waveform_of(self, clip: ClipResult, deadline: float) -> Waveform:
        """The waveform of a clip the clip service has just served: cached, or one decode of the clip."""
        laps = Timer()
        key = beside_clip(clip.key, WAVEFORM_NAME)
        cached = self._store.derived(key, deadline, body=True)
        laps.lap("cache_lookup")
        if cached is not None and cached.provenance.source_etag == clip.source_etag:
            document = _json(cached.body)
            if is_waveform(document):
                return Waveform(document, clip, True, cached.provenance, laps.laps)
        data, provenance = self._store.read_clip(clip.key, deadline)
        laps.lap("read_clip")
        document = waveform(self._ffmpeg_path(), data, deadline)
        laps.lap("decode")
        body = json.dumps(document, separators=(",", ":")).encode()
        self._store.put_derived(key, body, WAVEFORM_TYPE, provenance, clip.episode_id, deadline)
        laps.lap("store")
        return Waveform(document, clip, False, provenance, laps.laps)

    def card(self, request: ClipRequest, deadline: float, with_png: bool = False) -> Card:
        """``GET /clips/{episode_id}/card.png``: the served clip (cut if need be), then its card's signed URL and,
        ``with_png``, its bytes (read in the same request that checks the cached card: a GET instead of a HEAD). A
        card is drawn from the clip's waveform (cached, or one decode) and rendered once."""
        clip = self._clips.get_clip(request, deadline)
        laps = Timer()
        key = beside_clip(clip.key, CARD_NAME)
        cached = self._store.derived(key, deadline, body=with_png)
        laps.lap("cache_lookup")
        png_bytes = None
        png = cached.body if cached is not None else None
        if cached is None or cached.provenance.source_etag != clip.source_etag:
            wave = self.waveform_of(clip, deadline)
            laps.laps.update({f"waveform_{name}": ms for name, ms in wave.timings_ms.items()})
            laps.lap("waveform")
            if time.monotonic() > deadline:
                raise ClipTimeout("Drawing the clip's card took too long; try again shortly")
            from chalicelib.cards.card import render_card  # Pillow: loaded by the first card, not by the page

            png = render_card(card_text(clip), pairs(wave.document))
            laps.lap("render")
            self._store.put_derived(key, png, CARD_TYPE, wave.provenance, clip.episode_id, deadline)
            png_bytes = len(png)
            laps.lap("store")
        if with_png and png is not None:
            return Card("", clip.expires_at, clip, png_bytes is None, png_bytes, laps.laps, png=png)
        with until(deadline):  # CloudFront's signing key is read from SSM on first use
            url, expires = self._store.presign(key, version=clip.source_etag)
        return Card(url, expires, clip, png_bytes is None, png_bytes, timings_ms=laps.laps)

    def _ffmpeg_path(self) -> str:
        path = self._ffmpeg()
        if path is None:
            raise ServiceError(
                "This service cannot draw waveforms: FFmpeg is missing",
                detail="no FFmpeg binary found (FFMPEG_PATH, /opt/bin/ffmpeg)",
            )
        return path


def _json(body: Optional[bytes]) -> Any:
    try:
        return json.loads(body or b"")
    except ValueError:
        return None
