"""The HTTP face of the service: parameters in, the contract's answers out, and one log line per request."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import unquote

from chalice import Response

from chalicelib import links, logs, metrics
from chalicelib.attribution import ClipStory
from chalicelib.clips import ClipRequest, ClipResult
from chalicelib.errors import BadRequest, ServiceError, error_body
from chalicelib.settings import DEFAULT_CLIP_MS, MIN_CLIP_MS
from chalicelib.storage import is_episode_id

log = logging.getLogger("audio_clips.request")

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


def clip_response(result: ClipResult, request: ParsedClipRequest, base_url: str) -> Response:
    """The clip route's answer: a 302 to the clip with ``redirect=true``, else the JSON body, whose ``play_url``
    (under ``base_url``, see chalicelib/links.py) is the lasting link a client should store."""
    current = _current.get(None)
    generation_ms = round((time.perf_counter() - current.started) * 1000) if current else 0
    note(
        episode_id=result.episode_id,
        cache_hit=result.cache_hit,
        method=result.method,
        start_time_ms=result.start_ms,
        duration_ms=result.duration_ms,
        source_bytes_read=result.source_bytes_read,
        source_requests=result.source_requests,
        clip_bytes=result.clip_bytes,
        regenerated_stale=result.regenerated_stale,
        index_built=result.index_built,
        timings_ms=result.timings_ms,
    )
    if request.redirect:
        return Response(body="", status_code=302, headers={"Location": result.clip_url, "Cache-Control": "no-store"})
    body = {
        "clip_url": result.clip_url,
        "expires_at": _iso(result.expires_at),
        "cache_hit": result.cache_hit,
        "episode_id": result.episode_id,
        "start_time_ms": result.start_ms,
        "duration_ms": result.duration_ms,
        "generation_time_ms": generation_ms,
        "play_url": links.play_url(base_url, result.episode_id, request.clip.start_ms, request.clip.duration_ms),
    }
    body.update(sharing_fields(result, base_url, request.clip.duration_ms))
    return Response(body=body, status_code=200, headers={"Cache-Control": "no-store"})


def sharing_fields(result: ClipResult, base: str, requested_duration_ms: int) -> Dict[str, Any]:
    """``share_url`` (with ``base``, this service's absolute base; for the clip as requested, as ``play_url``), the
    titles the catalog has, and a Podcasting 2.0 ``soundbite`` of the clip served, for the episode's feed."""
    story = ClipStory.of(result.start_ms, result.duration_ms, result.episode_title, result.podcast_title)
    share_url = links.share_url(base, result.episode_id, result.start_ms, requested_duration_ms)
    fields: Dict[str, Any] = {"share_url": share_url}
    if story.episode_title:
        fields["episode_title"] = story.episode_title
    if story.podcast_title:
        fields["podcast_title"] = story.podcast_title
    fields["soundbite"] = story.soundbite()
    return fields


def cors_headers(origin: Optional[str], allowed_origins) -> Dict[str, str]:
    if not origin or not allowed_origins:
        return {}
    if "*" in allowed_origins:
        allow = "*"
    elif origin.rstrip("/") in allowed_origins:
        allow = origin
    else:
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": allow,
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, X-Api-Key",
        "Access-Control-Expose-Headers": "Retry-After",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def preflight() -> Response:
    """The answer to a browser's OPTIONS preflight; the middleware adds the CORS headers if the origin may call."""
    return Response(body="", status_code=204)


def error_response(error: ServiceError) -> Response:
    return Response(body=error_body(error), status_code=error.status, headers={**error.headers})


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _RequestState:
    started: float
    fields: Dict[str, Any]
    exc_info: Any = None  # an unexpected exception, logged with the request's line


_current: "contextvars.ContextVar[_RequestState]" = contextvars.ContextVar("request_state")


def note(**fields: Any) -> None:
    """Add fields to the current request's log line."""
    current = _current.get(None)
    if current is not None:
        current.fields.update({k: v for k, v in fields.items() if v is not None})


def query_params(request: Any) -> Optional[Mapping[str, str]]:
    """The request's query parameters (Chalice gives None, not {}, when there are none, or no request at all)."""
    return getattr(request, "query_params", None)


def serve(request: Any, get_response: Callable[[Any], Response], allowed_origins=()) -> Response:
    """The HTTP middleware and the one catch-all: maps ServiceError to the contract's JSON answer and any other
    exception to the contract's 500 naming the request id (its traceback on the request's log line), adds CORS
    headers for allowed browser origins (errors included, so a web client can read them), and logs one line per
    request whatever happened."""
    context = getattr(request, "lambda_context", None)
    request_id = (
        getattr(context, "aws_request_id", None) or (request.context or {}).get("requestId") or str(uuid.uuid4())
    )
    id_token = logs.request_id.set(request_id)
    state = _RequestState(time.perf_counter(), {"event": "request", "path": request.path, "request_id": request_id})
    state_token = _current.set(state)
    try:
        try:
            response = _answer(request, get_response, allowed_origins)
            if state.exc_info is not None:  # Chalice turned a view's exception into its own 500: answer ours
                response = _internal_error(request_id)
        except Exception:
            state.exc_info = sys.exc_info()
            response = _internal_error(request_id)
        state.fields["status"] = response.status_code
        state.fields["total_ms"] = round((time.perf_counter() - state.started) * 1000, 1)
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        log.log(level, "request", extra={"fields": state.fields}, exc_info=state.exc_info)
        metrics.record_request(state.fields, request_id)
        return response
    finally:
        _current.reset(state_token)
        logs.request_id.reset(id_token)


def _answer(request: Any, get_response: Callable[[Any], Response], allowed_origins) -> Response:
    try:
        response = get_response(request)
    except ServiceError as error:
        response = error_response(error)
        note(error=error.code, message=error.message, detail=error.detail)
    response.headers.update(cors_headers((request.headers or {}).get("origin"), allowed_origins))
    return response


def _internal_error(request_id: str) -> Response:
    error = ServiceError(f"An internal server error occurred; it is logged under request id {request_id}")
    note(error=error.code, message=error.message)
    return error_response(error)


def unhandled_view_error(record: logging.LogRecord) -> bool:
    """A filter for Chalice's ``app.log``: Chalice reports an exception escaping a view there, then answers its
    own 500; the exception joins the request's log line instead, and ``serve`` answers the contract's 500."""
    current = _current.get(None)
    if current is None or not record.exc_info:
        return True
    current.exc_info = record.exc_info
    return False


def health_response(wiring: Any, deep: bool) -> Response:
    """Liveness: FFmpeg found (cheap); with ``deep``, MongoDB and S3 answer too."""
    from chalicelib.ffmpeg import ffmpeg_version

    body: Dict[str, Any] = {"status": "ok", "ffmpeg": None}
    problems = []
    path = wiring.ffmpeg
    if path:
        body["ffmpeg"] = {"path": path, "version": ffmpeg_version(path)}
    else:
        problems.append("FFmpeg not found (FFMPEG_PATH, /opt/bin/ffmpeg)")
    if deep:
        checks = body["checks"] = {}
        for name, check in (("mongodb", lambda: wiring.catalog.ping()), ("s3", lambda: wiring.clip_store.ping())):
            started = time.perf_counter()
            try:
                check()
                checks[name] = {"ok": True}
            except ServiceError as error:
                checks[name] = {"ok": False, "error": error.message}
                problems.append(f"{name}: {error.message}")
            checks[name]["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if problems:
        body.update(status="unavailable", problems=problems)
        return Response(body=body, status_code=503, headers={"Retry-After": "30"})
    return Response(body=body, status_code=200)


@functools.lru_cache(maxsize=1)
def openapi_document() -> Dict[str, Any]:
    """The API's OpenAPI 3 description, kept beside this module (and checked against the service by schemathesis)."""
    with open(os.path.join(os.path.dirname(__file__), "openapi.json"), encoding="utf-8") as handle:
        return json.load(handle)
