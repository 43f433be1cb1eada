"""The clip service: serve a cached clip, or cut, store and serve a new one.

A cache hit needs only S3: the clip's metadata names the source object and the ETag it was cut from, and a
HEAD of the source tells whether it is still current. MongoDB is asked only on a miss.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, Iterator, Optional, Tuple

from chalicelib.audio import ClipAudio, Mp3Source, cut_mp3, tagged_duration_ms
from chalicelib.catalog import Catalog
from chalicelib.errors import BadRequest, ServiceError, Undecodable
from chalicelib.ffmpeg import transcode_to_mp3
from chalicelib.storage import SEEK_INDEX_NAME, ClipStore, SourceAudio, SourceChanged, clip_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRequest:
    episode_id: str
    start_ms: int
    duration_ms: int

    @property
    def key(self) -> str:
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


class ClipService:
    def __init__(self, s3, clips: ClipStore, catalog: Callable[[], Catalog], ffmpeg: Callable[[], Optional[str]]):
        self._s3 = s3
        self._clips = clips
        self._catalog = catalog  # created on first use: a hit never loads pymongo
        self._ffmpeg = ffmpeg
        self._flights = _Flights()

    def get_clip(self, request: ClipRequest, deadline: float) -> ClipResult:
        timer = _Timer()
        hit, stale = self._cached(request, timer)
        if hit:
            return hit
        with self._flights.hold(request.key) as waited:
            if waited:  # the same clip was being cut in this process: it is probably there now
                hit, stale = self._cached(request, timer)
                if hit:
                    return hit
            return self._generate(request, deadline, timer, stale)

    def _cached(self, request: ClipRequest, timer: "_Timer") -> Tuple[Optional[ClipResult], bool]:
        """(the hit, None) when a current clip is cached; (None, stale) otherwise."""
        stored = self._clips.lookup(request.key)
        if stored is None:
            timer.lap("cache_lookup")
            return None, False
        current = self._clips.current_etag(stored.source_bucket, stored.source_key)
        timer.lap("cache_lookup")
        if current != stored.source_etag:
            return None, True
        url, expires = self._clips.presign(request.key)
        return ClipResult(url, expires, True, request.episode_id, request.start_ms, stored.duration_ms,
                          timings_ms=timer.laps), False

    def _generate(self, request: ClipRequest, deadline: float, timer: "_Timer", stale: bool) -> ClipResult:
        episode = self._catalog().find_episode(request.episode_id)
        timer.lap("catalog")
        for attempt in (1, 2):
            audio = SourceAudio.open(self._s3, episode.source_bucket, episode.source_key)
            try:
                clip = self._cut(audio, request, deadline)
                break
            except SourceChanged:
                if attempt == 2:
                    raise
                log.info("source %s changed while being read; cutting again", episode.source_key)
        timer.lap("cut")
        duration = clip.duration_ms
        if not self._clips.put(request.key, clip.data, audio.source, request.episode_id, duration, stale):
            winner = self._clips.lookup(request.key)  # another request stored this clip first: serve that one
            duration = winner.duration_ms if winner else duration
        url, expires = self._clips.presign(request.key)
        timer.lap("store")
        return ClipResult(
            url, expires, False, request.episode_id, request.start_ms, duration,
            method=clip.method,
            source_bytes_read=audio.bytes_read if clip.method != "ffmpeg" else None,
            source_requests=audio.requests,
            clip_bytes=len(clip.data),
            regenerated_stale=stale,
            index_built=clip.index_built,
            timings_ms=timer.laps,
        )

    def _cut(self, audio: SourceAudio, request: ClipRequest, deadline: float) -> ClipAudio:
        source = Mp3Source.sniff(audio)
        if source is not None:
            index = self._clips.artefact(request.episode_id, SEEK_INDEX_NAME)
            try:
                return cut_mp3(source, request.start_ms, request.duration_ms, index, deadline)
            except ValueError as error:
                raise Undecodable("The episode's source audio is damaged at this position", detail=str(error)) from error
        ffmpeg = self._ffmpeg()
        if ffmpeg is None:
            raise ServiceError("This service cannot decode non-MP3 audio: FFmpeg is missing",
                               detail="no FFmpeg binary found (FFMPEG_PATH, /opt/bin/ffmpeg)")
        result = transcode_to_mp3(ffmpeg, audio.presigned_url(), request.start_ms, request.duration_ms, deadline)
        served = tagged_duration_ms(result.data)
        if not served:
            if result.episode_duration_ms is not None and request.start_ms >= result.episode_duration_ms:
                raise BadRequest(
                    f"start_time_ms {request.start_ms} is at or beyond the end of the episode, "
                    f"whose duration is {result.episode_duration_ms} ms"
                )
            raise Undecodable("The episode's source audio cannot be decoded", detail="FFmpeg wrote no audio")
        return ClipAudio(result.data, served, "ffmpeg")


class _Timer:
    def __init__(self):
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
