"""The clip service: serve a cached clip, or cut, store and serve a new one.

A cache hit needs only S3: the clip's metadata names the source object and the ETag it was cut from, and a
HEAD of the source tells whether it is still current. MongoDB is asked only on a miss.

A request with ``snap=pause`` is served the clip of its snapped range (``chalicelib.clips.snapping``), stored
under that range's own key like any clip (so an unsnapped request for the same range, or another snapped request
landing on it, shares it), plus a small record under the request's key (``{start}-{end}.snap-pause.json``) that
names the served clip and carries its metadata: a snapped hit is one HEAD of the record and one of the source,
as an unsnapped hit is.

What a listener waits for is the S3 requests made one after another (tens of ms each in a region), so the requests
that do not depend on each other go out together. The rounds, each a wait for one S3 round trip:

1. every request: HEAD of the clip, with the HEAD of the source when this process knows where the episode's audio is
   (a hit needs nothing more), or with the GET of the stored seek index when it knows nothing of the episode (the
   index carries what reading the source's head gives: its size, ETag and layout). Never the catalog: MongoDB (and
   SSM) are asked only once the HEAD of the clip said it is missing or stale.
2. a miss: the catalog (not S3), then the clip's bytes, one ranged GET pinned to the source's ETag (``If-Match``);
   a head read, the index or a scan only when neither this process nor the stored index knows that version;
3. the PUT of the clip (``If-None-Match: *``: one writer).

``_first_round`` and ``_plan`` are where that is decided.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from chalicelib.audio.attribution import ClipStory, tagged
from chalicelib.audio.cutting import ClipAudio, Mp3Source, SeekIndex, check_start, cut_mp3, duration_ms
from chalicelib.audio.ffmpeg import input_format, transcode_to_mp3
from chalicelib.clips.known_sources import KnownSources
from chalicelib.clips.seek_index import load_or_build_index, remember_index, stored_index
from chalicelib.clips.snapping import Served, read_levels, served_range
from chalicelib.clips.together import Pending, send
from chalicelib.deadlines import until
from chalicelib.errors import ServiceError, SourceNotAllowed, Undecodable
from chalicelib.stores.catalog import Catalog, Episode
from chalicelib.stores.clip_cache import ClipStore, StoredClip
from chalicelib.stores.keys import SEEK_INDEX_NAME, clip_key, clip_range, snap_key
from chalicelib.stores.source import HEAD_BYTES, SourceAudio, SourceChanged, SourceObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRequest:
    episode_id: str
    start_ms: int
    duration_ms: int
    snap: Optional[str] = None  # "pause": start and end in pauses (contract section 6)

    @property
    def key(self) -> str:
        """The clip's key; for a snapped request, its record's key (the clip lives under the served range's)."""
        if self.snap:
            return snap_key(self.episode_id, self.start_ms, self.start_ms + self.duration_ms, self.snap)
        return clip_key(self.episode_id, self.start_ms, self.start_ms + self.duration_ms)


@dataclass
class ClipResult:
    clip_url: str
    expires_at: datetime
    cache_hit: bool
    episode_id: str
    start_ms: int
    duration_ms: int
    method: Optional[str] = None  # how a miss was cut
    source_bytes_read: Optional[int] = 0  # None when FFmpeg read the source itself
    source_requests: int = 0
    clip_bytes: Optional[int] = None
    regenerated_stale: bool = False
    index_built: bool = False  # this miss scanned the episode to build its seek index
    timings_ms: Dict[str, float] = field(default_factory=dict)
    episode_title: Optional[str] = None  # as cleaned for people (attribution.clean_text), when the catalog has it
    podcast_title: Optional[str] = None
    key: str = ""  # the served clip's object: what its waveform and card are derived from (clips/pictures.py)
    source_etag: Optional[str] = None  # the source version the served clip was cut from
    requested_start_ms: Optional[int] = None  # with snap: the request as asked (start_ms/duration_ms are served)
    requested_duration_ms: Optional[int] = None
    snap: Optional[str] = None
    levels: Optional[str] = None  # a snapped miss: where its levels came from ("stored", "decoded")

    def as_asked(self, request: ClipRequest, levels: Optional[str] = None) -> "ClipResult":
        """This result (of the served range) answering a snapped request."""
        self.requested_start_ms, self.requested_duration_ms = request.start_ms, request.duration_ms
        self.snap, self.levels = request.snap, levels
        return self


class ClipService:
    def __init__(
        self,
        s3,
        clips: ClipStore,
        catalog: Callable[[], Catalog],
        ffmpeg: Callable[[], Optional[str]],
        *,
        allowed_buckets: Tuple[str, ...],
    ):
        self._s3 = s3
        self._allowed_buckets = allowed_buckets  # SOURCE_ALLOWED_BUCKETS
        self._clips = clips
        self._catalog = catalog  # created on first use: a hit never loads pymongo
        self._ffmpeg = ffmpeg
        self._flights = _Flights()
        self._known = KnownSources()  # where episodes' audio is, and what their versions' heads hold: hints

    def get_clip(self, request: ClipRequest, deadline: float) -> ClipResult:
        timer = Timer()
        first = self._first_round(request, deadline)
        hit, stale = self._cached(request, first, timer, deadline)
        if hit:
            return hit
        with self._flights.hold(request.key) as waited:
            if waited:  # the same clip was being cut in this process: it is probably there now
                first = self._first_round(request, deadline)
                hit, stale = self._cached(request, first, timer, deadline)
                if hit:
                    return hit
            return self._generate(request, first, deadline, timer, stale)

    # ------------------------------------------------------------------ the round trips, in one place

    def _first_round(self, request: ClipRequest, deadline: float) -> "_FirstRound":
        """What every request sends at once, before it knows whether the clip is cached (module docstring, 1)."""
        where = self._known.location(request.episode_id)
        return _FirstRound(
            where,
            clip=send(deadline, "HEAD of the clip", self._clips.lookup, request.key, deadline),
            source=send(deadline, "HEAD of the source", self._clips.current_source, *where, deadline)
            if where
            else None,
            index=None
            if where
            else send(deadline, "GET of the seek index", stored_index, self._clips, request.episode_id, deadline),
        )

    def _cached(
        self, request: ClipRequest, first: "_FirstRound", timer: "Timer", deadline: float
    ) -> Tuple[Optional[ClipResult], bool]:
        """(the hit, None) when a current clip is cached; (None, stale) otherwise."""
        stored = first.clip.result()
        if stored is None:
            timer.lap("cache_lookup")
            return None, False
        named = (stored.source_bucket, stored.source_key)
        self._known.locate(request.episode_id, *named)
        if first.source is not None and first.where == named:
            current = first.source.result()  # sent with the HEAD of the clip
        else:  # this process did not know where the audio is (or it moved): a second round trip
            current = self._clips.current_source(*named, deadline)
        timer.lap("cache_lookup")
        if current is None or current.etag != stored.source_etag:
            return None, True
        if first.index is not None:  # learnt for a later miss of this episode, without waiting for it now
            first.index.then(lambda index: self._learn_index(current, index))
        return self._hit(request, stored, deadline, timer), False

    def _hit(self, request: ClipRequest, stored: StoredClip, deadline: float, timer: "Timer") -> ClipResult:
        key = stored.served_key or request.key  # a snapped request's record names the clip it was served
        with until(deadline):  # CloudFront's signing key is read from SSM on first use
            url, expires = self._clips.presign(key, version=stored.source_etag)
        result = ClipResult(
            url,
            expires,
            True,
            request.episode_id,
            request.start_ms if stored.served_start_ms is None else stored.served_start_ms,
            stored.duration_ms,
            timings_ms=timer.laps,
            episode_title=stored.episode_title,
            podcast_title=stored.podcast_title,
            key=key,
            source_etag=stored.source_etag,
        )
        return result.as_asked(request) if request.snap else result

    def _plan(
        self, episode: Episode, first: "_FirstRound", index: "Optional[Pending[Optional[SeekIndex]]]", deadline: float
    ) -> "Optional[_Opened]":
        """The source, ready to cut without reading its head, when this request's first round or this process
        already knows it (module docstring, 2); None: read its head."""
        location = (episode.source_bucket, episode.source_key)
        current = first.source.value() if first.source is not None and first.where == location else None
        if current is not None:  # its version now, from a HEAD sent in the first round
            known = self._known.version(current)
            if known is not None:
                audio = SourceAudio(self._s3, current, deadline=deadline)
                return _Opened(audio, Mp3Source(audio, known.layout) if known.layout else None, verified=True)
            stored = index.value() if index is not None else None
            if stored is not None and self._learn_index(current, stored):
                audio = SourceAudio(self._s3, current, deadline=deadline)
                assert stored.layout is not None
                return _Opened(audio, Mp3Source(audio, stored.layout), verified=True)
            return None
        stored = index.value() if index is not None else None
        if stored is None or stored.layout is None or stored.source_size is None:
            return None
        # a version nobody has confirmed yet: the first read, pinned to it, does (or answers 412)
        source = SourceObject(*location, stored.source_size, stored.source_etag)
        remember_index(*location, stored)
        audio = SourceAudio(self._s3, source, deadline=deadline)
        return _Opened(audio, Mp3Source(audio, stored.layout), verified=False)

    def _learn_index(self, current: SourceObject, index: Optional[SeekIndex]) -> bool:
        """Keep a stored index (and the layout it carries) that describes the source's version now."""
        if (
            index is None
            or index.layout is None
            or index.source_etag != current.etag
            or index.source_size != current.size
        ):
            return False
        remember_index(current.bucket, current.key, index)
        self._known.learn(current, index.layout)
        return True

    def _open(self, episode: Episode, deadline: float) -> "_Opened":
        """The source's head read (one ranged GET): its version now, and its layout."""
        audio = SourceAudio.open(self._s3, episode.source_bucket, episode.source_key, deadline=deadline)
        return _Opened(audio, Mp3Source.sniff(audio), verified=True)

    def _generate(
        self, request: ClipRequest, first: "_FirstRound", deadline: float, timer: "Timer", stale: bool
    ) -> ClipResult:
        index = first.index
        if index is None and not request.snap and not self._knows_current(first):  # overlaps the catalog
            index = send(deadline, "GET of the seek index", stored_index, self._clips, request.episode_id, deadline)
        episode = self._episode(request.episode_id, deadline)
        timer.lap("catalog")
        if request.snap:
            return self._generate_snapped(request, episode, deadline, timer, stale)
        return self._cut_and_store(
            request, episode, deadline, timer, stale, self._plan(episode, first, index, deadline)
        )

    def _episode(self, episode_id: str, deadline: float) -> Episode:
        """The episode's catalog entry, whose source must be in an allowed bucket."""
        with until(deadline):  # the catalog's first use may fetch its secret from SSM
            catalog = self._catalog()
        episode = catalog.find_episode(episode_id, deadline=deadline)
        if episode.source_bucket not in self._allowed_buckets:
            log.error(
                "episode %s names source bucket %r, outside SOURCE_ALLOWED_BUCKETS %s: refused",
                episode_id,
                episode.source_bucket,
                ",".join(self._allowed_buckets),
            )
            raise SourceNotAllowed(
                "The episode's source audio is in a bucket this service may not read",
                detail=f"s3://{episode.source_bucket}/{episode.source_key}",
            )
        return episode

    def _generate_snapped(
        self, request: ClipRequest, episode: Episode, deadline: float, timer: "Timer", stale: bool
    ) -> ClipResult:
        """Snap, then serve the clip of the served range (cut now; a clip of that range already stored, by another
        request, wins the conditional PUT and is served instead), then record what was served."""
        for attempt in (1, 2):
            with ThreadPoolExecutor(1) as pool:  # the levels do not depend on the source: both reads go out together
                store = self._clips.levels(request.episode_id, deadline)
                levels = pool.submit(read_levels, store, request.start_ms, request.duration_ms)
                audio = SourceAudio.open(self._s3, episode.source_bucket, episode.source_key, deadline=deadline)
            try:
                served = self._served(audio, request, levels.result(), deadline)
                break
            except SourceChanged:
                if attempt == 2:
                    raise
                log.info("source %s changed while being read; snapping again", episode.source_key)
        timer.lap("snap")
        target = ClipRequest(request.episode_id, served.start_ms, served.duration_ms)
        with self._flights.hold(target.key):
            result = self._cut_and_store(
                target, episode, deadline, timer, False, _Opened(audio, Mp3Source.sniff(audio), verified=True)
            )
        record = {
            "served_key": target.key,
            "start_time_ms": result.start_ms,
            "duration_ms": result.duration_ms,
            "requested_start_time_ms": request.start_ms,
            "requested_duration_ms": request.duration_ms,
            "snap": request.snap,
            "levels": served.levels,
        }
        titles = {"episode-title": result.episode_title, "podcast-title": result.podcast_title}
        self._clips.put(
            request.key,
            json.dumps(record).encode(),
            audio.source,
            request.episode_id,
            result.duration_ms,
            stale,
            deadline,
            titles,
            served=(target.key, result.start_ms),
        )
        timer.lap("record")
        result.timings_ms = timer.laps
        return result.as_asked(request, served.levels)

    def _served(
        self, audio: SourceAudio, request: ClipRequest, levels: Optional[Tuple[bytes, str]], deadline: float
    ) -> Served:
        mp3 = Mp3Source.sniff(audio)
        stored = self._clips.artefact(request.episode_id, SEEK_INDEX_NAME, deadline)
        index = functools.partial(load_or_build_index, mp3, stored, deadline) if mp3 is not None else _no_index
        try:
            return served_range(
                audio, mp3, request.start_ms, request.duration_ms, levels, index, self._ffmpeg, deadline
            )
        except ValueError as error:
            raise Undecodable("The episode's source audio is damaged at this position", detail=str(error)) from error

    def served_request(self, request: ClipRequest, deadline: float) -> ClipRequest:
        """The (unsnapped) request of the range a request is served: itself without ``snap``; with it, from its
        record when one is current, else found now (without cutting)."""
        if not request.snap:
            return request
        stored = self._clips.lookup(request.key, deadline)
        if stored is not None and stored.served_start_ms is not None:
            current = self._clips.current_etag(stored.source_bucket, stored.source_key, deadline)
            if current == stored.source_etag and stored.served_key:
                start, end = clip_range(stored.served_key)
                return ClipRequest(request.episode_id, start, end - start)
        episode = self._episode(request.episode_id, deadline)
        audio = SourceAudio.open(self._s3, episode.source_bucket, episode.source_key, deadline=deadline)
        levels = read_levels(self._clips.levels(request.episode_id, deadline), request.start_ms, request.duration_ms)
        served = self._served(audio, request, levels, deadline)
        return ClipRequest(request.episode_id, served.start_ms, served.duration_ms)

    def _cut_and_store(
        self,
        request: ClipRequest,
        episode: Episode,
        deadline: float,
        timer: "Timer",
        stale: bool,
        planned: "Optional[_Opened]" = None,
    ) -> ClipResult:
        """Cut the clip (from ``planned``, the source as this request already knows it, else from a head read), tag,
        store and sign it."""
        for attempt in (1, 2):
            opened = planned if attempt == 1 and planned is not None else self._open(episode, deadline)
            try:
                clip = self._cut(opened, request, deadline)
            except SourceChanged:
                if attempt == 2:
                    raise
                log.info("source %s changed while being read; cutting again", episode.source_key)
                continue
            except ServiceError:
                if opened.confirmed:
                    raise
                log.info(
                    "source %s: the stored index's version was not confirmed; reading its head", episode.source_key
                )
                continue
            if opened.confirmed:
                break
            log.info(
                "source %s: nothing read confirmed the stored index's version; reading its head", episode.source_key
            )
        audio = opened.audio
        self._known.locate(request.episode_id, episode.source_bucket, episode.source_key)
        self._known.learn(audio.source, opened.mp3.layout if opened.mp3 else None)
        timer.lap("cut")
        story = clip_story(episode, request.start_ms, clip.duration_ms)
        clip.data = tagged(story, clip.data)  # the engine's bytes after an ID3v2 tag saying what the clip is
        timer.lap("tag")
        titles = {"episode-title": story.episode_title, "podcast-title": story.podcast_title}
        duration, version = self._store(request, clip, audio, stale, deadline, titles)
        with until(deadline):
            url, expires = self._clips.presign(request.key, version=version)
        timer.lap("store")
        return ClipResult(
            url,
            expires,
            False,
            request.episode_id,
            request.start_ms,
            duration,
            method=clip.method,
            source_bytes_read=audio.bytes_read if clip.method != "ffmpeg" else None,
            source_requests=audio.requests,
            clip_bytes=len(clip.data),
            regenerated_stale=stale,
            index_built=clip.index_built,
            timings_ms=timer.laps,
            episode_title=story.episode_title,
            podcast_title=story.podcast_title,
            key=request.key,
            source_etag=version,
        )

    def _knows_current(self, first: "_FirstRound") -> bool:
        current = first.source.value() if first.source is not None else None
        return current is not None and self._known.version(current) is not None

    def _store(
        self,
        request: ClipRequest,
        clip: ClipAudio,
        audio: SourceAudio,
        stale: bool,
        deadline: float,
        titles: Dict[str, Optional[str]],
    ) -> Tuple[int, str]:
        """Store the clip; the duration and source ETag of the clip now stored. When another request stored it
        first (a lost conditional PUT), its clip is served, unless it was cut from another version of the source while ours
        is of the current one: then ours overwrites it."""
        source = audio.source
        if self._clips.put(
            request.key, clip.data, source, request.episode_id, clip.duration_ms, stale, deadline, titles
        ):
            return clip.duration_ms, source.etag
        winner = self._clips.lookup(request.key, deadline)
        if winner is None or winner.source_etag == source.etag:
            return (winner.duration_ms if winner else clip.duration_ms), source.etag
        if self._clips.current_etag(source.bucket, source.key, deadline) != source.etag:
            # ours is of an older version: the winner's may be current, and hits check
            return winner.duration_ms, winner.source_etag
        log.info(
            "clip %s stored by another request from source ETag %s; ours is of the current %s: replacing it",
            request.key,
            winner.source_etag,
            source.etag,
        )
        self._clips.put(request.key, clip.data, source, request.episode_id, clip.duration_ms, True, deadline, titles)
        return clip.duration_ms, source.etag

    def _cut(self, opened: "_Opened", request: ClipRequest, deadline: float) -> ClipAudio:
        audio, source = opened.audio, opened.mp3
        if source is not None:
            stored = self._clips.artefact(request.episode_id, SEEK_INDEX_NAME, deadline, audio.source)
            index = functools.partial(load_or_build_index, source, stored, deadline)
            try:
                return cut_mp3(source, request.start_ms, request.duration_ms, index, deadline, self._ffmpeg)
            except ValueError as error:
                raise Undecodable(
                    "The episode's source audio is damaged at this position", detail=str(error)
                ) from error
        ffmpeg = self._ffmpeg()
        if ffmpeg is None:
            raise ServiceError(
                "This service cannot decode non-MP3 audio: FFmpeg is missing",
                detail="no FFmpeg binary found (FFMPEG_PATH, /opt/bin/ffmpeg)",
            )
        head = audio.head or audio.read(0, HEAD_BYTES)  # a version this process knew: its demuxer from its first bytes
        result = transcode_to_mp3(
            ffmpeg, audio.presigned_url(), request.start_ms, request.duration_ms, deadline, input_format(head)
        )
        if result.episode_duration_ms is not None:  # the clip reached the end: its exact length is known
            check_start(request.start_ms, round(result.episode_duration_ms))  # the end-clamp rule, as for MP3
        if not result.samples:
            raise Undecodable("The episode's source audio cannot be decoded", detail="FFmpeg wrote no audio")
        return ClipAudio(result.data, duration_ms(result.samples, result.sample_rate), "ffmpeg")


def _no_index() -> Tuple[Any, bool]:
    raise AssertionError("a source that is not MP3 has no seek index")


@dataclass
class _FirstRound:
    """The calls of a request's first round, on their way (``ClipService._first_round``)."""

    where: Optional[Tuple[str, str]]  # where this process believed the episode's audio was
    clip: "Pending[Optional[StoredClip]]"
    source: "Optional[Pending[Optional[SourceObject]]]"  # sent when ``where`` was known
    index: "Optional[Pending[Optional[SeekIndex]]]"  # sent when it was not


@dataclass
class _Opened:
    """A version of the source ready to cut: its reader, and its MP3 layout (None: not MP3)."""

    audio: SourceAudio
    mp3: Optional[Mp3Source]
    verified: bool  # a HEAD or the head read of this request saw this version current

    @property
    def confirmed(self) -> bool:
        """The version is current (or was when a read pinned to it was answered)."""
        return self.verified or self.audio.requests > 0


def clip_story(episode: Episode, start_ms: int, duration_ms: int) -> ClipStory:
    return ClipStory.of(
        start_ms, duration_ms, episode.episode_title, episode.podcast_title, episode.audio_url or episode.episode_url
    )


class Timer:
    """Milliseconds per named step of a request, for its log line (``lap`` ends the step begun at the last lap)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.laps: Dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + (now - self._last) * 1000, 1)
        self._last = now


class _Flights:
    """One generation per clip key at a time in this process; other requests for it wait, then find it cached.
    Across processes the conditional PUT decides which clip is kept."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: Dict[str, list] = {}  # key -> [lock, number of requests holding or waiting]

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        with self._lock:
            entry = self._held.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        waited = not entry[0].acquire(blocking=False)
        if waited:
            entry[0].acquire()
        try:
            yield waited
        finally:
            entry[0].release()
            with self._lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._held[key]
