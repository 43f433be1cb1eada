"""S3: the source audio (read by byte range, every byte counted) and the clip cache (written whole or not at all)."""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterator, Optional, Tuple
from urllib.parse import quote, unquote, urlparse

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import NotFound, StorageUnavailable

log = logging.getLogger(__name__)

CLIP_PREFIX = "audio_clips/"
SEEK_INDEX_NAME = "seek-index.json"
CLIP_CACHE_CONTROL = "private, max-age=31536000, immutable"
READ_ATTEMPTS = 3
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_PRECONDITION = {"412", "PreconditionFailed"}
_CONFLICT = {"409", "ConditionalRequestConflict"}


class SourceChanged(Exception):
    """The source object was replaced while it was being read."""


EPISODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def is_episode_id(text: str) -> bool:
    """The contract's grammar for an episode id, minus all-dot names that a URL path would resolve away."""
    return bool(EPISODE_ID.fullmatch(text or "")) and set(text) != {"."}


def clip_key(episode_id: str, start_ms: int, end_ms: int) -> str:
    return f"{episode_prefix(episode_id)}{start_ms}-{end_ms}.mp3"


def episode_prefix(episode_id: str) -> str:
    return f"{CLIP_PREFIX}{episode_id}/"


def parse_s3_url(url: str) -> Tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); ValueError for anything else."""
    parts = urlparse(url or "")
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    return parts.netloc, parts.path.lstrip("/")


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


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _unavailable(action: str, error: Exception) -> StorageUnavailable:
    return StorageUnavailable(f"Audio storage is unavailable ({action}); try again shortly", detail=repr(error))


class SourceAudio:
    """Reads one version (ETag) of a source object by byte range, counting every byte it is sent."""

    def __init__(self, s3, source: SourceObject, head: bytes = b""):
        self._s3 = s3
        self.source = source
        self.head = head  # the first bytes of the object, read when it was opened
        self.bytes_read = len(head)
        self.requests = 1 if head else 0

    @classmethod
    def open(cls, s3, bucket: str, key: str, head_bytes: int = 16 * 1024) -> "SourceAudio":
        """One ranged GET of the object's head: its bytes, and from the same answer its size and ETag."""
        try:
            response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")
            head = response["Body"].read()
        except ClientError as error:
            if _code(error) in _MISSING:
                raise NotFound("The episode's source audio is missing from storage") from None
            if _code(error) in ("InvalidRange", "416"):
                return cls(s3, SourceObject(bucket, key, 0, error.response.get("ETag", "")))
            raise _unavailable("reading the source audio", error) from None
        except BotoCoreError as error:
            raise _unavailable("reading the source audio", error) from None
        size = int(response.get("ContentRange", "/").rsplit("/", 1)[-1] or len(head))
        source = SourceObject(bucket, key, size, response["ETag"], response.get("ContentType", ""))
        return cls(s3, source, head)

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
                raise _unavailable("reading the source audio", error) from None
            except BotoCoreError as error:  # a connection reset or timeout mid-body, which botocore does not retry
                if attempt == READ_ATTEMPTS - 1:
                    raise _unavailable("reading the source audio", error) from None
                time.sleep(0.1 * 3**attempt)
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
            raise _unavailable("reading the source audio", error) from None

    def _get_this_version(self, byte_range: str) -> dict:
        """GetObject of a range of the version (ETag) this reader opened; SourceChanged if it was replaced."""
        try:
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

    def __init__(self, s3, bucket: str, url_ttl_seconds: int):
        self._s3 = s3
        self.bucket = bucket
        self.url_ttl_seconds = url_ttl_seconds

    def lookup(self, key: str) -> Optional[StoredClip]:
        head = self._head(self.bucket, key, "reading the clip cache")
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
            )
        except (KeyError, ValueError):
            return None  # written by something else: treat as absent and regenerate

    def current_etag(self, bucket: str, key: str) -> Optional[str]:
        """The source object's ETag now, or None when it is gone."""
        head = self._head(bucket, key, "reading the source audio")
        return head["ETag"] if head else None

    def _head(self, bucket: str, key: str, action: str) -> Optional[dict]:
        try:
            return self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise _unavailable(action, error) from None
        except BotoCoreError as error:
            raise _unavailable(action, error) from None

    def put(self, key: str, data: bytes, source: SourceObject, episode_id: str, duration_ms: int,
            replacing: bool) -> bool:
        """Store a clip in one request. A new clip never overwrites one another writer stored first
        (``If-None-Match: *``); returns False when that happened. ``replacing`` overwrites a stale clip."""
        metadata: Dict[str, str] = {
            "episode-id": episode_id,
            "source-bucket": source.bucket,
            "source-key": quote(source.key, safe="/"),
            "source-etag": source.etag,
            "duration-ms": str(duration_ms),
        }
        extra = {} if replacing else {"IfNoneMatch": "*"}
        try:
            self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="audio/mpeg",
                CacheControl=CLIP_CACHE_CONTROL, Metadata=metadata, **extra,
            )
        except ClientError as error:
            if _code(error) in _PRECONDITION or _code(error) == "ConditionalRequestConflict":
                return False
            raise _unavailable("writing the clip", error) from None
        except BotoCoreError as error:
            raise _unavailable("writing the clip", error) from None
        return True

    def presign(self, key: str, now: Optional[datetime] = None) -> Tuple[str, datetime]:
        now = now or datetime.now(timezone.utc)
        url = self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_ttl_seconds
        )
        return url, (now + timedelta(seconds=self.url_ttl_seconds)).replace(microsecond=0)

    def ping(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("the clips bucket", error) from None

    def artefact(self, episode_id: str, name: str) -> "EpisodeArtefact":
        return EpisodeArtefact(self._s3, self.bucket, episode_prefix(episode_id) + name)


class EpisodeArtefact:
    """A JSON document derived from an episode's source (its seek index), kept beside its clips so that the
    cleanup removes it with them. An optimisation only: unreadable means absent, unwritable is logged."""

    def __init__(self, s3, bucket: str, key: str):
        self._s3 = s3
        self.bucket = bucket
        self.key = key

    def load(self) -> Optional[dict]:
        try:
            return json.loads(self._s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            log.warning("cannot read %s: %r", self.key, error)
        except (BotoCoreError, ValueError) as error:
            log.warning("cannot read %s: %r", self.key, error)
        return None

    def save(self, document: dict) -> None:
        try:
            self._s3.put_object(
                Bucket=self.bucket, Key=self.key, ContentType="application/json",
                Body=json.dumps(document, separators=(",", ":")).encode(),
            )
        except (ClientError, BotoCoreError) as error:
            log.warning("cannot write %s: %r", self.key, error)

    # Conditional writes, for a lease beside the artefact (chalicelib.indexing): S3 decides who wrote first.

    def beside(self, name: str) -> "EpisodeArtefact":
        """Another artefact of the same episode (same prefix, so the cleanup purges it too)."""
        return EpisodeArtefact(self._s3, self.bucket, self.key.rsplit("/", 1)[0] + "/" + name)

    def load_versioned(self) -> Optional[Tuple[Optional[dict], str]]:
        """(the document, or None if it is not JSON; its ETag), or None when absent. Faults raise."""
        try:
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
            response = self._s3.put_object(
                Bucket=self.bucket, Key=self.key, ContentType="application/json",
                Body=json.dumps(document, separators=(",", ":")).encode(), **condition,
            )
        except ClientError as error:
            # 412: the condition failed; 409: a concurrent conditional write won; 404: If-Match on a gone key
            if _code(error) in _PRECONDITION | _CONFLICT | _MISSING:
                return None
            raise _unavailable(f"writing {self.key}", error) from None
        except BotoCoreError as error:
            raise _unavailable(f"writing {self.key}", error) from None
        return str(response["ETag"])
