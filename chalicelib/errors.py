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


class Unavailable(ServiceError):
    """A dependency failed or took too long; the client should retry after ``Retry-After`` seconds."""

    status = 503
    code = "ServiceUnavailableError"
    default_retry_after = 5

    def __init__(self, message: str, *, detail: Optional[str] = None, retry_after_seconds: Optional[int] = None):
        self.retry_after_seconds = retry_after_seconds or self.default_retry_after
        super().__init__(message, detail=detail, headers={"Retry-After": str(self.retry_after_seconds)})


class CatalogUnavailable(Unavailable):
    """MongoDB cannot be reached."""


class StorageUnavailable(Unavailable):
    """S3 failed after bounded retries."""


class StorageTimeout(StorageUnavailable):
    """An S3 call could not finish before the request's deadline."""


class ClipTimeout(Unavailable):
    """Cutting did not finish before the deadline derived from the Lambda's remaining time."""


class SecretUnavailable(Unavailable):
    """SSM Parameter Store is throttled, failing or unreachable: a secret cannot be fetched right now."""


class PermanentFailure(ServiceError):
    """Retrying cannot help until someone acts (a permission, a key, a restore, the catalog's data): a 500 without
    Retry-After, whose message names the cause."""


class AccessDenied(PermanentFailure):
    """S3 refuses the service's role: a bucket policy, a missing permission, or a KMS key it may not use."""


class Archived(PermanentFailure):
    """The source object is in S3 Glacier or an archive access tier (InvalidObjectState): it must be restored."""


class WrongRegion(PermanentFailure):
    """The source bucket is in another AWS region than the service: its pre-signed URLs and requests are refused."""


class SourceNotAllowed(PermanentFailure):
    """The catalog names a source bucket outside SOURCE_ALLOWED_BUCKETS; refused before any S3 call."""


class ConfigurationError(ServiceError):
    """A setting is missing or malformed; raised at start, naming the variable."""


def error_body(error: ServiceError) -> Dict[str, str]:
    return {"Code": error.code, "Message": error.message}


class UnsupportedFormat(ServiceError):
    """oEmbed asked for a format this service does not write (it writes json)."""

    status = 501
    code = "NotImplementedError"
