"""One call per route of the audio clip service, over the standard library's HTTP client.

- Every request has a timeout (connect and each read).
- Retried with exponential backoff and full jitter: a 429 (a rate limit), a 503, a 502 or 504 (a gateway), any other
  5xx that carries ``Retry-After`` or whose body lacks the contract's ``Code`` (API Gateway answering by itself, e.g.
  ``500 {"message": "Internal server error"}`` when the function is throttled), a connection that fails or times
  out, and a body cut short. A ``Retry-After`` header, in seconds or as an HTTP date, sets the wait instead, unless
  it is longer than ``max_retry_after_s`` (then the error is raised at once: the service asked for more patience
  than the caller has). Any other 4xx is never retried: the request itself is wrong. The service's own 500 (with a
  ``Code``, without ``Retry-After``) is not retried either: it does not heal by itself.
- Errors are exceptions carrying the contract's ``Code`` and ``Message`` and the HTTP status; a transport fault
  (``OSError``, ``http.client.HTTPException`` such as ``IncompleteRead``) is a ``TransportError``.
- Results are dataclasses; fields the service adds later are kept in ``extra``.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Type

RETRIED_STATUSES = (429, 502, 503, 504)  # and any 5xx without the contract's Code, or with Retry-After


# ------------------------------------------------------------------ errors


class ClipServiceError(Exception):
    """An error answer: ``status`` (HTTP), ``code`` and ``message`` (the contract's ``Code`` and ``Message``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after_s: Optional[float] = None,
        from_service: bool = True,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        # False when the body did not carry the contract's Code: an answer of something in front of the service
        self.from_service = from_service


class BadRequest(ClipServiceError):
    """400: a parameter is malformed or out of bounds (the message names it)."""


class NotFound(ClipServiceError):
    """404: no such episode, or its source audio is missing."""


class Unprocessable(ClipServiceError):
    """422: the episode's audio cannot be decoded."""


class TooManyRequests(ClipServiceError):
    """429: over the stage's rate limit (or a per-client limit); raised once the retries are spent."""


class ServiceUnavailable(ClipServiceError):
    """503: the catalog or storage is unavailable; raised once the retries are spent."""


class ServerError(ClipServiceError):
    """Any other 5xx."""


class TransportError(ClipServiceError):
    """No HTTP answer at all (connection refused or reset, timeout), once the retries are spent. ``status`` is 0."""


_BY_STATUS: Dict[int, Type[ClipServiceError]] = {
    400: BadRequest,
    404: NotFound,
    422: Unprocessable,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Clip:
    """The clip route's 200 answer."""

    clip_url: str
    expires_at: datetime
    cache_hit: bool
    episode_id: str
    start_time_ms: int
    duration_ms: int
    generation_time_ms: int
    play_url: Optional[str] = None
    share_url: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Clip":
        known = {
            "clip_url",
            "expires_at",
            "cache_hit",
            "episode_id",
            "start_time_ms",
            "duration_ms",
            "generation_time_ms",
            "play_url",
            "share_url",
        }
        return cls(
            clip_url=str(body["clip_url"]),
            expires_at=_parse_time(str(body["expires_at"])),
            cache_hit=bool(body["cache_hit"]),
            episode_id=str(body["episode_id"]),
            start_time_ms=int(body["start_time_ms"]),
            duration_ms=int(body["duration_ms"]),
            generation_time_ms=int(body["generation_time_ms"]),
            play_url=body.get("play_url"),
            share_url=body.get("share_url"),
            extra={k: v for k, v in body.items() if k not in known},
        )


@dataclass(frozen=True)
class Health:
    """The health route's answer (200, or 503 when ``deep`` found a fault: then ``ok`` is False)."""

    ok: bool
    status: str
    ffmpeg_version: Optional[str]
    checks: Dict[str, Any] = field(default_factory=dict)
    problems: Tuple[str, ...] = ()
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OEmbed:
    """The oEmbed route's answer (type ``rich``)."""

    type: str
    version: str
    title: str
    html: str
    width: Optional[int] = None
    height: Optional[int] = None
    provider_name: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ the client


class AudioClipsClient:
    """``AudioClipsClient("https://clips.example.com/api")``: the base URL up to (not including) ``/api/v1``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        api_key: Optional[str] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self._headers = {"Accept": "application/json", "User-Agent": "audio-clips-client/0.1"}
        if api_key:
            self._headers["X-Api-Key"] = api_key
        self._sleep = sleep
        # No redirects followed (the clip route's 302 is an answer), no proxy from the environment for loopback.
        self._opener = urllib.request.build_opener(_NoRedirect)

    # -- routes

    def get_clip(self, episode_id: str, start_time_ms: int, duration_ms: Optional[int] = None) -> Clip:
        """``GET /api/v1/audio_clips/{episode_id}``: the clip's pre-signed URL, cutting it on first request."""
        status, _, body = self._get(_clip_path(episode_id), _clip_query(start_time_ms, duration_ms))
        return Clip.from_json(_json(status, body))

    def get_clip_location(self, episode_id: str, start_time_ms: int, duration_ms: Optional[int] = None) -> str:
        """The same route with ``redirect=true``: the URL its 302 points at (the clip itself)."""
        query = {**_clip_query(start_time_ms, duration_ms), "redirect": "true"}
        status, headers, _ = self._get(_clip_path(episode_id), query, accept="*/*")
        location = headers.get("location")
        if status != 302 or not location:
            raise ServerError(status, "UnexpectedAnswer", f"expected a 302 with Location, got {status}")
        return location

    def health(self, deep: bool = False) -> Health:
        """``GET /api/v1/health`` (``deep``: MongoDB and S3 too). A 503 from a deep check is an answer, not an
        error: ``Health.ok`` is False and ``problems`` says why."""
        status, _, body = self._get("/api/v1/health", {"deep": "true"} if deep else {}, answer_503=True)
        data = _json(status, body)
        ffmpeg = data.get("ffmpeg") or {}
        known = {"status", "ffmpeg", "checks", "problems"}
        return Health(
            ok=status == 200,
            status=str(data.get("status")),
            ffmpeg_version=ffmpeg.get("version"),
            checks=dict(data.get("checks") or {}),
            problems=tuple(data.get("problems") or ()),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def openapi(self) -> Dict[str, Any]:
        """``GET /api/v1/openapi.json``: the API's OpenAPI 3 description."""
        status, _, body = self._get("/api/v1/openapi.json", {})
        return _json(status, body)

    def share_page(self, episode_id: str, start_time_ms: int, duration_ms: Optional[int] = None) -> str:
        """``GET /clips/{episode_id}``: the clip's share page (HTML)."""
        path = "/clips/" + urllib.parse.quote(episode_id, safe="")
        _, _, body = self._get(path, _clip_query(start_time_ms, duration_ms), accept="text/html")
        return body.decode("utf-8")

    def oembed(self, url: str) -> OEmbed:
        """``GET /api/v1/oembed?url=...&format=json`` for a share page URL."""
        status, _, body = self._get("/api/v1/oembed", {"url": url, "format": "json"})
        data = _json(status, body)
        known = {"type", "version", "title", "html", "width", "height", "provider_name"}
        return OEmbed(
            type=str(data["type"]),
            version=str(data["version"]),
            title=str(data.get("title", "")),
            html=str(data["html"]),
            width=data.get("width"),
            height=data.get("height"),
            provider_name=data.get("provider_name"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    # -- the one place requests are made

    def _get(
        self, path: str, query: Mapping[str, str], accept: str = "application/json", answer_503: bool = False
    ) -> Tuple[int, Mapping[str, str], bytes]:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {**self._headers, "Accept": accept}
        attempt = 0
        while True:
            try:
                status, answer_headers, body = self._send(url, headers)
            except (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException) as error:
                failure: ClipServiceError = TransportError(
                    0, "TransportError", f"{type(error).__name__}: {getattr(error, 'reason', error)}"
                )
                failure.__cause__ = error
                wait = self._backoff(attempt)
            else:
                if status < 400 or (answer_503 and status == 503):
                    return status, answer_headers, body
                failure = _error(status, answer_headers, body)
                if not _retried(failure):
                    raise failure
                wait = failure.retry_after_s if failure.retry_after_s is not None else self._backoff(attempt)
                if wait > self.max_retry_after_s:
                    raise failure
            if attempt >= self.retries:
                raise failure
            attempt += 1
            self._sleep(wait)

    def _send(self, url: str, headers: Mapping[str, str]) -> Tuple[int, Mapping[str, str], bytes]:
        request = urllib.request.Request(url, headers=dict(headers), method="GET")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return response.status, _lower(response.headers.items()), response.read()
        except urllib.error.HTTPError as answer:  # an HTTP answer with an error status: not a transport fault
            with answer:
                return answer.code, _lower(answer.headers.items()), answer.read()

    def _backoff(self, attempt: int) -> float:
        """Full jitter: a random wait up to backoff * 2^attempt, capped."""
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * (2**attempt)))


def _lower(items: Iterable[Tuple[str, str]]) -> Dict[str, str]:
    """Headers by lower-case name (HTTP names are case-insensitive)."""
    return {name.lower(): value for name, value in items}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _clip_path(episode_id: str) -> str:
    return "/api/v1/audio_clips/" + urllib.parse.quote(episode_id, safe="")


def _clip_query(start_time_ms: int, duration_ms: Optional[int]) -> Dict[str, str]:
    query = {"start_time_ms": str(int(start_time_ms))}
    if duration_ms is not None:
        query["duration_ms"] = str(int(duration_ms))
    return query


def _json(status: int, body: bytes) -> Dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise ServerError(status, "UnexpectedAnswer", f"not JSON: {body[:200]!r}") from None
    if not isinstance(data, dict):
        raise ServerError(status, "UnexpectedAnswer", f"not a JSON object: {body[:200]!r}")
    return data


def _retried(failure: ClipServiceError) -> bool:
    """Whether waiting can cure this answer: a rate limit, a gateway, or a 5xx that says so (see the module's doc)."""
    if failure.status in RETRIED_STATUSES:
        return True
    if failure.status >= 500:
        return failure.retry_after_s is not None or not failure.from_service
    return False


def _error(status: int, headers: Mapping[str, str], body: bytes) -> ClipServiceError:
    code, message, from_service = "HTTPError", body[:300].decode("utf-8", "replace"), False
    try:
        data = json.loads(body)
    except ValueError:
        data = None  # not JSON (a proxy's page): keep the status and the text
    if isinstance(data, dict) and "Code" in data:
        code, message, from_service = str(data["Code"]), str(data.get("Message", message)), True
    elif isinstance(data, dict) and "message" in data:  # API Gateway's own default answer
        code, message = "GatewayError", str(data["message"])
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ClipServiceError)
    return kind(status, code, message, _retry_after(headers.get("retry-after")), from_service)


def _retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` in seconds, from delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
