"""The service's configuration: read from the environment once, validated, then passed around as values."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from chalicelib.errors import ConfigurationError

DEFAULT_CLIP_MS = 30_000
MIN_CLIP_MS = 1_000


@dataclass(frozen=True)
class Settings:
    source_bucket: str = "pod-insights-raw"
    clips_bucket: str = "pod-insights-clips"
    mongodb_uri: Optional[str] = None
    mongodb_db: str = "podinsight"
    max_clip_ms: int = 60_000
    clip_url_ttl_seconds: int = 86_400
    ffmpeg_path: Optional[str] = None
    alert_topic_arn: Optional[str] = None
    local_catalog_file: Optional[str] = None
    aws_endpoint_url: Optional[str] = None
    aws_region: str = "us-east-1"
    mongodb_timeout_ms: int = 3_000
    mongodb_retry_after_seconds: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        def text(name: str, default: Optional[str]) -> Optional[str]:
            value = env.get(name, "").strip()
            return value or default

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = text(name, None)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
            if not low <= value <= high:
                raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
            return value

        return cls(
            source_bucket=text("SOURCE_BUCKET", cls.source_bucket),
            clips_bucket=text("CLIPS_BUCKET", cls.clips_bucket),
            mongodb_uri=text("MONGODB_URI", None),
            mongodb_db=text("MONGODB_DB", cls.mongodb_db),
            max_clip_ms=integer("MAX_CLIP_MS", cls.max_clip_ms, MIN_CLIP_MS, 600_000),
            clip_url_ttl_seconds=integer("CLIP_URL_TTL_SECONDS", cls.clip_url_ttl_seconds, 60, 7 * 86_400),
            ffmpeg_path=text("FFMPEG_PATH", None),
            alert_topic_arn=text("ALERT_TOPIC_ARN", None),
            local_catalog_file=text("LOCAL_CATALOG_FILE", None),
            aws_endpoint_url=text("AWS_ENDPOINT_URL", None),
            aws_region=text("AWS_REGION", None) or text("AWS_DEFAULT_REGION", cls.aws_region),
            mongodb_timeout_ms=integer("MONGODB_TIMEOUT_MS", cls.mongodb_timeout_ms, 100, 3_000),
            mongodb_retry_after_seconds=integer("MONGODB_RETRY_AFTER_SECONDS", cls.mongodb_retry_after_seconds, 1, 3_600),
        )
