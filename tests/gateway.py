"""The app invoked as API Gateway (REST, Lambda proxy integration) invokes it: the route's path in ``path``, and a
request context with what API Gateway records itself (the domain name and stage the client reached, the path with
any stage or base path, when the request arrived)."""

from __future__ import annotations

import time
import uuid
from typing import Dict, Optional

EXECUTE_API = "abc123.execute-api.us-east-1.amazonaws.com"


class LambdaContext:
    aws_request_id = "gateway-test"

    def __init__(self, remaining_ms: int = 28_000):
        self._remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms


def gateway_event(
    resource: str,
    path: str,
    query: Optional[Dict[str, str]] = None,
    headers: Optional[Dict[str, str]] = None,
    domain: str = EXECUTE_API,
    stage: str = "dev",
    base_path: Optional[str] = None,
    request_time_epoch_ms: Optional[int] = None,
) -> dict:
    """``base_path``: what the client's path had before the route (``/dev`` on an execute-api domain by default)."""
    prefix = f"/{stage}" if base_path is None else base_path
    parameters = {}
    for name, value in zip(resource.split("/"), path.split("/"), strict=True):
        if name.startswith("{"):
            parameters[name.strip("{}")] = value
    return {
        "resource": resource,
        "path": path,
        "httpMethod": "GET",
        "headers": {"Accept": "*/*", **(headers or {})},
        "multiValueHeaders": {},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": "GET",
            "path": prefix + path,
            "stage": stage,
            "domainName": domain,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": request_time_epoch_ms if request_time_epoch_ms is not None else int(time.time() * 1000),
            "identity": {"sourceIp": "203.0.113.7"},
        },
        "body": None,
        "isBase64Encoded": False,
    }


def invoke(event: dict, remaining_ms: int = 28_000) -> dict:
    from app import app

    return app(event, LambdaContext(remaining_ms))
