"""Cleanup on source audio events: when an episode's audio is removed or replaced, its cached clips and the other
artefacts under its prefix (the seek index, its lease, ...) made from any other version of the audio are deleted;
what was made from the audio in the bucket now stays, whichever event (late, replayed, out of order) arrives.

The events come in either shape (README, "Source events"): an S3 event notification (``Records``, keys URL-encoded)
or an EventBridge event from S3 (``detail-type`` ``Object Created``/``Object Deleted``, one object per event).
``source_records`` reads both into the same records; everything after it does not know which shape it was."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from chalicelib.clips.seek_index import Prepared
from chalicelib.clips.seek_index import invocation_deadline as invocation_deadline  # app.py's cleanup deadline
from chalicelib.deadlines import until
from chalicelib.ops import logs
from chalicelib.stores.clip_cache import recorded_source, same_version
from chalicelib.stores.keys import episode_prefix, is_episode_id
from chalicelib.stores.s3 import CONFLICT, MISSING, PRECONDITION, error_code

log = logging.getLogger("audio_clips.cleanup")

Kind = Literal["created", "removed"]
EVENTBRIDGE_DETAIL_TYPES: dict[str, Kind] = {"Object Created": "created", "Object Deleted": "removed"}
AUDIO_KEY_WILDCARD = "*/*/audio/*"  # the layout below, as an EventBridge wildcard; episode_of_key decides exactly
AUDIO_EXTENSIONS = (".mp3", ".m4a", ".mp4", ".aac", ".wav", ".ogg", ".opus", ".flac")
DELETE_BATCH = 1000  # S3 DeleteObjects' limit


def episode_of_key(key: str) -> Optional[str]:
    """The guid in a source key laid out as ``{podcast_slug}/{guid}/audio/{file}``; None for anything else."""
    parts = key.split("/")
    if len(parts) != 4 or parts[2] != "audio" or not parts[0] or not parts[3]:
        return None
    if not parts[3].lower().endswith(AUDIO_EXTENSIONS) or not is_episode_id(parts[1]):
        return None
    return parts[1]


HEAD_WORKERS = 8  # artefacts looked at at once (boto3 clients are thread-safe)
KEPT_ON_DELETE = MISSING | PRECONDITION | CONFLICT  # gone, or rewritten since it was looked at: not ours to delete
_UNKNOWN = "?"  # a recorded source that cannot be looked at now (another bucket, a fault): its artefacts are kept


@dataclass
class Purge:
    """What one purge did: artefacts deleted and kept, and the event's source as it is now (None: gone)."""

    source_etag: Optional[str]
    deleted: int = 0
    kept: int = 0


class ClipCleanup:
    """Keeps under ``audio_clips/{guid}/`` only what was made from the audio in the bucket now."""

    def __init__(self, s3, clips_bucket: str):
        self._s3 = s3
        self.bucket = clips_bucket

    def purge_stale(self, episode_id: str, bucket: str, key: str, deadline: Optional[float] = None) -> Purge:
        """Delete the episode's artefacts (clips, seek index, lease, any other object under its prefix) that were
        not made from the audio in the bucket now: those whose recorded source (``source-bucket``, ``source-key``,
        ``source-etag`` metadata, see ``stores.clip_cache.source_metadata``) is gone or holds another ETag, and
        those that record none. The event's own source is looked at first (a HEAD, whatever the event says: a late
        or replayed event names an older version); if S3 cannot say, this raises and Lambda retries. Each delete
        is conditional on the artefact's ETag as looked at: one rewritten since (a clip of the new audio) stays.
        Idempotent; every S3 call bounded by ``deadline``."""
        versions = _Versions(self._s3, deadline)
        purge = Purge(versions.now(bucket, key, strict=True))
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=episode_prefix(episode_id), PaginationConfig={"PageSize": DELETE_BATCH}
        )
        with ThreadPoolExecutor(HEAD_WORKERS) as pool, until(deadline):
            for page in pages:
                keys = [item["Key"] for item in page.get("Contents", [])]
                looked = list(pool.map(lambda artefact: self._look(artefact, deadline), keys))
                stale = [
                    {"Key": artefact, "ETag": etag}
                    for artefact, etag, recorded in looked
                    if etag is not None and not versions.holds(recorded)
                ]
                deleted = self._delete(episode_id, stale)
                purge.deleted += deleted
                purge.kept += len(keys) - deleted
        return purge

    def _look(self, key: str, deadline: Optional[float]) -> Tuple[str, Optional[str], Optional[Tuple[str, str, str]]]:
        """(key, the artefact's ETag or None when it is gone, the source version it records)."""
        try:
            with until(deadline):  # a worker thread: the deadline is not inherited
                head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error_code(error) in MISSING:
                return key, None, None
            raise
        return key, head["ETag"], recorded_source(head.get("Metadata", {}))

    def _delete(self, episode_id: str, stale: List[Dict[str, str]]) -> int:
        """Delete these (conditional on their ETags); how many went. Raises if S3 refused any other way."""
        if not stale:
            return 0
        result = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": stale, "Quiet": True})
        errors = result.get("Errors", [])
        refused = [e for e in errors if str(e.get("Code")) not in KEPT_ON_DELETE]
        if refused:
            raise RuntimeError(f"S3 refused to delete {len(refused)} artefacts of {episode_id}: {refused[:3]}")
        return len(stale) - len(errors)


class _Versions:
    """The ETag each source has now, looked up once per purge."""

    def __init__(self, s3, deadline: Optional[float]):
        self._s3 = s3
        self._deadline = deadline
        self._seen: Dict[Tuple[str, str], Optional[str]] = {}

    def now(self, bucket: str, key: str, strict: bool = False) -> Optional[str]:
        """The source's ETag now; None when it is gone; _UNKNOWN when S3 cannot say (raises when ``strict``)."""
        if (bucket, key) not in self._seen:
            try:
                with until(self._deadline):
                    self._seen[bucket, key] = self._s3.head_object(Bucket=bucket, Key=key)["ETag"]
            except ClientError as error:
                if error_code(error) in MISSING:
                    self._seen[bucket, key] = None
                elif strict:
                    raise
                else:
                    log.warning("cannot look at s3://%s/%s: %s; its artefacts are kept", bucket, key, error)
                    self._seen[bucket, key] = _UNKNOWN
        return self._seen[bucket, key]

    def holds(self, recorded: Optional[Tuple[str, str, str]]) -> bool:
        """Whether an artefact recording this source version was made from the audio there now."""
        if recorded is None:
            return False  # records no version: not provably current
        bucket, key, etag = recorded
        now = self.now(bucket, key)
        return now == _UNKNOWN or same_version(now, etag)


def event_pattern(source_bucket: str) -> dict[str, Any]:
    """The EventBridge rule of one stage: created and deleted objects of the source bucket under the audio layout.
    Any number of stages and other consumers can each have their own rule on the same bucket's events."""
    return {
        "source": ["aws.s3"],
        "detail-type": sorted(EVENTBRIDGE_DETAIL_TYPES),
        "detail": {"bucket": {"name": [source_bucket]}, "object": {"key": [{"wildcard": AUDIO_KEY_WILDCARD}]}},
    }


@dataclass(frozen=True)
class SourceRecord:
    """One object event, whichever way it came: the bucket, the decoded key, and whether audio arrived or left."""

    bucket: str
    key: str
    kind: Kind
    name: str  # as the event named it: "ObjectCreated:Put", "Object Deleted", ...
    etag: str = field(default="", compare=False)  # the version the event is about ("" for deletions)

    @property
    def created(self) -> bool:
        return self.kind == "created"


def source_records(event: Mapping[str, Any]) -> Iterator[SourceRecord]:
    """The records of an S3 event notification or of an EventBridge event from S3, parsed by Powertools' event
    data classes (imported here: only this function pays for them). Anything else yields nothing."""
    from aws_lambda_powertools.utilities.data_classes import S3Event, S3EventBridgeNotificationEvent

    if "Records" in event:
        for record in S3Event(dict(event)).records:
            name = record.event_name
            kind: Kind = "created" if name.startswith("ObjectCreated") else "removed"
            key = unquote_plus(record.s3.get_object.key)  # S3Object.key is as S3 sends it: URL-encoded, spaces as '+'
            yield SourceRecord(record.s3.bucket.name, key, kind, name, record.s3.get_object.etag)
    elif event.get("source") == "aws.s3" and event.get("detail-type") in EVENTBRIDGE_DETAIL_TYPES:
        notification = S3EventBridgeNotificationEvent(dict(event))
        detail = notification.detail  # its object.key is decoded by Powertools
        yield SourceRecord(
            detail.bucket.name,
            detail.object.key,
            EVENTBRIDGE_DETAIL_TYPES[notification.detail_type],
            notification.detail_type,
            detail.object.etag,
        )


class AnySourceEvent:
    """What Chalice hands ``cleanup_clips``, for either shape: Chalice's own event classes read only the shape of
    the trigger they were declared with (and raise ``KeyError`` on the other, e.g. a replayed S3 notification sent
    to a stage that listens through EventBridge)."""

    def __init__(self, event_dict: dict[str, Any], context: Any):
        self._event_dict = event_dict
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        return self._event_dict


@dataclass
class Purged:
    key: str
    event: str
    episode_id: Optional[str]
    deleted: int
    ms: float
    index: Optional[str] = None  # what prepare_episode did for created audio ("built", "not-mp3", "failed", ...)
    kept: int = 0  # artefacts left because they were made from the audio there now


# After an episode's audio was created and its clips purged: (source bucket, key, episode id) → what was prepared.
Prepare = Callable[[str, str, str], Prepared]


def handle_source_event(
    event: Mapping[str, Any],
    cleanup: ClipCleanup,
    request_id: str = "-",
    prepare: Optional[Prepare] = None,
    deadline: Optional[float] = None,
) -> list[Purged]:
    """Every record of a source event, in either shape (delivered at least once, late, in any order: each purge
    keeps what is current, so a repeat does nothing); after purging an episode whose audio was created,
    ``prepare`` readies what its next clip needs. S3 calls are bounded by ``deadline`` (``invocation_deadline``)."""
    token = logs.request_id.set(request_id)
    try:
        return [_handle_record(record, cleanup, prepare, deadline) for record in source_records(event)]
    finally:
        logs.request_id.reset(token)


def _handle_record(
    record: SourceRecord, cleanup: ClipCleanup, prepare: Optional[Prepare], deadline: Optional[float]
) -> Purged:
    started = time.perf_counter()
    key, name = record.key, record.name
    episode_id = episode_of_key(key)
    purge = cleanup.purge_stale(episode_id, record.bucket, key, deadline) if episode_id else None
    prepared = None
    if prepare is not None and episode_id and record.created:
        prepared = prepare(record.bucket, key, episode_id)
    result = Purged(
        key,
        name,
        episode_id,
        purge.deleted if purge else 0,
        round((time.perf_counter() - started) * 1000, 1),
        prepared.outcome if prepared else None,
        purge.kept if purge else 0,
    )
    logs.emit(
        log,
        logging.INFO,
        event="cleanup",
        s3_event=name,
        key=key,
        episode_id=episode_id,
        clips_deleted=result.deleted,
        kept=result.kept,
        source_etag=purge.source_etag if purge else None,
        event_etag=record.etag or None,
        late=bool(purge and record.etag and not same_version(record.etag, purge.source_etag)) or None,
        ms=result.ms,
        ignored=None if episode_id else "key outside the audio layout",
        **_prepared_fields(prepared),
    )
    return result


def _prepared_fields(prepared: Optional[Prepared]) -> dict:
    if prepared is None:
        return {}
    return {
        "index": prepared.outcome,
        "index_ms": prepared.ms,
        "index_source_bytes_read": prepared.source_bytes_read,
        "index_error": prepared.error,
        **(
            {"levels": prepared.levels.outcome, "levels_ms": prepared.levels.ms, "levels_error": prepared.levels.error}
            if prepared.levels
            else {}
        ),
    }
