"""A real ``chalice deploy --stage dev`` against moto's server on 127.0.0.1, then checks of what exists.

The deploy runs as a subprocess, the way an engineer runs it (``.venv/bin/chalice deploy --stage dev``), in a
temporary copy of the project whose dev stage names an FFmpeg layer published in moto first. boto3 in that
process follows ``AWS_ENDPOINT_URL`` to a ``ThreadedMotoServer`` running in this test process, which is what
lets the ``moto_workarounds`` fixture patch moto's server-side code with ``monkeypatch`` (undone after the test).

The later tests deploy as ``make infra`` and ``make deploy`` do (``infra/deploy.py``, then ``infra/stage.py deploy``
with its state kept in S3): dev and prod side by side on one source bucket, a second deploy from a fresh clone,
and ``make destroy``. Chalice's deployment package (pip downloading Lambda's wheels: half of a first deploy) is built
by the first deploy of the session and then seeded into the other project copies: it is a build cache named by a
hash of the code and requirements, and says nothing about which API or functions a stage has.

moto runs no function here (no Docker), so this checks the deployed shape, not behaviour: functions with the
dev stage's memory, timeouts and reserved concurrency, the layer on ``api_handler`` and ``cleanup_clips`` only, the REST API's routes,
the S3 notification on the source bucket, the ``rate(5 minutes)`` schedule, one role per function carrying its
hand-written policy, and the invoke permissions that make the triggers work.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import boto3
import pytest

from chalicelib.clips.cleanup import event_pattern

ROOT = Path(__file__).resolve().parents[1]
CHALICE = Path(sys.executable).parent / "chalice"  # the venv's chalice, beside the interpreter running pytest
STAGE = "dev"
APP_NAME = "audio-clips"
REGION = "us-east-1"
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"  # chalice takes it from the interpreter
ROUTES = ("/api/v1/audio_clips/{episode_id}", "/api/v1/health")
FUNCTIONS = {  # chalice's name for a function -> the Lambda function name it deploys
    "api_handler": f"{APP_NAME}-{STAGE}",
    "cleanup_clips": f"{APP_NAME}-{STAGE}-cleanup_clips",
    "health_check": f"{APP_NAME}-{STAGE}-health_check",
}
HANDLERS = {"api_handler": "app.app", "cleanup_clips": "app.cleanup_clips", "health_check": "app.health_check"}

DEPLOY_TIMEOUT_S = 300

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------------------------
# moto's server, and the workarounds chalice needs from it
# ---------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reset_moto(endpoint: str) -> None:
    """Forget every resource: moto's backends are process-wide, shared with other tests' ``mock_aws``."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).read()


@pytest.fixture
def moto_workarounds(monkeypatch):
    """The three places where moto 5.2.5 refuses what ``chalice deploy`` sends and real AWS accepts.

    Each patch wraps one server-side moto function, normalises the request into a form moto handles, and then
    calls moto's own code, so every other check moto makes still applies. ``monkeypatch`` undoes them after the
    test. They patch classes, so they act on the ``ThreadedMotoServer`` in this process (not on a separate
    ``moto_server`` process) and must be in place before ``chalice deploy`` runs.
    """
    from moto.apigateway.models import APIGatewayBackend
    from moto.s3.responses import S3Response
    from openapi_spec_validator import OpenAPIV2SpecValidator, validate

    original_import = APIGatewayBackend.import_rest_api
    original_put = APIGatewayBackend.put_rest_api
    original_notification = S3Response._notification_config_from_body

    def import_rest_api_without_description(self, api_doc, fail_on_warnings):
        """Patch 1, REST API import: a missing ``info.description``.

        moto: ``import_rest_api`` reads ``api_doc["info"]["description"]`` unconditionally; chalice's document
        has only ``info.title`` and ``info.version``, so moto fails with ``KeyError: 'description'``, which the
        client sees as ``An error occurred (500) when calling the ImportRestApi operation (reached max retries:
        2): ... 500 Internal Server Error``.
        AWS: ``info.description`` is optional (OpenAPI/Swagger make it so); API Gateway imports the API with no
        description.
        Why it weakens nothing: the document is passed on unchanged except for an empty description, which the
        test never looks at; the title (the API's name), paths and integrations are still moto's to read.
        """
        if isinstance(api_doc.get("info"), dict) and "description" not in api_doc["info"]:
            api_doc = {**api_doc, "info": {**api_doc["info"], "description": ""}}
        return original_import(self, api_doc, fail_on_warnings)

    def put_rest_api_accepting_swagger2(self, function_id, api_doc, fail_on_warnings, mode="merge"):
        """Patch 2, REST API import/update: a Swagger 2.0 document.

        moto: ``put_rest_api`` (also called by ``import_rest_api``) rejects any document with a ``swagger``
        key: ``BadRequestException: Only OpenAPI 3.x.x are currently supported``. chalice generates Swagger 2.0
        (``"swagger": "2.0"``) and has no option for OpenAPI 3.
        AWS: API Gateway imports both Swagger 2.0 and OpenAPI 3.0 definitions (``ImportRestApi``/``PutRestApi``).
        Why it weakens nothing: moto reads only ``paths`` -> methods -> ``responses`` and
        ``x-amazon-apigateway-integration``, which have the same shape in both versions; the version label is
        what is changed. The document is first validated as Swagger 2.0 (``openapi_spec_validator``), a check
        moto itself never makes on this path, and moto's own OpenAPI 3 validation (only asked for with
        ``failonwarnings``, which chalice does not send) is replaced by it.
        """
        if str(api_doc.get("swagger", "")).startswith("2"):
            validate(api_doc, cls=OpenAPIV2SpecValidator)  # raises OpenAPIValidationError: the test fails
            api_doc = {"openapi": "3.0.1", **{k: v for k, v in api_doc.items() if k != "swagger"}}
            fail_on_warnings = False
        return original_put(self, function_id, api_doc, fail_on_warnings, mode=mode)

    def notification_filter_names_any_case(self):
        """Patch 3, S3 bucket notifications: ``Prefix``/``Suffix`` filter rule names.

        moto: ``S3Response._notification_config_from_body`` asserts each ``FilterRule`` name is in
        ``["suffix", "prefix"]``; chalice's ``connect_s3_bucket_to_lambda`` sends ``Prefix``/``Suffix``, which
        moto answers with a 500 (``AssertionError``) to ``PutBucketNotificationConfiguration``.
        AWS: S3 accepts the names in either case.
        Why it weakens nothing: only the case of the two names is changed, before moto parses and validates the
        document as usual. This app's ``@app.on_s3_event`` has no prefix or suffix, so chalice sends no
        ``Filter`` at all and this patch is dormant (the test asserts the notification has no filter); it is
        kept so that adding a prefix/suffix to the event does not break this test for a moto reason.
        """
        body = self.body
        if isinstance(body, bytes):
            self.body = re.sub(
                rb"<Name>\s*(Prefix|Suffix)\s*</Name>", lambda m: b"<Name>" + m.group(1).lower() + b"</Name>", body
            )
        elif isinstance(body, str):
            self.body = re.sub(
                r"<Name>\s*(Prefix|Suffix)\s*</Name>", lambda m: f"<Name>{m.group(1).lower()}</Name>", body
            )
        return original_notification(self)

    monkeypatch.setattr(APIGatewayBackend, "import_rest_api", import_rest_api_without_description)
    monkeypatch.setattr(APIGatewayBackend, "put_rest_api", put_rest_api_accepting_swagger2)
    monkeypatch.setattr(S3Response, "_notification_config_from_body", notification_filter_names_any_case)
    yield


@pytest.fixture
def aws_endpoint(moto_workarounds, monkeypatch):
    """moto's server on 127.0.0.1 (with the workarounds), emptied before and after; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _reset_moto(endpoint)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield endpoint
        _reset_moto(endpoint)
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------------
# The project copy and the deploy
# ---------------------------------------------------------------------------------------------------------------


def _copy_project(dest: Path) -> Path:
    """What ``chalice deploy`` reads: app.py, chalicelib/, requirements.txt, .chalice/config.json and policies."""
    dest.mkdir()
    shutil.copy2(ROOT / "app.py", dest / "app.py")
    shutil.copy2(ROOT / "requirements.txt", dest / "requirements.txt")
    shutil.copytree(ROOT / "chalicelib", dest / "chalicelib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / ".chalice").mkdir()
    shutil.copy2(ROOT / ".chalice" / "config.json", dest / ".chalice" / "config.json")
    for policy in (ROOT / ".chalice").glob("policy-*.json"):
        shutil.copy2(policy, dest / ".chalice" / policy.name)
    return dest


def _layer_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bin/ffmpeg")
        info.external_attr = 0o100755 << 16
        archive.writestr(info, "#!/bin/sh\necho 'ffmpeg version test'\n")
    return buffer.getvalue()


def _client(service: str, endpoint: str):
    return boto3.client(
        service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:123456789012:function:{name}"


@pytest.fixture
def deployed(aws_endpoint, tmp_path):
    """Publish the layer, create the source bucket, copy the project, run ``chalice deploy --stage dev``."""
    layer = _client("lambda", aws_endpoint).publish_layer_version(
        LayerName="audio-clips-ffmpeg-dev",
        Description="FFmpeg (test stand-in)",
        Content={"ZipFile": _layer_zip()},
        CompatibleRuntimes=["python3.12"],
        CompatibleArchitectures=["x86_64"],
    )
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    source_bucket = config["stages"][STAGE]["environment_variables"]["SOURCE_BUCKET"]
    _client("s3", aws_endpoint).create_bucket(Bucket=source_bucket)

    project = _copy_project(tmp_path / "project")
    config_path = project / ".chalice" / "config.json"
    copy = json.loads(config_path.read_text())
    for function in ("api_handler", "cleanup_clips"):  # what make publish-layer records
        copy["stages"][STAGE]["lambda_functions"][function]["layers"] = [layer["LayerVersionArn"]]
    config_path.write_text(json.dumps(copy, indent=2))

    # the app reads its settings at import (chalice imports it to deploy): keep a developer's shell out of it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ATLAS_", "HEALTH_"))}
    env.update(
        AWS_ENDPOINT_URL=aws_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    lines, packaged_at = [], None
    started = time.monotonic()
    with subprocess.Popen(
        [str(CHALICE), "deploy", "--stage", STAGE],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        watchdog = threading.Timer(DEPLOY_TIMEOUT_S, process.kill)  # a hung deploy fails instead of hanging
        watchdog.start()
        try:
            for line in process.stdout:  # timestamps split packaging (pip, PyPI) from the AWS calls (moto)
                if packaged_at is None and lines and lines[-1].startswith("Creating deployment package"):
                    packaged_at = time.monotonic()
                lines.append(line)
            returncode = process.wait()
        finally:
            watchdog.cancel()
    finished = time.monotonic()
    output = "".join(lines)
    assert returncode == 0, f"chalice deploy failed ({returncode}):\n{output}"
    if not PACKAGE_CACHE:
        PACKAGE_CACHE.extend((project / ".chalice" / "deployments").glob("*.zip"))
    return {
        "endpoint": aws_endpoint,
        "config": config,
        "project": project,
        "layer_arn": layer["LayerVersionArn"],
        "source_bucket": source_bucket,
        "seconds": finished - started,
        "output": output,
        "package_seconds": (packaged_at or finished) - started,
        "aws_seconds": finished - (packaged_at or finished),
    }


# ---------------------------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------------------------


def test_chalice_deploy_dev_stage_creates_the_expected_resources(deployed, capsys):
    with capsys.disabled():
        print(
            f"\n[measure] chalice deploy against moto: {deployed['seconds']:.1f} s (stage {STAGE}: "
            f"{deployed['package_seconds']:.1f} s building the deployment package from scratch, pip included; "
            f"{deployed['aws_seconds']:.1f} s of API calls to moto)"
        )

    endpoint = deployed["endpoint"]
    stage = deployed["config"]["stages"][STAGE]
    lambda_ = _client("lambda", endpoint)
    arns = {fn: _function_arn(name) for fn, name in FUNCTIONS.items()}

    # -- the three functions, as the dev stage configures them
    assert sorted(f["FunctionName"] for f in lambda_.list_functions()["Functions"]) == sorted(FUNCTIONS.values())
    reserved = [fn for fn, cfg in stage["lambda_functions"].items() if "reserved_concurrency" in cfg]
    assert reserved == ["api_handler", "cleanup_clips"], "a bulk upload cannot take the API's concurrency"
    expected_env = {**deployed["config"].get("environment_variables", {}), **stage.get("environment_variables", {})}
    roles = {}
    for fn, name in FUNCTIONS.items():
        cfg = stage["lambda_functions"][fn]
        got = lambda_.get_function(FunctionName=name)["Configuration"]
        assert got["FunctionArn"] == arns[fn]
        assert got["Runtime"] == RUNTIME
        assert got["Handler"] == HANDLERS[fn]
        assert got["MemorySize"] == cfg["lambda_memory_size"], fn
        assert got["Timeout"] == cfg["lambda_timeout"], fn
        assert got["Environment"]["Variables"] == expected_env, fn
        layers = [layer["Arn"] for layer in got.get("Layers", [])]
        assert layers == ([deployed["layer_arn"]] if fn in ("api_handler", "cleanup_clips") else []), fn
        concurrency = lambda_.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
        assert concurrency == cfg.get("reserved_concurrency"), fn
        roles[fn] = got["Role"]

    # -- one role per function, each carrying exactly its hand-written policy (autogen_policy is false)
    iam = _client("iam", endpoint)
    assert len(set(roles.values())) == len(FUNCTIONS)
    for fn, role_arn in roles.items():
        role_name = role_arn.rsplit("/", 1)[1]
        assert role_name == f"{APP_NAME}-{STAGE}-{fn}"
        trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "lambda.amazonaws.com"}]
        assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
        policy_names = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
        assert len(policy_names) == 1, (fn, policy_names)
        document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_names[0])["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        hand_written = json.loads((ROOT / ".chalice" / stage["lambda_functions"][fn]["iam_policy_file"]).read_text())
        assert document == hand_written, fn

    # -- the REST API and its two routes, proxied to api_handler, deployed to the dev stage
    apigateway = _client("apigateway", endpoint)
    apis = apigateway.get_rest_apis()["items"]
    assert [api["name"] for api in apis] == [APP_NAME]
    api_id = apis[0]["id"]
    resources = {r["path"]: r for r in apigateway.get_resources(restApiId=api_id, limit=500)["items"]}
    for route in ROUTES:
        assert route in resources, sorted(resources)
        assert "GET" in resources[route].get("resourceMethods", {}), route
        integration = apigateway.get_integration(restApiId=api_id, resourceId=resources[route]["id"], httpMethod="GET")
        assert integration["type"].upper() == "AWS_PROXY"  # chalice writes "aws_proxy"; moto echoes it as sent
        assert arns["api_handler"] in integration["uri"]
    assert STAGE in [s["stageName"] for s in apigateway.get_stages(restApiId=api_id)["item"]]

    # -- the source bucket reaches cleanup_clips through an EventBridge rule (no notification on the bucket)
    notification = _client("s3", endpoint).get_bucket_notification_configuration(Bucket=deployed["source_bucket"])
    assert not any(
        notification.get(k) for k in ("LambdaFunctionConfigurations", "TopicConfigurations", "QueueConfigurations")
    ), notification
    events = _client("events", endpoint)
    rules = events.list_rules()["Rules"]
    (pattern_rule,) = [r for r in rules if r.get("EventPattern")]
    assert json.loads(pattern_rule["EventPattern"]) == event_pattern(deployed["source_bucket"])
    targets = events.list_targets_by_rule(Rule=pattern_rule["Name"])["Targets"]
    assert [t["Arn"] for t in targets] == [arns["cleanup_clips"]]

    # -- the schedule: one rule, rate(5 minutes), targeting health_check
    schedules = [r for r in rules if r.get("ScheduleExpression")]
    assert [r["ScheduleExpression"] for r in schedules] == ["rate(5 minutes)"], rules
    targets = events.list_targets_by_rule(Rule=schedules[0]["Name"])["Targets"]
    assert [t["Arn"] for t in targets] == [arns["health_check"]]

    # -- the permissions that let each trigger invoke its function
    for fn, principal in (
        ("api_handler", "apigateway.amazonaws.com"),
        ("cleanup_clips", "events.amazonaws.com"),
        ("health_check", "events.amazonaws.com"),
    ):
        statements = json.loads(lambda_.get_policy(FunctionName=FUNCTIONS[fn])["Policy"])["Statement"]
        assert {s["Principal"]["Service"] for s in statements} == {principal}, (fn, statements)

    # -- the package: the app, chalicelib/ and requirements.txt's packages for Lambda's platform (chalice only
    #    warns, and deploys anyway, when pip cannot get a dependency); built and recorded in the temporary copy
    assert "Could not install dependencies" not in deployed["output"], deployed["output"]
    packages = list((deployed["project"] / ".chalice" / "deployments").glob("*.zip"))
    assert len(packages) == 1, packages
    with zipfile.ZipFile(packages[0]) as archive:
        top_level = {name.split("/", 1)[0] for name in archive.namelist()}
    requirements = [
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # the top-level ones; requirements.txt pins all
    modules = {
        "dnspython": "dns",
        "aws-lambda-powertools": "aws_lambda_powertools",  # import names that differ
        "aws-xray-sdk": "aws_xray_sdk",
        "pillow": "PIL",
    }
    assert {"app.py", "chalicelib", "chalice"} <= top_level, sorted(top_level)
    assert {modules.get(r, r) for r in requirements} <= top_level, sorted(top_level)
    assert (
        lambda_.get_function(FunctionName=FUNCTIONS["api_handler"])["Configuration"]["CodeSize"]
        == packages[0].stat().st_size
    )
    record = json.loads((deployed["project"] / ".chalice" / "deployed" / f"{STAGE}.json").read_text())
    assert {r["name"] for r in record["resources"] if r["resource_type"] == "lambda_function"} == set(FUNCTIONS)


# ---------------------------------------------------------------------------------------------------------------
# make infra + make deploy, as any clone runs them: infra/deploy.py, then infra/stage.py with its state in S3
# ---------------------------------------------------------------------------------------------------------------

INFRA = ROOT / "infra"
PACKAGE_CACHE: list[Path] = []  # the first deployment package built in this session, seeded into later copies


def _fresh_clone(dest: Path) -> Path:
    """The repository's tracked files a deploy reads (working-tree versions, so uncommitted edits are tested), and
    nothing else: no .chalice/deployed/, no package, no local state."""
    tracked = subprocess.run(
        ["git", "ls-files", "app.py", "requirements.txt", "chalicelib", ".chalice", "infra"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in tracked:
        if (ROOT / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    assert not (dest / ".chalice" / "deployed").exists()
    if PACKAGE_CACHE:
        (dest / ".chalice" / "deployments").mkdir(parents=True)
        shutil.copy2(PACKAGE_CACHE[0], dest / ".chalice" / "deployments" / PACKAGE_CACHE[0].name)
    return dest


def _environ(endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ATLAS_", "HEALTH_"))}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _run(args: list, project: Path, endpoint: str, returncode: int = 0) -> tuple[str, float]:
    """A deploy command as an operator runs it (with REGION=us-east-1); fails the test with its output unless it
    ends with ``returncode``."""
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, *map(str, args), "--region", REGION],
        cwd=project,
        env=_environ(endpoint),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        watchdog = threading.Timer(DEPLOY_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            output = process.stdout.read()
            ended = process.wait()
        finally:
            watchdog.cancel()
    assert ended == returncode, f"{' '.join(map(str, args))} ended {ended}, not {returncode}:\n{output}"
    if not PACKAGE_CACHE:
        PACKAGE_CACHE.extend((project / ".chalice" / "deployments").glob("*.zip"))
    return output, time.monotonic() - started


def _prepare_account(endpoint: str, project: Path, stages: tuple[str, ...]) -> dict:
    """The raw bucket, already shared with another consumer; then per stage `make infra` and a published layer
    recorded in the project's config (as `make publish-layer` would)."""
    s3 = _client("s3", endpoint)
    config = json.loads((project / ".chalice" / "config.json").read_text())
    source_bucket = config["stages"]["dev"]["environment_variables"]["SOURCE_BUCKET"]
    s3.create_bucket(Bucket=source_bucket)
    ingestion = _client("sqs", endpoint).create_queue(QueueName="ingestion-pipeline")["QueueUrl"]
    ingestion_arn = _client("sqs", endpoint).get_queue_attributes(QueueUrl=ingestion, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    others = {
        "QueueConfigurations": [{"Id": "ingestion", "QueueArn": ingestion_arn, "Events": ["s3:ObjectCreated:*"]}],
        "EventBridgeConfiguration": {},
    }
    s3.put_bucket_notification_configuration(Bucket=source_bucket, NotificationConfiguration=others)
    before = {
        k: v
        for k, v in s3.get_bucket_notification_configuration(Bucket=source_bucket).items()
        if k != "ResponseMetadata"
    }
    for stage in stages:
        _run([INFRA / "deploy.py", stage, "--config", project / ".chalice" / "config.json"], project, endpoint)
        layer = _client("lambda", endpoint).publish_layer_version(
            LayerName=f"audio-clips-ffmpeg-{stage}",
            Content={"ZipFile": _layer_zip()},
            CompatibleRuntimes=["python3.12", "python3.13"],
            CompatibleArchitectures=["x86_64"],
        )
        config = json.loads((project / ".chalice" / "config.json").read_text())
        for function in ("api_handler", "cleanup_clips"):  # what make publish-layer records
            config["stages"][stage]["lambda_functions"][function]["layers"] = [layer["LayerVersionArn"]]
        (project / ".chalice" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"source_bucket": source_bucket, "notification": before}


def _names(stage: str) -> dict:
    return {
        "api_handler": f"{APP_NAME}-{stage}",
        "cleanup_clips": f"{APP_NAME}-{stage}-cleanup_clips",
        "health_check": f"{APP_NAME}-{stage}-health_check",
    }


def _s3_event(bucket: str, key: str, detail_type: str = "Object Created") -> dict:
    return {
        "version": "0",
        "id": "1",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-30T20:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": 1}},
    }


def test_dev_and_prod_deploy_side_by_side_on_one_shared_source_bucket(aws_endpoint, tmp_path, capsys):
    from moto.events.models import EventPattern

    project = _fresh_clone(tmp_path / "clone")
    account = _prepare_account(aws_endpoint, project, ("dev", "prod"))
    timings = {
        stage: _run([INFRA / "stage.py", "deploy", stage, "--project", project], project, aws_endpoint)[1]
        for stage in ("dev", "prod")
    }
    with capsys.disabled():
        print(
            f"\n[measure] make deploy against moto: dev {timings['dev']:.1f} s, then prod {timings['prod']:.1f} s "
            f"(same clone: prod reuses dev's deployment package)"
        )

    s3, events, lambda_ = (_client(name, aws_endpoint) for name in ("s3", "events", "lambda"))
    bucket = account["source_bucket"]
    # the other consumers' notification and the EventBridge setting are as they were: nothing was added to the bucket
    after = s3.get_bucket_notification_configuration(Bucket=bucket)
    after.pop("ResponseMetadata")
    assert after == account["notification"]

    rules = [r for r in events.list_rules()["Rules"] if r.get("EventPattern")]
    assert len(rules) == 2, rules
    by_target = {}
    for rule in rules:
        (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        by_target[target["Arn"]] = EventPattern.load(rule["EventPattern"])
    assert set(by_target) == {_function_arn(_names(stage)["cleanup_clips"]) for stage in ("dev", "prod")}
    for pattern in by_target.values():
        assert pattern.matches_event(_s3_event(bucket, "a16z/0e983347-7815-4b62-87a6-84d988a772b7/audio/a.mp3"))
        assert pattern.matches_event(_s3_event(bucket, "a16z/substack:1/audio/b.m4a", "Object Deleted"))
        assert not pattern.matches_event(_s3_event(bucket, "a16z/substack:1/transcript/b.json"))
        assert not pattern.matches_event(_s3_event("another-bucket", "a16z/substack:1/audio/b.m4a"))
        assert not pattern.matches_event(_s3_event(bucket, "a16z/substack:1/audio/b.m4a", "Object Tagging"))

    for stage in ("dev", "prod"):
        config = lambda_.get_function_event_invoke_config(FunctionName=_names(stage)["cleanup_clips"])
        assert config["MaximumRetryAttempts"] == 2
        assert config["DestinationConfig"]["OnFailure"]["Destination"].endswith(
            f":audio-clips-{stage}-cleanup_clips-failed"
        )
        artifacts = json.loads((project / ".chalice" / "config.json").read_text())["stages"][stage][
            "environment_variables"
        ]["LAYER_ARTIFACTS_BUCKET"]
        stored = json.loads(s3.get_object(Bucket=artifacts, Key=f"chalice-state/{stage}.json")["Body"].read())
        assert {r["name"] for r in stored["resources"] if r["resource_type"] == "lambda_function"} == set(FUNCTIONS)
    assert len(_client("apigateway", aws_endpoint).get_rest_apis()["items"]) == 2


def test_a_second_deploy_from_a_fresh_clone_updates_the_same_api_and_functions(aws_endpoint, tmp_path, capsys):
    first = _fresh_clone(tmp_path / "first")
    _prepare_account(aws_endpoint, first, ("dev",))
    _, first_seconds = _run([INFRA / "stage.py", "deploy", "dev", "--project", first], first, aws_endpoint)
    apigateway, lambda_ = _client("apigateway", aws_endpoint), _client("lambda", aws_endpoint)
    (api,) = apigateway.get_rest_apis()["items"]
    functions = {f["FunctionName"]: f["FunctionArn"] for f in lambda_.list_functions()["Functions"]}

    # the second operator's clone: the committed files, with the config `make infra`/`make publish-layer` recorded
    second = _fresh_clone(tmp_path / "second")
    shutil.copy2(first / ".chalice" / "config.json", second / ".chalice" / "config.json")
    output, second_seconds = _run([INFRA / "stage.py", "deploy", "dev", "--project", second], second, aws_endpoint)
    with capsys.disabled():
        print(
            f"\n[measure] make deploy against moto: first clone {first_seconds:.1f} s, "
            f"second clone {second_seconds:.1f} s (an update)"
        )

    assert "deployed state: fetched" in output
    assert [a["id"] for a in apigateway.get_rest_apis()["items"]] == [api["id"]]
    assert {f["FunctionName"]: f["FunctionArn"] for f in lambda_.list_functions()["Functions"]} == functions
    rules = _client("events", aws_endpoint).list_rules()["Rules"]
    assert len(rules) == 2, "one event rule and one schedule, not two of each"
    assert len(_client("iam", aws_endpoint).list_roles()["Roles"]) == 3


def test_make_destroy_removes_what_infra_and_deploy_created_and_keeps_the_retained_buckets(
    aws_endpoint, tmp_path, capsys
):
    project = _fresh_clone(tmp_path / "clone")
    account = _prepare_account(aws_endpoint, project, ("dev",))
    _run([INFRA / "stage.py", "deploy", "dev", "--project", project], project, aws_endpoint)
    variables = json.loads((project / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
    output, seconds = _run([INFRA / "stage.py", "destroy", "dev", "--project", project], project, aws_endpoint)
    with capsys.disabled():
        print(f"\n[measure] make destroy against moto: {seconds:.1f} s")

    assert _client("lambda", aws_endpoint).list_functions()["Functions"] == []
    layers = _client("lambda", aws_endpoint).list_layer_versions(LayerName="audio-clips-ffmpeg-dev")
    assert layers["LayerVersions"] == []
    assert _client("apigateway", aws_endpoint).get_rest_apis()["items"] == []
    assert _client("events", aws_endpoint).list_rules()["Rules"] == []
    assert [r["RoleName"] for r in _client("iam", aws_endpoint).list_roles()["Roles"]] == []
    cloudformation = _client("cloudformation", aws_endpoint)
    with pytest.raises(cloudformation.exceptions.ClientError, match="does not exist"):
        cloudformation.describe_stacks(StackName="audio-clips-infra-dev")
    queues = _client("sqs", aws_endpoint).list_queues().get("QueueUrls", [])
    assert [q.rsplit("/", 1)[1] for q in queues] == ["ingestion-pipeline"], "the failed-events queue is gone"
    buckets = {b["Name"] for b in _client("s3", aws_endpoint).list_buckets()["Buckets"]}
    assert buckets == {account["source_bucket"], variables["CLIPS_BUCKET"]}, "the clips bucket is retained"
    assert f"retained (DeletionPolicy: Retain, delete by hand if meant): s3://{variables['CLIPS_BUCKET']}" in output


def test_a_stage_may_keep_the_direct_s3_notification_on_a_bucket_of_its_own(aws_endpoint, tmp_path):
    """SOURCE_EVENTS=s3 on a bucket nothing else is notified of; the renamed bucket reaches the generated policies."""
    project = _fresh_clone(tmp_path / "clone")
    _prepare_account(aws_endpoint, project, ("dev",))
    config = json.loads((project / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"].update(SOURCE_EVENTS="s3", SOURCE_BUCKET="solo-raw")
    (project / ".chalice" / "config.json").write_text(json.dumps(config, indent=2))
    _client("s3", aws_endpoint).create_bucket(Bucket="solo-raw")
    output, _ = _run([INFRA / "stage.py", "deploy", "dev", "--project", project], project, aws_endpoint)
    assert "wrote .chalice/policy-dev-api_handler.json" in output

    notification = _client("s3", aws_endpoint).get_bucket_notification_configuration(Bucket="solo-raw")
    (subscription,) = notification["LambdaFunctionConfigurations"]
    assert subscription["LambdaFunctionArn"] == _function_arn(_names("dev")["cleanup_clips"])
    assert sorted(subscription["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    assert [r for r in _client("events", aws_endpoint).list_rules()["Rules"] if r.get("EventPattern")] == []
    iam = _client("iam", aws_endpoint)
    (policy_name,) = iam.list_role_policies(RoleName="audio-clips-dev-api_handler")["PolicyNames"]
    policy = iam.get_role_policy(RoleName="audio-clips-dev-api_handler", PolicyName=policy_name)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert {
        "Sid": "ReadSourceAudio",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::solo-raw/*"],
    } in policy["Statement"]


# ---------------------------------------------------------------------------------------------------------------
# The stage's limits and gateway answers (contract section 6), and a deploy that fails part way
# ---------------------------------------------------------------------------------------------------------------


def _per_client_acl_as_the_template_makes_it(endpoint: str, stage: str, limit: int, window: int) -> str:
    """moto's CloudFormation skips AWS::WAFv2::WebACL: the web ACL `make infra` would create is created here from
    the template's own properties (parameters substituted), through WAFv2's API, whose model checks their shape."""
    from cfnlint.decode import decode

    template, problems = decode(str(INFRA / "template.yaml"))
    assert not problems
    values = {"PerClientRateLimit": limit, "PerClientRateWindowSeconds": window}

    def resolve(node):
        if isinstance(node, dict):
            if set(node) == {"Ref"}:
                return values[node["Ref"]]
            if set(node) == {"Fn::Sub"}:
                return node["Fn::Sub"].replace("${Stage}", stage)
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    properties = resolve(dict(template["Resources"]["PerClientRateLimitAcl"]["Properties"]))
    header = properties["Rules"][0]["Action"]["Block"]["CustomResponse"]["ResponseHeaders"][0]
    header["Value"] = str(header["Value"])  # CloudFormation passes a parameter as a string
    return _client("wafv2", endpoint).create_web_acl(**properties)["Summary"]["ARN"]


def _stage_settings(endpoint: str, api_id: str, stage: str) -> dict:
    apigateway = _client("apigateway", endpoint)
    settings = apigateway.get_stage(restApiId=api_id, stageName=stage)
    responses = {r["responseType"]: r for r in apigateway.get_gateway_responses(restApiId=api_id)["items"]}
    return {"stage": settings, "responses": responses}


def test_make_deploy_throttles_the_stage_answers_in_the_contracts_shape_and_keeps_it_on_redeploy(
    aws_endpoint, tmp_path
):
    sys.path.insert(0, str(INFRA))
    import stage as stage_module

    project = _fresh_clone(tmp_path / "clone")
    _prepare_account(aws_endpoint, project, ("dev",))
    acl = _per_client_acl_as_the_template_makes_it(aws_endpoint, "dev", limit=600, window=300)
    output, _ = _run([INFRA / "stage.py", "deploy", "dev", "--project", project], project, aws_endpoint)
    assert "throttled at 50 requests/s, burst 100" in output

    (api,) = _client("apigateway", aws_endpoint).get_rest_apis()["items"]
    applied = _stage_settings(aws_endpoint, api["id"], "dev")
    limits = applied["stage"]["methodSettings"]["*/*"]
    assert (limits["throttlingRateLimit"], limits["throttlingBurstLimit"]) == (50.0, 100), "the contract's defaults"
    expected = stage_module.gateway_responses({"CORS_ALLOW_ORIGINS": "*"})  # dev allows any origin
    assert set(applied["responses"]) == set(expected)
    for kind, answer in expected.items():
        got = applied["responses"][kind]
        assert got.get("statusCode") == answer.get("statusCode"), kind
        assert got["responseParameters"] == answer["responseParameters"], kind
        assert got["responseTemplates"] == answer["responseTemplates"], kind
    assert applied["responses"]["THROTTLED"]["statusCode"] == "429"
    assert applied["responses"]["THROTTLED"]["responseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"
    assert applied["stage"]["webAclArn"] == acl, "the per-client rate limit protects the stage"

    # new limits, deployed again from the same clone; moto (unlike API Gateway) forgets a stage's settings whenever
    # the stage is deployed again, so this also shows that the deploy applies them after Chalice's own deployment
    config = json.loads((project / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"].update(THROTTLE_RATE_PER_SECOND="20", THROTTLE_BURST="40")
    (project / ".chalice" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    output, _ = _run([INFRA / "stage.py", "deploy", "dev", "--project", project], project, aws_endpoint)
    again = _stage_settings(aws_endpoint, api["id"], "dev")
    limits = again["stage"]["methodSettings"]["*/*"]
    assert (limits["throttlingRateLimit"], limits["throttlingBurstLimit"]) == (20.0, 40)
    assert set(again["responses"]) == set(expected) and again["stage"]["webAclArn"] == acl
    assert [a["id"] for a in _client("apigateway", aws_endpoint).get_rest_apis()["items"]] == [api["id"]]


def test_a_deploy_that_fails_after_creating_the_rest_api_records_it_and_the_next_deploy_reuses_it(
    aws_endpoint, tmp_path, monkeypatch
):
    """The first deployment of the new REST API to its stage fails (as a throttled or refused CreateDeployment
    would): chalice stops after ImportRestApi. The next deploy must update that API, not create a second one."""
    from moto.apigateway.exceptions import BadRequestException
    from moto.apigateway.models import APIGatewayBackend

    original = APIGatewayBackend.create_deployment
    failures = [BadRequestException("injected by the test: CreateDeployment refused once")]

    def create_deployment_failing_once(self, *args, **kwargs):
        if failures:
            raise failures.pop()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(APIGatewayBackend, "create_deployment", create_deployment_failing_once)
    project = _fresh_clone(tmp_path / "clone")
    _prepare_account(aws_endpoint, project, ("dev",))
    deploy = [INFRA / "stage.py", "deploy", "dev", "--project", project]
    output, _ = _run(deploy, project, aws_endpoint, returncode=2)
    assert failures == [] and "injected by the test" in output
    (api,) = _client("apigateway", aws_endpoint).get_rest_apis()["items"]
    artifacts = json.loads((project / ".chalice" / "config.json").read_text())["stages"]["dev"][
        "environment_variables"
    ]["LAYER_ARTIFACTS_BUCKET"]
    s3 = _client("s3", aws_endpoint)
    stored = json.loads(s3.get_object(Bucket=artifacts, Key="chalice-state/dev.json")["Body"].read())
    rest = [r for r in stored["resources"] if r["resource_type"] == "rest_api"]
    assert [r["rest_api_id"] for r in rest] == [api["id"]], stored
    assert s3.list_objects_v2(Bucket=artifacts, Prefix="chalice-state/dev.lock").get("KeyCount") == 0

    second = _fresh_clone(tmp_path / "second")  # another clone: only the stored state links the two deploys
    shutil.copy2(project / ".chalice" / "config.json", second / ".chalice" / "config.json")
    output, _ = _run([INFRA / "stage.py", "deploy", "dev", "--project", second], second, aws_endpoint)
    assert "deployed state: fetched" in output
    assert [a["id"] for a in _client("apigateway", aws_endpoint).get_rest_apis()["items"]] == [api["id"]]
    assert "dev" in [
        s["stageName"] for s in _client("apigateway", aws_endpoint).get_stages(restApiId=api["id"])["item"]
    ]
