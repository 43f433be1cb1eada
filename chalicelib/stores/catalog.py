"""The episode catalog: MongoDB's ``episode_metadata`` collection, looked up by ``guid``.

pymongo is imported only when a catalog is first needed, so a cache hit's cold start never loads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

from chalicelib.errors import CatalogUnavailable, ConfigurationError, NotFound
from chalicelib.settings import Settings
from chalicelib.stores.keys import parse_s3_url

log = logging.getLogger(__name__)

COLLECTION = "episode_metadata"
_PROJECTION = {"_id": 0, "guid": 1, "s3_audio_path": 1, "podcast_title": 1, "raw_entry_original_feed": 1}


@dataclass(frozen=True)
class Episode:
    guid: str
    source_bucket: str
    source_key: str
    podcast_title: Optional[str] = None
    episode_title: Optional[str] = None
    episode_url: Optional[str] = None  # the episode's web page (the feed item's <link>)
    audio_url: Optional[str] = None  # the episode's public audio (the feed item's enclosure)


class Catalog:
    """Handed a pymongo-compatible collection; turns every database fault into a 503 with Retry-After."""

    def __init__(
        self,
        collection,
        retry_after_seconds: int,
        driver_errors: tuple = (Exception,),
        timeout: Optional[Callable[[float], ContextManager]] = None,
    ):
        self._collection = collection
        self._retry_after = retry_after_seconds
        self._driver_errors = driver_errors
        self._timeout = timeout  # pymongo.timeout: bounds a block of operations by the time left

    def find_episode(self, guid: str, deadline: Optional[float] = None) -> Episode:
        """The episode; with ``deadline`` (a ``time.monotonic()`` value) the query ends by then or is a 503."""
        try:
            with self._until(deadline):
                doc = self._collection.find_one({"guid": guid}, _PROJECTION)
        except self._driver_errors as error:
            raise unavailable(error, self._retry_after) from None
        if doc is None:
            raise NotFound(f"No episode with id {guid!r}")
        try:
            bucket, key = parse_s3_url(doc.get("s3_audio_path", ""))
        except ValueError:
            log.error("episode %s has a malformed s3_audio_path: %r", guid, doc.get("s3_audio_path"))
            raise NotFound(f"Episode {guid!r} has no source audio") from None
        feed = doc.get("raw_entry_original_feed") or {}
        return Episode(
            guid,
            bucket,
            key,
            doc.get("podcast_title"),
            feed.get("episode_title"),
            _text(feed.get("link")),
            _enclosure_url(feed),
        )

    def _until(self, deadline: Optional[float]) -> ContextManager:
        if deadline is None or self._timeout is None:
            return contextlib.nullcontext()
        left = deadline - time.monotonic()
        if left <= 0:
            raise unavailable(TimeoutError("no time left before the request's deadline"), self._retry_after)
        return self._timeout(left)

    def ping(self) -> None:
        try:
            self._collection.database.client.admin.command("ping")
        except self._driver_errors as error:
            raise unavailable(error, self._retry_after) from None


def _text(value) -> Optional[str]:
    return value if isinstance(value, str) else None


def _enclosure_url(feed: dict) -> Optional[str]:
    """The feed item's audio: feedparser's ``enclosures[0].href``, or a flat ``enclosure_url``/``audio_url``."""
    enclosures = feed.get("enclosures")
    if isinstance(enclosures, list) and enclosures and isinstance(enclosures[0], dict):
        return _text(enclosures[0].get("href") or enclosures[0].get("url"))
    return _text(feed.get("enclosure_url") or feed.get("audio_url"))


def unavailable(error: Exception, retry_after_seconds: int) -> CatalogUnavailable:
    return CatalogUnavailable(
        "The episode catalog is unavailable; try again later",
        retry_after_seconds=retry_after_seconds,
        detail=f"{type(error).__name__}: {error}",
    )


def mongo_client(settings: Settings):
    """One client per process, short timeouts: a paused cluster fails fast instead of hanging a request."""
    from pymongo import MongoClient

    timeout = settings.mongodb_timeout_ms
    return MongoClient(
        settings.mongodb_uri,
        appname="audio-clips",
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=timeout,
        timeoutMS=timeout,
        retryReads=False,
    )


def open_catalog(settings: Settings) -> Catalog:
    from pymongo import timeout
    from pymongo.errors import PyMongoError  # mongomock raises pymongo's errors too

    if settings.mongodb_uri:
        try:  # a mongodb+srv URI resolves its SRV records here: a DNS outage must be a 503 too
            client = mongo_client(settings)
        except PyMongoError as error:
            raise unavailable(error, settings.mongodb_retry_after_seconds) from None
    else:
        client = embedded_client(settings.local_catalog_file, settings.mongodb_db)
    return Catalog(
        client[settings.mongodb_db][COLLECTION],
        settings.mongodb_retry_after_seconds,
        (PyMongoError,),
        _bounded(timeout, settings.mongodb_timeout_ms / 1000) if settings.mongodb_uri else None,
    )


def _bounded(timeout: Callable[[float], ContextManager], longest_s: float) -> Callable[[float], ContextManager]:
    """pymongo.timeout for the time left, never longer than MONGODB_TIMEOUT_MS (it overrides the client's)."""
    return lambda left: timeout(min(left, longest_s))


def embedded_client(catalog_file: Optional[str], database: str):
    """An in-process catalog with pymongo's API (mongomock), loaded from ``LOCAL_CATALOG_FILE``."""
    try:
        import mongomock
    except ImportError:
        raise ConfigurationError(
            "MONGODB_URI is not set, and the embedded catalog needs mongomock (a development dependency)"
        ) from None
    client: Any = mongomock.MongoClient()
    if catalog_file:
        try:
            with open(catalog_file, encoding="utf-8") as handle:
                documents = json.load(handle)
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"LOCAL_CATALOG_FILE {catalog_file!r} cannot be read: {error}") from None
        if not isinstance(documents, list):
            raise ConfigurationError(f"LOCAL_CATALOG_FILE {catalog_file!r} must hold a JSON array of documents")
        collection = client[database][COLLECTION]
        collection.create_index("guid", unique=True)
        if documents:
            collection.insert_many(documents)
    return client
