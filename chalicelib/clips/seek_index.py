"""An episode's seek index: built when its audio arrives, and built by one process at a time when it is missing.

``prepare_episode`` runs in ``cleanup_clips`` after an episode's clips were purged because its audio was
created or replaced: it builds the new audio's seek index and stores it, so that the first miss reads only
the clip's bytes.

``obtain_index`` serves a miss: the stored index when it is of this version (ETag) of the source; otherwise one
builder across all processes, chosen by a lease object beside the index (``audio_clips/{guid}/seek-index.lease``,
purged with the clips). The lease is created with ``If-None-Match: *``; it names the source's ETag and when it
expires: its holder's own deadline (at most a minute away) plus a grace for clock skew. Others poll the stored
index until their own deadline and then answer 503 with ``Retry-After``. A lease that expired (its holder
crashed) or names another version of the source is taken over with ``If-Match`` on its ETag, so of several
takers only one wins.
The holder releases it, once the index is stored or the build failed, by writing it expired (``If-Match`` on
its own ETag, so a successor's lease is never touched).

``load_or_build_index`` is what a miss calls: this process's copy of the index (the last few are kept), else
``obtain_index``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from chalicelib.audio.cutting import Mp3Source, SeekIndex, build_index
from chalicelib.clips.snapping import LevelsPrepared, prepare_levels
from chalicelib.errors import ClipTimeout, NotFound, StorageTimeout, StorageUnavailable
from chalicelib.ops import logs
from chalicelib.stores.clip_cache import ClipStore, EpisodeArtefact
from chalicelib.stores.keys import SEEK_INDEX_NAME
from chalicelib.stores.source import SourceAudio

log = logging.getLogger("audio_clips.indexing")

LEASE_NAME = "seek-index.lease"
LEASE_GRACE_S = 5.0  # added to the holder's deadline: clocks of two Lambdas may disagree by this much
LEASE_MAX_S = 60.0  # a 3-hour episode indexes in ~2 s (bench/upload_index.py): past this, a holder is presumed dead
POLL_FIRST_S = 0.2
POLL_MAX_S = 1.0
WAIT_MARGIN_S = 1.0  # a waiter stops this long before its deadline: time left to read the index and cut
RETRY_AFTER_MAX_S = 10
CLEANUP_MARGIN_S = 5.0  # what cleanup_clips keeps of its remaining time to log and return

Build = Callable[[Mp3Source, float], SeekIndex]


class _Recent:
    """The last few seek indexes this process used: a warm Lambda skips fetching them again."""

    def __init__(self, size: int):
        self._items: "OrderedDict[tuple, SeekIndex]" = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # chalice local serves requests on threads

    def get(self, key: tuple) -> Optional[SeekIndex]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: tuple, index: SeekIndex) -> None:
        with self._lock:
            self._items[key] = index
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_recent_indexes = _Recent(16)


def load_or_build_index(source: Mp3Source, index_store: EpisodeArtefact, deadline: float) -> Tuple[SeekIndex, bool]:
    """The source's seek index: this process's copy, else the stored one, else built now and stored.
    (index, whether this call built it)."""
    object_id = (source.audio.source.bucket, source.audio.source.key, source.audio.source.etag)
    index = _recent_indexes.get(object_id)
    built = False
    if index is None:
        index, built = obtain_index(source, index_store, deadline)  # stored, else built by one builder (a lease)
        _recent_indexes.put(object_id, index)
    return index, built


def stored_index(clips: ClipStore, episode_id: str, deadline: float) -> Optional[SeekIndex]:
    """The episode's stored seek index, of whatever version of its audio; None when absent or unreadable."""
    return SeekIndex.from_json(clips.artefact(episode_id, SEEK_INDEX_NAME, deadline).load())


def remember_index(bucket: str, key: str, index: SeekIndex) -> None:
    """Keep an index fetched beside other requests (a clip request's first round) for the version it describes."""
    _recent_indexes.put((bucket, key, index.source_etag), index)


def obtain_index(
    source: Mp3Source, index_store: EpisodeArtefact, deadline: float, build: Optional[Build] = None
) -> Tuple[SeekIndex, bool]:
    """(the seek index of this version of the source, whether this call built it). Builds it only while
    holding the lease; otherwise waits for the holder's index, ClipTimeout (503) at ``deadline``."""
    build = build or build_index
    etag = source.audio.source.etag
    lease = _Lease(index_store.beside(LEASE_NAME), etag)
    pause = POLL_FIRST_S
    while True:
        index = _stored(index_store, etag)
        if index is not None:
            return index, False
        holder = lease.acquire(expires_at=time.time() + _lease_seconds(deadline))
        if holder is None:  # ours (or unleased: the lease could not be written, and building beats failing)
            try:
                index = _stored(index_store, etag)  # stored and released between our two looks
                if index is not None:
                    return index, False
                index = build(source, deadline)
                index_store.save(index.to_json())
                return index, True
            finally:
                lease.release()
        if time.monotonic() + pause > deadline - WAIT_MARGIN_S:
            wait = min(max(math.ceil(holder.expires_at - time.time()), 1), RETRY_AFTER_MAX_S)
            raise ClipTimeout(
                "The episode is being indexed; try again shortly",
                retry_after_seconds=wait,
                detail=f"waited for the seek index lease of {index_store.key}, held until {holder.expires_at:.0f}",
            )
        _pause(pause)
        pause = min(pause * 1.5, POLL_MAX_S)


def _lease_seconds(deadline: float) -> float:
    """How long a lease taken now lasts: its holder's deadline (capped), plus the grace for clock skew."""
    return min(max(deadline - time.monotonic(), 0.0), LEASE_MAX_S) + LEASE_GRACE_S


def _pause(seconds: float) -> None:
    """How a waiter waits between two polls (a seam for tests that need to know who is waiting)."""
    time.sleep(seconds)


def _stored(index_store: EpisodeArtefact, etag: str) -> Optional[SeekIndex]:
    index = SeekIndex.from_json(index_store.load())
    return index if index is not None and index.source_etag == etag else None


@dataclass(frozen=True)
class Holder:
    """Someone else's live lease."""

    expires_at: float  # epoch seconds
    owner: str


class _Lease:
    """The right to build one version's index: one S3 object, written only with conditions."""

    def __init__(self, artefact: EpisodeArtefact, source_etag: str):
        self._artefact = artefact
        self._source_etag = source_etag
        self._owner = uuid.uuid4().hex
        self._mine: Optional[str] = None  # the ETag of the lease object we wrote, while we hold it

    def acquire(self, expires_at: float) -> Optional[Holder]:
        """None when this caller may build (it holds the lease, or the lease store failed); else the holder."""
        document = {"source_etag": self._source_etag, "expires_at": expires_at, "owner": self._owner}
        try:
            for _ in range(3):  # a lease released or purged between our two requests: try again
                self._mine = self._artefact.create(document)
                if self._mine is not None:
                    return None
                current = self._artefact.load_versioned()
                if current is None:
                    continue
                held, etag = current
                holder = self._live(held)
                if holder is not None:
                    return holder
                self._mine = self._artefact.replace(document, etag)  # expired, released or another version's
                if self._mine is not None:
                    log.info("took over the seek index lease %s (%s)", self._artefact.key, held)
                    return None
                current = self._artefact.load_versioned()  # another taker won: its lease is live
                holder = self._live(current[0]) if current else None
                if holder is not None:
                    return holder
        except StorageTimeout:
            raise  # no time left to ask S3: too little to scan the episode either
        except StorageUnavailable as error:
            log.warning("seek index lease unavailable, building without it: %s", error.detail)
            return None
        log.warning("seek index lease %s kept changing; building without it", self._artefact.key)
        return None

    def _live(self, held: Optional[dict]) -> Optional[Holder]:
        try:
            if held is not None and held["source_etag"] == self._source_etag and held["expires_at"] > time.time():
                return Holder(float(held["expires_at"]), str(held["owner"]))
        except (KeyError, TypeError):
            pass
        return None  # unreadable, expired, released, or for another version of the source: free to take

    def release(self) -> None:
        if self._mine is None:
            return
        released = {"source_etag": self._source_etag, "expires_at": 0, "owner": self._owner, "released": True}
        try:
            self._artefact.replace(released, self._mine)
        except StorageUnavailable as error:  # it expires by itself
            log.warning("cannot release the seek index lease %s: %s", self._artefact.key, error.detail)
        self._mine = None


# ------------------------------------------------------------------ at upload: cleanup_clips


@dataclass
class Prepared:
    outcome: str  # "built", "current" (already stored), "not-mp3", "source-gone", "failed"
    ms: float
    source_bytes_read: int = 0
    error: Optional[str] = None
    levels: Optional[LevelsPrepared] = None  # the levels snap=pause reads (chalicelib.clips.snapping)


def prepare_episode(s3: Any, clips: ClipStore, bucket: str, key: str, episode_id: str, deadline: float) -> Prepared:
    """Build and store the seek index of an episode's new MP3 audio. Never raises: the index only saves the
    first miss a scan, and that miss builds it anyway; a failure is logged (the purge before it stands)."""
    started = time.perf_counter()
    audio: Optional[SourceAudio] = None

    def result(outcome: str, error: Optional[str] = None) -> Prepared:
        return Prepared(
            outcome, round((time.perf_counter() - started) * 1000, 1), audio.bytes_read if audio else 0, error
        )

    try:
        audio = SourceAudio.open(s3, bucket, key, deadline=deadline)  # every read bounded by cleanup's deadline
        source = Mp3Source.sniff(audio)
        if source is None:
            return result("not-mp3")
        index_store = clips.artefact(episode_id, SEEK_INDEX_NAME, deadline, audio.source)
        _, built = obtain_index(source, index_store, deadline)
        if built and _stored(index_store, audio.source.etag) is None:  # saving logs and swallows its faults
            raise StorageUnavailable("The seek index was built but could not be stored")
        return result("built" if built else "current")
    except NotFound:
        return result("source-gone")  # removed since: its own event purges again
    except Exception as error:
        detail = getattr(error, "detail", None) or repr(error)
        logs.emit(log, logging.ERROR, event="index_failed", episode_id=episode_id, key=key, error=detail)
        return result("failed", detail)


def invocation_deadline(lambda_context: Any) -> float:
    """The ``time.monotonic()`` by which cleanup_clips stops building, from the Lambda's remaining time."""
    remaining = lambda_context.get_remaining_time_in_millis() / 1000 if lambda_context is not None else 60.0
    return time.monotonic() + max(remaining - min(CLEANUP_MARGIN_S, remaining * 0.1), 0.5)


class UploadIndexer:
    """What cleanup_clips calls for every purged episode whose audio was created or replaced: its seek index, then
    (with ``ffmpeg``) its levels for snap=pause."""

    def __init__(self, s3: Any, clips: ClipStore, ffmpeg: Optional[Callable[[], Optional[str]]] = None):
        self._s3 = s3
        self._clips = clips
        self._ffmpeg = ffmpeg

    def for_invocation(self, lambda_context: Any) -> Callable[[str, str, str], Prepared]:
        deadline = invocation_deadline(lambda_context)

        def prepare(bucket: str, key: str, episode_id: str) -> Prepared:
            prepared = prepare_episode(self._s3, self._clips, bucket, key, episode_id, deadline)
            if self._ffmpeg is not None and prepared.outcome != "source-gone":
                binary = self._ffmpeg()
                prepared.levels = prepare_levels(self._s3, self._clips, bucket, key, episode_id, binary, deadline)
            return prepared

        return prepare
