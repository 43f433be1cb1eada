"""Absolute links to this service's own routes: the lasting ``play_url`` and the ``share_url`` of a clip, its
embeddable player and its card.

The base comes from configuration or from API Gateway, never from a header a client can set (``Host``,
``X-Forwarded-*``, ``Forwarded``): ``PUBLIC_BASE_URL`` when set (a custom domain); otherwise the domain name and
stage API Gateway records in the request context (``requestContext.domainName`` and ``stage``; behind a custom
domain's base path mapping, that base path). Its scheme is ``https``; ``http`` only for a loopback host.
Without a request context domain (``chalice local``, Chalice's test client: no API Gateway in front), a loopback
``Host`` is the base, and anything else ``http://localhost``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional
from urllib.parse import quote, urlencode

CLIP_ROUTE = "/api/v1/audio_clips/"
SHARE_ROUTE = "/clips/"
OEMBED_ROUTE = "/api/v1/oembed"
LOCAL_BASE = "http://localhost"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")  # a DNS name: no scheme, port, path or userinfo
_LOOPBACK = re.compile(r"(localhost|127(\.[0-9]{1,3}){3}|\[::1\])(:[0-9]{1,5})?")
_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")  # a stage or base path: plain segments, nothing to escape


def base_url(request: Any, public_base_url: Optional[str]) -> str:
    """``https://domain/stage`` of this service, without a trailing slash."""
    if public_base_url:
        return public_base_url.rstrip("/")
    context: Mapping[str, Any] = getattr(request, "context", None) or {}
    domain = context.get("domainName")
    if isinstance(domain, str) and _DOMAIN.fullmatch(domain):
        scheme = "http" if _LOOPBACK.fullmatch(domain) else "https"
        return f"{scheme}://{domain.lower()}{stage_prefix(request)}"
    host = ((getattr(request, "headers", None) or {}).get("host") or "").strip().lower()
    return f"http://{host}" if _LOOPBACK.fullmatch(host) else LOCAL_BASE  # not behind API Gateway: a local run


def stage_prefix(request: Any) -> str:
    """The path API Gateway put before the route: ``/{stage}`` on an execute-api host; on a custom domain, the
    base path its mapping added (which the request context's ``path`` holds before the route); else empty."""
    context = getattr(request, "context", None) or {}
    event = request.to_original_event() if hasattr(request, "to_original_event") else {}
    full, route = context.get("path") or "", (event or {}).get("path") or ""
    stage = context.get("stage")
    if str(context.get("domainName") or "").endswith(".amazonaws.com") and isinstance(stage, str):
        prefix = f"/{stage}"
    elif route and full.endswith(route) and full != route:
        prefix = full[: len(full) - len(route)].rstrip("/")
    else:
        prefix = ""
    return prefix if _PATH.fullmatch(prefix) else ""


def clip_query(start_ms: int, duration_ms: int, snap: Optional[str] = None, **extra: str) -> str:
    """The query naming a clip as asked: its start, duration and, when asked, ``snap``."""
    fields: Dict[str, object] = {"start_time_ms": start_ms, "duration_ms": duration_ms}
    if snap:
        fields["snap"] = snap
    return urlencode({**fields, **extra})


def play_url(base: str, episode_id: str, start_ms: int, duration_ms: int, snap: Optional[str] = None) -> str:
    """The clip route answering 302 to a fresh clip URL: never expires, what clients should store."""
    query = clip_query(start_ms, duration_ms, snap, redirect="true")
    return f"{base}{CLIP_ROUTE}{quote(episode_id, safe=':')}?{query}"


def share_url(base: str, episode_id: str, start_ms: int, duration_ms: int, snap: Optional[str] = None) -> str:
    """The clip's share page, for people."""
    return f"{base}{SHARE_ROUTE}{quote(episode_id, safe=':')}?{clip_query(start_ms, duration_ms, snap)}"


def embed_url(base: str, episode_id: str, start_ms: int, duration_ms: int, snap: Optional[str] = None) -> str:
    """The clip's small player page, for iframes (``twitter:player``, oEmbed)."""
    return f"{base}{SHARE_ROUTE}{quote(episode_id, safe=':')}/embed?{clip_query(start_ms, duration_ms, snap)}"


def card_url(base: str, episode_id: str, start_ms: int, duration_ms: int, snap: Optional[str] = None) -> str:
    """The clip's share card, a 1200 x 630 PNG (``og:image``, ``twitter:image``)."""
    return f"{base}{SHARE_ROUTE}{quote(episode_id, safe=':')}/card.png?{clip_query(start_ms, duration_ms, snap)}"


def oembed_url(base: str, share: str) -> str:
    """The oEmbed answer describing a share page."""
    return f"{base}{OEMBED_ROUTE}?{urlencode({'url': share, 'format': 'json'})}"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
