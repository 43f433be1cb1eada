"""S3 as the stores see it: every call bounded by the request's deadline, and what an S3 error means to a client.

The source audio (``source``) and the clip cache (``clip_cache``) are built on these."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib import deadlines
from chalicelib.errors import AccessDenied, Archived, ServiceError, StorageTimeout, StorageUnavailable, WrongRegion

# Every S3 call on the request path is bounded: botocore makes at most S3_ATTEMPTS attempts, each at most
# ATTEMPT_BUDGET_S (connect + read timeout), and none starts unless it can end before the request's deadline.
S3_CONNECT_TIMEOUT_S = 1
S3_READ_TIMEOUT_S = 2
S3_ATTEMPTS = 3
ATTEMPT_BUDGET_S = S3_CONNECT_TIMEOUT_S + S3_READ_TIMEOUT_S
MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
PRECONDITION = {"412", "PreconditionFailed"}
DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId"}
ARCHIVED = {"InvalidObjectState"}
WRONG_REGION = {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
CONFLICT = {"409", "ConditionalRequestConflict"}


def refuse_late_attempts(request: Any, **kwargs: Any) -> None:
    """botocore ``before-send`` handler (registered by the wiring): an attempt, first or retried, that could not
    end before the deadline of the call it belongs to is not sent; StorageTimeout (503) instead."""
    left = deadlines.left()
    if left is not None and left < ATTEMPT_BUDGET_S:
        raise StorageTimeout(
            "Audio storage did not answer in time; try again shortly",
            detail=f"{request.method} {str(request.url).split('?')[0]} not sent: {left:.1f} s left, "
            f"an attempt may take {ATTEMPT_BUDGET_S} s",
        )


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def unavailable(action: str, error: Exception) -> StorageUnavailable:
    return StorageUnavailable(f"Audio storage is unavailable ({action}); try again shortly", detail=repr(error))


def failure(action: str, error: Exception) -> ServiceError:
    """What an S3 error means to a client: permanent (a 500 without Retry-After naming the cause: access denied,
    a KMS key, an archived object, another region) or transient (a 503 with Retry-After: throttling, 5xx, timeouts,
    connections; botocore has already retried those)."""
    if not isinstance(error, ClientError):
        return unavailable(action, error)
    code = error_code(error)
    message = str(error.response.get("Error", {}).get("Message", ""))
    detail = f"{action}: {code}: {message}"[:500]
    if code.startswith("KMS.") or (code in DENIED and "kms" in message.lower()):
        return AccessDenied(
            f"Access denied {action}: the object is encrypted with a KMS key the service may not use (kms:Decrypt)",
            detail=detail,
        )
    if code in DENIED:
        return AccessDenied(f"Access denied {action}: the service's role may not read it", detail=detail)
    if code in ARCHIVED:
        return Archived(
            f"The episode's source audio is archived (S3 Glacier or an archive access tier) and must be "
            f"restored before clips can be cut ({action})",
            detail=detail,
        )
    if code in WRONG_REGION:
        return WrongRegion(f"The bucket is in another AWS region than the service ({action})", detail=detail)
    return unavailable(action, error)
