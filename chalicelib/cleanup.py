"""Cleanup on source audio events: when an episode's audio is removed or replaced, its cached clips (and the
artefacts derived from the old audio, such as its seek index) are deleted."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional
from urllib.parse import unquote_plus

from chalicelib import logs
from chalicelib.storage import episode_prefix, is_episode_id

if TYPE_CHECKING:
    from chalicelib.indexing import Prepared

log = logging.getLogger("audio_clips.cleanup")

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


def handle_s3_event(event: dict, cleanup: ClipCleanup, request_id: str = "-",
                    prepare: Optional[Prepare] = None) -> List[Purged]:
    """Every record of an S3 notification (delivered at least once, in any order: each purge is idempotent)."""
    token = logs.request_id.set(request_id)
    try:
        return [_handle_record(record, cleanup, prepare) for record in event.get("Records", [])]
    finally:
        logs.request_id.reset(token)


def _handle_record(record: dict, cleanup: ClipCleanup, prepare: Optional[Prepare] = None) -> Purged:
    started = time.perf_counter()
    key = unquote_plus(record.get("s3", {}).get("object", {}).get("key", ""))
    name = record.get("eventName", "")
    episode_id = episode_of_key(key)
    deleted = cleanup.purge_episode(episode_id) if episode_id else 0
    prepared = None
    if prepare is not None and episode_id and name.startswith("ObjectCreated"):
        prepared = prepare(record.get("s3", {}).get("bucket", {}).get("name", ""), key, episode_id)
    result = Purged(key, name, episode_id, deleted, round((time.perf_counter() - started) * 1000, 1),
                    prepared.outcome if prepared else None)
    logs.emit(log, logging.INFO, event="cleanup", s3_event=name, key=key, episode_id=episode_id,
              clips_deleted=deleted, ms=result.ms, ignored=None if episode_id else "key outside the audio layout",
              **_prepared_fields(prepared))
    return result


def _prepared_fields(prepared: Optional["Prepared"]) -> dict:
    if prepared is None:
        return {}
    return {"index": prepared.outcome, "index_ms": prepared.ms, "index_source_bytes_read": prepared.source_bytes_read,
            "index_error": prepared.error}
