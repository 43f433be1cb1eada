"""Structured logs: one JSON object per line, written by Powertools for AWS Lambda's formatter.

Every module logs through the standard ``logging.getLogger(...)``; ``configure()`` puts Powertools'
``LambdaPowertoolsFormatter`` on the root handler, so each line carries ``timestamp``, ``level``, ``location``,
``service``, the X-Ray trace id (``xray_trace_id``, from ``_X_AMZN_TRACE_ID``) and, from here, the invocation's
``function_request_id``, ``cold_start`` and ``function_name`` (Powertools' own key names). ``LOG_LEVEL`` (or
``POWERTOOLS_LOG_LEVEL``, or Lambda's ``AWS_LAMBDA_LOG_LEVEL``) sets the level; the default is INFO.

``emit(logger, level, **fields)`` writes one event line with ``fields`` at the top level (the request line).
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
    from aws_lambda_powertools.logging.types import PowertoolsLogRecord

SERVICE = "audio-clips"
LEVEL_VARIABLES = ("POWERTOOLS_LOG_LEVEL", "LOG_LEVEL", "AWS_LAMBDA_LOG_LEVEL")  # the first one set wins

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_first_request_id: Optional[str] = None


def cold_start(current: str) -> Optional[bool]:
    """Whether ``current`` is the first invocation this process serves: the first request id any line carries.
    (Every invocation logs at least its own line, so the first id seen is the cold one.) None outside one."""
    global _first_request_id
    if current == "-":
        return None
    if _first_request_id is None:
        _first_request_id = current
    return current == _first_request_id


def _formatter() -> "LambdaPowertoolsFormatter":
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    class RequestFormatter(LambdaPowertoolsFormatter):
        """Powertools' line, plus the invocation's keys, with ``emit``'s fields at the top level."""

        def serialize(self, log: "dict[str, Any] | PowertoolsLogRecord") -> str:
            line: dict[str, Any] = dict(log)
            fields = line.pop("fields", None)
            if isinstance(fields, dict):
                line.update(fields)
            current = request_id.get()
            if current != "-":
                line["function_request_id"] = current
                line["cold_start"] = cold_start(current)
            function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
            if function_name:
                line["function_name"] = function_name
            return super().serialize(line)

    return RequestFormatter(service=SERVICE, utc=True, use_rfc3339=True, json_default=str)


def level_from_env() -> str:
    for name in LEVEL_VARIABLES:
        value = os.environ.get(name, "").strip().upper()
        if value:
            if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                from chalicelib.errors import ConfigurationError

                raise ConfigurationError(f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
            return value
    return "INFO"


def configure() -> None:
    """Route every logger (Chalice's own included) through one Powertools JSON handler on stdout, once."""
    root = logging.getLogger()
    if any(getattr(h, "audio_clips", False) for h in root.handlers):
        return
    for handler in list(root.handlers):  # Lambda's bootstrap installs a plain-text handler: replace it, only it
        if type(handler) is logging.StreamHandler or type(handler).__name__.startswith("Lambda"):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_formatter())
    handler.audio_clips = True  # type: ignore[attr-defined]  # marks the handler this module installed
    root.addHandler(handler)
    root.setLevel(level_from_env())
    for noisy in ("botocore", "boto3", "urllib3", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def emit(logger: logging.Logger, level: int, **fields: Any) -> None:
    """One event line: ``fields`` become top-level keys (``event`` names the line)."""
    logger.log(level, fields.get("event", ""), extra={"fields": fields}, stacklevel=2)
