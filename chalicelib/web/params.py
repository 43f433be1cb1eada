"""What a request asks, validated before any I/O (``BadRequest`` names the parameter and what is allowed), and the
request's deadline."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional
from urllib.parse import unquote

from chalicelib.clips.service import ClipRequest
from chalicelib.errors import BadRequest
from chalicelib.settings import DEFAULT_CLIP_MS, MIN_CLIP_MS
from chalicelib.stores.keys import is_episode_id

_DIGITS = re.compile(r"[0-9]{1,12}")
API_GATEWAY_LIMIT_S = 29.0
RESPONSE_MARGIN_S = 2.0  # kept back from the Lambda's remaining time to answer with an error instead of dying


@dataclass(frozen=True)
class ParsedClipRequest:
    clip: ClipRequest
    redirect: bool


def parse_clip_request(episode_id: str, query: Optional[Mapping[str, str]], max_clip_ms: int) -> ParsedClipRequest:
    """Validate everything the client sent before any I/O; BadRequest names the parameter and what is allowed."""
    episode_id = unquote(episode_id or "")  # a client may send substack%3A123; '%' is never part of an id
    if not is_episode_id(episode_id):
        raise BadRequest(
            "episode_id must be 1 to 200 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-' "
            "(a UUID or a prefixed id such as substack:123456)"
        )
    query = query or {}
    start = _integer(query, "start_time_ms", None, 0, None)
    duration = _integer(query, "duration_ms", DEFAULT_CLIP_MS, MIN_CLIP_MS, max_clip_ms)
    return ParsedClipRequest(ClipRequest(episode_id, start, duration), boolean(query, "redirect"))


def refuse_snap(query: Optional[Mapping[str, str]]) -> None:
    """``snap`` (contract section 6) is not served yet: any value is a 400 rather than a clip that ignores it.
    Issue 22 replaces this with ``snap`` in ``parse_clip_request``; the waveform and card routes then follow it
    with no other change (they derive from whatever clip ``ClipService.get_clip`` serves)."""
    if query and "snap" in query:
        raise BadRequest(f"snap is not supported yet, got {query['snap'][:20]!r}: leave it out")


def boolean(query: Optional[Mapping[str, str]], name: str) -> bool:
    raw = (query or {}).get(name, "false")
    if raw.lower() not in ("true", "false"):
        raise BadRequest(f"{name} must be 'true' or 'false', got {raw[:20]!r}")
    return raw.lower() == "true"


def _integer(query: Mapping[str, str], name: str, default: Optional[int], low: int, high: Optional[int]) -> int:
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"{name} is required: an integer >= {low}")
        return default
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    if not _DIGITS.fullmatch(raw):
        raise BadRequest(f"{name} must be {allowed}, got {raw[:20]!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise BadRequest(f"{name} must be {allowed}, got {value}")
    return value


def deadline(lambda_context: Any) -> float:
    """The ``time.monotonic()`` by which work must stop, leaving time to answer before Lambda or API Gateway
    cut the request off."""
    budget = API_GATEWAY_LIMIT_S
    if lambda_context is not None:
        budget = min(budget, lambda_context.get_remaining_time_in_millis() / 1000)
    return time.monotonic() + max(budget - RESPONSE_MARGIN_S, 0.5)


def query_params(request: Any) -> Optional[Mapping[str, str]]:
    """The request's query parameters (Chalice gives None, not {}, when there are none, or no request at all)."""
    return getattr(request, "query_params", None)
