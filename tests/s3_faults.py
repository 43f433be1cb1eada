"""S3 errors injected into the service's own S3 client, answered as real S3 would (botocore parses them)."""

from __future__ import annotations

from typing import Dict, List, Optional

from botocore.awsrequest import AWSResponse

from chalicelib import wiring
from tests.conftest import SOURCE_BUCKET


class RawBody:
    """A response body botocore can stream."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **kwargs):
        yield self._body


def source_reads_answer(
    status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None, times: Optional[int] = None
) -> List[str]:
    """Answer GetObject calls on the source bucket with this S3 error (the next ``times`` of them, or every one);
    returns the URLs answered so far."""
    answered: List[str] = []

    def before_send(request, **kwargs):
        if SOURCE_BUCKET in request.url and request.method == "GET" and (times is None or len(answered) < times):
            answered.append(request.url)
            body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
            return AWSResponse(
                request.url, status, {"Content-Type": "application/xml", **(headers or {})}, RawBody(body)
            )
        return None

    wiring.current().s3.meta.events.register_first("before-send.s3.GetObject", before_send)
    return answered
