"""What a request asks, validated before any I/O (``BadRequest`` names the parameter and what is allowed), and the
request's deadline."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional
from urllib.parse import unquote

from chalicelib.clips.service import ClipRequest
from chalicelib.clips.snapping import SNAP_VALUES
from chalicelib.errors import BadRequest
from chalicelib.settings import DEFAULT_CLIP_MS, MIN_CLIP_MS
from chalicelib.stores.keys import is_episode_id
from chalicelib.web.middleware import gateway_received_at

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
    return ParsedClipRequest(ClipRequest(episode_id, start, duration, snap(query)), boolean(query, "redirect"))


def snap(query: Mapping[str, str]) -> Optional[str]:
    """``snap``: absent (the clip as asked) or one of SNAP_VALUES (contract section 6)."""
    raw = query.get("snap")
    if raw is None:
        return None
    if raw not in SNAP_VALUES:
        allowed = " or ".join(f"'{value}'" for value in SNAP_VALUES)
        raise BadRequest(f"snap must be {allowed} (or left out for the clip as asked), got {raw[:20]!r}")
    return raw


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
    cut the request off. API Gateway's 29 s run from when it received the request (``requestTimeEpoch``): a cold
    start and the invoke latency have used part of them before this handler runs."""
    budget = API_GATEWAY_LIMIT_S
    received = gateway_received_at()
    if received is not None:
        budget -= min(max(time.time() - received, 0.0), API_GATEWAY_LIMIT_S)  # a clock behind the gateway's: none
    if lambda_context is not None:
        budget = min(budget, lambda_context.get_remaining_time_in_millis() / 1000)
    return time.monotonic() + max(budget - RESPONSE_MARGIN_S, 0.5)


def query_params(request: Any) -> Optional[Mapping[str, str]]:
    """The request's query parameters (Chalice gives None, not {}, when there are none, or no request at all)."""
    return getattr(request, "query_params", None)
