"""Typed client for the audio clip service (see README.md beside this package)."""

from audio_clips_client.client import (
    AudioClipsClient,
    BadRequest,
    Clip,
    ClipServiceError,
    Health,
    NotFound,
    OEmbed,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unprocessable,
)

__all__ = [
    "AudioClipsClient",
    "BadRequest",
    "Clip",
    "ClipServiceError",
    "Health",
    "NotFound",
    "OEmbed",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "TransportError",
    "Unprocessable",
]
