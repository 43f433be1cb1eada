"""One stage's deployment, from any clone: `make deploy|destroy|policies STAGE=dev|prod [REGION=...]`.

    python infra/stage.py check|policies|deploy|destroy STAGE [--region REGION] [--config .chalice/config.json]

- ``check``: what can be known before any AWS call (region, stage settings, the FFmpeg layer of ``api_handler``);
  each refusal names the command that fixes it.
- ``policies``: writes ``.chalice/policy-<stage>-<function>.json`` from the stage's settings (bucket names, stage):
  the only place the policies are written; edit ``policy_documents`` here, never the generated files.
- ``deploy``: check, policies, then ``chalice deploy`` between fetching and storing Chalice's deployed state
  (``.chalice/deployed/<stage>.json``) in the stage's artifacts bucket, so that every clone and CI update the same
  API and functions (a deploy that fails part way stores what it had created: infra/chalice_deploy.py); then the
  stage's limits and gateway answers (throttling, gateway responses, the optional per-client WAF rule) and
  ``cleanup_clips``'s failed events sent to its SQS queue. One deploy of a stage at a time: a lock with an owner
  and an expiry (``DeployLock``).
- ``source-events``: turns on the source bucket's delivery to EventBridge, keeping its other notifications
  (optional: the bucket's owner may do it instead).
- ``destroy``: ``chalice delete``, the stored state, the layer's versions, and the infra stack; the clips bucket is
  retained (said so).

boto3 takes credentials and ``AWS_ENDPOINT_URL`` from the environment; the region is checked up front.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import getpass
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".chalice" / "config.json"
APP_NAME = "audio-clips"
FUNCTIONS = ("api_handler", "cleanup_clips", "health_check")
STATE_PREFIX = "chalice-state"  # s3://<LAYER_ARTIFACTS_BUCKET>/chalice-state/<stage>.json
LAYER_ARN = re.compile(
    r"^arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12})"
    r":layer:(?P<name>[A-Za-z0-9_-]+):(?P<version>\d+)$"
)


class StageError(Exception):
    """A stage that cannot be deployed as configured; the message names the fix."""


# ------------------------------------------------------------------ names, one place


def function_name(stage: str, function: str) -> str:
    """The Lambda function Chalice deploys: the API's is ``audio-clips-<stage>``, the others add their name."""
    return f"{APP_NAME}-{stage}" if function == "api_handler" else f"{APP_NAME}-{stage}-{function}"


def stack_name(stage: str) -> str:
    return f"{APP_NAME}-infra-{stage}"


def layer_name(stage: str, arch: str = "x86_64") -> str:
    """The stage's FFmpeg layer; an arm64 layer says so in its name (a layer ARN does not tell its architecture)."""
    return f"{APP_NAME}-ffmpeg-{stage}" + ("" if arch == "x86_64" else f"-{arch}")


ARCHITECTURES = ("x86_64", "arm64")


def cleanup_failures_queue(stage: str) -> str:
    """cleanup_clips's on-failure destination (infra/template.yaml creates it)."""
    return f"{APP_NAME}-{stage}-cleanup_clips-failed"


def state_key(stage: str) -> str:
    return f"{STATE_PREFIX}/{stage}.json"


def lock_key(stage: str) -> str:
    return f"{STATE_PREFIX}/{stage}.lock"


def web_acl_name(stage: str) -> str:
    """The optional per-client rate limit's web ACL (infra/template.yaml, PerClientRateLimit)."""
    return f"{APP_NAME}-{stage}-per-client"


def api_gateway_stage(config: Mapping[str, Any], stage: str) -> str:
    """The REST API's stage name Chalice deploys to (its ``api_gateway_stage``, default ``api``)."""
    return config["stages"][stage].get("api_gateway_stage", config.get("api_gateway_stage", "api"))


# ------------------------------------------------------------------ what is known before any AWS call


def load_config(path: Path = CONFIG) -> dict[str, Any]:
    return json.loads(path.read_text())


def stage_environment(config: Mapping[str, Any], stage: str) -> dict[str, str]:
    """The stage's environment variables as Chalice merges them (top level, then the stage)."""
    if stage not in config.get("stages", {}):
        raise StageError(f"stage {stage!r} is not in .chalice/config.json (has: {', '.join(config.get('stages', {}))})")
    return {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}


def region(environ: Mapping[str, str], flag: str | None = None) -> str:
    """REGION=, else AWS_REGION, else AWS_DEFAULT_REGION: where every command of a stage goes."""
    value = (flag or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "").strip()
    if not value:
        raise StageError(
            "no AWS region: pass REGION=<region> (e.g. make deploy STAGE=dev REGION=eu-west-1) or export AWS_REGION"
        )
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", value):
        raise StageError(f"REGION={value!r} is not an AWS region name such as eu-west-1")
    return value


def required(environment: Mapping[str, str], stage: str, name: str, fix: str) -> str:
    value = environment.get(name, "").strip()
    if not value:
        raise StageError(f"{name} is not set for stage {stage} in .chalice/config.json: {fix}")
    return value


def architecture(config: Mapping[str, Any], stage: str) -> str:
    """The stage's lambda_architecture (Chalice's setting; the top level's, else x86_64)."""
    value = config["stages"][stage].get("lambda_architecture", config.get("lambda_architecture", "x86_64"))
    if value not in ARCHITECTURES:
        raise StageError(f"stage {stage}: lambda_architecture must be one of {', '.join(ARCHITECTURES)}, got {value!r}")
    return value


def check_layer(config: Mapping[str, Any], stage: str, region_name: str) -> str:
    """The FFmpeg layer of the stage's api_handler: configured, a layer version ARN, in the deploy's region."""
    fix = f"run `make publish-layer STAGE={stage} REGION={region_name}` and commit .chalice/config.json"
    functions = config["stages"][stage].get("lambda_functions", {})
    layers = functions.get("api_handler", {}).get("layers") or []
    if not layers:
        raise StageError(
            f"stage {stage}: api_handler has no FFmpeg layer configured (M4A clips and the health "
            f"check's FFmpeg test would fail in production): {fix}"
        )
    for arn in layers:
        match = LAYER_ARN.match(arn)
        if not match:
            raise StageError(f"stage {stage}: api_handler's layer {arn!r} is not a layer version ARN: {fix}")
        expected = layer_name(stage, architecture(config, stage))
        if match["name"] != expected:
            raise StageError(
                f"stage {stage}: api_handler's layer {arn} is not {expected}, the layer of this stage "
                f"and its lambda_architecture ({architecture(config, stage)}): {fix}"
            )
        if match["region"] != region_name:
            raise StageError(
                f"stage {stage}: api_handler's layer {arn} is in {match['region']}, the deploy goes to "
                f"{region_name} (layers are regional): {fix}"
            )
    return layers[0]


# ------------------------------------------------------------------ the stage's limits (contract section 6)

THROTTLE_DEFAULTS = {"THROTTLE_RATE_PER_SECOND": 50.0, "THROTTLE_BURST": 100}
PER_CLIENT_WINDOWS = (60, 120, 300, 600)  # what a WAF rate-based rule can count over, in seconds
CLEANUP_CONCURRENCY_DEFAULT = 5


def throttle(environment: Mapping[str, str]) -> tuple[float, int]:
    """THROTTLE_RATE_PER_SECOND (default 50) and THROTTLE_BURST (default 100): API Gateway's stage throttling."""
    raw_rate = environment.get("THROTTLE_RATE_PER_SECOND", "").strip()
    raw_burst = environment.get("THROTTLE_BURST", "").strip()
    try:
        rate = float(raw_rate) if raw_rate else THROTTLE_DEFAULTS["THROTTLE_RATE_PER_SECOND"]
    except ValueError:
        rate = -1.0
    if not 0 < rate <= 10_000:  # 10,000 requests per second: API Gateway's account-level default
        raise StageError(f"THROTTLE_RATE_PER_SECOND must be a number above 0 and at most 10000, got {raw_rate!r}")
    if raw_burst and not raw_burst.isdecimal():
        raise StageError(f"THROTTLE_BURST must be a whole number from 1 to 5000, got {raw_burst!r}")
    burst = int(raw_burst) if raw_burst else int(THROTTLE_DEFAULTS["THROTTLE_BURST"])
    if not 1 <= burst <= 5_000:  # 5,000: the account-level bucket
        raise StageError(f"THROTTLE_BURST must be a whole number from 1 to 5000, got {raw_burst!r}")
    return rate, burst


def per_client_limit(environment: Mapping[str, str]) -> tuple[int, int]:
    """PER_CLIENT_RATE_LIMIT requests per client IP in PER_CLIENT_RATE_WINDOW_SECONDS (a WAF rate-based rule);
    0, the default, means no WAF (and no WAF charges)."""
    raw_limit = environment.get("PER_CLIENT_RATE_LIMIT", "").strip() or "0"
    raw_window = environment.get("PER_CLIENT_RATE_WINDOW_SECONDS", "").strip() or "300"
    if not raw_limit.isdecimal() or not (int(raw_limit) == 0 or 10 <= int(raw_limit) <= 2_000_000_000):
        raise StageError(f"PER_CLIENT_RATE_LIMIT must be 0 (off) or from 10 to 2000000000, got {raw_limit!r}")
    if not raw_window.isdecimal() or int(raw_window) not in PER_CLIENT_WINDOWS:
        raise StageError(
            f"PER_CLIENT_RATE_WINDOW_SECONDS must be one of {', '.join(map(str, PER_CLIENT_WINDOWS))}, got {raw_window!r}"
        )
    return int(raw_limit), int(raw_window)


def cleanup_concurrency(config: Mapping[str, Any], stage: str) -> int | None:
    value = config["stages"][stage].get("lambda_functions", {}).get("cleanup_clips", {}).get("reserved_concurrency")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise StageError(
            f"lambda_functions.cleanup_clips.reserved_concurrency must be a whole number >= 1, got {value!r}"
        )
    return value


def default_cleanup_concurrency(config_path: Path, stage: str) -> bool:
    """cleanup_clips gets a reserved concurrency of its own (5 unless the stage says otherwise), so that a
    back-catalogue re-upload cannot take the account's concurrency from the API. Written into the stage's Chalice
    config when missing (Chalice removes any limit a function's config does not name); True when it wrote it."""
    config = load_config(config_path)
    if cleanup_concurrency(config, stage) is not None:
        return False
    functions = config["stages"][stage].setdefault("lambda_functions", {})
    functions.setdefault("cleanup_clips", {})["reserved_concurrency"] = CLEANUP_CONCURRENCY_DEFAULT
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return True


def check(config: Mapping[str, Any], stage: str, region_name: str) -> dict[str, str]:
    """Everything a deploy needs that can be checked without AWS; returns the stage's environment. Every problem
    found is reported at once, each with its fix, in the runbook's order."""
    environment = stage_environment(config, stage)
    problems = []
    for name in ("SOURCE_BUCKET", "CLIPS_BUCKET"):
        if not environment.get(name, "").strip():
            problems.append(f"{name} is not set: set it under stages.{stage}.environment_variables")
    if not environment.get("LAYER_ARTIFACTS_BUCKET", "").strip():
        problems.append(
            f"LAYER_ARTIFACTS_BUCKET is not set: run `make infra STAGE={stage} REGION={region_name}` and "
            "commit .chalice/config.json (the bucket also keeps the stage's deployed state)"
        )
    tracing = environment.get("TRACING", "false").strip().lower() == "true"
    xray = bool(config["stages"][stage].get("xray", config.get("xray", False)))
    if tracing != xray:
        problems.append(
            f'TRACING is {str(tracing).lower()} but "xray" is {str(xray).lower()}: X-Ray is one stage '
            f"option, set both under stages.{stage} (\"xray\": true turns on Lambda's and API Gateway's "
            "tracing, TRACING=true the service's own subsegments)"
        )
    for limit in (throttle, per_client_limit):
        try:
            limit(environment)
        except StageError as error:
            problems.append(f"{error}: set it under stages.{stage}.environment_variables")
    try:
        cleanup_concurrency(config, stage)
        check_layer(config, stage, region_name)
    except StageError as error:
        problems.append(str(error).removeprefix(f"stage {stage}: "))
    if problems:
        raise StageError(f"stage {stage} cannot be deployed yet:\n" + "\n".join(f"  - {p}" for p in problems))
    return environment


# ------------------------------------------------------------------ the IAM policies, generated


def policy_documents(stage: str, environment: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each function's least-privilege policy, from the stage's bucket names. Chalice's generator reads only
    app.py and would miss the calls made in chalicelib/, hence hand-written rules, written once, here."""
    source, clips = environment["SOURCE_BUCKET"], environment["CLIPS_BUCKET"]
    # the buckets a catalog entry may name (SOURCE_ALLOWED_BUCKETS, default SOURCE_BUCKET): api_handler reads them all
    readable = [b.strip() for b in environment.get("SOURCE_ALLOWED_BUCKETS", "").split(",") if b.strip()] or [source]

    def allow(sid: str, actions: list[str], resources: list[str], condition: dict | None = None) -> dict[str, Any]:
        statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
        if condition:
            statement["Condition"] = condition
        return statement

    def own_logs(function: str) -> dict[str, Any]:
        group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_name(stage, function)}"
        return allow(
            "OwnLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], [group, f"{group}:*"]
        )

    # Powertools Parameters reads one secret at a time (chalicelib/stores/secrets.py)
    own_secrets = allow("OwnSecrets", ["ssm:GetParameter"], [f"arn:aws:ssm:*:*:parameter/{APP_NAME}/{stage}/*"])
    # a source bucket encrypted with a customer managed key: decrypt through S3 only, with the key of this alias
    decrypt_source = allow(
        "DecryptSourceAudioWithItsKmsKey",
        ["kms:Decrypt"],
        ["arn:aws:kms:*:*:key/*"],
        {
            "StringLike": {"kms:ViaService": "s3.*.amazonaws.com"},
            "ForAnyValue:StringEquals": {"kms:ResourceAliases": [f"alias/{APP_NAME}-{stage}-source-audio"]},
        },
    )
    statements = {
        "api_handler": [
            allow("ReadSourceAudio", ["s3:GetObject"], [f"arn:aws:s3:::{bucket}/*" for bucket in readable]),
            allow("MissingSourceIs404", ["s3:ListBucket"], [f"arn:aws:s3:::{bucket}" for bucket in readable]),
            decrypt_source,
            allow("ReadWriteClips", ["s3:GetObject", "s3:PutObject"], [f"arn:aws:s3:::{clips}/audio_clips/*"]),
            allow("MissingClipIs404AndDeepHealth", ["s3:ListBucket"], [f"arn:aws:s3:::{clips}"]),
            own_secrets,
            own_logs("api_handler"),
        ],
        "cleanup_clips": [
            allow("ListClipsAndMissingIndexIs404", ["s3:ListBucket"], [f"arn:aws:s3:::{clips}"]),
            allow("DeleteClips", ["s3:DeleteObject"], [f"arn:aws:s3:::{clips}/audio_clips/*"]),
            # new audio is indexed on arrival (chalicelib/clips/seek_index.py): read it, write its seek index and lease
            allow("ReadSourceAudioToIndexIt", ["s3:GetObject"], [f"arn:aws:s3:::{source}/*"]),
            allow("MissingSourceIs404", ["s3:ListBucket"], [f"arn:aws:s3:::{source}"]),
            decrypt_source,
            # the source version each artefact records (a HEAD), so that only those of other versions are deleted;
            # S3 also requires it for the deletes conditional on each artefact's ETag
            allow("ReadArtefactVersions", ["s3:GetObject"], [f"arn:aws:s3:::{clips}/audio_clips/*"]),
            allow(
                "WriteSeekIndexAndLease",
                ["s3:PutObject"],
                [
                    f"arn:aws:s3:::{clips}/audio_clips/*/seek-index.json",
                    f"arn:aws:s3:::{clips}/audio_clips/*/seek-index.lease",
                ],
            ),
            allow("SendFailedEvents", ["sqs:SendMessage"], [f"arn:aws:sqs:*:*:{cleanup_failures_queue(stage)}"]),
            own_logs("cleanup_clips"),
        ],
        "health_check": [
            allow("PublishAlerts", ["sns:Publish"], [f"arn:aws:sns:*:*:{APP_NAME}-alerts-{stage}"]),
            allow("KeepHealthState", ["s3:GetObject", "s3:PutObject"], [f"arn:aws:s3:::{clips}/_health/*"]),
            allow(
                "MissingStateIs404",
                ["s3:ListBucket"],
                [f"arn:aws:s3:::{clips}"],
                {"StringLike": {"s3:prefix": ["_health/*"]}},
            ),
            own_secrets,
            own_logs("health_check"),
        ],
    }
    if environment.get("TRACING", "").strip().lower() == "true":  # X-Ray accepts no narrower resource than "*"
        for rules in statements.values():
            rules.append(allow("SendTraces", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"]))
    return {function: {"Version": "2012-10-17", "Statement": rules} for function, rules in statements.items()}


def policy_path(config_path: Path, config: Mapping[str, Any], stage: str, function: str) -> Path:
    name = config["stages"][stage].get("lambda_functions", {}).get(function, {}).get("iam_policy_file")
    if not name:
        raise StageError(f"stage {stage}: lambda_functions.{function}.iam_policy_file is not set in {config_path}")
    return config_path.parent / name


def write_policies(config_path: Path, stage: str) -> list[Path]:
    """Writes the stage's policy files; returns those whose content changed."""
    config = load_config(config_path)
    changed = []
    for function, document in policy_documents(stage, stage_environment(config, stage)).items():
        path = policy_path(config_path, config, stage, function)
        text = json.dumps(document, indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


# ------------------------------------------------------------------ progress while AWS works


def say(message: str) -> None:
    print(message, flush=True)


def wait_for_stack(cloudformation, name: str, poll_s: float = 5.0, report: Callable[[str], None] = say) -> str:
    """Polls until the stack leaves its IN_PROGRESS state, printing each new stack event; returns the final status
    (DELETE_COMPLETE when the stack is gone)."""
    seen: set[str] = set()
    started = time.monotonic()
    while True:
        try:
            stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        except cloudformation.exceptions.ClientError as error:
            if "does not exist" in str(error):
                report(f"  {name}: deleted ({time.monotonic() - started:.0f} s)")
                return "DELETE_COMPLETE"
            raise
        events = cloudformation.describe_stack_events(StackName=stack["StackId"]).get("StackEvents", [])
        for event in reversed(events):
            if event["EventId"] not in seen:
                seen.add(event["EventId"])
                reason = f" ({event['ResourceStatusReason']})" if event.get("ResourceStatusReason") else ""
                report(f"  {name}: {event['LogicalResourceId']} {event['ResourceStatus']}{reason}")
        status = stack["StackStatus"]
        if not status.endswith("IN_PROGRESS"):
            report(f"  {name}: {status} after {time.monotonic() - started:.0f} s")
            return status
        report(f"  {name}: {status}, waiting ({time.monotonic() - started:.0f} s)")
        time.sleep(poll_s)


# ------------------------------------------------------------------ the deployed state, shared through S3


def state_file(project: Path, stage: str) -> Path:
    return project / ".chalice" / "deployed" / f"{stage}.json"


def pull_state(s3, bucket: str, stage: str, project: Path) -> bool:
    """Fetches the stage's deployed state into .chalice/deployed/; False (and no local file) when none is stored:
    a first deploy. A local file left from another account or an earlier clone is never trusted."""
    from botocore.exceptions import ClientError

    path = state_file(project, stage)
    try:
        body = s3.get_object(Bucket=bucket, Key=state_key(stage))["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("NoSuchKey", "404"):
            raise
        path.unlink(missing_ok=True)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return True


def push_state(s3, bucket: str, stage: str, project: Path) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=state_key(stage),
        Body=state_file(project, stage).read_bytes(),
        ContentType="application/json",
        ServerSideEncryption="AES256",
    )


LOCK_TTL_S = 30 * 60  # a deploy from scratch takes minutes; a lock older than this belongs to a deploy that died


def _precondition_failed(error: Exception) -> bool:
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _missing(error: Exception) -> bool:
    return getattr(error, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404")


class DeployLock:
    """One deploy (or destroy) of a stage at a time, from any clone: an S3 object created only if absent (S3's
    conditional PUT), naming its owner (a random token per deploy) and when it expires. It is released only by its
    owner: the delete is conditional on the ETag of the lock this deploy wrote, so a deploy whose lock was removed
    or taken over never deletes its successor's. A lock past its expiry is taken over (a conditional PUT on the
    ETag read, so two deploys cannot both take it)."""

    def __init__(self, s3, bucket: str, stage: str, ttl_s: float = LOCK_TTL_S, clock: Callable[[], float] = time.time):
        self.s3, self.bucket, self.stage, self.ttl_s, self.clock = s3, bucket, stage, ttl_s, clock
        self.key = lock_key(stage)
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None

    def _body(self) -> bytes:
        now = self.clock()
        return json.dumps(
            {
                "owner": self.owner,
                "by": f"{getpass.getuser()}@{socket.gethostname()}",
                "since": _utc(now),
                "expires": _utc(now + self.ttl_s),
                "expires_epoch": round(now + self.ttl_s, 3),
            }
        ).encode()

    def acquire(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.etag = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), IfNoneMatch="*")["ETag"]
            return
        except ClientError as error:
            if not _precondition_failed(error):
                raise
        try:
            current = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if not _missing(error):
                raise
            return self.acquire()  # released between our PUT and our GET: try again
        text = current["Body"].read().decode("utf-8", "replace")
        holder = _lock_holder(text)
        expires = holder.get("expires_epoch")
        if isinstance(expires, (int, float)) and expires < self.clock():
            try:
                self.etag = self.s3.put_object(
                    Bucket=self.bucket, Key=self.key, Body=self._body(), IfMatch=current["ETag"]
                )["ETag"]
                say(f"took over the deploy lock of {holder.get('by', '?')} (expired {holder.get('expires', '?')})")
                return
            except ClientError as error:
                if not (_precondition_failed(error) or _missing(error)):
                    raise
                holder = {"by": "another deploy that took over the expired lock first"}
        raise StageError(
            f"stage {self.stage} is being deployed elsewhere (by {holder.get('by', text[:200])}, since "
            f"{holder.get('since', '?')}, lock expires {holder.get('expires', 'never: unreadable lock')}); wait for "
            f"it, or, if that deploy died, let its lock expire or remove it: "
            f"aws s3 rm s3://{self.bucket}/{self.key}"
        )

    def held(self) -> bool:
        """Whether the lock is still this deploy's (not removed, not taken over after expiring)."""
        from botocore.exceptions import ClientError

        try:
            return self.etag is not None and self.s3.head_object(Bucket=self.bucket, Key=self.key)["ETag"] == self.etag
        except ClientError as error:
            if _missing(error):
                return False
            raise

    def release(self) -> None:
        """Deletes the lock only if it is still the one this deploy wrote (a conditional DELETE on its ETag)."""
        from botocore.exceptions import ClientError

        if self.etag is None:
            return
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except ClientError as error:
            if _missing(error):
                say(f"the deploy lock of stage {self.stage} was already removed")
            elif _precondition_failed(error):
                say(f"the deploy lock of stage {self.stage} now belongs to another deploy: left in place")
            else:
                raise
        finally:
            self.etag = None


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _lock_holder(text: str) -> dict[str, Any]:
    """The lock's JSON; a lock without an expiry (written before locks had one) expires LOCK_TTL_S after ``since``."""
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(holder, dict):
        return {}
    if "expires_epoch" not in holder and isinstance(holder.get("since"), str):
        try:
            since = calendar.timegm(time.strptime(holder["since"], "%Y-%m-%dT%H:%M:%SZ"))
            holder["expires_epoch"] = since + LOCK_TTL_S
            holder["expires"] = _utc(since + LOCK_TTL_S)
        except ValueError:
            pass
    return holder


@contextlib.contextmanager
def deploy_lock(s3, bucket: str, stage: str, **options: Any) -> Iterator[DeployLock]:
    lock = DeployLock(s3, bucket, stage, **options)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


# ------------------------------------------------------------------ the stage's answers and limits, after Chalice

# API Gateway answers some requests by itself, without the function: over the stage's throttle, when the function is
# throttled or fails to start, on a timeout, for a route that does not exist. Its default bodies are
# {"message": "..."}; these gateway responses answer in the contract's shape instead, with Retry-After on those a
# retry can cure. DEFAULT_5XX also stands for every 5XX type not named here (a throttled function is reported as a
# 500 or 502 of one type or another), so all of them become 503 + Retry-After, which the README's retry table
# tells clients to retry, and a 500 stays the service's own (never retried).
# type -> (status or None to keep the type's own, Code, Message (a JSON string, or a VTL reference), Retry-After s)
GATEWAY_RESPONSES: dict[str, tuple[str | None, str, str, int | None]] = {
    "THROTTLED": (
        "429",
        "TooManyRequests",
        "Too many requests: the API's rate limit is exceeded; retry after Retry-After seconds",
        1,
    ),
    "QUOTA_EXCEEDED": ("429", "QuotaExceeded", "This API key's request quota is used up", None),
    "DEFAULT_5XX": (
        "503",
        "ServiceUnavailable",
        "The service could not take the request (busy, or starting); retry after Retry-After seconds",
        2,
    ),
    "INTEGRATION_FAILURE": (
        "503",
        "ServiceUnavailable",
        "The service could not take the request (busy, or starting); retry after Retry-After seconds",
        2,
    ),
    "INTEGRATION_TIMEOUT": (
        "504",
        "GatewayTimeout",
        "The service did not answer within API Gateway's 29 s; retry after Retry-After seconds",
        5,
    ),
    "MISSING_AUTHENTICATION_TOKEN": (  # keeps API Gateway's 403, as chalice local and openapi.json's NoRoute say
        None,
        "NoSuchRoute",
        "No route matches this method and path; the routes are described at /api/v1/openapi.json",
        None,
    ),
    "WAF_FILTERED": ("403", "ForbiddenError", "The request was refused by the stage's firewall", None),
    "DEFAULT_4XX": (None, "RequestRejected", "$context.error.messageString", None),
}
REQUEST_ID = " (request id $context.requestId)"  # API Gateway's id for the request, as its logs show it


def gateway_responses(environment: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """put_gateway_response's arguments per response type: a JSON template and its headers."""
    cors = "'*'" if environment.get("CORS_ALLOW_ORIGINS", "").strip() == "*" else None
    answers = {}
    for kind, (status, code, message, retry_after) in GATEWAY_RESPONSES.items():
        # a VTL reference ($context.error.messageString) is already a quoted JSON string
        text = message if message.startswith("$") else json.dumps(message + REQUEST_ID)
        template = '{"Code": ' + json.dumps(code) + ', "Message": ' + text + "}"
        headers = {}
        if retry_after is not None:
            headers["gatewayresponse.header.Retry-After"] = f"'{retry_after}'"
        if cors:
            headers["gatewayresponse.header.Access-Control-Allow-Origin"] = cors
        answer: dict[str, Any] = {
            "responseType": kind,
            "responseParameters": headers,
            "responseTemplates": {"application/json": template},
        }
        if status is not None:
            answer["statusCode"] = status
        answers[kind] = answer
    return answers


def rest_api_id(project: Path, stage: str) -> str:
    record = json.loads(state_file(project, stage).read_text())
    for resource in record.get("resources", []):
        if resource.get("resource_type") == "rest_api" and resource.get("rest_api_id"):
            return resource["rest_api_id"]
    raise StageError(f"no REST API in .chalice/deployed/{stage}.json: was the deploy complete?")


def configure_api_stage(
    apigateway, wafv2, config: Mapping[str, Any], stage: str, api_id: str, region_name: str
) -> dict[str, Any]:
    """What Chalice has no setting for, applied after each of its deploys: the gateway responses (then a
    deployment, which they need to take effect), the stage's throttling, and the per-client web ACL when the infra
    stack has one (or its removal when it no longer does). Done on every deploy, so it holds whatever Chalice or a
    console edit did in between. Returns what it applied."""
    environment = stage_environment(config, stage)
    name = api_gateway_stage(config, stage)
    for answer in gateway_responses(environment).values():
        apigateway.put_gateway_response(restApiId=api_id, **answer)
    apigateway.create_deployment(restApiId=api_id, stageName=name, description="gateway responses (infra/stage.py)")
    rate, burst = throttle(environment)
    apigateway.update_stage(
        restApiId=api_id,
        stageName=name,
        patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(rate)},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(burst)},
        ],
    )
    say(f"stage {name}: throttled at {rate:g} requests/s, burst {burst}; gateway answers in the contract's shape")
    stage_arn = f"arn:aws:apigateway:{region_name}::/restapis/{api_id}/stages/{name}"
    acl = find_web_acl(wafv2, web_acl_name(stage))
    if acl:
        wafv2.associate_web_acl(WebACLArn=acl, ResourceArn=stage_arn)
        say(f"stage {name}: per-client rate limit {acl}")
    else:
        current = apigateway.get_stage(restApiId=api_id, stageName=name).get("webAclArn")
        if current and current.split("/")[-2] == web_acl_name(stage):
            wafv2.disassociate_web_acl(ResourceArn=stage_arn)
            say(f"stage {name}: per-client rate limit removed")
    return {"rate": rate, "burst": burst, "web_acl": acl}


def detach_web_acl(wafv2, name: str) -> list[str]:
    """Detaches the named web ACL from every API stage it protects (before the infra stack deletes it, which AWS
    refuses while it is attached); returns those stages' ARNs."""
    acl = find_web_acl(wafv2, name)
    if not acl:
        return []
    resources = wafv2.list_resources_for_web_acl(WebACLArn=acl, ResourceType="API_GATEWAY").get("ResourceArns", [])
    for resource in resources:
        wafv2.disassociate_web_acl(ResourceArn=resource)
    return resources


def find_web_acl(wafv2, name: str) -> str | None:
    """The ARN of the regional web ACL of that name, or None."""
    marker = None
    while True:
        page = wafv2.list_web_acls(Scope="REGIONAL", Limit=100, **({"NextMarker": marker} if marker else {}))
        for acl in page.get("WebACLs", []):
            if acl["Name"] == name:
                return acl["ARN"]
        marker = page.get("NextMarker")
        if not marker or not page.get("WebACLs"):
            return None


# ------------------------------------------------------------------ the commands


def chalice(project: Path, *args: str, environ: Mapping[str, str]) -> None:
    executable = Path(sys.executable).parent / "chalice"
    result = subprocess.run([str(executable), *args], cwd=project, env=dict(environ))
    if result.returncode != 0:
        raise StageError(f"chalice {' '.join(args)} failed ({result.returncode}); see its output above")


def chalice_deploy(project: Path, stage: str, environ: Mapping[str, str]) -> None:
    """``chalice deploy`` through infra/chalice_deploy.py, which records what it created even when it fails."""
    script = Path(__file__).resolve().parent / "chalice_deploy.py"
    result = subprocess.run([sys.executable, str(script), "deploy", "--stage", stage], cwd=project, env=dict(environ))
    if result.returncode != 0:
        raise StageError(f"chalice deploy --stage {stage} failed ({result.returncode}); see its output above")


def deploy(stage: str, region_name: str, project: Path = ROOT, clients: Callable[[str], Any] | None = None) -> None:
    config_path = project / ".chalice" / "config.json"
    config = load_config(config_path)
    environment = check(config, stage, region_name)
    for path in write_policies(config_path, stage):
        say(f"wrote {path.relative_to(project)} (from stage {stage}'s settings): commit it")
    if default_cleanup_concurrency(config_path, stage):
        say(
            f"wrote lambda_functions.cleanup_clips.reserved_concurrency = {CLEANUP_CONCURRENCY_DEFAULT} into "
            f"stage {stage} of .chalice/config.json (the default): commit it"
        )
        config = load_config(config_path)
    client = clients or _clients(region_name)
    bucket = environment["LAYER_ARTIFACTS_BUCKET"]
    started = time.monotonic()
    s3 = client("s3")
    with deploy_lock(s3, bucket, stage) as lock:
        found = pull_state(s3, bucket, stage, project)
        say(f"deployed state: {'fetched' if found else 'none yet (first deploy)'} s3://{bucket}/{state_key(stage)}")
        before = state_file(project, stage).read_bytes() if found else None
        say(f"chalice deploy --stage {stage} (packaging, then the AWS calls; a first package takes a minute)")
        try:
            chalice_deploy(project, stage, environ=_region_environ(region_name))
        except StageError:
            path = state_file(project, stage)
            if path.exists() and path.read_bytes() != before and lock.held():
                push_state(s3, bucket, stage, project)
                say(
                    f"what the failed deploy created is recorded in s3://{bucket}/{state_key(stage)}: the next "
                    "deploy updates it instead of creating it again"
                )
            raise
        if not lock.held():
            raise StageError(
                f"the deploy lock of stage {stage} expired and was taken over during this deploy: its state was "
                f"not stored (the other deploy's stands); deploy again once that one has ended"
            )
        push_state(s3, bucket, stage, project)
        say(f"deployed state stored: s3://{bucket}/{state_key(stage)}")
        configure_api_stage(
            client("apigateway"), client("wafv2"), config, stage, rest_api_id(project, stage), region_name
        )
    send_cleanup_failures_to_queue(client("lambda"), client("sqs"), stage)
    say(f"deployed stage {stage} in {time.monotonic() - started:.0f} s")
    for path in uncommitted(project):
        say(f"not committed: {path}: commit and push it, or the next clone (or CI) deploys this stage differently")


def enable_source_events(s3, bucket: str) -> bool:
    """Turns on the source bucket's delivery to EventBridge (one bucket setting), keeping every notification other
    consumers configured; False when it was on already. Needs s3:GetBucketNotification/PutBucketNotification on a
    bucket this service does not own: its owner may prefer to do it (README, "Deploy to AWS")."""
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    if "EventBridgeConfiguration" in current:
        return False
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={**current, "EventBridgeConfiguration": {}},
        SkipDestinationValidation=True,
    )
    return True


def uncommitted(project: Path) -> list[str]:
    """Files under .chalice/ (config and policies) that differ from the clone's last commit: what this deploy used
    and the next clone would not. Empty outside a git checkout."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "-uall", "--", ".chalice"], cwd=project, capture_output=True, text=True
    )
    if result.returncode != 0:
        return []
    return sorted(
        line[3:]
        for line in result.stdout.splitlines()
        if line[3:].endswith(".json") and not line[3:].startswith(".chalice/deployed/")
    )


def send_cleanup_failures_to_queue(lambda_client, sqs, stage: str) -> str:
    """cleanup_clips runs asynchronously: after Lambda's two retries a failed event goes to the stage's queue
    (which has a depth alarm) instead of being dropped. Chalice has no setting for it."""
    queue_url = sqs.get_queue_url(QueueName=cleanup_failures_queue(stage))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    name = function_name(stage, "cleanup_clips")
    settings = {
        "FunctionName": name,
        "MaximumRetryAttempts": 2,
        "DestinationConfig": {"OnFailure": {"Destination": queue_arn}},
    }
    lambda_client.put_function_event_invoke_config(**settings)
    say(f"{name}: failed events go to {queue_arn}")
    return queue_arn


def destroy(stage: str, region_name: str, project: Path = ROOT, clients: Callable[[str], Any] | None = None) -> None:
    config = load_config(project / ".chalice" / "config.json")
    environment = stage_environment(config, stage)
    bucket = required(environment, stage, "LAYER_ARTIFACTS_BUCKET", "nothing was deployed with `make infra` here")
    client = clients or _clients(region_name)
    s3 = client("s3")
    with deploy_lock(s3, bucket, stage):
        if pull_state(s3, bucket, stage, project):
            say(f"chalice delete --stage {stage}")
            chalice(project, "delete", "--stage", stage, environ=_region_environ(region_name))
            s3.delete_object(Bucket=bucket, Key=state_key(stage))
        else:
            say(f"no deployed state in s3://{bucket}/{state_key(stage)}: no functions or API to delete")
    lambda_client = client("lambda")
    for name in (layer_name(stage, arch) for arch in ARCHITECTURES):
        for version in lambda_client.list_layer_versions(LayerName=name).get("LayerVersions", []):
            lambda_client.delete_layer_version(LayerName=name, VersionNumber=version["Version"])
            say(f"deleted layer version {version['LayerVersionArn']}")
    empty_bucket(s3, bucket)
    cloudformation = client("cloudformation")
    say(f"deleting stack {stack_name(stage)}")
    cloudformation.delete_stack(StackName=stack_name(stage))
    status = wait_for_stack(cloudformation, stack_name(stage))
    if status != "DELETE_COMPLETE":
        raise StageError(f"stack {stack_name(stage)} ended {status}: see its events in the CloudFormation console")
    say(
        f"retained (DeletionPolicy: Retain, delete by hand if meant): s3://{environment.get('CLIPS_BUCKET')}; "
        f"untouched: the source bucket s3://{environment.get('SOURCE_BUCKET')} and its EventBridge setting"
    )


def empty_bucket(s3, bucket: str) -> None:
    """Every object and version of the stage's artifacts bucket (layer zips, stored state), so the stack can go."""
    from botocore.exceptions import ClientError

    try:
        pages = list(s3.get_paginator("list_object_versions").paginate(Bucket=bucket))
    except ClientError as error:
        if error.response["Error"]["Code"] == "NoSuchBucket":
            return
        raise
    for page in pages:
        items = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if items:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": items, "Quiet": True})
    say(f"emptied s3://{bucket}")


def _region_environ(region_name: str) -> dict[str, str]:
    return {**os.environ, "AWS_REGION": region_name, "AWS_DEFAULT_REGION": region_name}


def _clients(region_name: str) -> Callable[[str], Any]:
    import boto3

    return lambda service: boto3.client(service, region_name=region_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["check", "policies", "deploy", "destroy", "source-events"])
    parser.add_argument("stage")
    parser.add_argument("--region", help="default: AWS_REGION, else AWS_DEFAULT_REGION")
    parser.add_argument("--project", type=Path, default=ROOT, help="the project folder (tests deploy a copy)")
    args = parser.parse_args(argv)
    config_path = args.project / ".chalice" / "config.json"
    try:
        if args.command == "policies":
            for path in write_policies(config_path, args.stage):
                say(f"wrote {path}")
            return 0
        region_name = region(os.environ, args.region)
        if args.command == "check":
            check(load_config(config_path), args.stage, region_name)
            say(f"stage {args.stage} is ready to deploy to {region_name}")
        elif args.command == "source-events":
            bucket = required(
                stage_environment(load_config(config_path), args.stage),
                args.stage,
                "SOURCE_BUCKET",
                f"set it under stages.{args.stage}.environment_variables",
            )
            changed = enable_source_events(_clients(region_name)("s3"), bucket)
            say(
                f"s3://{bucket}: {'now sends' if changed else 'already sent'} its events to EventBridge "
                "(other notifications kept)"
            )
        elif args.command == "deploy":
            deploy(args.stage, region_name, args.project)
        else:
            destroy(args.stage, region_name, args.project)
    except StageError as error:
        print(f"{args.command} {args.stage}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
