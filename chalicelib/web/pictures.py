"""The waveform route (audiowaveform JSON, the clip route's JSON errors) and the card route (a redirect to the
card's signed URL, as a cached clip is served; the share page's HTML errors)."""

from __future__ import annotations

import logging
from typing import Any

from chalice import Response

from chalicelib.errors import ServiceError
from chalicelib.web.middleware import note
from chalicelib.web.pages import PAGE_CACHE_CONTROL, error_page
from chalicelib.web.params import parse_clip_request, query_params

log = logging.getLogger(__name__)


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
    """``GET /clips/{episode_id}/card.png``: 302 to the card, or the HTML error page a person would see."""
    try:
        query = query_params(request)
        parsed = parse_clip_request(episode_id, query, wiring.declared.max_clip_ms)
        card = wiring.pictures.card(parsed.clip, deadline)
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
    return Response(body="", status_code=302, headers={"Location": card.url, "Cache-Control": "no-store"})


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
