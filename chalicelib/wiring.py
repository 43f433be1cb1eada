"""The one place that reads the environment and builds clients; everything else is handed what it needs.

Clients are created on first use and reused across warm invocations. ``reset()`` forgets them (tests).
"""
from __future__ import annotations

import functools
from typing import Optional

from chalicelib.settings import Settings


class Wiring:
    def __init__(self, declared: Settings):
        self.declared = declared  # as the environment states them: validated, no I/O (app.py reads these at import)

    @functools.cached_property
    def settings(self) -> Settings:
        """The declared settings with secrets named by SSM parameters fetched: once per process, on first use."""
        return self.declared.with_secrets(fetch_ssm_parameters)

    @functools.cached_property
    def s3(self):
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            connect_timeout=2,
            read_timeout=5,
            retries={"mode": "standard", "total_max_attempts": 3},
            s3={"us_east_1_regional_endpoint": "regional"},
        )
        return boto3.client("s3", region_name=self.settings.aws_region, config=config)

    @functools.cached_property
    def clip_store(self):
        from chalicelib.storage import ClipStore

        return ClipStore(self.s3, self.settings.clips_bucket, self.settings.clip_url_ttl_seconds)

    @functools.cached_property
    def cleanup(self):
        from chalicelib.cleanup import ClipCleanup

        return ClipCleanup(self.s3, self.settings.clips_bucket)

    @functools.cached_property
    def indexer(self):
        from chalicelib.indexing import UploadIndexer

        return UploadIndexer(self.s3, self.clip_store)

    @functools.cached_property
    def catalog(self):
        from chalicelib.catalog import open_catalog

        return open_catalog(self.settings)

    @functools.cached_property
    def ffmpeg(self) -> Optional[str]:
        from chalicelib.ffmpeg import find_ffmpeg

        return find_ffmpeg(self.settings.ffmpeg_path)

    @functools.cached_property
    def atlas(self):
        from chalicelib.health import AtlasApi

        return AtlasApi(self.settings.atlas) if self.settings.atlas else None  # kept: it caches its token

    @functools.cached_property
    def sns(self):
        import boto3

        return boto3.client("sns", region_name=self.settings.aws_region)

    def publish_alert(self, alert) -> None:
        self.sns.publish(TopicArn=self.settings.alert_topic_arn, Subject=alert.subject, Message=alert.message)

    @functools.cached_property
    def clips(self):
        from chalicelib.clips import ClipService

        return ClipService(self.s3, self.clip_store, lambda: self.catalog, lambda: self.ffmpeg)


@functools.lru_cache(maxsize=1)
def current() -> Wiring:
    return Wiring(Settings.from_env())


def fetch_ssm_parameters(names):
    """Secrets named by SSM parameters, read once per process (cold start), decrypted."""
    import boto3

    from chalicelib.errors import ConfigurationError

    response = boto3.client("ssm").get_parameters(Names=list(names), WithDecryption=True)
    if response.get("InvalidParameters"):
        raise ConfigurationError(f"SSM parameters not found: {', '.join(response['InvalidParameters'])} "
                                 "(named by a *_SSM_PARAMETER variable)")
    return {p["Name"]: p["Value"] for p in response["Parameters"]}


def reset() -> None:
    current.cache_clear()
