"""The scheduled health check: ping MongoDB, diagnose what is wrong (an Atlas cluster that is paused among the
rest), publish metrics, and alert once on each change of state, never every run.

State lives in S3 (``_health/state.json`` in the clips bucket) and is written with a conditional PUT, so that two
overlapping runs cannot both claim the same change and both alert. A run never raises: Lambda would retry a failed
scheduled invocation, and a retry would alert twice.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.ops import logs
from chalicelib.settings import AtlasSettings

log = logging.getLogger("audio_clips.health")

STATE_KEY = "_health/state.json"
ATLAS_ACCEPT = "application/vnd.atlas.2024-08-05+json"


# ------------------------------------------------------------------ probing MongoDB


@dataclass
class Probe:
    ok: bool
    latency_ms: float
    diagnosis: (
        str  # "ok", "DNS failure", "connection refused", "timeout", "authentication failed", "TLS error", "error"
    )
    detail: str = ""


def ping_mongodb(uri: str, budget_ms: int) -> Probe:
    """``admin.command('ping')`` on a fresh client, every timeout set to the budget; the client is closed after."""
    from pymongo import MongoClient

    started = time.perf_counter()
    client: Any = None
    try:
        client = MongoClient(
            uri,
            serverSelectionTimeoutMS=budget_ms,
            connectTimeoutMS=budget_ms,
            socketTimeoutMS=budget_ms,
            timeoutMS=budget_ms,
            appname="audio-clips-health",
        )
        client.admin.command("ping")
        return Probe(True, _since(started), "ok")
    except Exception as error:  # every driver failure is a diagnosis, not a crash
        return Probe(False, _since(started), classify(error), f"{type(error).__name__}: {str(error)[:300]}")
    finally:
        if client is not None:
            client.close()


def classify(error: Exception) -> str:
    text = str(error)
    name = type(error).__name__
    if getattr(error, "code", None) == 18 or "Authentication failed" in text or "bad auth" in text:
        return "authentication failed"
    if "SSL" in text or "TLS" in text or "CERTIFICATE" in text.upper():
        return "TLS error"
    if (
        "DNS" in text
        or "Name or service not known" in text
        or "nodename nor servname" in text
        or "Errno -2]" in text
        or "Errno -3]" in text
        or "Errno -5]" in text
        or "getaddrinfo" in text
    ):
        return "DNS failure"
    if "Connection refused" in text or "Errno 111]" in text:
        return "connection refused"
    if "timed out" in text or name in (
        "NetworkTimeout",
        "ExecutionTimeout",
        "WTimeoutError",
        "ServerSelectionTimeoutError",
    ):
        return "timeout"
    return "error"


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


# ------------------------------------------------------------------ the Atlas Admin API


@dataclass
class AtlasCluster:
    paused: bool
    state: str


class AtlasApi:
    """Reads (and optionally resumes) one cluster. A service account's token is cached until it expires."""

    def __init__(self, settings: AtlasSettings, session=None, timeout_s: float = 5.0):
        import requests

        self._settings = settings
        self._session = session or requests.Session()
        self._timeout = timeout_s
        self._token: Optional[Tuple[str, float]] = None  # (token, monotonic expiry)

    @property
    def _cluster_url(self) -> str:
        s = self._settings
        return f"{s.base_url}/api/atlas/v2/groups/{s.project_id}/clusters/{s.cluster_name}"

    def cluster(self) -> AtlasCluster:
        response = self._call("GET", self._cluster_url)
        document = response.json()
        return AtlasCluster(bool(document.get("paused")), str(document.get("stateName", "UNKNOWN")))

    def resume(self) -> None:
        self._call("PATCH", self._cluster_url, json={"paused": False})

    def _call(self, method: str, url: str, **kwargs):
        headers = {"Accept": ATLAS_ACCEPT}
        if "json" in kwargs:
            headers["Content-Type"] = ATLAS_ACCEPT
        auth = None
        if self._settings.client_id and self._settings.client_secret:
            headers["Authorization"] = f"Bearer {self._bearer()}"
        else:
            from requests.auth import HTTPDigestAuth

            auth = HTTPDigestAuth(self._settings.public_key or "", self._settings.private_key or "")
        response = self._session.request(method, url, headers=headers, auth=auth, timeout=self._timeout, **kwargs)
        response.raise_for_status()
        return response

    def _bearer(self) -> str:
        if self._token and time.monotonic() < self._token[1]:
            return self._token[0]
        response = self._session.post(
            f"{self._settings.base_url}/api/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(self._settings.client_id or "", self._settings.client_secret or ""),
            headers={"Accept": "application/json"},
            timeout=self._timeout,
        )
        response.raise_for_status()
        document = response.json()
        lifetime = float(document.get("expires_in", 3600))
        self._token = (document["access_token"], time.monotonic() + max(lifetime - 60, lifetime / 2))
        return self._token[0]


# ------------------------------------------------------------------ state and alerts


class HealthState:
    """The last known state, in S3, read with its ETag and written only if nobody wrote it since."""

    def __init__(self, s3, bucket: str, key: str = STATE_KEY):
        self._s3 = s3
        self.bucket = bucket
        self.key = key

    def load(self) -> Tuple[Optional[dict], Optional[str]]:
        """(state, etag); (None, None) when absent, and (None, etag) when unreadable: unknown, not an error."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        etag = response["ETag"]
        try:
            state = json.loads(response["Body"].read())
            return (state if isinstance(state, dict) and isinstance(state.get("healthy"), bool) else None), etag
        except ValueError:
            return None, etag

    def save(self, state: dict, etag: Optional[str]) -> Optional[str]:
        """The new ETag, or None if another run wrote the state first."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            response = self._s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=json.dumps(state).encode(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            ):
                return None
            raise
        return response["ETag"]


@dataclass
class Alert:
    subject: str
    message: str


def transition_alert(
    previous: Optional[dict], healthy: bool, diagnosis: str, detail: str, now: datetime, cluster: str
) -> Optional[Alert]:
    """The alert for this run's change of state, if it is one: healthy (or unknown) to unhealthy, unhealthy to
    healthy. Unknown to healthy is not news."""
    was = previous.get("healthy") if previous else None
    if not healthy and was is not False:
        return Alert(
            f"audio-clips: MongoDB catalog unreachable ({diagnosis})"[:100],
            f"The episode catalog ({cluster}) stopped answering at {_iso(now)}: {diagnosis}.\n"
            f"Cached clips are still served; new clips fail with 503 until it is back.\n\nDetail: {detail}\n"
            + (
                "\nThe Atlas cluster is paused: resume it in Atlas (or set ATLAS_AUTO_RESUME=true).\n"
                if diagnosis == "cluster paused"
                else ""
            ),
        )
    if healthy and previous and was is False:
        since = _parse(previous.get("since")) or now
        outage = _duration(now - since)
        return Alert(
            f"audio-clips: MongoDB catalog back after {outage}"[:100],
            f"The episode catalog ({cluster}) answers again at {_iso(now)}, after {outage} "
            f"(down since {_iso(since)}: {previous.get('diagnosis', 'unknown')}).",
        )
    return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: Optional[str]) -> Optional[datetime]:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) if text else None
    except ValueError:
        return None


def _duration(delta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours} h {minutes} min" if hours else (f"{minutes} min" if minutes else f"{seconds} s")


# ------------------------------------------------------------------ one run


@dataclass
class Outcome:
    healthy: bool
    diagnosis: str
    latency_ms: float
    atlas_paused: Optional[bool] = None
    atlas_state: Optional[str] = None
    resumed: bool = False
    alert: Optional[str] = None  # the subject sent
    alert_failed: bool = False
    state_written: bool = False
    errors: Tuple[str, ...] = ()


def run_check(
    ping: Callable[[], Probe],
    atlas: Optional[AtlasApi],
    auto_resume: bool,
    state: HealthState,
    publish: Optional[Callable[[Alert], None]],
    cluster: str,
    now: Optional[datetime] = None,
) -> Outcome:
    now = now or datetime.now(timezone.utc)
    errors = []
    probe = ping()
    outcome = Outcome(probe.ok, probe.diagnosis, probe.latency_ms)
    if atlas is not None:
        try:
            found = atlas.cluster()
            outcome.atlas_paused, outcome.atlas_state = found.paused, found.state
            if found.paused:
                outcome.diagnosis = "cluster paused" if not probe.ok else outcome.diagnosis
                if auto_resume:
                    atlas.resume()
                    outcome.resumed = True
        except Exception as error:  # the API is an extra: its failure never hides the ping's answer
            errors.append(f"atlas: {type(error).__name__}: {error}")
    emit_metrics(outcome)

    try:
        previous, etag = state.load()
    except (ClientError, BotoCoreError) as error:
        errors.append(f"state unreadable: {error}")
        previous, etag = None, None
    pending = previous.get("pending_alert") if previous else None
    alert = transition_alert(previous, probe.ok, outcome.diagnosis, probe.detail, now, cluster)
    same = previous is not None and previous.get("healthy") == probe.ok
    record = {
        "healthy": probe.ok,
        "diagnosis": outcome.diagnosis,
        "since": previous.get("since") if previous and same and previous.get("since") else _iso(now),
        "checked_at": _iso(now),
        "pending_alert": None,
    }
    to_send = [a for a in (Alert(**pending) if pending else None, alert) if a]
    try:
        new_etag = state.save(record, etag)
    except (ClientError, BotoCoreError) as error:
        errors.append(f"state not written: {error}")
        new_etag = None
        to_send = []  # without the claim, another run may alert: stay silent rather than alert twice
    outcome.state_written = new_etag is not None
    if new_etag is None:
        to_send = []  # another run claimed this change
    for message in to_send:
        try:
            if publish is None:
                raise RuntimeError("ALERT_TOPIC_ARN is not set")
            publish(message)
            outcome.alert = message.subject
        except Exception as error:
            outcome.alert_failed = True
            errors.append(f"alert not sent: {error}")
            try:  # keep it for the next run rather than lose it
                state.save({**record, "pending_alert": asdict(message)}, new_etag)
            except (ClientError, BotoCoreError) as again:
                errors.append(f"pending alert not kept: {again}")
            break
    outcome.errors = tuple(errors)
    return outcome


def emit_metrics(outcome: Outcome) -> None:
    """The check's metrics as one CloudWatch embedded-metric line (chalicelib/metrics.py)."""
    from chalicelib.ops import metrics

    metrics.record_health(outcome.healthy, outcome.latency_ms, outcome.atlas_paused, outcome.diagnosis)


def scheduled_run(wiring, request_id: str = "-") -> dict:
    """What the schedule invokes: one check, one log line, and no exception out of it (see the module's doc)."""
    token = logs.request_id.set(request_id)
    try:
        settings = wiring.settings
        if settings.mongodb_uri:
            ping = lambda: ping_mongodb(settings.mongodb_uri, settings.health_ping_budget_ms)
        else:
            ping = lambda: _ping_catalog(wiring)  # the embedded catalog, in local runs
        outcome = run_check(
            ping=ping,
            atlas=wiring.atlas,
            auto_resume=bool(settings.atlas and settings.atlas.auto_resume),
            state=HealthState(wiring.s3, settings.clips_bucket),
            publish=wiring.publish_alert if settings.alert_topic_arn else None,
            cluster=describe_cluster(settings),
        )
        result = asdict(outcome)
        logs.emit(
            log,
            logging.WARNING if outcome.errors or not outcome.healthy else logging.INFO,
            event="health_check",
            **result,
        )
        return result
    except Exception as error:
        log.exception("health check failed")
        return {"healthy": None, "errors": [f"{type(error).__name__}: {error}"]}
    finally:
        logs.request_id.reset(token)


def _ping_catalog(wiring) -> Probe:
    started = time.perf_counter()
    try:
        wiring.catalog.ping()
        return Probe(True, _since(started), "ok")
    except Exception as error:
        return Probe(False, _since(started), classify(error), str(error)[:300])


def describe_cluster(settings) -> str:
    """The cluster's name or hosts, never its credentials."""
    if settings.atlas is not None:
        return f"Atlas cluster {settings.atlas.cluster_name}"
    if not settings.mongodb_uri:
        return "embedded catalog"
    hosts = settings.mongodb_uri.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    return f"MongoDB at {hosts}"
