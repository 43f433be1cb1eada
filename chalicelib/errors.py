"""Every failure the service reports, and the one place that maps them to HTTP answers.

Each error carries the contract's status, Chalice's error ``Code`` and a message safe to show a client
(no hostnames, no credentials). ``detail`` is for the log only.
"""
from __future__ import annotations

from typing import Dict, Optional

from chalice import ChaliceUnhandledError


class ServiceError(ChaliceUnhandledError):
    """Propagates past Chalice's own handling so that one middleware turns it into the contract's answer."""

    status = 500
    code = "InternalServerError"

    def __init__(self, message: str, *, detail: Optional[str] = None, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})


class BadRequest(ServiceError):
    status = 400
    code = "BadRequestError"


class NotFound(ServiceError):
    status = 404
    code = "NotFoundError"


class Undecodable(ServiceError):
    """The source audio cannot be decoded (corrupt, empty, not audio)."""

    status = 422
    code = "UnprocessableEntityError"


class CatalogUnavailable(ServiceError):
    """MongoDB cannot be reached; the client should retry later."""

    status = 503
    code = "ServiceUnavailableError"

    def __init__(self, message: str, *, retry_after_seconds: int, detail: Optional[str] = None):
        super().__init__(message, detail=detail, headers={"Retry-After": str(retry_after_seconds)})
        self.retry_after_seconds = retry_after_seconds


class StorageUnavailable(ServiceError):
    """S3 failed after bounded retries."""

    status = 503
    code = "ServiceUnavailableError"

    def __init__(self, message: str, *, detail: Optional[str] = None, retry_after_seconds: int = 5):
        super().__init__(message, detail=detail, headers={"Retry-After": str(retry_after_seconds)})


class ClipTimeout(ServiceError):
    """Cutting did not finish before the deadline derived from the Lambda's remaining time."""

    status = 503
    code = "ServiceUnavailableError"

    def __init__(self, message: str, *, detail: Optional[str] = None):
        super().__init__(message, detail=detail, headers={"Retry-After": "5"})


class ConfigurationError(ServiceError):
    """A setting is missing or malformed; raised at start, naming the variable."""


def error_body(error: ServiceError) -> Dict[str, str]:
    return {"Code": error.code, "Message": error.message}
