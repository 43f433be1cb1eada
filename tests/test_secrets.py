"""Secrets are fetched only by what needs them: with SSM down or throttled, a cached clip and the shallow health
check still answer 200, and only a miss (which needs the catalog) answers 503 with Retry-After."""

from __future__ import annotations

import json
import time

import pytest
from botocore.awsrequest import AWSResponse
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.errors import ConfigurationError, SecretUnavailable
from chalicelib.stores import secrets
from tests.conftest import EPISODE, free_port

CLIP = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=2000"
MISS = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=3000&duration_ms=2000"
PARAMETER = "/audio-clips/test/mongodb-uri"


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **kwargs):
        yield self._body


def get(path):
    with Client(app, stage_name="local") as client:
        response = client.http.get(path)
    return response, json.loads(response.body)


@pytest.fixture
def cached_clip(s3, episode):
    """One clip in the cache, cut while the catalog needed no secret; then the catalog's URI moves to SSM."""
    episode("cbr")
    assert get(CLIP)[0].status_code == 200

    def secret_in_ssm(monkeypatch):
        monkeypatch.setenv("MONGODB_URI_SSM_PARAMETER", PARAMETER)
        wiring.reset()

    return secret_in_ssm


@pytest.fixture
def ssm_unreachable(monkeypatch):
    """SSM's endpoint is a closed port on this machine (S3 stays on moto)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", f"http://127.0.0.1:{free_port()}")


@pytest.fixture
def ssm_throttled():
    """Every GetParameter answers 400 ThrottlingException, as SSM does past its request rate."""
    answered = []

    def throttle(request, **kwargs):
        answered.append(request.url)
        body = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))

    def install():
        secrets._install_bounded_provider()
        from aws_lambda_powertools.utilities.parameters import base

        base.DEFAULT_PROVIDERS["ssm"].client.meta.events.register_first("before-send.ssm.GetParameter", throttle)
        return answered

    return install


@pytest.mark.parametrize("fault", ["ssm_unreachable", "ssm_throttled"])
def test_a_cache_hit_answers_200_with_ssm_down(cached_clip, monkeypatch, request, fault):
    cached_clip(monkeypatch)
    install = request.getfixturevalue(fault)
    if callable(install):
        install()
    response, body = get(CLIP)
    assert response.status_code == 200 and body["cache_hit"] is True


@pytest.mark.parametrize("fault", ["ssm_unreachable", "ssm_throttled"])
def test_the_shallow_health_check_answers_200_with_ssm_down(monkeypatch, request, fault):
    monkeypatch.setenv("MONGODB_URI_SSM_PARAMETER", PARAMETER)
    wiring.reset()
    install = request.getfixturevalue(fault)
    if callable(install):
        install()
    response, body = get("/api/v1/health")
    assert response.status_code == 200 and body["status"] == "ok"


@pytest.mark.parametrize("fault", ["ssm_unreachable", "ssm_throttled"])
def test_a_miss_answers_503_with_retry_after_naming_the_catalogs_configuration(
    cached_clip, monkeypatch, request, fault
):
    cached_clip(monkeypatch)
    install = request.getfixturevalue(fault)
    answered = install() if callable(install) else None
    started = time.monotonic()
    response, body = get(MISS)
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert body["Code"] == "ServiceUnavailableError" and "catalog's configuration" in body["Message"]
    assert PARAMETER not in body["Message"]
    assert elapsed < 8, f"bounded: {secrets.SSM_ATTEMPTS} attempts of at most 3 s"
    if answered is not None:
        assert len(answered) == secrets.SSM_ATTEMPTS


def test_the_next_miss_fetches_again_once_ssm_is_back(cached_clip, monkeypatch, ssm_throttled):
    import boto3
    from moto import mock_aws

    cached_clip(monkeypatch)
    answered = ssm_throttled()
    assert get(MISS)[0].status_code == 503
    secrets.reset()  # what the throttle hook sat on; the catalog was not cached, so it is fetched again
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name=PARAMETER, Value="mongodb://127.0.0.1:9/", Type="SecureString"
        )
        assert secrets.fetch_secret(PARAMETER, "The episode catalog's configuration") == "mongodb://127.0.0.1:9/"
    assert len(answered) == secrets.SSM_ATTEMPTS


def test_a_parameter_that_does_not_exist_is_a_configuration_error_naming_it():
    from moto import mock_aws

    with mock_aws():
        secrets.reset()
        with pytest.raises(ConfigurationError, match="/nope") as failure:
            secrets.fetch_secret("/nope", "The episode catalog's configuration")
    assert not isinstance(failure.value, SecretUnavailable) and failure.value.status == 500


def test_a_fetched_secret_is_cached_for_the_process(monkeypatch):
    import boto3
    from moto import mock_aws

    with mock_aws():
        secrets.reset()
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(Name=PARAMETER, Value="first", Type="SecureString")
        assert secrets.fetch_secret(PARAMETER, "x") == "first"
        ssm.put_parameter(Name=PARAMETER, Value="second", Type="SecureString", Overwrite=True)
        assert secrets.fetch_secret(PARAMETER, "x") == "first"


HIT_IN_A_FRESH_PROCESS = """
import json, sys
import boto3
from moto import mock_aws

with mock_aws():
    s3 = boto3.client("s3", region_name="us-east-1")
    for bucket in ("pod-insights-raw", "pod-insights-clips"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="pod-insights-raw", Key="show/ep/audio/x.mp3", Body=b"audio")
    etag = s3.head_object(Bucket="pod-insights-raw", Key="show/ep/audio/x.mp3")["ETag"]
    s3.put_object(Bucket="pod-insights-clips", Key="audio_clips/ep/0-2000.mp3", Body=b"clip", Metadata={
        "source-bucket": "pod-insights-raw", "source-key": "show/ep/audio/x.mp3", "source-etag": etag,
        "duration-ms": "2000"})
    from chalice.test import Client

    from app import app

    with Client(app) as client:
        response = client.http.get("/api/v1/audio_clips/ep?start_time_ms=0&duration_ms=2000")
    print(json.dumps({"status": response.status_code, "hit": json.loads(response.body).get("cache_hit"),
                      "loaded": [m for m in ("aws_lambda_powertools.utilities.parameters", "pymongo") if m in sys.modules]}))
"""


def test_a_cold_cache_hit_loads_neither_powertools_parameters_nor_pymongo():
    """(Powertools' logger is loaded by every request; its SSM utility only by what needs a secret.)"""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MONGODB_", "LOCAL_CATALOG"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        MONGODB_URI_SSM_PARAMETER=PARAMETER,
    )
    result = subprocess.run(
        [sys.executable, "-c", HIT_IN_A_FRESH_PROCESS], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"status": 200, "hit": True, "loaded": []}
