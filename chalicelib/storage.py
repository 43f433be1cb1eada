"""S3: the source audio (read by byte range, every byte counted) and the clip cache (written whole or not at all)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, Iterator, Optional, Tuple
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import deadlines
from chalicelib.deadlines import until
from chalicelib.errors import (
    AccessDenied,
    Archived,
    NotFound,
    ServiceError,
    StorageTimeout,
    StorageUnavailable,
    WrongRegion,
)
from chalicelib.signing import S3UrlSigner, UrlSigner

log = logging.getLogger(__name__)

CLIP_PREFIX = "audio_clips/"
SEEK_INDEX_NAME = "seek-index.json"
CLIP_CACHE_CONTROL = "private, max-age=31536000, immutable"
READ_ATTEMPTS = 3
# Every S3 call on the request path is bounded: botocore makes at most S3_ATTEMPTS attempts, each at most
# ATTEMPT_BUDGET_S (connect + read timeout), and none starts unless it can end before the request's deadline.
S3_CONNECT_TIMEOUT_S = 1
S3_READ_TIMEOUT_S = 2
S3_ATTEMPTS = 3
ATTEMPT_BUDGET_S = S3_CONNECT_TIMEOUT_S + S3_READ_TIMEOUT_S
S3_SCHEME = "s3://"
METADATA_LIMIT = 2048 - 128  # S3 takes 2 KB of user metadata (names and values); kept back: x-amz-meta- overhead
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_PRECONDITION = {"412", "PreconditionFailed"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId"}
_ARCHIVED = {"InvalidObjectState"}
_WRONG_REGION = {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
_CONFLICT = {"409", "ConditionalRequestConflict"}


class SourceChanged(Exception):
    """The source object was replaced while it was being read."""


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


EPISODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def is_episode_id(text: str) -> bool:
    """The contract's grammar for an episode id, minus all-dot names that a URL path would resolve away."""
    return bool(EPISODE_ID.fullmatch(text or "")) and set(text) != {"."}


def clip_key(episode_id: str, start_ms: int, end_ms: int) -> str:
    return f"{episode_prefix(episode_id)}{start_ms}-{end_ms}.mp3"


def episode_prefix(episode_id: str) -> str:
    return f"{CLIP_PREFIX}{episode_id}/"


def parse_s3_url(url: str) -> Tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key), the key exactly as written: S3 keys may hold '#', '?', '%', '+' and
    spaces, which a URL parser would read as a fragment, a query or escapes. ValueError for anything else."""
    rest = (url or "").removeprefix(S3_SCHEME) if (url or "").startswith(S3_SCHEME) else ""
    bucket, _, key = rest.partition("/")
    key = key.lstrip("/")
    if not bucket or not key:
        raise ValueError(f"not an s3:// URL: {url!r}")
    return bucket, key


@dataclass(frozen=True)
class SourceObject:
    bucket: str
    key: str
    size: int
    etag: str
    content_type: str = ""


@dataclass(frozen=True)
class StoredClip:
    key: str
    source_bucket: str
    source_key: str
    source_etag: str
    duration_ms: int
    episode_title: Optional[str] = None  # as the catalog had them when the clip was cut: a hit never asks it
    podcast_title: Optional[str] = None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _unavailable(action: str, error: Exception) -> StorageUnavailable:
    return StorageUnavailable(f"Audio storage is unavailable ({action}); try again shortly", detail=repr(error))


def _failure(action: str, error: Exception) -> ServiceError:
    """What an S3 error means to a client: permanent (a 500 without Retry-After naming the cause: access denied,
    a KMS key, an archived object, another region) or transient (a 503 with Retry-After: throttling, 5xx, timeouts,
    connections; botocore has already retried those)."""
    if not isinstance(error, ClientError):
        return _unavailable(action, error)
    code = _code(error)
    message = str(error.response.get("Error", {}).get("Message", ""))
    detail = f"{action}: {code}: {message}"[:500]
    if code.startswith("KMS.") or (code in _DENIED and "kms" in message.lower()):
        return AccessDenied(
            f"Access denied {action}: the object is encrypted with a KMS key the service may not use (kms:Decrypt)",
            detail=detail,
        )
    if code in _DENIED:
        return AccessDenied(f"Access denied {action}: the service's role may not read it", detail=detail)
    if code in _ARCHIVED:
        return Archived(
            f"The episode's source audio is archived (S3 Glacier or an archive access tier) and must be "
            f"restored before clips can be cut ({action})",
            detail=detail,
        )
    if code in _WRONG_REGION:
        return WrongRegion(f"The bucket is in another AWS region than the service ({action})", detail=detail)
    return _unavailable(action, error)


class SourceAudio:
    """Reads one version (ETag) of a source object by byte range, counting every byte it is sent."""

    def __init__(self, s3, source: SourceObject, head: bytes = b"", deadline: Optional[float] = None):
        self._s3 = s3
        self.source = source
        self.deadline = deadline  # every read is bounded by it (set when opened: the request's deadline)
        self.head = head  # the first bytes of the object, read when it was opened
        self.bytes_read = len(head)
        self.requests = 1 if head else 0

    @classmethod
    def open(
        cls, s3, bucket: str, key: str, head_bytes: int = 16 * 1024, deadline: Optional[float] = None
    ) -> "SourceAudio":
        """One ranged GET of the object's head: its bytes, and from the same answer its size and ETag."""
        try:
            with until(deadline):
                response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")
            head = response["Body"].read()
        except ClientError as error:
            if _code(error) in _MISSING:
                raise NotFound("The episode's source audio is missing from storage") from None
            if _code(error) in ("InvalidRange", "416"):
                return cls(s3, SourceObject(bucket, key, 0, error.response.get("ETag", "")), deadline=deadline)
            raise _failure("reading the source audio", error) from None
        except BotoCoreError as error:
            raise _failure("reading the source audio", error) from None
        size = int(response.get("ContentRange", "/").rsplit("/", 1)[-1] or len(head))
        source = SourceObject(bucket, key, size, response["ETag"], response.get("ContentType", ""))
        return cls(s3, source, head, deadline)

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, clipped to its size; retried on transient faults."""
        end = min(end, self.source.size)
        if start >= end:
            return b""
        for attempt in range(READ_ATTEMPTS):
            try:
                return self._get(f"bytes={start}-{end - 1}")
            except ClientError as error:  # botocore has already retried throttling and 5xx answers
                if _code(error) in _MISSING:
                    raise NotFound("The episode's source audio is missing from storage") from None
                raise _failure("reading the source audio", error) from None
            except BotoCoreError as error:  # a connection reset or timeout mid-body, which botocore does not retry
                pause = 0.1 * 3**attempt
                if attempt == READ_ATTEMPTS - 1 or (self.deadline and time.monotonic() + pause > self.deadline):
                    raise _failure("reading the source audio", error) from None
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _get(self, byte_range: str) -> bytes:
        data = self._get_this_version(byte_range)["Body"].read()
        self.bytes_read += len(data)
        return data

    def stream(self, start: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object from ``start`` to its end, in chunks, never held whole."""
        try:
            for chunk in self._get_this_version(f"bytes={start}-")["Body"].iter_chunks(chunk_size):
                self.bytes_read += len(chunk)
                yield chunk
        except (ClientError, BotoCoreError) as error:
            raise _failure("reading the source audio", error) from None

    def _get_this_version(self, byte_range: str) -> dict:
        """GetObject of a range of the version (ETag) this reader opened; SourceChanged if it was replaced."""
        try:
            with until(self.deadline):
                response = self._s3.get_object(
                    Bucket=self.source.bucket, Key=self.source.key, Range=byte_range, IfMatch=self.source.etag
                )
        except ClientError as error:
            if _code(error) in _PRECONDITION:
                raise SourceChanged(self.source.key) from None
            raise
        self.requests += 1
        return response

    def presigned_url(self, expires_in: int = 600) -> str:
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.source.bucket, "Key": self.source.key}, ExpiresIn=expires_in
        )


class ClipStore:
    """The clip cache in the clips bucket, and the per-episode artefacts kept beside the clips."""

    def __init__(self, s3, bucket: str, url_ttl_seconds: int, signer: Optional[UrlSigner] = None):
        self._s3 = s3
        self.bucket = bucket
        self.url_ttl_seconds = url_ttl_seconds
        self.signer = signer or S3UrlSigner(s3, bucket, url_ttl_seconds)  # S3 pre-signed, or CloudFront (signing.py)

    def lookup(self, key: str, deadline: Optional[float] = None) -> Optional[StoredClip]:
        head = self._head(self.bucket, key, "reading the clip cache", deadline)
        if head is None:
            return None
        meta = head.get("Metadata", {})
        try:
            return StoredClip(
                key=key,
                source_bucket=meta["source-bucket"],
                source_key=unquote(meta["source-key"]),
                source_etag=meta["source-etag"],
                duration_ms=int(meta["duration-ms"]),
                episode_title=_metadata_text(meta.get("episode-title")),
                podcast_title=_metadata_text(meta.get("podcast-title")),
            )
        except (KeyError, ValueError):
            return None  # written by something else: treat as absent and regenerate

    def current_etag(self, bucket: str, key: str, deadline: Optional[float] = None) -> Optional[str]:
        """The source object's ETag now, or None when it is gone."""
        head = self._head(bucket, key, "reading the source audio", deadline)
        return head["ETag"] if head else None

    def _head(self, bucket: str, key: str, action: str, deadline: Optional[float]) -> Optional[dict]:
        try:
            with until(deadline):
                return self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise _failure(action, error) from None
        except BotoCoreError as error:
            raise _failure(action, error) from None

    def put(
        self,
        key: str,
        data: bytes,
        source: SourceObject,
        episode_id: str,
        duration_ms: int,
        replacing: bool,
        deadline: Optional[float] = None,
        titles: Optional[Dict[str, Optional[str]]] = None,
    ) -> bool:
        """Store a clip in one request. A new clip never overwrites one another writer stored first
        (``If-None-Match: *``); returns False when that happened. ``replacing`` overwrites a stale clip."""
        metadata: Dict[str, str] = {
            "episode-id": episode_id,
            "source-bucket": source.bucket,
            "source-key": quote(source.key, safe="/"),
            "source-etag": source.etag,
            "duration-ms": str(duration_ms),
        }
        for name, text in (titles or {}).items():  # "episode-title", "podcast-title": base64 of UTF-8 (S3 wants ASCII)
            encoded = base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii") if text else ""
            if encoded and _metadata_size(metadata) + len(name) + len(encoded) <= METADATA_LIMIT:
                metadata[name] = encoded
        extra = {} if replacing else {"IfNoneMatch": "*"}
        try:
            with until(deadline):
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType="audio/mpeg",
                    CacheControl=CLIP_CACHE_CONTROL,
                    Metadata=metadata,
                    **extra,
                )
        except ClientError as error:
            if _code(error) in _PRECONDITION or _code(error) == "ConditionalRequestConflict":
                return False
            raise _failure("writing the clip", error) from None
        except BotoCoreError as error:
            raise _failure("writing the clip", error) from None
        return True

    def presign(self, key: str, now: Optional[datetime] = None, version: Optional[str] = None) -> Tuple[str, datetime]:
        """The clip's URL and the moment until which it is honoured: never later than its signer can keep.
        ``version``: the source ETag the clip was cut from (see signing.UrlSigner)."""
        signed = self.signer.sign(key, now, version)
        return signed.url, signed.expires_at

    def ping(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise _failure("the clips bucket", error) from None

    def artefact(self, episode_id: str, name: str, deadline: Optional[float] = None) -> "EpisodeArtefact":
        return EpisodeArtefact(self._s3, self.bucket, episode_prefix(episode_id) + name, deadline)


def _metadata_size(metadata: Dict[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in metadata.items())


def _metadata_text(value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    try:
        return base64.urlsafe_b64decode(value.encode("ascii")).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        return None


class EpisodeArtefact:
    """A JSON document derived from an episode's source (its seek index), kept beside its clips so that the
    cleanup removes it with them. An optimisation only: unreadable means absent, unwritable is logged."""

    def __init__(self, s3, bucket: str, key: str, deadline: Optional[float] = None):
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self.deadline = deadline

    def load(self) -> Optional[dict]:
        try:
            with until(self.deadline):
                response = self._s3.get_object(Bucket=self.bucket, Key=self.key)
            return json.loads(response["Body"].read())
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            log.warning("cannot read %s: %r", self.key, error)
        except (BotoCoreError, ValueError, StorageTimeout) as error:
            log.warning("cannot read %s: %r", self.key, error)
        return None

    def save(self, document: dict) -> None:
        try:
            with until(self.deadline):
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    ContentType="application/json",
                    Body=json.dumps(document, separators=(",", ":")).encode(),
                )
        except (ClientError, BotoCoreError, StorageTimeout) as error:
            log.warning("cannot write %s: %r", self.key, error)

    # Conditional writes, for a lease beside the artefact (chalicelib.indexing): S3 decides who wrote first.

    def beside(self, name: str) -> "EpisodeArtefact":
        """Another artefact of the same episode (same prefix, so the cleanup purges it too)."""
        return EpisodeArtefact(self._s3, self.bucket, self.key.rsplit("/", 1)[0] + "/" + name, self.deadline)

    def load_versioned(self) -> Optional[Tuple[Optional[dict], str]]:
        """(the document, or None if it is not JSON; its ETag), or None when absent. Faults raise."""
        try:
            with until(self.deadline):
                response = self._s3.get_object(Bucket=self.bucket, Key=self.key)
                body = response["Body"].read()
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise _unavailable(f"reading {self.key}", error) from None
        except BotoCoreError as error:
            raise _unavailable(f"reading {self.key}", error) from None
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        return (document if isinstance(document, dict) else None), response["ETag"]

    def create(self, document: dict) -> Optional[str]:
        """Write the document only if the key is absent (If-None-Match: *): its ETag, or None if another
        writer was first. Faults raise."""
        return self._put_if(document, IfNoneMatch="*")

    def replace(self, document: dict, etag: str) -> Optional[str]:
        """Write over the version with this ETag only (If-Match): the new ETag, or None if it changed or is gone."""
        return self._put_if(document, IfMatch=etag)

    def _put_if(self, document: dict, **condition: str) -> Optional[str]:
        try:
            with until(self.deadline):
                response = self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    ContentType="application/json",
                    Body=json.dumps(document, separators=(",", ":")).encode(),
                    **condition,
                )
        except ClientError as error:
            # 412: the condition failed; 409: a concurrent conditional write won; 404: If-Match on a gone key
            if _code(error) in _PRECONDITION | _CONFLICT | _MISSING:
                return None
            raise _unavailable(f"writing {self.key}", error) from None
        except BotoCoreError as error:
            raise _unavailable(f"writing {self.key}", error) from None
        return str(response["ETag"])
