"""The HTTP middleware: the one catch-all that maps errors to the contract's answers, CORS for allowed browser
origins, and one log line (and one metric set) per request."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from chalice import Response

from chalicelib.errors import ServiceError, error_body
from chalicelib.ops import logs, metrics

log = logging.getLogger("audio_clips.request")


def cors_headers(origin: Optional[str], allowed_origins) -> Dict[str, str]:
    """The CORS headers for a request from ``origin``. With CORS on, every answer says ``Vary: Origin`` (one
    without an Origin differs from one with), so that a shared cache never serves one in place of the other."""
    if not allowed_origins:
        return {}
    if not origin:
        return {"Vary": "Origin"}
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


@dataclass
class _RequestState:
    started: float
    fields: Dict[str, Any]
    exc_info: Any = None  # an unexpected exception, logged with the request's line
    gateway_received_at: Optional[float] = None  # epoch seconds API Gateway received the request, when it says


_current: "contextvars.ContextVar[_RequestState]" = contextvars.ContextVar("request_state")


def gateway_received_at() -> Optional[float]:
    """When API Gateway received the request being served (epoch seconds), from its request context's
    ``requestTimeEpoch``; None outside a request or without one (chalice local, the test client)."""
    current = _current.get(None)
    return current.gateway_received_at if current is not None else None


def _request_time(context: Any) -> Optional[float]:
    value = context.get("requestTimeEpoch") if isinstance(context, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return value / 1000


def note(**fields: Any) -> None:
    """Add fields to the current request's log line."""
    current = _current.get(None)
    if current is not None:
        current.fields.update({k: v for k, v in fields.items() if v is not None})


def elapsed_ms() -> int:
    """Milliseconds since the current request reached the middleware (0 outside a request)."""
    current = _current.get(None)
    return round((time.perf_counter() - current.started) * 1000) if current else 0


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
    state.gateway_received_at = _request_time(request.context)
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
