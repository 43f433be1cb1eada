"""Absolute links to this service's own routes: the lasting ``play_url`` and the ``share_url`` of a clip, its
embeddable player and its card.

The base is ``PUBLIC_BASE_URL`` when set (a custom domain); otherwise the scheme, host and stage path of the
request being served, so that a link handed out behind API Gateway's ``/<stage>`` path keeps that path.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional
from urllib.parse import quote, urlencode

CLIP_ROUTE = "/api/v1/audio_clips/"
SHARE_ROUTE = "/clips/"
OEMBED_ROUTE = "/api/v1/oembed"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def base_url(request: Any, public_base_url: Optional[str]) -> str:
    """``https://host/stage`` of this service as the client reached it, without a trailing slash."""
    if public_base_url:
        return public_base_url.rstrip("/")
    headers: Mapping[str, str] = getattr(request, "headers", None) or {}
    host = headers.get("host") or "localhost"
    default_scheme = "http" if host.split(":")[0] in _LOOPBACK or host.startswith("[::1]") else "https"
    scheme = (headers.get("x-forwarded-proto") or default_scheme).split(",")[0].strip()
    return f"{scheme}://{host}{stage_prefix(request)}"


def stage_prefix(request: Any) -> str:
    """The path API Gateway put before the route (``/dev`` on an execute-api host, a base path on a custom
    domain); empty where there is none (chalice local, the test client)."""
    context = getattr(request, "context", None) or {}
    event = request.to_original_event() if hasattr(request, "to_original_event") else {}
    full, route = context.get("path") or "", (event or {}).get("path") or ""
    if route and full.endswith(route) and full != route:
        return full[: len(full) - len(route)].rstrip("/")
    return ""


def clip_query(start_ms: int, duration_ms: int, **extra: str) -> str:
    return urlencode({"start_time_ms": start_ms, "duration_ms": duration_ms, **extra})


def play_url(base: str, episode_id: str, start_ms: int, duration_ms: int) -> str:
    """The clip route answering 302 to a fresh clip URL: never expires, what clients should store."""
    return f"{base}{CLIP_ROUTE}{quote(episode_id, safe=':')}?{clip_query(start_ms, duration_ms, redirect='true')}"


def share_url(base: str, episode_id: str, start_ms: int, duration_ms: int) -> str:
    """The clip's share page, for people."""
    return f"{base}{SHARE_ROUTE}{quote(episode_id, safe=':')}?{clip_query(start_ms, duration_ms)}"


def embed_url(base: str, episode_id: str, start_ms: int, duration_ms: int) -> str:
    """The clip's small player page, for iframes (``twitter:player``, oEmbed)."""
    return f"{base}{SHARE_ROUTE}{quote(episode_id, safe=':')}/embed?{clip_query(start_ms, duration_ms)}"


def card_url(base: str, episode_id: str, start_ms: int, duration_ms: int) -> str:
    """The clip's share card, a 1200 x 630 PNG (``og:image``, ``twitter:image``)."""
    return f"{base}{SHARE_ROUTE}{quote(episode_id, safe=':')}/card.png?{clip_query(start_ms, duration_ms)}"


def oembed_url(base: str, share: str) -> str:
    """The oEmbed answer describing a share page."""
    return f"{base}{OEMBED_ROUTE}?{urlencode({'url': share, 'format': 'json'})}"
