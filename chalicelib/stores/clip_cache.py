"""The clip cache in the clips bucket (each clip written whole or not at all), and the per-episode artefacts kept
beside the clips (the seek index and its lease), which the cleanup purges with them."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Optional, Tuple
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.deadlines import until
from chalicelib.errors import StorageTimeout
from chalicelib.stores.keys import episode_prefix
from chalicelib.stores.s3 import CONFLICT, MISSING, PRECONDITION, error_code, failure, unavailable
from chalicelib.stores.signing import S3UrlSigner, UrlSigner
from chalicelib.stores.source import SourceObject

log = logging.getLogger(__name__)

CLIP_CACHE_CONTROL = "private, max-age=31536000, immutable"
METADATA_LIMIT = 2048 - 128  # S3 takes 2 KB of user metadata (names and values); kept back: x-amz-meta- overhead


@dataclass(frozen=True)
class StoredClip:
    key: str
    source_bucket: str
    source_key: str
    source_etag: str
    duration_ms: int
    episode_title: Optional[str] = None  # as the catalog had them when the clip was cut: a hit never asks it
    podcast_title: Optional[str] = None


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
        current = self.current_source(bucket, key, deadline)
        return current.etag if current else None

    def current_source(self, bucket: str, key: str, deadline: Optional[float] = None) -> Optional[SourceObject]:
        """The source object's version now (ETag, size, type: all a HEAD tells), or None when it is gone."""
        head = self._head(bucket, key, "reading the source audio", deadline)
        if head is None:
            return None
        return SourceObject(bucket, key, int(head.get("ContentLength", 0)), head["ETag"], head.get("ContentType", ""))

    def _head(self, bucket: str, key: str, action: str, deadline: Optional[float]) -> Optional[dict]:
        try:
            with until(deadline):
                return self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error_code(error) in MISSING:
                return None
            raise failure(action, error) from None
        except BotoCoreError as error:
            raise failure(action, error) from None

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
            if error_code(error) in PRECONDITION or error_code(error) == "ConditionalRequestConflict":
                return False
            raise failure("writing the clip", error) from None
        except BotoCoreError as error:
            raise failure("writing the clip", error) from None
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
            raise failure("the clips bucket", error) from None

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
            if error_code(error) in MISSING:
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

    # Conditional writes, for a lease beside the artefact (chalicelib.clips.seek_index): S3 decides who wrote first.

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
            if error_code(error) in MISSING:
                return None
            raise unavailable(f"reading {self.key}", error) from None
        except BotoCoreError as error:
            raise unavailable(f"reading {self.key}", error) from None
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
            if error_code(error) in PRECONDITION | CONFLICT | MISSING:
                return None
            raise unavailable(f"writing {self.key}", error) from None
        except BotoCoreError as error:
            raise unavailable(f"writing {self.key}", error) from None
        return str(response["ETag"])
