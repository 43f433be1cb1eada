"""The waveform route (audiowaveform JSON, the clip route's JSON errors) and the card route (a redirect to the
card's signed URL, as a cached clip is served; the share page's HTML errors)."""

from __future__ import annotations

import logging
from typing import Any, Optional

from chalice import Response

from chalicelib.clips.pictures import CARD_TYPE
from chalicelib.errors import ServiceError
from chalicelib.web.middleware import note
from chalicelib.web.pages import PAGE_CACHE_CONTROL, error_page
from chalicelib.web.params import parse_clip_request, query_params

log = logging.getLogger(__name__)

CARD_CACHE_CONTROL = "public, max-age=3600"  # a card changes only when its episode's audio is replaced


def waveform_response(request: Any, wiring: Any, episode_id: str, deadline: float) -> Response:
    """``GET /api/v1/audio_clips/{episode_id}/waveform``."""
    query = query_params(request)
    parsed = parse_clip_request(episode_id, query, wiring.declared.max_clip_ms)
    wave = wiring.pictures.waveform(parsed.clip, deadline)
    _note(wave.clip, waveform_cache_hit=wave.cache_hit, timings_ms={**wave.clip.timings_ms, **wave.timings_ms})
    return Response(
        body=wave.document,
        status_code=200,
        headers={"Content-Type": "application/json", "Cache-Control": PAGE_CACHE_CONTROL},
    )


def card_response(request: Any, wiring: Any, episode_id: str, deadline: float) -> Response:
    """``GET /clips/{episode_id}/card.png``: ``200 image/png`` (the contract) to a client whose ``Accept`` admits
    it, as link-preview crawlers' and browsers' do; a ``302`` to the card's signed URL for one that sends no such
    ``Accept`` (API Gateway would answer it with the PNG base64-encoded as text); the HTML error page a person
    would see otherwise."""
    try:
        query = query_params(request)
        parsed = parse_clip_request(episode_id, query, wiring.declared.max_clip_ms)
        inline = accepts_png((getattr(request, "headers", None) or {}).get("accept"))
        card = wiring.pictures.card(parsed.clip, deadline, with_png=inline)
    except ServiceError as error:
        return error_page(error)
    except Exception as error:
        log.exception("card failed")
        return error_page(ServiceError("Something went wrong on our side; try again later", detail=repr(error)))
    _note(
        card.clip,
        card_cache_hit=card.cache_hit,
        png_bytes=card.png_bytes,
        timings_ms={**card.clip.timings_ms, **card.timings_ms},
    )
    if card.png is not None:
        return Response(
            body=card.png, status_code=200, headers={"Content-Type": CARD_TYPE, "Cache-Control": CARD_CACHE_CONTROL}
        )
    return Response(body="", status_code=302, headers={"Location": card.url, "Cache-Control": "no-store"})


def accepts_png(accept: Optional[str]) -> bool:
    """Whether an ``Accept`` header admits ``image/png``: ``*/*``, ``image/*`` or ``image/png``, not at ``q=0``."""
    for item in (accept or "").split(","):
        kind, *params = [part.strip().lower() for part in item.split(";")]
        if kind in ("*/*", "image/*", CARD_TYPE) and not {"q=0", "q=0.0", "q=0.00", "q=0.000"} & set(params):
            return True
    return False


def _note(clip: Any, **fields: Any) -> None:
    note(
        episode_id=clip.episode_id,
        cache_hit=clip.cache_hit,
        method=clip.method,
        start_time_ms=clip.start_ms,
        duration_ms=clip.duration_ms,
        clip_bytes=clip.clip_bytes,
        **fields,
    )
