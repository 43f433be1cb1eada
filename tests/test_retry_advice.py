"""Whether to retry: faults that retrying cannot fix (access denied, a KMS key, an archived object, another region,
a bucket outside SOURCE_ALLOWED_BUCKETS) are a 500 without Retry-After whose message names the cause; transient
ones (throttling, timeouts, unreachable) stay a 503 with Retry-After."""

from __future__ import annotations

import json
import logging
import time

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.settings import Settings
from tests.conftest import EPISODE, SOURCE_BUCKET, clip_objects, episode_doc, source_key
from tests.s3_faults import source_reads_answer

PATH = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=2000"


def s3_answers(status: int, code: str, message: str, headers=None) -> list:
    """Every GetObject of the source bucket answers this S3 error, as real S3 would."""
    return source_reads_answer(status, code, message, headers)


def get():
    with Client(app, stage_name="local") as client:
        response = client.http.get(PATH)
    return response, json.loads(response.body)


PERMANENT = {
    "kms": (
        403,
        "AccessDenied",
        "User: arn:aws:sts::123456789012:assumed-role/audio-clips-prod/x is not authorized "
        "to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:123456789012:key/abc",
        "KMS key",
    ),
    "kms-disabled": (
        400,
        "KMS.DisabledException",
        "arn:aws:kms:us-east-1:123456789012:key/abc is disabled.",
        "KMS key",
    ),
    "denied": (403, "AccessDenied", "Access Denied", "Access denied"),
    "archived": (403, "InvalidObjectState", "The operation is not valid for the object's storage class", "archived"),
    "other-region": (
        301,
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified endpoint.",
        "another AWS region",
    ),
}


@pytest.mark.parametrize("case", PERMANENT)
def test_a_fault_retrying_cannot_fix_is_a_500_without_retry_after_naming_its_cause(s3, episode, case, caplog):
    caplog.set_level(logging.INFO)
    status, code, message, named = PERMANENT[case]
    episode("cbr")
    answered = s3_answers(status, code, message)
    started = time.monotonic()
    response, body = get()
    elapsed = time.monotonic() - started
    assert response.status_code == 500 and "Retry-After" not in response.headers
    assert named in body["Message"] and "arn:aws" not in body["Message"]
    redirects = 1 if case == "other-region" else 0  # botocore's region redirector asks once more
    assert len(answered) == 1 + redirects, "not retried: another attempt would fail the same way"
    [line] = [r for r in caplog.records if r.name == "audio_clips.request"]
    assert code in line.fields["detail"], "the log line names S3's own error code"
    assert clip_objects(s3) == [] and elapsed < 5, "no retries, no backoff"


def test_a_throttled_source_stays_a_503_with_retry_after(s3, episode):
    episode("cbr")
    s3_answers(503, "SlowDown", "Please reduce your request rate.")
    response, body = get()
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0


def test_source_allowed_buckets_defaults_to_the_source_bucket():
    assert Settings.from_env({}).source_allowed_buckets == ("pod-insights-raw",)
    assert Settings.from_env({"SOURCE_BUCKET": "raw-dev"}).source_allowed_buckets == ("raw-dev",)
    assert Settings.from_env({"SOURCE_ALLOWED_BUCKETS": " a, b ,"}).source_allowed_buckets == ("a", "b")


def test_a_source_in_a_bucket_not_allowed_is_refused_and_logged_before_any_s3_call(s3, catalog_file, caplog):
    caplog.set_level(logging.INFO)
    s3.create_bucket(Bucket="someone-elses-bucket")
    key = source_key(EPISODE)
    s3.put_object(Bucket="someone-elses-bucket", Key=key, Body=b"ID3")
    catalog_file([episode_doc(EPISODE, key, bucket="someone-elses-bucket")])
    calls = []
    wiring.current().s3.meta.events.register("before-send.s3", lambda request, **kw: calls.append(request.url))
    response, body = get()
    assert response.status_code == 500 and "Retry-After" not in response.headers
    assert body["Message"] == "The episode's source audio is in a bucket this service may not read"
    assert not [url for url in calls if "someone-elses-bucket" in url]
    refused = [r.getMessage() for r in caplog.records if r.name == "chalicelib.clips.service"]
    assert any("someone-elses-bucket" in line and "SOURCE_ALLOWED_BUCKETS" in line for line in refused)


def test_a_bucket_named_in_source_allowed_buckets_is_read(s3, audio, catalog_file, monkeypatch):
    monkeypatch.setenv("SOURCE_ALLOWED_BUCKETS", f"{SOURCE_BUCKET},archive-bucket")
    s3.create_bucket(Bucket="archive-bucket")
    key = source_key(EPISODE)
    s3.put_object(Bucket="archive-bucket", Key=key, Body=audio["cbr"].data)
    catalog_file([episode_doc(EPISODE, key, bucket="archive-bucket")])
    assert get()[0].status_code == 200


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_api_handler_may_decrypt_only_with_the_stages_named_source_key_and_only_through_s3(stage):
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, ".chalice", f"policy-{stage}-api_handler.json")) as handle:
        statements = json.load(handle)["Statement"]
    [kms] = [s for s in statements if any(a.startswith("kms:") for a in s["Action"])]
    assert kms["Action"] == ["kms:Decrypt"]
    assert kms["Condition"]["StringLike"] == {"kms:ViaService": "s3.*.amazonaws.com"}
    assert kms["Condition"]["ForAnyValue:StringEquals"] == {
        "kms:ResourceAliases": [f"alias/audio-clips-{stage}-source-audio"]
    }
