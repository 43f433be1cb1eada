"""The clips' way out in infra/template.yaml: CloudFront with origin access control and signed URLs, a bucket that
answers only the distribution, a cache that ignores the signature, CORS from a parameter; and `make infra`
recording the distribution into the stage's environment. moto's CloudFormation creates no CloudFront resource
(it skips them with a warning and drops the outputs that name them), so those are checked in the template."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "infra", "deploy.py")


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode

    document, problems = decode(os.path.join(ROOT, "infra", "template.yaml"))
    assert not problems
    return document


def properties(template: dict, name: str) -> dict:
    return template["Resources"][name]["Properties"]


def test_every_cloudfront_resource_exists_only_with_a_signing_key(template):
    cloudfront = {name: r for name, r in template["Resources"].items() if r["Type"].startswith("AWS::CloudFront::")}
    assert {r["Type"] for r in cloudfront.values()} == {
        "AWS::CloudFront::PublicKey",
        "AWS::CloudFront::KeyGroup",
        "AWS::CloudFront::OriginAccessControl",
        "AWS::CloudFront::CachePolicy",
        "AWS::CloudFront::ResponseHeadersPolicy",
        "AWS::CloudFront::Distribution",
    }
    assert all(r.get("Condition") for r in cloudfront.values()), "a stage without a key gets no distribution"


def test_the_distribution_reads_the_private_bucket_through_origin_access_control(template):
    config = properties(template, "ClipsDistribution")["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["ClipsBucket", "RegionalDomainName"]}
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["ClipsOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}, "no legacy origin access identity"
    oac = properties(template, "ClipsOriginAccessControl")["OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"], oac["SigningProtocol"]) == (
        "s3",
        "always",
        "sigv4",
    )
    behavior = config["DefaultCacheBehavior"]
    assert behavior["TargetOriginId"] == origin["Id"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert behavior["TrustedKeyGroups"] == [{"Ref": "ClipsKeyGroup"}], "only signed URLs are served"
    assert set(behavior["AllowedMethods"]) == {"GET", "HEAD", "OPTIONS"}


def test_the_key_group_holds_both_key_slots_for_rotation(template):
    items = properties(template, "ClipsKeyGroup")["KeyGroupConfig"]["Items"]
    assert items == [
        {"Fn::If": ["HasKeyA", {"Ref": "ClipsPublicKeyA"}, {"Ref": "AWS::NoValue"}]},
        {"Fn::If": ["HasKeyB", {"Ref": "ClipsPublicKeyB"}, {"Ref": "AWS::NoValue"}]},
    ]
    for slot in "AB":
        key = properties(template, f"ClipsPublicKey{slot}")["PublicKeyConfig"]
        assert key["EncodedKey"] == {"Ref": f"CloudFrontPublicKey{slot}"}, "the public key is a template parameter"


def test_the_bucket_policy_allows_only_the_distribution_and_denies_plain_http(template):
    statements = properties(template, "ClipsBucketTlsOnly")["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s.get("Effect") == "Deny"]
    assert [s["Condition"] for s in deny] == [{"Bool": {"aws:SecureTransport": "false"}}]
    assert deny[0]["Action"] == "s3:*" and deny[0]["Principal"] == "*"
    allows = [s["Fn::If"] for s in statements if "Fn::If" in s]
    assert len(allows) == 1 and len(statements) == 2, "no other grant on the clips bucket"
    condition, allow, otherwise = allows[0]
    assert condition == "WithCloudFront" and otherwise == {"Ref": "AWS::NoValue"}
    assert (allow["Effect"], allow["Principal"], allow["Action"]) == (
        "Allow",
        {"Service": "cloudfront.amazonaws.com"},
        "s3:GetObject",
    )
    source = allow["Condition"]["StringEquals"]["AWS:SourceArn"]["Fn::Sub"]
    assert source.endswith(":distribution/${ClipsDistribution}"), "only this distribution, not any in the account"


def test_the_cache_key_ignores_the_signatures_query_parameters_and_clips_stay_cached(template):
    from chalicelib.stores.signing import VERSION_PARAMETER

    config = properties(template, "ClipsCachePolicy")["CachePolicyConfig"]
    key = config["ParametersInCacheKeyAndForwardedToOrigin"]
    assert key["QueryStringsConfig"] == {"QueryStringBehavior": "whitelist", "QueryStrings": [VERSION_PARAMETER]}
    assert not {"Expires", "Signature", "Key-Pair-Id"} & set(key["QueryStringsConfig"]["QueryStrings"])
    assert key["HeadersConfig"] == {"HeaderBehavior": "none"} and key["CookiesConfig"] == {"CookieBehavior": "none"}
    assert config["MinTTL"] >= 365 * 86_400, (
        "a clip URL is immutable; a MinTTL > 0 caches despite Cache-Control: private"
    )
    behavior = properties(template, "ClipsDistribution")["DistributionConfig"]["DefaultCacheBehavior"]
    assert behavior["CachePolicyId"] == {"Ref": "ClipsCachePolicy"}


def test_cors_origins_come_from_a_parameter_for_cloudfront_and_for_the_bucket(template):
    assert template["Parameters"]["CorsAllowOrigins"]["Type"] == "CommaDelimitedList"
    cors = properties(template, "ClipsResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]["CorsConfig"]
    assert cors["AccessControlAllowOrigins"] == {"Items": {"Ref": "CorsAllowOrigins"}}
    assert "Range" in cors["AccessControlAllowHeaders"]["Items"]
    assert {"Content-Range", "Accept-Ranges"} <= set(cors["AccessControlExposeHeaders"]["Items"])
    behavior = properties(template, "ClipsDistribution")["DistributionConfig"]["DefaultCacheBehavior"]
    assert behavior["ResponseHeadersPolicyId"]["Fn::If"][1] == {"Ref": "ClipsResponseHeadersPolicy"}
    (rule,) = properties(template, "ClipsBucket")["CorsConfiguration"]["Fn::If"][1]["CorsRules"]
    assert rule["AllowedOrigins"] == {"Ref": "CorsAllowOrigins"} and "Range" in rule["AllowedHeaders"]


def test_price_class_and_an_optional_custom_domain_are_parameters(template):
    config = properties(template, "ClipsDistribution")["DistributionConfig"]
    assert config["PriceClass"] == {"Ref": "CloudFrontPriceClass"}
    assert config["Aliases"] == {"Fn::If": ["HasClipsDomain", [{"Ref": "ClipsDomainName"}], {"Ref": "AWS::NoValue"}]}
    certificate = config["ViewerCertificate"]["Fn::If"]
    assert certificate[0] == "HasClipsDomain" and certificate[1]["AcmCertificateArn"] == {"Ref": "ClipsCertificateArn"}
    assert template["Parameters"]["ClipsDomainName"]["Default"] == ""


def test_the_outputs_are_recorded_under_the_contracts_names(template):
    sys.path.insert(0, os.path.join(ROOT, "infra"))
    try:
        import deploy
    finally:
        sys.path.remove(os.path.join(ROOT, "infra"))
    recorded = {
        deploy.RECORDED[name]: name
        for name in ("CloudFrontDomain", "CloudFrontKeyPairId", "CloudFrontPrivateKeySsmParameter")
    }
    assert set(recorded) == {"CLOUDFRONT_DOMAIN", "CLOUDFRONT_KEY_PAIR_ID", "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER"}
    assert all(name in template["Outputs"] for name in recorded.values())


def run_make_infra(stage: str, config, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, DEPLOY, stage, "--config", str(config), *extra],
        check=False,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_infra_against_moto_passes_the_key_and_cors_origins(moto_server, tmp_path):
    import boto3

    public_key = tmp_path / "clips-a.pub.pem"
    public_key.write_text(
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n"
    )
    settings = tmp_path / "cloudfront-dev.json"
    settings.write_text(
        json.dumps({"public_key_a": str(public_key), "active_key": "a", "price_class": "PriceClass_200"})
    )
    config = tmp_path / "config.json"
    shutil.copy(os.path.join(ROOT, ".chalice", "config.json"), config)
    result = run_make_infra("dev", config, "--cloudfront", str(settings))
    assert result.returncode == 0, result.stderr
    stack = boto3.client("cloudformation", region_name="us-east-1").describe_stacks(StackName="audio-clips-infra-dev")[
        "Stacks"
    ][0]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["CloudFrontPublicKeyA"] == public_key.read_text()
    assert (parameters["CloudFrontActiveKey"], parameters["CloudFrontPriceClass"]) == ("a", "PriceClass_200")
    assert parameters["CorsAllowOrigins"] in ("*", "['*']"), "the dev stage's CORS_ALLOW_ORIGINS (moto shows a list)"


def test_make_infra_records_the_distribution_and_forgets_it_once_removed(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "infra"))
    try:
        import deploy
    finally:
        sys.path.remove(os.path.join(ROOT, "infra"))
    config = tmp_path / "config.json"
    shutil.copy(os.path.join(ROOT, ".chalice", "config.json"), config)
    base = {
        "ClipsBucketName": "pod-insights-clips",
        "AlertTopicArn": "arn:aws:sns:us-east-1:1:a",
        "LayerArtifactsBucketName": "artifacts",
    }
    distribution = {
        "CloudFrontDomain": "d111111abcdef8.cloudfront.net",
        "CloudFrontKeyPairId": "K2JCJMDEHXQW5F",
        "CloudFrontPrivateKeySsmParameter": "/audio-clips/prod/cloudfront-private-key-a",
    }
    monkeypatch.setattr(deploy.boto3, "client", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["deploy.py", "prod", "--config", str(config)])

    monkeypatch.setattr(deploy, "deploy", lambda *args: {**base, **distribution})
    assert deploy.main() == 0
    variables = json.loads(config.read_text())["stages"]["prod"]["environment_variables"]
    assert variables["CLOUDFRONT_DOMAIN"] == "d111111abcdef8.cloudfront.net"
    assert variables["CLOUDFRONT_KEY_PAIR_ID"] == "K2JCJMDEHXQW5F"
    assert variables["CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER"] == "/audio-clips/prod/cloudfront-private-key-a"

    monkeypatch.setattr(deploy, "deploy", lambda *args: base)
    assert deploy.main() == 0
    variables = json.loads(config.read_text())["stages"]["prod"]["environment_variables"]
    assert not any(name.startswith("CLOUDFRONT_") for name in variables), "back to S3 pre-signed URLs"
    assert variables["CLIPS_BUCKET"] == "pod-insights-clips"
