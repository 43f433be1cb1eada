"""Cleanup on source audio events: when an episode's audio is removed or replaced, its cached clips (and the
artefacts derived from the old audio, such as its seek index) are deleted.

The events come in either shape (README, "Source events"): an S3 event notification (``Records``, keys URL-encoded)
or an EventBridge event from S3 (``detail-type`` ``Object Created``/``Object Deleted``, one object per event).
``source_records`` reads both into the same records; everything after it does not know which shape it was."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional
from urllib.parse import unquote_plus

from chalicelib.ops import logs
from chalicelib.stores.keys import episode_prefix, is_episode_id

if TYPE_CHECKING:
    from chalicelib.clips.seek_index import Prepared

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


class ClipCleanup:
    def __init__(self, s3, clips_bucket: str):
        self._s3 = s3
        self.bucket = clips_bucket

    def purge_episode(self, episode_id: str) -> int:
        """Delete every object under the episode's prefix, 1,000 keys a request; returns how many were deleted.
        Idempotent: a second call finds nothing. Raises if S3 refuses any key, so that Lambda retries."""
        deleted = 0
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=episode_prefix(episode_id), PaginationConfig={"PageSize": DELETE_BATCH}
        )
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if not keys:
                continue
            result = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
            errors = result.get("Errors", [])
            if errors:
                raise RuntimeError(f"S3 refused to delete {len(errors)} clips of {episode_id}: {errors[:3]}")
            deleted += len(keys)
        return deleted


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
            yield SourceRecord(record.s3.bucket.name, key, kind, name)
    elif event.get("source") == "aws.s3" and event.get("detail-type") in EVENTBRIDGE_DETAIL_TYPES:
        notification = S3EventBridgeNotificationEvent(dict(event))
        detail = notification.detail  # its object.key is decoded by Powertools
        yield SourceRecord(
            detail.bucket.name,
            detail.object.key,
            EVENTBRIDGE_DETAIL_TYPES[notification.detail_type],
            notification.detail_type,
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


# After an episode's audio was created and its clips purged: (source bucket, key, episode id) → what was prepared.
Prepare = Callable[[str, str, str], "Prepared"]


def handle_source_event(
    event: Mapping[str, Any], cleanup: ClipCleanup, request_id: str = "-", prepare: Optional[Prepare] = None
) -> list[Purged]:
    """Every record of a source event, in either shape (delivered at least once, in any order: each purge is
    idempotent); after purging an episode whose audio was created, ``prepare`` readies what its next clip needs."""
    token = logs.request_id.set(request_id)
    try:
        return [_handle_record(record, cleanup, prepare) for record in source_records(event)]
    finally:
        logs.request_id.reset(token)


def _handle_record(record: SourceRecord, cleanup: ClipCleanup, prepare: Optional[Prepare] = None) -> Purged:
    started = time.perf_counter()
    key, name = record.key, record.name
    episode_id = episode_of_key(key)
    deleted = cleanup.purge_episode(episode_id) if episode_id else 0
    prepared = None
    if prepare is not None and episode_id and record.created:
        prepared = prepare(record.bucket, key, episode_id)
    result = Purged(
        key,
        name,
        episode_id,
        deleted,
        round((time.perf_counter() - started) * 1000, 1),
        prepared.outcome if prepared else None,
    )
    logs.emit(
        log,
        logging.INFO,
        event="cleanup",
        s3_event=name,
        key=key,
        episode_id=episode_id,
        clips_deleted=deleted,
        ms=result.ms,
        ignored=None if episode_id else "key outside the audio layout",
        **_prepared_fields(prepared),
    )
    return result


def _prepared_fields(prepared: Optional["Prepared"]) -> dict:
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
