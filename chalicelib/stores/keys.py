"""Names in S3: the contract's episode ids, where an episode's clips and artefacts live, and ``s3://`` URLs."""

from __future__ import annotations

import re
from typing import Tuple

CLIP_PREFIX = "audio_clips/"
SEEK_INDEX_NAME = "seek-index.json"
LEVELS_NAME = "levels.bin"  # the episode's loudness, one byte a 10 ms hop (snap=pause reads a few seconds of it)
WAVEFORM_NAME = "waveform.json"
CARD_NAME = "card.png"
S3_SCHEME = "s3://"

EPISODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def is_episode_id(text: str) -> bool:
    """The contract's grammar for an episode id, minus all-dot names that a URL path would resolve away."""
    return bool(EPISODE_ID.fullmatch(text or "")) and set(text) != {"."}


def clip_key(episode_id: str, start_ms: int, end_ms: int) -> str:
    return f"{episode_prefix(episode_id)}{start_ms}-{end_ms}.mp3"


def clip_range(key: str) -> Tuple[int, int]:
    """(start_ms, end_ms) of a clip's key (``clip_key``)."""
    start, _, end = key.rsplit("/", 1)[-1].removesuffix(".mp3").partition("-")
    return int(start), int(end)


def snap_key(episode_id: str, start_ms: int, end_ms: int, snap: str) -> str:
    """Where a request asked with ``snap`` finds the clip it was served (a small object beside the clips)."""
    return f"{episode_prefix(episode_id)}{start_ms}-{end_ms}.snap-{snap}.json"


def beside_clip(clip_key: str, name: str) -> str:
    """The key of an artefact derived from one clip (its waveform, its card), beside it under the episode's prefix
    so that the cleanup purges it with the clip: ``audio_clips/{guid}/{start}-{end}.{name}``."""
    return f"{clip_key.removesuffix('.mp3')}.{name}"


def episode_prefix(episode_id: str) -> str:
    return f"{CLIP_PREFIX}{episode_id}/"


def parse_s3_url(url: str) -> Tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key), the key exactly as written: S3 keys may hold '#', '?', '%', '+' and
    spaces, which a URL parser would read as a fragment, a query or escapes. ValueError for anything else."""
    rest = (url or "").removeprefix(S3_SCHEME) if (url or "").startswith(S3_SCHEME) else ""
    bucket, _, key = rest.partition("/")
    key = key.lstrip("/")
    if not bucket or not key:
        raise ValueError(f"not an s3:// URL: {url!r}")
    return bucket, key
