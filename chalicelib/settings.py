"""The service's configuration: read from the environment once, validated, then passed around as values."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Dict, Mapping, Optional, Tuple, overload
from urllib.parse import urlsplit

from chalicelib.errors import ConfigurationError

DEFAULT_CLIP_MS = 30_000
MIN_CLIP_MS = 1_000
SSM_SUFFIX = "_SSM_PARAMETER"
SECRETS = ("MONGODB_URI", "ATLAS_CLIENT_SECRET", "ATLAS_PRIVATE_KEY")  # each may instead name an SSM parameter
CATALOG_SECRETS = ("MONGODB_URI",)
ATLAS_SECRETS = ("ATLAS_CLIENT_SECRET", "ATLAS_PRIVATE_KEY")


@dataclass(frozen=True)
class AtlasSettings:
    """The optional Atlas Admin API check: a service account (OAuth client credentials) or legacy API keys."""

    project_id: str
    cluster_name: str
    base_url: str = "https://cloud.mongodb.com"
    client_id: Optional[str] = None
    client_secret: Optional[str] = field(default=None, repr=False)
    public_key: Optional[str] = None
    private_key: Optional[str] = field(default=None, repr=False)
    auto_resume: bool = False


@dataclass(frozen=True)
class Settings:
    source_bucket: str = "pod-insights-raw"
    clips_bucket: str = "pod-insights-clips"
    mongodb_uri: Optional[str] = field(default=None, repr=False)
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
    health_check_rate_minutes: int = 5
    health_ping_budget_ms: int = 3_000
    cors_allow_origins: Tuple[str, ...] = ()  # browser origins allowed to read answers; ("*",) for any
    public_base_url: Optional[str] = None  # base of absolute links in answers; None: taken from the request
    atlas: Optional[AtlasSettings] = None
    secret_parameters: Optional[Dict[str, str]] = None  # variable -> SSM parameter name, fetched on first use
    source_allowed_buckets: Tuple[str, ...] = ()  # buckets s3_audio_path may name; from_env defaults to source_bucket
    cloudfront_domain: Optional[str] = None  # set: clip URLs are CloudFront signed URLs for this host
    cloudfront_key_pair_id: Optional[str] = None  # the CloudFront public key's id in the distribution's key group
    cloudfront_private_key_ssm_parameter: Optional[str] = None  # SSM SecureString holding the matching private key
    source_events: str = "eventbridge"  # how cleanup_clips hears of source audio: "eventbridge" or "s3" (deploy time)
    tracing: bool = False  # X-Ray subsegments through Powertools' Tracer (with the stage's "xray": true)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        @overload
        def text(name: str, default: str) -> str: ...
        @overload
        def text(name: str, default: None) -> Optional[str]: ...
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

        def flag(name: str) -> bool:
            raw = (text(name, "false") or "").lower()
            if raw not in ("true", "false"):
                raise ConfigurationError(f"{name} must be 'true' or 'false', got {raw!r}")
            return raw == "true"

        parameters = {name: env[name + SSM_SUFFIX] for name in SECRETS if env.get(name + SSM_SUFFIX, "").strip()}
        auto_resume = flag("ATLAS_AUTO_RESUME")
        atlas = None
        if text("ATLAS_PROJECT_ID", None) or text("ATLAS_CLUSTER_NAME", None):
            if not (text("ATLAS_PROJECT_ID", None) and text("ATLAS_CLUSTER_NAME", None)):
                raise ConfigurationError("ATLAS_PROJECT_ID and ATLAS_CLUSTER_NAME go together: set both or neither")
            service_account = text("ATLAS_CLIENT_ID", None) and (
                text("ATLAS_CLIENT_SECRET", None) or "ATLAS_CLIENT_SECRET" in parameters
            )
            api_keys = text("ATLAS_PUBLIC_KEY", None) and (
                text("ATLAS_PRIVATE_KEY", None) or "ATLAS_PRIVATE_KEY" in parameters
            )
            if not (service_account or api_keys):
                raise ConfigurationError(
                    "the Atlas check needs ATLAS_CLIENT_ID with ATLAS_CLIENT_SECRET (service account) "
                    "or ATLAS_PUBLIC_KEY with ATLAS_PRIVATE_KEY (API keys); a secret may be given as "
                    f"<NAME>{SSM_SUFFIX} instead"
                )
            atlas = AtlasSettings(
                project_id=text("ATLAS_PROJECT_ID", ""),
                cluster_name=text("ATLAS_CLUSTER_NAME", ""),
                base_url=text("ATLAS_API_BASE_URL", AtlasSettings.base_url).rstrip("/"),
                client_id=text("ATLAS_CLIENT_ID", None),
                client_secret=text("ATLAS_CLIENT_SECRET", None),
                public_key=text("ATLAS_PUBLIC_KEY", None),
                private_key=text("ATLAS_PRIVATE_KEY", None),
                auto_resume=auto_resume,
            )
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
            mongodb_retry_after_seconds=integer(
                "MONGODB_RETRY_AFTER_SECONDS", cls.mongodb_retry_after_seconds, 1, 3_600
            ),
            health_check_rate_minutes=integer("HEALTH_CHECK_RATE_MINUTES", cls.health_check_rate_minutes, 1, 1_440),
            health_ping_budget_ms=integer("HEALTH_PING_BUDGET_MS", cls.health_ping_budget_ms, 200, 10_000),
            cors_allow_origins=tuple(
                o.strip().rstrip("/") for o in (text("CORS_ALLOW_ORIGINS", "") or "").split(",") if o.strip()
            ),
            public_base_url=_base_url(text("PUBLIC_BASE_URL", None)),
            atlas=atlas,
            secret_parameters=parameters or None,
            source_allowed_buckets=tuple(
                b.strip() for b in (text("SOURCE_ALLOWED_BUCKETS", "") or "").split(",") if b.strip()
            )
            or (text("SOURCE_BUCKET", cls.source_bucket) or "",),
            **_cloudfront(
                text("CLOUDFRONT_DOMAIN", None),
                text("CLOUDFRONT_KEY_PAIR_ID", None),
                text("CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER", None),
            ),
            source_events=_choice("SOURCE_EVENTS", text("SOURCE_EVENTS", cls.source_events), SOURCE_EVENT_MODES),
            tracing=flag("TRACING"),
        )

    def with_secrets(self, fetch, only: Optional[Tuple[str, ...]] = None) -> "Settings":
        """These settings with each secret named by an SSM parameter filled in (``only`` those, when given);
        ``fetch(names) -> {name: value}``."""
        wanted = {
            name: parameter
            for name, parameter in (self.secret_parameters or {}).items()
            if only is None or name in only
        }
        if not wanted:
            return self
        values = fetch(sorted(set(wanted.values())))
        secret = {name: values[parameter] for name, parameter in wanted.items()}
        atlas = self.atlas
        if atlas is not None:
            atlas = replace(
                atlas,
                client_secret=secret.get("ATLAS_CLIENT_SECRET", atlas.client_secret),
                private_key=secret.get("ATLAS_PRIVATE_KEY", atlas.private_key),
            )
        rest = {name: parameter for name, parameter in (self.secret_parameters or {}).items() if name not in wanted}
        return replace(
            self, mongodb_uri=secret.get("MONGODB_URI", self.mongodb_uri), atlas=atlas, secret_parameters=rest or None
        )


SOURCE_EVENT_MODES = ("eventbridge", "s3")


def _choice(name: str, value: Optional[str], allowed: Tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _base_url(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            f"PUBLIC_BASE_URL must be an http(s) URL with no query, such as https://clips.example.com, got {value!r}"
        )
    return value.rstrip("/")


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+")  # at least two labels: no scheme, port or path
_KEY_PAIR_ID = re.compile(r"[A-Z0-9]{8,64}")
_SSM_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,2048}")


def _cloudfront(domain: Optional[str], key_pair_id: Optional[str], parameter: Optional[str]) -> Dict[str, str]:
    """The CloudFront signing settings: all three together, or none (clip URLs are then pre-signed by S3)."""
    if domain is None:
        for name, value in (
            ("CLOUDFRONT_KEY_PAIR_ID", key_pair_id),
            ("CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER", parameter),
        ):
            if value is not None:
                raise ConfigurationError(
                    f"{name} is set but CLOUDFRONT_DOMAIN is not: set the distribution's "
                    "domain too, or unset both to serve S3 pre-signed URLs"
                )
        return {}
    if not _HOSTNAME.fullmatch(domain):
        raise ConfigurationError(
            f"CLOUDFRONT_DOMAIN must be a host name without scheme or path, such as "
            f"d111111abcdef8.cloudfront.net, got {domain[:100]!r}"
        )
    if key_pair_id is None or not _KEY_PAIR_ID.fullmatch(key_pair_id):
        raise ConfigurationError(
            "CLOUDFRONT_KEY_PAIR_ID is required with CLOUDFRONT_DOMAIN: the id of the "
            "CloudFront public key (upper-case letters and digits, such as K2JCJMDEHXQW5F)"
            + (f", got {key_pair_id[:100]!r}" if key_pair_id else "")
        )
    if parameter is None or not _SSM_NAME.fullmatch(parameter):
        raise ConfigurationError(
            "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER is required with CLOUDFRONT_DOMAIN: the name "
            "of the SSM SecureString holding the private key (PEM), such as "
            "/audio-clips/prod/cloudfront-private-key" + (f", got {parameter[:100]!r}" if parameter else "")
        )
    return {
        "cloudfront_domain": domain.lower(),
        "cloudfront_key_pair_id": key_pair_id,
        "cloudfront_private_key_ssm_parameter": parameter,
    }
