"""What `chalice deploy` and `make infra` would create, checked without an AWS account: the Terraform that
`chalice package` generates for prod, the CloudFormation template, and the infra step against moto."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHALICE = os.path.join(os.path.dirname(sys.executable), "chalice")
LAYER_ARN = "arn:aws:lambda:us-east-1:123456789012:layer:audio-clips-ffmpeg-prod:7"
FUNCTIONS = {
    "api_handler": "audio-clips-prod",
    "cleanup_clips": "audio-clips-prod-cleanup_clips",
    "health_check": "audio-clips-prod-health_check",
}


def project_copy(tmp_path, layer_arn=LAYER_ARN) -> str:
    """The project in a temporary folder, with a layer ARN recorded for prod as `make publish-layer` would."""
    target = tmp_path / "project"
    target.mkdir()
    for name in ("app.py", "requirements.txt"):
        shutil.copy(os.path.join(ROOT, name), target)
    shutil.copytree(
        os.path.join(ROOT, "chalicelib"), target / "chalicelib", ignore=shutil.ignore_patterns("__pycache__")
    )
    (target / ".chalice").mkdir()
    for name in os.listdir(os.path.join(ROOT, ".chalice")):
        if name.endswith(".json"):
            shutil.copy(os.path.join(ROOT, ".chalice", name), target / ".chalice")
    config_path = target / ".chalice" / "config.json"
    config = json.loads(config_path.read_text())
    config["stages"]["prod"]["lambda_functions"]["api_handler"]["layers"] = [layer_arn]
    config_path.write_text(json.dumps(config, indent=2))
    return str(target)


def package_stage(project: str, stage: str = "prod") -> str:
    """``chalice package --pkg-format terraform`` of a project copy, offline (no AWS endpoint): its output folder."""
    out = os.path.join(project, "out")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_ENDPOINT_URL", None)
    subprocess.run(
        [CHALICE, "package", "--pkg-format", "terraform", "--stage", stage, out],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def terraform(tmp_path_factory):
    out = package_stage(project_copy(tmp_path_factory.mktemp("package")))
    with open(os.path.join(out, "chalice.tf.json")) as handle:
        return json.load(handle)["resource"]


@pytest.mark.slow
def test_three_functions_with_their_memory_timeouts_and_concurrency(terraform):
    functions = {r["function_name"]: r for r in terraform["aws_lambda_function"].values()}
    assert set(functions) == set(FUNCTIONS.values())
    api, cleanup, health = (functions[FUNCTIONS[n]] for n in ("api_handler", "cleanup_clips", "health_check"))
    assert (api["memory_size"], api["timeout"], api["reserved_concurrent_executions"]) == (1024, 28, 100)
    assert api["timeout"] < 29, "API Gateway cuts a request off at 29 s"
    assert (cleanup["memory_size"], cleanup["timeout"]) == (1769, 120), "one full vCPU to index a new episode"
    assert (health["memory_size"], health["timeout"]) == (256, 30)
    assert cleanup["reserved_concurrent_executions"] == 5, "a bulk upload cannot take the account's concurrency"
    assert "reserved_concurrent_executions" not in health
    assert all(f["runtime"] in ("python3.12", "python3.13") for f in functions.values())


@pytest.mark.slow
def test_the_ffmpeg_layer_is_on_api_handler_only(terraform):
    functions = {r["function_name"]: r for r in terraform["aws_lambda_function"].values()}
    assert functions[FUNCTIONS["api_handler"]]["layers"] == [LAYER_ARN]
    assert not functions[FUNCTIONS["cleanup_clips"]].get("layers")
    assert not functions[FUNCTIONS["health_check"]].get("layers")


@pytest.mark.slow
def test_the_source_bucket_reaches_cleanup_through_an_eventbridge_rule_on_its_audio_keys(terraform):
    assert "aws_s3_bucket_notification" not in terraform, "no notification on a bucket other systems are notified of"
    rules = {name: rule for name, rule in terraform["aws_cloudwatch_event_rule"].items() if "event_pattern" in rule}
    ((name, rule),) = rules.items()
    assert json.loads(rule["event_pattern"]) == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {"bucket": {"name": ["pod-insights-raw"]}, "object": {"key": [{"wildcard": "*/*/audio/*"}]}},
    }
    (target,) = [t for t in terraform["aws_cloudwatch_event_target"].values() if name in json.dumps(t)]
    assert "cleanup_clips" in json.dumps(target["arn"])


@pytest.mark.slow
def test_the_health_check_runs_every_five_minutes(terraform):
    schedules = [
        r["schedule_expression"] for r in terraform["aws_cloudwatch_event_rule"].values() if "schedule_expression" in r
    ]
    assert schedules == ["rate(5 minutes)"]


def test_a_stage_may_keep_the_direct_s3_notification(tmp_path):
    """SOURCE_EVENTS=s3, for a bucket this service alone is notified of: the notification Chalice manages."""
    project = project_copy(tmp_path)
    config_path = os.path.join(project, ".chalice", "config.json")
    with open(config_path) as handle:
        config = json.load(handle)
    config["stages"]["prod"]["environment_variables"]["SOURCE_EVENTS"] = "s3"
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    code = (
        "from chalice.cli.factory import CLIFactory; import json, os; f = CLIFactory('.', environ=os.environ); "
        "c = f.create_config_obj('prod'); app = c.chalice_app; "
        "print(json.dumps([(e.name, type(e).__name__, getattr(e, 'bucket', None)) for e in app.event_sources]))"
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    sources = {name: (kind, bucket) for name, kind, bucket in json.loads(result.stdout)}
    assert sources["cleanup_clips"] == ("S3EventConfig", "pod-insights-raw")


@pytest.mark.slow
def test_environment_variables_follow_the_stage(terraform):
    functions = {r["function_name"]: r for r in terraform["aws_lambda_function"].values()}
    variables = functions[FUNCTIONS["api_handler"]]["environment"]["variables"]
    assert variables["SOURCE_BUCKET"] == "pod-insights-raw" and variables["CLIPS_BUCKET"] == "pod-insights-clips"
    assert variables["MAX_CLIP_MS"] == "60000" and variables["CLIP_URL_TTL_SECONDS"] == "86400"
    assert variables["MONGODB_URI_SSM_PARAMETER"] == "/audio-clips/prod/mongodb-uri"
    assert "MONGODB_URI" not in variables, "the URI is a secret: it comes from SSM, never from the config"


@pytest.mark.slow
def test_each_function_has_its_own_least_privilege_policy(terraform):
    roles = terraform["aws_iam_role_policy"]
    assert set(roles) == {"api_handler_role", "cleanup_clips_role", "health_check_role"}
    policies = {name.removesuffix("_role"): json.loads(r["policy"]) for name, r in roles.items()}
    for name, policy in policies.items():
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), (name, actions)
            assert "*" not in resources, (name, resources)

    def allowed(name):
        return {(a, r) for s in policies[name]["Statement"] for a in s["Action"] for r in s["Resource"]}

    api, cleanup, health = allowed("api_handler"), allowed("cleanup_clips"), allowed("health_check")
    assert ("s3:GetObject", "arn:aws:s3:::pod-insights-raw/*") in api
    assert ("s3:PutObject", "arn:aws:s3:::pod-insights-clips/audio_clips/*") in api
    assert not any(
        a.startswith("s3:") and "pod-insights-raw" in r and a != "s3:GetObject" and a != "s3:ListBucket" for a, r in api
    ), "api_handler only reads the source bucket"
    assert {a for a, r in cleanup if a.startswith("s3:")} == {
        "s3:ListBucket",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:PutObject",
    }
    assert {(a, r) for a, r in cleanup if "pod-insights-raw" in r} == {
        ("s3:GetObject", "arn:aws:s3:::pod-insights-raw/*"),
        ("s3:ListBucket", "arn:aws:s3:::pod-insights-raw"),
    }, "cleanup_clips only reads the source bucket (to index new audio)"
    assert {r for a, r in cleanup if a == "s3:PutObject"} == {
        "arn:aws:s3:::pod-insights-clips/audio_clips/*/seek-index.json",
        "arn:aws:s3:::pod-insights-clips/audio_clips/*/seek-index.lease",
    }, "cleanup_clips writes the seek index and its lease, never a clip"
    assert {a for a, _ in health if not a.startswith(("logs:", "ssm:"))} == {
        "sns:Publish",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
    }
    assert all(
        r.endswith("_health/*") or r == "arn:aws:s3:::pod-insights-clips" for a, r in health if a.startswith("s3:")
    )
    assert not any(a.startswith("sns:") for a, _ in api | cleanup)


# ------------------------------------------------------------------ the CloudFormation template


@pytest.fixture(scope="module")
def template():
    from cfnlint.decode import decode

    document, problems = decode(os.path.join(ROOT, "infra", "template.yaml"))
    assert not problems
    return document["Resources"]


def test_cfn_lint_passes():
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "cfn-lint"), os.path.join(ROOT, "infra", "template.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_clips_bucket_is_private_encrypted_and_expires_clips(template):
    bucket = template["ClipsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == "audio_clips/" and rule["ExpirationInDays"] == {"Ref": "ClipRetentionDays"}
    assert template["ClipsBucket"]["DeletionPolicy"] == "Retain"


ALERT_OWNERS = {  # alarms that notify the topic themselves; the rest are inputs (see the template's comment)
    "ApiFailing",
    "ApiThrottles",
    "CleanupErrors",
    "HealthCheckErrors",
    "HealthCheckThrottles",
    "HealthCheckStopped",
    "CleanupFailedEvents",
}


def test_every_alarm_is_watched_and_only_the_owner_of_each_signal_notifies(template):
    alarms = {
        name: r["Properties"]
        for name, r in template.items()
        if r["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
    }
    assert {name for name, alarm in alarms.items() if alarm.get("AlarmActions")} == ALERT_OWNERS
    for name in ALERT_OWNERS:
        assert alarms[name]["AlarmActions"] == [{"Ref": "AlertTopic"}], name
    assert not any(alarm.get("OKActions") for alarm in alarms.values()), "one message per outage, not two"
    metric = {name: a for name, a in alarms.items() if "MetricName" in a}
    watched = {(a["MetricName"], json.dumps(a["Dimensions"][0]["Value"])) for a in metric.values()}
    for function in ("audio-clips-${Stage}", "audio-clips-${Stage}-cleanup_clips", "audio-clips-${Stage}-health_check"):
        for name in ("Errors", "Throttles"):
            assert (name, json.dumps({"Fn::Sub": function})) in watched
    assert alarms["ApiDurationNearTimeout"]["Threshold"] == {"Ref": "ApiDurationAlarmMs"}


def test_api_gateway_5xx_and_p99_latency_alarms_per_stage(template):
    stage_api = [{"Name": "ApiName", "Value": "audio-clips"}, {"Name": "Stage", "Value": {"Ref": "Stage"}}]
    errors, latency = template["Api5xx"]["Properties"], template["ApiLatencyP99"]["Properties"]
    assert (errors["Namespace"], errors["MetricName"], errors["Statistic"]) == ("AWS/ApiGateway", "5XXError", "Sum")
    assert errors["Dimensions"] == stage_api and errors["Threshold"] == {"Ref": "Api5xxAlarmCount"}
    assert errors["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and errors["Period"] == 300
    assert (latency["Namespace"], latency["MetricName"], latency["ExtendedStatistic"]) == (
        "AWS/ApiGateway",
        "Latency",
        "p99",
    )
    assert latency["Dimensions"] == stage_api and latency["Threshold"] == {"Ref": "ApiLatencyP99AlarmMs"}
    assert latency["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_api_alerts_once_through_a_composite_held_back_during_a_catalog_outage(template):
    composite = template["ApiFailing"]["Properties"]
    rule = composite["AlarmRule"]["Fn::Sub"]
    for member in ("Api5xx", "ApiLatencyP99", "ApiErrors", "ApiDurationNearTimeout"):
        assert f'ALARM("${{{member}}}")' in rule
    assert composite["ActionsSuppressor"] == {"Ref": "CatalogUnhealthy"}
    assert composite["ActionsSuppressorWaitPeriod"] >= 600, "CatalogUnhealthy needs 2 of 3 five-minute periods"
    assert "OKActions" not in composite


def test_each_function_log_group_is_declared_with_retention(template):
    groups = {
        r["Properties"]["LogGroupName"]["Fn::Sub"]: r["Properties"]
        for r in template.values()
        if r["Type"] == "AWS::Logs::LogGroup"
    }
    assert set(groups) == {
        f"/aws/lambda/{name}"
        for name in ("audio-clips-${Stage}", "audio-clips-${Stage}-cleanup_clips", "audio-clips-${Stage}-health_check")
    }
    assert all(g["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values())


def test_cleanup_failures_queue_and_its_depth_alarm(template):
    queue = template["CleanupFailures"]["Properties"]
    assert queue["QueueName"] == {"Fn::Sub": "audio-clips-${Stage}-cleanup_clips-failed"}
    assert queue["MessageRetentionPeriod"] == 1209600 and queue["SqsManagedSseEnabled"] is True
    alarm = template["CleanupFailedEvents"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["CleanupFailures", "QueueName"]}}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")


def test_the_dashboard_is_optional(template):
    assert template["StageDashboard"]["Condition"] == "Dashboard"
    body = template["StageDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    json.loads(
        body.replace("${AWS::Region}", "us-east-1")
        .replace("${Stage}", "dev")
        .replace("${CleanupFailures.QueueName}", "q")
    )


def test_the_catalog_alarm_treats_missing_data_as_breaching(template):
    alarm = template["CatalogUnhealthy"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AudioClips", "MongoPingOk")
    assert (alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"]) == (2, 3)
    assert alarm["TreatMissingData"] == "breaching", "a health check that stopped running must be noticed"
    assert alarm["Dimensions"] == [{"Name": "Service", "Value": {"Fn::Sub": "audio-clips-${Stage}"}}]
    stopped = template["HealthCheckStopped"]["Properties"]
    assert (stopped["MetricName"], stopped["Statistic"], stopped["TreatMissingData"]) == (
        "MongoPingOk",
        "SampleCount",
        "breaching",
    )


def test_make_infra_deploys_the_stack_and_records_its_outputs(moto_server, tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    shutil.copy(os.path.join(ROOT, ".chalice", "config.json"), config)
    before = json.loads(config.read_text())
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "infra", "deploy.py"), "dev", "--config", str(config)],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "creating stack audio-clips-infra-dev" in result.stdout
    assert "audio-clips-infra-dev: CREATE_COMPLETE after" in result.stdout, "progress lines while the stack works"
    assert "commit it" in result.stdout
    after = json.loads(config.read_text())
    variables = after["stages"]["dev"]["environment_variables"]
    assert variables["CLIPS_BUCKET"] == "pod-insights-clips-dev"
    assert variables["ALERT_TOPIC_ARN"].endswith(":audio-clips-alerts-dev")
    assert variables["LAYER_ARTIFACTS_BUCKET"].startswith("audio-clips-artifacts-dev-")
    before["stages"]["dev"]["environment_variables"].update(variables)
    assert after == before, "nothing else in the config changed"
    buckets = {b["Name"] for b in moto_server.list_buckets()["Buckets"]}
    assert {"pod-insights-clips-dev", variables["LAYER_ARTIFACTS_BUCKET"]} <= buckets
    import boto3

    logs = boto3.client("logs", region_name="us-east-1")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/audio-clips-dev")["logGroups"]
    assert {(g["logGroupName"], g.get("retentionInDays")) for g in groups} == {
        ("/aws/lambda/audio-clips-dev", 30),
        ("/aws/lambda/audio-clips-dev-cleanup_clips", 30),
        ("/aws/lambda/audio-clips-dev-health_check", 30),
    }
    assert boto3.client("sqs", region_name="us-east-1").get_queue_url(QueueName="audio-clips-dev-cleanup_clips-failed")


def test_make_deploy_refuses_a_python_older_than_3_12():
    result = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "deploy", "STAGE=dev", "PY=/root/.pyenv/versions/3.11.7/bin/python"]
        if os.path.exists("/root/.pyenv/versions/3.11.7/bin/python")
        else ["make", "-s", "-o", ".venv/.installed", "deploy", "STAGE=dev", "PY=python3.11"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "needs Python 3.12 or newer" in result.stderr
