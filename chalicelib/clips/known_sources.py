"""What this process has learnt about episodes' source audio, to send requests together instead of in turn.

- where an episode's audio is (from the catalog on a miss, from a clip's metadata on a hit): a hit can then send
  the HEAD of the source with the HEAD of the clip;
- what reading a version's head gave (its MP3 layout, or that it is not MP3), by bucket, key and ETag: a miss of
  that version then reads only the clip's bytes.

Hints only. Every hit still compares the clip's recorded source ETag with a HEAD of the source sent during this
request, and every read of a version is pinned to its ETag (``If-Match``): a hint that went stale costs a round
trip, never a stale clip.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, Optional, Tuple, TypeVar

from chalicelib.audio.mp3 import StreamLayout
from chalicelib.stores.source import SourceObject

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class KnownVersion:
    source: SourceObject
    layout: Optional[StreamLayout]  # None: not MP3 (FFmpeg reads it)


class _Lru(Generic[K, V]):
    def __init__(self, size: int):
        self._items: "OrderedDict[K, V]" = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # requests of `chalice local`, and the pool's threads

    def get(self, key: K) -> Optional[V]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class KnownSources:
    def __init__(self, size: int = 512):
        self._locations: _Lru[str, Tuple[str, str]] = _Lru(size)
        self._versions: _Lru[Tuple[str, str, str], KnownVersion] = _Lru(size)

    def location(self, episode_id: str) -> Optional[Tuple[str, str]]:
        """(bucket, key) of the episode's audio as last seen, or None."""
        return self._locations.get(episode_id)

    def locate(self, episode_id: str, bucket: str, key: str) -> None:
        self._locations.put(episode_id, (bucket, key))

    def version(self, source: SourceObject) -> Optional[KnownVersion]:
        known = self._versions.get((source.bucket, source.key, source.etag))
        return known if known is not None and known.source.size == source.size else None

    def learn(self, source: SourceObject, layout: Optional[StreamLayout]) -> None:
        self._versions.put((source.bucket, source.key, source.etag), KnownVersion(source, layout))
