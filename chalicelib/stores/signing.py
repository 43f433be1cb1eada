"""Clip URLs, and how long each is honoured: an S3 pre-signed URL capped by the credentials that sign it, or a
CloudFront signed URL (canned policy) made with the distribution's key pair.

``expires_at`` is a promise to the client: never later than the signature can be honoured. A URL pre-signed by
S3 stops working when the credentials that signed it expire, whatever ``X-Amz-Expires`` says; a CloudFront URL
depends only on the key pair, which does not expire (until it is rotated out of the key group).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib.errors import ConfigurationError

# Credentials with a session token whose expiry botocore is not told (a Lambda execution role's, handed over in
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) are trusted for this long after signing. AWS does
# not document how long Lambda's role credentials last: its knowledge-center article "Why is my presigned URL for
# an Amazon S3 bucket expiring before the expiration time that I specified?" (presigned-url-s3-bucket-expiration)
# says a URL expires with the temporary token that signed it, and that services assuming a role, "such as the AWS
# Lambda execution role, don't necessarily comply with the role's session duration settings". The shortest role
# session STS issues is 900 s (AssumeRole DurationSeconds, 900 s to the role's maximum). 15 minutes is therefore
# a bound from the shortest documented session, not a documented guarantee for Lambda: stages that hand out clip
# URLs meant to last are served from CloudFront, and clients store the lasting ``play_url``.
SESSION_CREDENTIALS_BOUND_S = 900
SIGV4_MAX_EXPIRES_S = 7 * 86_400  # the longest X-Amz-Expires S3 accepts
VERSION_PARAMETER = "v"  # the only query parameter in the distribution's cache key (infra/template.yaml)


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime


class UrlSigner(Protocol):
    def sign(self, key: str, now: datetime | None = None, version: str | None = None) -> SignedUrl:
        """A URL for the clip at ``key``; ``version`` (the source ETag it was cut from) tells apart clips that a
        replaced source made at the same key, where a cache keyed by URL would otherwise serve the old one."""
        ...


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).replace(microsecond=0)


def credentials_lifetime_s(credentials: Any, now: datetime) -> int:
    """How many seconds from ``now`` a signature made with these botocore credentials is honoured, at most."""
    if credentials is None:
        return SIGV4_MAX_EXPIRES_S
    frozen = credentials.get_frozen_credentials()  # refreshes refreshable credentials that are about to expire
    expiry = getattr(credentials, "_expiry_time", None)  # RefreshableCredentials know theirs; botocore keeps it here
    if expiry is not None:
        return max(0, math.floor((expiry - now).total_seconds()))
    if frozen.token:
        return SESSION_CREDENTIALS_BOUND_S
    return SIGV4_MAX_EXPIRES_S  # long-term keys (an IAM user's): SigV4's own limit


def client_credentials(s3) -> Any:
    """The botocore credentials a client signs with (botocore has no public accessor; this attribute has held them
    since botocore 1.0), or None for an unsigned client."""
    return getattr(getattr(s3, "_request_signer", None), "_credentials", None)


class S3UrlSigner:
    """Pre-signed GetObject URLs of the clips bucket, honest about the credentials' life."""

    def __init__(self, s3, bucket: str, ttl_seconds: int, credentials: Callable[[], Any] | None = None):
        self._s3 = s3
        self.bucket = bucket
        self.ttl_seconds = ttl_seconds
        self._credentials = credentials or (lambda: client_credentials(s3))

    def sign(self, key: str, now: datetime | None = None, version: str | None = None) -> SignedUrl:
        # S3 serves the object at ``key`` as it is now, whatever its version: nothing to add to the URL
        now = _now(now)  # X-Amz-Date is this second or later, so the URL lasts at least until expires_at
        lifetime = max(1, min(self.ttl_seconds, credentials_lifetime_s(self._credentials(), now)))
        url = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=lifetime
        )
        return SignedUrl(url, now + timedelta(seconds=lifetime))


class CloudFrontUrlSigner:
    """CloudFront signed URLs with a canned policy for ``https://{domain}/{key}``, valid for the whole TTL."""

    def __init__(self, domain: str, key_pair_id: str, private_key: rsa.RSAPrivateKey, ttl_seconds: int):
        self.domain = domain
        self.ttl_seconds = ttl_seconds
        self._private_key = private_key
        self._signer = CloudFrontSigner(key_pair_id, self._rsa_sha1)

    def _rsa_sha1(self, message: bytes) -> bytes:
        return self._private_key.sign(message, padding.PKCS1v15(), hashes.SHA1())  # CloudFront requires SHA-1

    def sign(self, key: str, now: datetime | None = None, version: str | None = None) -> SignedUrl:
        expires_at = _now(now) + timedelta(seconds=self.ttl_seconds)
        url = f"https://{self.domain}/{quote(key, safe='/:')}"
        if version:  # part of the edge's cache key (and signed): a clip cut again from replaced audio is a new URL
            url += f"?{VERSION_PARAMETER}=" + quote(version.strip('"'), safe="-")
        return SignedUrl(self._signer.generate_presigned_url(url, date_less_than=expires_at), expires_at)


class DeferredSigner:
    """A signer made on its first signature: building the clip store (say, for the health check) reads no key."""

    def __init__(self, make: Callable[[], UrlSigner]):
        self._make = make

    def sign(self, key: str, now: datetime | None = None, version: str | None = None) -> SignedUrl:
        return self._make().sign(key, now, version)


def load_private_key(pem: str, variable: str) -> rsa.RSAPrivateKey:
    """The RSA private key in ``pem``; a ConfigurationError naming ``variable`` (never quoting the key) otherwise."""
    try:
        key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"the parameter named by {variable} does not hold an unencrypted PEM private key "
            "(openssl genrsa -out private_key.pem 2048)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(
            f"the key in the parameter named by {variable} is not an RSA key: CloudFront signs with RSA (2048 bits)"
        )
    return key
