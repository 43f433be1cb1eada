"""infra/stage.py: what `make deploy` checks before any AWS call, and the IAM policies it writes from the stage's
settings. The deploys themselves run against moto in test_chalice_deploy.py."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra"))
import stage  # noqa: E402

LAYER = "arn:aws:lambda:eu-west-1:123456789012:layer:audio-clips-ffmpeg-prod:3"


def committed_config() -> dict:
    return json.loads((ROOT / ".chalice" / "config.json").read_text())


def ready(stage_name: str = "prod", layer: str = LAYER) -> dict:
    """The committed config as `make infra` and `make publish-layer` leave it."""
    config = committed_config()
    config["stages"][stage_name]["environment_variables"]["LAYER_ARTIFACTS_BUCKET"] = "audio-clips-artifacts-x"
    config["stages"][stage_name]["lambda_functions"]["api_handler"]["layers"] = [layer]
    return config


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`make` in this repository; -o keeps make from rebuilding the venv whose requirements may be newer."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ.update(env or {})
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ------------------------------------------------------------------ region


@pytest.mark.parametrize(
    "environ, flag, expected",
    [
        ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"}, None, "eu-west-1"),
        ({"AWS_DEFAULT_REGION": "us-east-2"}, None, "us-east-2"),
        ({"AWS_REGION": "eu-west-1"}, "ap-southeast-2", "ap-southeast-2"),
    ],
)
def test_the_region_comes_from_region_then_aws_region_then_aws_default_region(environ, flag, expected):
    assert stage.region(environ, flag) == expected


def test_no_region_is_refused_naming_region():
    with pytest.raises(stage.StageError, match="no AWS region: pass REGION=<region>"):
        stage.region({})
    with pytest.raises(stage.StageError, match="not an AWS region name"):
        stage.region({}, "Ireland")


# ------------------------------------------------------------------ the FFmpeg layer


def test_a_stage_without_an_ffmpeg_layer_is_refused_naming_make_publish_layer():
    with pytest.raises(
        stage.StageError,
        match=r"api_handler has no FFmpeg layer.*make publish-layer STAGE=prod "
        r"REGION=eu-west-1",
    ):
        stage.check_layer(committed_config(), "prod", "eu-west-1")


def test_a_layer_of_another_region_is_refused():
    with pytest.raises(stage.StageError, match="is in eu-west-1, the deploy goes to us-east-1"):
        stage.check_layer(ready(), "prod", "us-east-1")


def test_a_stage_ready_to_deploy_passes_the_check():
    assert stage.check(ready(), "prod", "eu-west-1")["CLIPS_BUCKET"] == "pod-insights-clips"


def test_a_stage_without_infra_is_refused_naming_make_infra():
    config = ready()
    del config["stages"]["prod"]["environment_variables"]["LAYER_ARTIFACTS_BUCKET"]
    with pytest.raises(stage.StageError, match=r"LAYER_ARTIFACTS_BUCKET is not set: run `make infra STAGE=prod"):
        stage.check(config, "prod", "eu-west-1")


def test_make_deploy_refuses_a_stage_without_a_layer_before_any_aws_call():
    """The committed prod stage has no layer. AWS_ENDPOINT_URL points at a closed port: an AWS call would fail
    with a connection error instead of this message."""
    closed_port = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    result = make("deploy", "STAGE=prod", "REGION=eu-west-1", env=closed_port)
    assert result.returncode != 0
    assert "api_handler has no FFmpeg layer" in result.stderr
    assert "make publish-layer STAGE=prod REGION=eu-west-1" in result.stderr
    assert "Could not connect" not in result.stderr + result.stdout


def test_make_deploy_without_a_region_is_refused_naming_region():
    result = make("deploy", "STAGE=dev")
    assert result.returncode != 0 and "no AWS region: pass REGION=<region>" in result.stderr


# ------------------------------------------------------------------ the policies, generated from the settings


def test_the_committed_policies_are_what_the_stage_settings_generate():
    config = committed_config()
    for stage_name in ("dev", "prod"):
        environment = stage.stage_environment(config, stage_name)
        for function, document in stage.policy_documents(stage_name, environment).items():
            path = stage.policy_path(ROOT / ".chalice" / "config.json", config, stage_name, function)
            assert json.loads(path.read_text()) == document, f"{path.name}: run `make policies STAGE={stage_name}`"


def test_renamed_buckets_reach_every_policy(tmp_path):
    (tmp_path / ".chalice").mkdir()
    config = committed_config()
    config["stages"]["dev"]["environment_variables"].update(SOURCE_BUCKET="acme-raw", CLIPS_BUCKET="acme-clips-dev")
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    written = stage.write_policies(tmp_path / ".chalice" / "config.json", "dev")
    assert sorted(p.name for p in written) == [f"policy-dev-{f}.json" for f in stage.FUNCTIONS]
    text = "".join(p.read_text() for p in written)
    assert "pod-insights" not in text
    api = json.loads((tmp_path / ".chalice" / "policy-dev-api_handler.json").read_text())
    assert {
        "Sid": "ReadSourceAudio",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::acme-raw/*"],
    } in api["Statement"]
    assert stage.write_policies(tmp_path / ".chalice" / "config.json", "dev") == [], "unchanged settings: no writes"


def test_cleanup_may_send_its_failed_events_to_its_queue_only():
    documents = stage.policy_documents("prod", stage.stage_environment(committed_config(), "prod"))
    sqs = [s for s in documents["cleanup_clips"]["Statement"] if any(a.startswith("sqs:") for a in s["Action"])]
    assert sqs == [
        {
            "Sid": "SendFailedEvents",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": ["arn:aws:sqs:*:*:audio-clips-prod-cleanup_clips-failed"],
        }
    ]
    assert not any(
        a.startswith("sqs:")
        for f in ("api_handler", "health_check")
        for s in documents[f]["Statement"]
        for a in s["Action"]
    )


def test_the_stage_settings_name_the_buckets_and_the_event_source():
    config = committed_config()
    for stage_name in ("dev", "prod"):
        environment = stage.stage_environment(config, stage_name)
        assert environment["SOURCE_EVENTS"] == "eventbridge"
        assert environment["SOURCE_BUCKET"] and environment["CLIPS_BUCKET"]
    assert copy.deepcopy(config) == committed_config()


def test_source_events_turns_on_eventbridge_and_keeps_the_other_consumers_notifications(moto_server):
    """Against moto's server: the raw bucket already notifies another system's queue. moto keeps the EventBridge
    setting but leaves it out of GetBucketNotificationConfiguration's answer, so it is read from moto's backend."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="transcription")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    others = [{"Id": "transcribe", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
    moto_server.put_bucket_notification_configuration(
        Bucket="pod-insights-raw", NotificationConfiguration={"QueueConfigurations": others}
    )
    assert stage.enable_source_events(moto_server, "pod-insights-raw") is True
    after = moto_server.get_bucket_notification_configuration(Bucket="pod-insights-raw")
    assert after["QueueConfigurations"] == others
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets["pod-insights-raw"]
    assert bucket.notification_configuration.event_bridge == {}


def test_tracing_is_one_stage_option_set_in_both_places():
    config = ready()
    config["stages"]["prod"]["environment_variables"]["TRACING"] = "true"
    with pytest.raises(stage.StageError, match='TRACING is true but "xray" is false'):
        stage.check(config, "prod", "eu-west-1")
    config["stages"]["prod"]["xray"] = True
    assert stage.check(config, "prod", "eu-west-1")["TRACING"] == "true"


def test_an_arm64_stage_needs_the_arm64_layer():
    config = ready()
    config["stages"]["prod"]["lambda_architecture"] = "arm64"
    with pytest.raises(
        stage.StageError,
        match="is not audio-clips-ffmpeg-prod-arm64, the layer of this stage and its "
        r"lambda_architecture \(arm64\)",
    ):
        stage.check(config, "prod", "eu-west-1")
    config["stages"]["prod"]["lambda_functions"]["api_handler"]["layers"] = [LAYER.replace("prod:3", "prod-arm64:1")]
    stage.check(config, "prod", "eu-west-1")


def test_publish_picks_the_zip_of_the_stage_architecture():
    import importlib.util

    spec = importlib.util.spec_from_file_location("publish", ROOT / "layers" / "ffmpeg" / "publish.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    assert publish.zip_name("x86_64") == "ffmpeg-layer.zip" and publish.zip_name("arm64") == "ffmpeg-layer-arm64.zip"
    assert (
        stage.layer_name("dev", "arm64") == "audio-clips-ffmpeg-dev-arm64"
        and stage.layer_name("dev") == "audio-clips-ffmpeg-dev"
    )


def test_a_traced_stage_may_send_traces_and_an_untraced_one_may_not():
    environment = stage.stage_environment(committed_config(), "dev")

    def xray(env):
        documents = stage.policy_documents("dev", env).values()
        return [s["Action"] for d in documents for s in d["Statement"] if s["Sid"] == "SendTraces"]

    assert xray(environment) == []
    assert xray({**environment, "TRACING": "true"}) == [["xray:PutTraceSegments", "xray:PutTelemetryRecords"]] * 3


def test_a_second_deploy_of_a_stage_at_the_same_time_is_refused_before_chalice_runs(moto_server, tmp_path):
    """Against moto's server: the lock is S3's conditional PUT (If-None-Match: *), which moto honours."""
    moto_server.create_bucket(Bucket="audio-clips-artifacts-x")
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(ready(layer=LAYER.replace("eu-west-1", "us-east-1"))))
    held = r"stage prod is being deployed elsewhere .*aws s3 rm s3://audio-clips-artifacts-x/chalice-state/prod.lock"
    with stage.deploy_lock(moto_server, "audio-clips-artifacts-x", "prod"), pytest.raises(stage.StageError, match=held):
        stage.deploy("prod", "us-east-1", tmp_path, clients=lambda service: moto_server)
    assert not (tmp_path / ".chalice" / "deployed").exists(), "nothing fetched, chalice never ran"
    listed = moto_server.list_objects_v2(Bucket="audio-clips-artifacts-x").get("Contents", [])
    assert listed == [], "the lock is gone once its deploy ends"


def test_uncommitted_stage_files_are_named_after_a_deploy(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text("{}")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    assert stage.uncommitted(tmp_path) == []
    (tmp_path / ".chalice" / "config.json").write_text('{"stages": {}}')
    (tmp_path / ".chalice" / "policy-dev-api_handler.json").write_text("{}")
    assert stage.uncommitted(tmp_path) == [".chalice/config.json", ".chalice/policy-dev-api_handler.json"]
    (tmp_path.parent / "not-a-clone").mkdir(exist_ok=True)
    assert stage.uncommitted(tmp_path.parent / "not-a-clone") == []


def test_api_handler_may_read_every_bucket_source_allowed_buckets_names():
    environment = {"SOURCE_BUCKET": "raw", "CLIPS_BUCKET": "clips", "SOURCE_ALLOWED_BUCKETS": "raw, other"}
    documents = stage.policy_documents("dev", environment)
    api_handler = {s["Sid"]: s for s in documents["api_handler"]["Statement"]}
    assert api_handler["ReadSourceAudio"]["Resource"] == ["arn:aws:s3:::raw/*", "arn:aws:s3:::other/*"]
    assert api_handler["MissingSourceIs404"]["Resource"] == ["arn:aws:s3:::raw", "arn:aws:s3:::other"]
    cleanup = {s["Sid"]: s for s in documents["cleanup_clips"]["Statement"]}
    assert cleanup["ReadSourceAudioToIndexIt"]["Resource"] == ["arn:aws:s3:::raw/*"], "events come from SOURCE_BUCKET"


# ------------------------------------------------------------------ the deploy lock: an owner, an expiry, a conditional release

ARTIFACTS = "audio-clips-artifacts-x"


def lock_body(s3) -> dict:
    return json.loads(s3.get_object(Bucket=ARTIFACTS, Key="chalice-state/prod.lock")["Body"].read())


def test_a_deploy_whose_lock_was_removed_never_deletes_its_successors_lock(moto_server):
    """The hung deploy's lock is removed by an operator; a second deploy takes the stage; the first one ends."""
    moto_server.create_bucket(Bucket=ARTIFACTS)
    hung = stage.DeployLock(moto_server, ARTIFACTS, "prod")
    hung.acquire()
    moto_server.delete_object(Bucket=ARTIFACTS, Key="chalice-state/prod.lock")  # aws s3 rm, as the message says
    successor = stage.DeployLock(moto_server, ARTIFACTS, "prod")
    successor.acquire()
    assert not hung.held() and successor.held()
    hung.release()
    assert lock_body(moto_server)["owner"] == successor.owner, "the successor's lock is still there"
    assert successor.held()
    successor.release()
    assert moto_server.list_objects_v2(Bucket=ARTIFACTS).get("KeyCount") == 0


def test_a_live_lock_is_refused_naming_its_holder_and_expiry(moto_server):
    moto_server.create_bucket(Bucket=ARTIFACTS)
    clock = [1_800_000_000.0]
    with stage.deploy_lock(moto_server, ARTIFACTS, "prod", clock=lambda: clock[0]) as first:
        clock[0] += stage.LOCK_TTL_S - 1
        second = stage.DeployLock(moto_server, ARTIFACTS, "prod", clock=lambda: clock[0])
        with pytest.raises(
            stage.StageError,
            match=r"being deployed elsewhere \(by .*@.*, since 2027-01-15T08:00:00Z, "
            r"lock expires 2027-01-15T08:30:00Z\)",
        ):
            second.acquire()
        assert first.held() and lock_body(moto_server)["owner"] == first.owner


def test_an_expired_lock_is_taken_over_and_its_old_owner_then_knows_it_lost_it(moto_server):
    moto_server.create_bucket(Bucket=ARTIFACTS)
    clock = [1_800_000_000.0]
    dead = stage.DeployLock(moto_server, ARTIFACTS, "prod", clock=lambda: clock[0])
    dead.acquire()
    clock[0] += stage.LOCK_TTL_S + 1
    taker = stage.DeployLock(moto_server, ARTIFACTS, "prod", clock=lambda: clock[0])
    taker.acquire()
    assert lock_body(moto_server)["owner"] == taker.owner
    assert taker.held() and not dead.held(), "the dead deploy would store no state (stage.deploy checks held())"
    dead.release()
    assert taker.held(), "and its release leaves the new lock alone"
    taker.release()
    assert not taker.held()


def test_a_lock_written_before_locks_had_an_expiry_expires_from_its_since(moto_server):
    moto_server.create_bucket(Bucket=ARTIFACTS)
    old = {"by": "ci@runner", "since": "2026-11-30T10:00:00Z"}
    moto_server.put_object(Bucket=ARTIFACTS, Key="chalice-state/prod.lock", Body=json.dumps(old).encode())
    early = 1_796_032_800.0 + 60  # 2026-11-30T10:01:00Z
    with pytest.raises(
        stage.StageError, match=r"by ci@runner, since 2026-11-30T10:00:00Z, lock expires 2026-11-30T10:30:00Z"
    ):
        stage.DeployLock(moto_server, ARTIFACTS, "prod", clock=lambda: early).acquire()
    later = stage.DeployLock(moto_server, ARTIFACTS, "prod", clock=lambda: early + stage.LOCK_TTL_S)
    later.acquire()
    assert later.held()


# ------------------------------------------------------------------ a failed deploy keeps what it created


def test_the_state_of_a_failed_deploy_keeps_the_old_resources_and_adds_the_new_ones():
    import importlib.util

    spec = importlib.util.spec_from_file_location("chalice_deploy", ROOT / "infra" / "chalice_deploy.py")
    chalice_deploy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chalice_deploy)
    previous = {
        "resources": [
            {"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": "arn:old"},
            {"name": "health_check", "resource_type": "lambda_function", "lambda_arn": "arn:health"},
        ],
        "schema_version": "2.0",
        "backend": "api",
    }
    recorded = [
        {"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": "arn:new"},
        {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123"},
    ]
    state = chalice_deploy.merged(previous, recorded, "api")
    assert state["resources"] == [
        {"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": "arn:new"},
        {"name": "health_check", "resource_type": "lambda_function", "lambda_arn": "arn:health"},
        {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123"},
    ]
    assert chalice_deploy.merged(None, recorded, "api")["resources"] == recorded


# ------------------------------------------------------------------ the stage's limits and gateway answers


def render(template: str, request_id: str = "c0ffee00-1111-2222-3333-444455556666", error: str = "Forbidden") -> str:
    """The VTL API Gateway evaluates: only these two references may appear; anything else would stay literal."""
    text = template.replace("$context.requestId", request_id).replace("$context.error.messageString", json.dumps(error))
    assert "$" not in text and "#" not in text, f"an unexpected VTL reference or directive in {template!r}"
    return text


def test_every_gateway_answer_is_the_contracts_json_and_those_a_retry_cures_carry_retry_after():
    answers = stage.gateway_responses({"CORS_ALLOW_ORIGINS": ""})
    required = {"THROTTLED", "DEFAULT_4XX", "DEFAULT_5XX", "INTEGRATION_FAILURE", "INTEGRATION_TIMEOUT"}
    assert required | {"MISSING_AUTHENTICATION_TOKEN"} <= set(answers)
    for kind, answer in answers.items():
        assert answer["responseType"] == kind
        assert set(answer["responseTemplates"]) == {"application/json"}
        body = json.loads(render(answer["responseTemplates"]["application/json"], error='a "quoted" message'))
        assert set(body) == {"Code", "Message"} and body["Code"] and body["Message"], kind
        assert re.fullmatch(r"[A-Z][A-Za-z]+", body["Code"]), kind
        for name, value in answer["responseParameters"].items():
            assert re.fullmatch(r"gatewayresponse\.header\.[A-Za-z-]+", name), name
            assert re.fullmatch(r"'[^']*'", value), f"{kind} {name}: a static value is single-quoted: {value}"
        status = answer.get("statusCode")
        assert status is None or re.fullmatch(r"[45]\d\d", status), kind
        retry_after = answer["responseParameters"].get("gatewayresponse.header.Retry-After")
        retryable = (status == "429" and kind != "QUOTA_EXCEEDED") or (status or "").startswith("5")
        assert (retry_after is not None) == retryable, kind
        if retry_after:
            assert re.fullmatch(r"'[1-9]\d*'", retry_after), kind
    throttled = json.loads(render(answers["THROTTLED"]["responseTemplates"]["application/json"]))
    assert answers["THROTTLED"]["statusCode"] == "429" and throttled["Code"] == "TooManyRequests"
    assert "request id c0ffee00-1111-2222-3333-444455556666" in throttled["Message"]
    assert "statusCode" not in answers["MISSING_AUTHENTICATION_TOKEN"], "an unknown route stays openapi.json's 403"
    assert answers["DEFAULT_5XX"]["statusCode"] == "503", "a 500 stays the service's own, never retried"
    assert "statusCode" not in answers["DEFAULT_4XX"], "other 4XX keep their own status"


def test_gateway_answers_are_readable_cross_origin_where_the_stage_allows_any_origin():
    for origins, expected in (("*", "'*'"), ("https://a.example", None), ("", None)):
        for answer in stage.gateway_responses({"CORS_ALLOW_ORIGINS": origins}).values():
            assert answer["responseParameters"].get("gatewayresponse.header.Access-Control-Allow-Origin") == expected


def test_the_throttle_defaults_to_the_contracts_50_per_second_and_burst_100():
    assert stage.throttle({}) == (50.0, 100)
    assert stage.throttle({"THROTTLE_RATE_PER_SECOND": "12.5", "THROTTLE_BURST": "30"}) == (12.5, 30)
    for bad in (
        {"THROTTLE_RATE_PER_SECOND": "0"},
        {"THROTTLE_RATE_PER_SECOND": "lots"},
        {"THROTTLE_BURST": "-1"},
        {"THROTTLE_BURST": "2.5"},
        {"THROTTLE_BURST": "9999"},
    ):
        with pytest.raises(stage.StageError, match=next(iter(bad))):
            stage.throttle(bad)


def test_a_bad_limit_is_refused_before_any_aws_call_naming_the_variable():
    config = ready()
    config["stages"]["prod"]["environment_variables"].update(THROTTLE_BURST="none", PER_CLIENT_RATE_LIMIT="5")
    with pytest.raises(stage.StageError) as refused:
        stage.check(config, "prod", "eu-west-1")
    assert "THROTTLE_BURST must be a whole number" in str(refused.value)
    assert "PER_CLIENT_RATE_LIMIT must be 0 (off) or from 10" in str(refused.value)


def test_the_per_client_limit_is_off_by_default():
    assert stage.per_client_limit({}) == (0, 300)
    assert stage.per_client_limit({"PER_CLIENT_RATE_LIMIT": "600", "PER_CLIENT_RATE_WINDOW_SECONDS": "60"}) == (600, 60)
    with pytest.raises(stage.StageError, match="PER_CLIENT_RATE_WINDOW_SECONDS must be one of 60, 120, 300, 600"):
        stage.per_client_limit({"PER_CLIENT_RATE_WINDOW_SECONDS": "30"})


def test_turning_the_per_client_limit_off_detaches_its_web_acl_from_the_stage_first():
    """moto has no ListResourcesForWebACL: botocore's Stubber checks each call against the WAFv2 API model."""
    import boto3
    from botocore.stub import Stubber

    wafv2 = boto3.client("wafv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    acl = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/audio-clips-prod-per-client/1111"
    api_stage = "arn:aws:apigateway:eu-west-1::/restapis/abc123/stages/prod"
    summary = {"Name": "audio-clips-prod-per-client", "Id": "1111", "ARN": acl, "LockToken": "t"}
    with Stubber(wafv2) as stub:
        stub.add_response("list_web_acls", {"WebACLs": [summary]}, {"Scope": "REGIONAL", "Limit": 100})
        stub.add_response(
            "list_resources_for_web_acl",
            {"ResourceArns": [api_stage]},
            {"WebACLArn": acl, "ResourceType": "API_GATEWAY"},
        )
        stub.add_response("disassociate_web_acl", {}, {"ResourceArn": api_stage})
        assert stage.detach_web_acl(wafv2, stage.web_acl_name("prod")) == [api_stage]
        stub.assert_no_pending_responses()
    with Stubber(wafv2) as stub:
        stub.add_response("list_web_acls", {"WebACLs": []}, {"Scope": "REGIONAL", "Limit": 100})
        assert stage.detach_web_acl(wafv2, stage.web_acl_name("prod")) == []


def test_the_web_acl_the_template_creates_is_the_one_the_deploy_looks_for():
    from cfnlint.decode import decode

    template, problems = decode(str(ROOT / "infra" / "template.yaml"))
    assert not problems
    acl = template["Resources"]["PerClientRateLimitAcl"]
    assert acl["Condition"] == "WithPerClientLimit" and template["Parameters"]["PerClientRateLimit"]["Default"] == "0"
    assert acl["Properties"]["Name"] == {"Fn::Sub": "audio-clips-${Stage}-per-client"}
    assert stage.web_acl_name("prod") == acl["Properties"]["Name"]["Fn::Sub"].replace("${Stage}", "prod")
    (rule,) = acl["Properties"]["Rules"]
    rate = rule["Statement"]["RateBasedStatement"]
    assert rate == {
        "Limit": {"Ref": "PerClientRateLimit"},
        "EvaluationWindowSec": {"Ref": "PerClientRateWindowSeconds"},
        "AggregateKeyType": "IP",
    }
    block = rule["Action"]["Block"]["CustomResponse"]
    assert block["ResponseCode"] == 429
    assert block["ResponseHeaders"] == [{"Name": "Retry-After", "Value": {"Ref": "PerClientRateWindowSeconds"}}]
    body = acl["Properties"]["CustomResponseBodies"][block["CustomResponseBodyKey"]]
    assert body["ContentType"] == "APPLICATION_JSON"
    assert set(json.loads(body["Content"])) == {"Code", "Message"}
    assert json.loads(body["Content"])["Code"] == "TooManyRequests"
    assert template["Parameters"]["PerClientRateWindowSeconds"]["AllowedValues"] == list(stage.PER_CLIENT_WINDOWS)


# ------------------------------------------------------------------ cleanup_clips's own concurrency


def test_cleanup_clips_has_a_small_reserved_concurrency_in_every_committed_stage():
    config = committed_config()
    for stage_name in ("dev", "prod"):
        assert stage.cleanup_concurrency(config, stage_name) == stage.CLEANUP_CONCURRENCY_DEFAULT == 5
        api = config["stages"][stage_name]["lambda_functions"]["api_handler"]["reserved_concurrency"]
        assert api > stage.CLEANUP_CONCURRENCY_DEFAULT, "uploads never take more than the API keeps"


def test_a_stage_without_a_cleanup_concurrency_gets_the_default_written_into_its_config(tmp_path):
    (tmp_path / ".chalice").mkdir()
    config = committed_config()
    del config["stages"]["dev"]["lambda_functions"]["cleanup_clips"]["reserved_concurrency"]
    path = tmp_path / ".chalice" / "config.json"
    path.write_text(json.dumps(config))
    assert stage.default_cleanup_concurrency(path, "dev") is True
    written = json.loads(path.read_text())
    assert written["stages"]["dev"]["lambda_functions"]["cleanup_clips"]["reserved_concurrency"] == 5
    assert stage.default_cleanup_concurrency(path, "dev") is False, "a set value is left as it is"
    written["stages"]["dev"]["lambda_functions"]["cleanup_clips"]["reserved_concurrency"] = 0
    with pytest.raises(stage.StageError, match="reserved_concurrency must be a whole number >= 1"):
        stage.cleanup_concurrency(written, "dev")


def test_the_api_description_documents_the_gateways_429_on_every_operation():
    document = json.loads((ROOT / "chalicelib" / "web" / "openapi.json").read_text())
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"]["429"] == {"$ref": "#/components/responses/TooManyRequests"}, (path, method)
    too_many = document["components"]["responses"]["TooManyRequests"]
    assert too_many["headers"]["Retry-After"]["required"] is True
    status, code, _, retry_after = stage.GATEWAY_RESPONSES["THROTTLED"]
    assert (status, code) == ("429", "TooManyRequests") and retry_after


def test_make_infra_detaches_the_web_acl_before_the_update_that_removes_it(monkeypatch):
    """infra/deploy.py with PER_CLIENT_RATE_LIMIT back at 0 on a stack that has the web ACL: detached first, then
    the stack is updated (a fake CloudFormation records the order; WAFv2 calls checked by botocore's Stubber)."""
    import boto3
    from botocore.stub import Stubber

    sys.path.insert(0, str(ROOT / "infra"))
    import deploy as infra_deploy

    calls, parameters = [], {}

    class FakeCloudFormation:
        exceptions = boto3.client("cloudformation", region_name="eu-west-1").exceptions

        def describe_stacks(self, StackName):
            calls.append("describe_stacks")
            outputs = [{"OutputKey": "PerClientWebAclArn", "OutputValue": "arn:acl"}]
            return {"Stacks": [{"StackId": "id", "StackStatus": "UPDATE_COMPLETE", "Outputs": outputs}]}

        def describe_stack_events(self, StackName):
            return {"StackEvents": []}

        def update_stack(self, **kwargs):
            calls.append("update_stack")
            parameters.update({p["ParameterKey"]: p["ParameterValue"] for p in kwargs["Parameters"]})

    wafv2 = boto3.client("wafv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    acl = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/audio-clips-prod-per-client/1111"
    api_stage = "arn:aws:apigateway:eu-west-1::/restapis/abc123/stages/prod"
    summary = {"Name": "audio-clips-prod-per-client", "Id": "1111", "ARN": acl, "LockToken": "t"}
    with Stubber(wafv2) as stub:
        stub.add_response("list_web_acls", {"WebACLs": [summary]}, {"Scope": "REGIONAL", "Limit": 100})
        stub.add_response(
            "list_resources_for_web_acl",
            {"ResourceArns": [api_stage]},
            {"WebACLArn": acl, "ResourceType": "API_GATEWAY"},
        )
        stub.add_response("disassociate_web_acl", {}, {"ResourceArn": api_stage})
        original = stub.client.disassociate_web_acl

        def disassociate(**kwargs):
            calls.append("disassociate_web_acl")
            return original(**kwargs)

        monkeypatch.setattr(stub.client, "disassociate_web_acl", disassociate)
        infra_deploy.deploy(FakeCloudFormation(), "prod", "clips", 90, {"PerClientRateLimit": 0}, wafv2)
        assert calls.index("disassociate_web_acl") < calls.index("update_stack")
        assert parameters["PerClientRateLimit"] == "0"
        stub.assert_no_pending_responses()
        calls.clear()
        infra_deploy.deploy(FakeCloudFormation(), "prod", "clips", 90, {"PerClientRateLimit": 600}, wafv2)
        assert "disassociate_web_acl" not in calls, "a limit still on keeps its web ACL attached"
