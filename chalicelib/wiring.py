"""The one place that reads the environment and builds clients; everything else is handed what it needs.

Clients are created on first use and reused across warm invocations. ``reset()`` forgets them (tests).
S3, the clip cache and FFmpeg are built from the declared settings alone; a secret named by an SSM parameter is
fetched only by what needs it (the catalog, the Atlas check, the CloudFront signer), so a cache hit and the
shallow health check never depend on SSM, except for the signing key of a stage with CloudFront.
"""

from __future__ import annotations

import functools
from typing import Optional

from chalicelib.settings import ATLAS_SECRETS, CATALOG_SECRETS, Settings
from chalicelib.stores import secrets


class Wiring:
    def __init__(self, declared: Settings):
        self.declared = declared  # as the environment states them: validated, no I/O (app.py reads these at import)

    @functools.cached_property
    def settings(self) -> Settings:
        """The declared settings with every secret fetched: for the scheduled health check, which needs them all."""
        return self.declared.with_secrets(secrets.fetcher("The health check's configuration"))

    @functools.cached_property
    def s3(self):
        import boto3
        from botocore.config import Config

        from chalicelib.stores import s3 as s3_module

        config = Config(
            signature_version="s3v4",
            connect_timeout=s3_module.S3_CONNECT_TIMEOUT_S,
            read_timeout=s3_module.S3_READ_TIMEOUT_S,
            retries={"mode": "standard", "total_max_attempts": s3_module.S3_ATTEMPTS},
            s3={"us_east_1_regional_endpoint": "regional"},
        )
        client = boto3.client("s3", region_name=self.declared.aws_region, config=config)
        client.meta.events.register("before-send.s3", s3_module.refuse_late_attempts)  # bounded by the deadline
        return client

    @functools.cached_property
    def clip_store(self):
        from chalicelib.stores.clip_cache import ClipStore
        from chalicelib.stores.signing import DeferredSigner

        return ClipStore(
            self.s3,
            self.declared.clips_bucket,
            self.declared.clip_url_ttl_seconds,
            DeferredSigner(lambda: self.url_signer),
        )

    @functools.cached_property
    def url_signer(self):
        """Who signs clip URLs: CloudFront when CLOUDFRONT_DOMAIN is set (its private key read from SSM once per
        process, never logged), otherwise S3 with the client's own credentials."""
        from chalicelib.stores import signing

        declared = self.declared
        if not declared.cloudfront_domain:
            return signing.S3UrlSigner(self.s3, declared.clips_bucket, declared.clip_url_ttl_seconds)
        parameter = declared.cloudfront_private_key_ssm_parameter or ""
        pem = secrets.fetch_secret(parameter, "The clip URL signing key (CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER)")
        key = signing.load_private_key(pem, "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER")
        return signing.CloudFrontUrlSigner(
            declared.cloudfront_domain, declared.cloudfront_key_pair_id or "", key, declared.clip_url_ttl_seconds
        )

    @functools.cached_property
    def cleanup(self):
        from chalicelib.clips.cleanup import ClipCleanup

        return ClipCleanup(self.s3, self.declared.clips_bucket)

    @functools.cached_property
    def indexer(self):
        from chalicelib.clips.seek_index import UploadIndexer

        return UploadIndexer(self.s3, self.clip_store, lambda: self.ffmpeg)

    @functools.cached_property
    def catalog(self):
        from chalicelib.stores.catalog import open_catalog

        fetch = secrets.fetcher("The episode catalog's configuration")
        return open_catalog(self.declared.with_secrets(fetch, only=CATALOG_SECRETS))

    @functools.cached_property
    def ffmpeg(self) -> Optional[str]:
        from chalicelib.audio.ffmpeg import find_ffmpeg

        return find_ffmpeg(self.declared.ffmpeg_path)

    @functools.cached_property
    def atlas(self):
        from chalicelib.ops.health import AtlasApi

        atlas = self.declared.with_secrets(secrets.fetcher("The Atlas check's configuration"), only=ATLAS_SECRETS).atlas
        return AtlasApi(atlas) if atlas else None  # kept: it caches its token

    @functools.cached_property
    def sns(self):
        import boto3

        return boto3.client("sns", region_name=self.declared.aws_region)

    def publish_alert(self, alert) -> None:
        self.sns.publish(TopicArn=self.declared.alert_topic_arn, Subject=alert.subject, Message=alert.message)

    @functools.cached_property
    def clips(self):
        from chalicelib.clips.service import ClipService

        return ClipService(
            self.s3,
            self.clip_store,
            lambda: self.catalog,
            lambda: self.ffmpeg,
            allowed_buckets=self.declared.source_allowed_buckets,
        )

    @functools.cached_property
    def pictures(self):
        from chalicelib.clips.pictures import ClipPictures

        return ClipPictures(self.clips, self.clip_store, lambda: self.ffmpeg)


@functools.lru_cache(maxsize=1)
def current() -> Wiring:
    return Wiring(Settings.from_env())


def reset() -> None:
    current.cache_clear()
    secrets.reset()
