"""The clip cache in the clips bucket (each clip written whole or not at all), and the per-episode artefacts kept
beside the clips (the seek index and its lease; each clip's waveform and card), which the cleanup purges with them."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Mapping, Optional, Tuple
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.deadlines import until
from chalicelib.errors import StorageTimeout, StorageUnavailable
from chalicelib.stores.keys import LEVELS_NAME, episode_prefix
from chalicelib.stores.s3 import CONFLICT, MISSING, PRECONDITION, error_code, failure, unavailable
from chalicelib.stores.signing import S3UrlSigner, UrlSigner
from chalicelib.stores.source import SourceObject

log = logging.getLogger(__name__)

CLIP_CACHE_CONTROL = "private, max-age=31536000, immutable"
# Every object under audio_clips/{guid}/ (clips, the seek index, its lease, any future artefact) names the source
# version it was made from in these S3 metadata keys; the cleanup keeps exactly those whose version is current.
SOURCE_BUCKET_KEY, SOURCE_KEY_KEY, SOURCE_ETAG_KEY = "source-bucket", "source-key", "source-etag"
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
    served_key: Optional[str] = None  # a snapped request's record: the clip it was served, and its range
    served_start_ms: Optional[int] = None


@dataclass(frozen=True)
class Provenance:
    """Which version of which source object a cached object was made from (as its S3 metadata records it)."""

    source_bucket: str
    source_key: str
    source_etag: str


@dataclass(frozen=True)
class StoredArtefact:
    """An object derived from a clip (its waveform, its card), with the source version it was derived from."""

    key: str
    provenance: Provenance
    body: Optional[bytes] = None  # None when only its head was read


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
                served_key=unquote(meta["served-key"]) if "served-key" in meta else None,
                served_start_ms=int(meta["served-start-ms"]) if "served-start-ms" in meta else None,
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
        served: Optional[Tuple[str, int]] = None,
    ) -> bool:
        """Store a clip in one request. A new clip never overwrites one another writer stored first
        (``If-None-Match: *``); returns False when that happened. ``replacing`` overwrites a stale clip.
        ``served``: this is a snapped request's record (``data`` a small JSON document) naming the clip it was
        served, by key and start; it carries the clip's metadata, so that a hit reads it with one HEAD."""
        metadata: Dict[str, str] = {
            "episode-id": episode_id,
            **source_metadata(source),
            "duration-ms": str(duration_ms),
        }
        if served is not None:
            metadata.update({"served-key": quote(served[0], safe="/"), "served-start-ms": str(served[1])})
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
                    ContentType="audio/mpeg" if served is None else "application/json",
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

    def read_clip(self, key: str, deadline: Optional[float] = None) -> Tuple[bytes, Provenance]:
        """The clip's bytes and the source version its metadata says it was cut from. A clip purged since it was
        served (its source replaced a moment ago) is a 503: asked again, it is cut from the new audio."""
        try:
            with until(deadline):
                response = self._s3.get_object(Bucket=self.bucket, Key=key)
                data = response["Body"].read()
        except ClientError as error:
            if error_code(error) in MISSING:
                raise StorageUnavailable(
                    "The clip was replaced while its picture was being drawn; try again shortly", detail=key
                ) from None
            raise failure("reading the clip cache", error) from None
        except BotoCoreError as error:
            raise failure("reading the clip cache", error) from None
        return data, _provenance(response.get("Metadata", {}))

    def derived(self, key: str, deadline: Optional[float] = None, body: bool = False) -> Optional[StoredArtefact]:
        """An artefact derived from a clip, or None when absent or not written by ``put_derived``; its bytes too
        with ``body`` (one GET; else one HEAD)."""
        try:
            with until(deadline):
                if body:
                    response = self._s3.get_object(Bucket=self.bucket, Key=key)
                    data: Optional[bytes] = response["Body"].read()
                else:
                    response, data = self._s3.head_object(Bucket=self.bucket, Key=key), None
        except ClientError as error:
            if error_code(error) in MISSING:
                return None
            raise failure("reading the clip cache", error) from None
        except BotoCoreError as error:
            raise failure("reading the clip cache", error) from None
        provenance = _provenance(response.get("Metadata", {}))
        return StoredArtefact(key, provenance, data) if provenance.source_etag else None

    def put_derived(
        self,
        key: str,
        data: bytes,
        content_type: str,
        provenance: Provenance,
        episode_id: str,
        deadline: Optional[float] = None,
    ) -> None:
        """Store an artefact derived from a clip in one request, with the source version the clip was cut from in
        the same metadata as a clip's (so that the cleanup tells current from stale alike). It may replace an older
        one: the same clip always gives the same bytes."""
        metadata = {
            "episode-id": episode_id,
            **_recorded(provenance.source_bucket, provenance.source_key, provenance.source_etag),
        }
        try:
            with until(deadline):
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType=content_type,
                    CacheControl=CLIP_CACHE_CONTROL,
                    Metadata=metadata,
                )
        except (ClientError, BotoCoreError) as error:
            raise failure(f"writing {key.rsplit('/', 1)[-1]}", error) from None

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

    def artefact(
        self, episode_id: str, name: str, deadline: Optional[float] = None, source: Optional[SourceObject] = None
    ) -> "EpisodeArtefact":
        """An artefact beside the episode's clips, made from ``source`` (recorded in its metadata as clips do)."""
        return EpisodeArtefact(self._s3, self.bucket, episode_prefix(episode_id) + name, deadline, source)

    def levels(self, episode_id: str, deadline: Optional[float] = None) -> "LevelsArtefact":
        return LevelsArtefact(self._s3, self.bucket, episode_prefix(episode_id) + LEVELS_NAME, deadline)


def source_metadata(source: SourceObject) -> Dict[str, str]:
    """What an object under ``audio_clips/{guid}/`` records of the source version it was made from (S3 user
    metadata, ASCII): its bucket, its key (URL-quoted) and its ETag as S3 gave it."""
    return _recorded(source.bucket, source.key, source.etag)


def _recorded(bucket: str, key: str, etag: str) -> Dict[str, str]:
    return {SOURCE_BUCKET_KEY: bucket, SOURCE_KEY_KEY: quote(key, safe="/"), SOURCE_ETAG_KEY: etag}


def recorded_source(metadata: Mapping[str, str]) -> Optional[Tuple[str, str, str]]:
    """(bucket, key, ETag) of the source version an artefact records; None when it records none."""
    try:
        return metadata[SOURCE_BUCKET_KEY], unquote(metadata[SOURCE_KEY_KEY]), metadata[SOURCE_ETAG_KEY]
    except KeyError:
        return None


def same_version(etag: Optional[str], other: Optional[str]) -> bool:
    """Two ETags of the same object version (S3 quotes them in headers, not in events)."""
    return etag is not None and other is not None and etag.strip('"') == other.strip('"')


def _provenance(metadata: Dict[str, str]) -> Provenance:
    return Provenance(*(recorded_source(metadata) or ("", "", "")))


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

    def __init__(
        self, s3, bucket: str, key: str, deadline: Optional[float] = None, source: Optional[SourceObject] = None
    ):
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self.deadline = deadline
        self.source = source  # the source version it is made from, recorded in its metadata when written
        self._metadata = source_metadata(source) if source is not None else {}

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
                    Metadata=self._metadata,
                )
        except (ClientError, BotoCoreError, StorageTimeout) as error:
            log.warning("cannot write %s: %r", self.key, error)

    # Conditional writes, for a lease beside the artefact (chalicelib.clips.seek_index): S3 decides who wrote first.

    def beside(self, name: str) -> "EpisodeArtefact":
        """Another artefact of the same episode (same prefix, so the cleanup purges it too)."""
        return EpisodeArtefact(
            self._s3, self.bucket, self.key.rsplit("/", 1)[0] + "/" + name, self.deadline, self.source
        )

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
                    Metadata=self._metadata,
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


class LevelsArtefact:
    """An episode's hop levels (``chalicelib.audio.pauses``: one byte a 10 ms hop), made when its audio arrives and
    read a few seconds at a time by ranged GETs. Its metadata names the version (ETag) of the source it measured.
    An optimisation only: unreadable, absent or of another version means "decode the window instead"."""

    def __init__(self, s3, bucket: str, key: str, deadline: Optional[float] = None):
        self._s3 = s3
        self.bucket = bucket
        self.key = key
        self.deadline = deadline

    def read(self, first: int, end: int) -> Optional[Tuple[bytes, str]]:
        """(bytes ``[first, end)``, fewer where the episode ends; the ETag of the source they measured), or None
        when there are none (or they cannot be read now). The caller checks the ETag against its source's."""
        try:
            with until(self.deadline):
                response = self._s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={first}-{end - 1}")
                data = response["Body"].read()
        except ClientError as error:
            if error_code(error) in ("InvalidRange", "416"):  # the window starts past the last hop
                return self._empty()
            if error_code(error) not in MISSING:
                log.warning("cannot read %s: %r", self.key, error)
            return None
        except (BotoCoreError, StorageTimeout) as error:
            log.warning("cannot read %s: %r", self.key, error)
            return None
        return data, response.get("Metadata", {}).get(SOURCE_ETAG_KEY, "")

    def _empty(self) -> Optional[Tuple[bytes, str]]:
        try:
            with until(self.deadline):
                head = self._s3.head_object(Bucket=self.bucket, Key=self.key)
        except (ClientError, BotoCoreError, StorageTimeout):
            return None
        return b"", head.get("Metadata", {}).get(SOURCE_ETAG_KEY, "")

    def save(self, data: bytes, source: SourceObject) -> bool:
        """Store the levels of this version of the source; False (logged) when S3 refused."""
        try:
            with until(self.deadline):
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=data,
                    ContentType="application/octet-stream",
                    Metadata=source_metadata(source),
                )
        except (ClientError, BotoCoreError, StorageTimeout) as error:
            log.warning("cannot write %s: %r", self.key, error)
            return False
        return True
