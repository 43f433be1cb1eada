"""X-Ray tracing, a stage option (TRACING=true with Chalice's "xray": true): each invocation in a subsegment named
for what it served, with boto3, botocore, requests and pymongo calls traced by Powertools' Tracer.

The Tracer (and the X-Ray SDK under it) is imported on the first traced invocation only: a stage without tracing,
and a cold cache hit in any stage, never pays for the import."""

from __future__ import annotations

import functools
from typing import Any, Callable


@functools.lru_cache(maxsize=1)
def tracer() -> Any:
    from aws_lambda_powertools import Tracer

    return Tracer(service="audio-clips")  # patches boto3, botocore, requests, pymongo... once per process


def around(enabled: bool, name: str, call: Callable[[], Any]) -> Any:
    """``call()``, inside an X-Ray subsegment when tracing is on."""
    if not enabled:
        return call()
    with tracer().provider.in_subsegment(name=f"## {name}"):
        return call()


def event_name(event: Any) -> str:
    """What an invocation served: the route's path for HTTP events, the function otherwise."""
    request = getattr(event, "path", None)
    return str(request) if request else type(event).__name__
