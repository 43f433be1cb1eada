"""CloudWatch metrics as embedded metric format (EMF) lines, written by Powertools for AWS Lambda's
``EphemeralMetrics``: a JSON line on stdout that CloudWatch turns into metrics, no API call, nothing shared between
concurrent requests (one metric set per request). ``POWERTOOLS_METRICS_DISABLED=true`` silences them.

Namespace ``AudioClips``; every metric has the ``Service`` dimension (the app and stage, ``audio-clips-prod``).

Per request (``record_request``): ``Requests``; ``Hits``; ``Misses``, ``MissLatency`` (ms) and ``SourceBytesRead``
(bytes), also by ``CutMethod``; ``Errors``, also by ``StatusCode`` (with ``Requests``). Per health check
(``record_health``): ``MongoPingOk``, ``MongoPingLatencyMs`` and, when the Atlas API answered, ``AtlasClusterPaused``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics import EphemeralMetrics

NAMESPACE = "AudioClips"


def metric_service() -> str:
    """The ``Service`` dimension: the app and stage (``audio-clips-prod``), from the function's own name."""
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "audio-clips")
    for suffix in ("-health_check", "-cleanup_clips"):
        if function.endswith(suffix):
            return function[: -len(suffix)]
    return function


def _metric_set() -> "EphemeralMetrics":
    from aws_lambda_powertools.metrics import EphemeralMetrics

    metrics = EphemeralMetrics(namespace=NAMESPACE)
    metrics.add_dimension("Service", metric_service())
    return metrics


def record_request(fields: Mapping[str, Any], request_id: Optional[str] = None) -> None:
    """One EMF line for a served request, from its log line's fields (``status``, ``cache_hit``, ``method``,
    ``total_ms``, ``source_bytes_read``)."""
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = _metric_set()
    service = metric_service()
    status = int(fields.get("status", 0))
    metrics.add_metric("Requests", MetricUnit.Count, 1)
    if status == 200 and fields.get("cache_hit") is True:
        metrics.add_metric("Hits", MetricUnit.Count, 1)
    elif status == 200 and fields.get("cache_hit") is False:
        metrics.add_metric("Misses", MetricUnit.Count, 1)
        metrics.add_metric("MissLatency", MetricUnit.Milliseconds, float(fields.get("total_ms", 0)))
        if fields.get("source_bytes_read") is not None:
            metrics.add_metric("SourceBytesRead", MetricUnit.Bytes, int(fields["source_bytes_read"]))
        if fields.get("method"):
            metrics.add_dimensions(Service=service, CutMethod=str(fields["method"]))
    elif status >= 400:
        metrics.add_metric("Errors", MetricUnit.Count, 1)
        metrics.add_dimensions(Service=service, StatusCode=str(status))
    if request_id:
        metrics.add_metadata("function_request_id", request_id)
    metrics.flush_metrics()


def record_health(healthy: bool, latency_ms: float, atlas_paused: Optional[bool], diagnosis: str) -> None:
    """One EMF line for a health check run."""
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = _metric_set()
    metrics.add_metric("MongoPingOk", MetricUnit.Count, 1 if healthy else 0)
    metrics.add_metric("MongoPingLatencyMs", MetricUnit.Milliseconds, latency_ms)
    if atlas_paused is not None:
        metrics.add_metric("AtlasClusterPaused", MetricUnit.Count, 1 if atlas_paused else 0)
    metrics.add_metadata("diagnosis", diagnosis)
    metrics.flush_metrics()
