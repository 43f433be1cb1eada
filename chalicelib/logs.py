"""Structured logs: one JSON object per line, carrying the request id of the request being served."""
from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any, Dict

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: Dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "request_id": request_id.get(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: int = logging.INFO) -> None:
    """Route every logger (Chalice's own included) through one JSON handler on stdout, once."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    for handler in list(root.handlers):  # Lambda's bootstrap installs a plain-text handler: replace it, only it
        if type(handler) is logging.StreamHandler or type(handler).__name__.startswith("Lambda"):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def emit(logger: logging.Logger, level: int, **fields: Any) -> None:
    logger.log(level, fields.get("event", ""), extra={"fields": fields})
