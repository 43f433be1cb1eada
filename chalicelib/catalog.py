"""The episode catalog: MongoDB's ``episode_metadata`` collection, looked up by ``guid``.

pymongo is imported only when a catalog is first needed, so a cache hit's cold start never loads it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Optional

from chalicelib.errors import CatalogUnavailable, ConfigurationError, NotFound
from chalicelib.settings import Settings
from chalicelib.storage import parse_s3_url

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


class Catalog:
    """Handed a pymongo-compatible collection; turns every database fault into a 503 with Retry-After."""

    def __init__(self, collection, retry_after_seconds: int, driver_errors: tuple = (Exception,)):
        self._collection = collection
        self._retry_after = retry_after_seconds
        self._driver_errors = driver_errors

    def find_episode(self, guid: str) -> Episode:
        try:
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
        return Episode(guid, bucket, key, doc.get("podcast_title"), feed.get("episode_title"))

    def ping(self) -> None:
        try:
            self._collection.database.client.admin.command("ping")
        except self._driver_errors as error:
            raise unavailable(error, self._retry_after) from None


def unavailable(error: Exception, retry_after_seconds: int) -> CatalogUnavailable:
    return CatalogUnavailable("The episode catalog is unavailable; try again later",
                              retry_after_seconds=retry_after_seconds, detail=f"{type(error).__name__}: {error}")


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
    from pymongo.errors import PyMongoError  # mongomock raises pymongo's errors too

    if settings.mongodb_uri:
        try:  # a mongodb+srv URI resolves its SRV records here: a DNS outage must be a 503 too
            client = mongo_client(settings)
        except PyMongoError as error:
            raise unavailable(error, settings.mongodb_retry_after_seconds) from None
    else:
        client = embedded_client(settings.local_catalog_file, settings.mongodb_db)
    return Catalog(client[settings.mongodb_db][COLLECTION], settings.mongodb_retry_after_seconds, (PyMongoError,))


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
