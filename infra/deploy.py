"""`make infra STAGE=dev|prod`: deploy infra/template.yaml (what Chalice does not own) as the stack
``audio-clips-infra-<stage>`` and record its outputs into the stage's environment variables in
.chalice/config.json, the way chalice-workshop's recordresources.py does. boto3 honours AWS_ENDPOINT_URL."""

from __future__ import annotations

import argparse
import json
import os
import sys

import boto3
from stage import (  # infra/stage.py, beside this script
    StageError,
    detach_web_acl,
    per_client_limit,
    region,
    wait_for_stack,
    web_acl_name,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "infra", "template.yaml")
CONFIG = os.path.join(ROOT, ".chalice", "config.json")
RECORDED = {  # stack output -> environment variable of the stage
    "ClipsBucketName": "CLIPS_BUCKET",
    "AlertTopicArn": "ALERT_TOPIC_ARN",
    "LayerArtifactsBucketName": "LAYER_ARTIFACTS_BUCKET",
    "CloudFrontDomain": "CLOUDFRONT_DOMAIN",
    "CloudFrontKeyPairId": "CLOUDFRONT_KEY_PAIR_ID",
    "CloudFrontPrivateKeySsmParameter": "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER",
}
CLOUDFRONT_SETTINGS = {  # key of infra/cloudfront-<stage>.json -> template parameter
    "public_key_a": "CloudFrontPublicKeyA",
    "public_key_b": "CloudFrontPublicKeyB",  # paths of PEM files
    "active_key": "CloudFrontActiveKey",
    "price_class": "CloudFrontPriceClass",
    "domain_name": "ClipsDomainName",
    "certificate_arn": "ClipsCertificateArn",
}


def stack_name(stage: str) -> str:
    return f"audio-clips-infra-{stage}"


def deploy(
    cloudformation, stage: str, clips_bucket: str, retention_days: int, extra: dict | None = None, wafv2=None
) -> dict:
    """Create or update the stack, wait for it, and return its outputs. ``extra``: more template parameters.
    ``wafv2``: a client to detach the per-client web ACL from the API stage when this update removes it (AWS
    refuses to delete a web ACL that is still attached)."""
    name = stack_name(stage)
    parameters = [
        {"ParameterKey": "Stage", "ParameterValue": stage},
        {"ParameterKey": "ClipsBucketName", "ParameterValue": clips_bucket},
        {"ParameterKey": "ClipRetentionDays", "ParameterValue": str(retention_days)},
    ] + [{"ParameterKey": key, "ParameterValue": str(value)} for key, value in (extra or {}).items()]
    with open(TEMPLATE) as handle:
        body = handle.read()
    try:
        current = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        exists = True
    except cloudformation.exceptions.ClientError:
        current, exists = {}, False
    had_acl = any(o["OutputKey"] == "PerClientWebAclArn" for o in current.get("Outputs", []))
    if had_acl and wafv2 is not None and str((extra or {}).get("PerClientRateLimit", 0)) == "0":
        for resource in detach_web_acl(wafv2, web_acl_name(stage)):
            print(f"{stage}: per-client rate limit detached from {resource} (PER_CLIENT_RATE_LIMIT is 0)", flush=True)
    print(f"{'updating' if exists else 'creating'} stack {name}", flush=True)
    if exists:
        try:
            cloudformation.update_stack(StackName=name, TemplateBody=body, Parameters=parameters)
        except cloudformation.exceptions.ClientError as error:
            if "No updates are to be performed" not in str(error):
                raise
            print(f"  {name}: no changes", flush=True)
    else:
        cloudformation.create_stack(StackName=name, TemplateBody=body, Parameters=parameters)
    status = wait_for_stack(cloudformation, name)
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise StageError(f"stack {name} ended {status}: see its events above")
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def clip_delivery_parameters(path: str, cors_allow_origins: str) -> dict:
    """CORS origins for the clips, and the CloudFront distribution as infra/cloudfront-<stage>.json describes it
    (no file: no distribution, clips are pre-signed by S3). Key files are read relative to the repository."""
    parameters = {"CorsAllowOrigins": cors_allow_origins}
    if os.path.exists(path):
        with open(path) as handle:
            settings = json.load(handle)
        unknown = set(settings) - set(CLOUDFRONT_SETTINGS)
        if unknown:
            raise SystemExit(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(CLOUDFRONT_SETTINGS)}")
        for key, value in settings.items():
            if key.startswith("public_key_") and value:
                with open(os.path.join(ROOT, value)) as pem:
                    value = pem.read()
            parameters[CLOUDFRONT_SETTINGS[key]] = value
    return parameters


def record_environment(config_path: str, stage: str, values: dict) -> None:
    """Set environment variables of one stage in a Chalice config file, leaving the rest as it was."""
    update_config(
        config_path,
        lambda config: config["stages"].setdefault(stage, {}).setdefault("environment_variables", {}).update(values),
    )


def forget(environment: dict, names: list) -> None:
    for name in names:
        environment.pop(name, None)


def update_config(config_path: str, change) -> None:
    with open(config_path) as handle:
        config = json.load(handle)
    change(config)
    with open(config_path, "w") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=["dev", "prod"])
    parser.add_argument("--retention-days", type=int, default=90)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--cloudfront", help="default: infra/cloudfront-<stage>.json, when it exists")
    parser.add_argument("--region", help="default: AWS_REGION, else AWS_DEFAULT_REGION")
    parser.add_argument("--log-retention-days", type=int, default=30, help="each function's log group")
    parser.add_argument("--dashboard", action="store_true", help="a CloudWatch dashboard of the stage")
    args = parser.parse_args()
    with open(args.config) as handle:
        environment = json.load(handle)["stages"][args.stage].get("environment_variables", {})
    clips_bucket = environment.get("CLIPS_BUCKET")
    if not clips_bucket:
        print(f"CLIPS_BUCKET is not set for stage {args.stage} in {args.config}", file=sys.stderr)
        return 2
    delivery = clip_delivery_parameters(
        args.cloudfront or os.path.join(ROOT, "infra", f"cloudfront-{args.stage}.json"),
        environment.get("CORS_ALLOW_ORIGINS", ""),
    )
    try:
        region_name = region(os.environ, args.region)
        limit, window = per_client_limit(environment)
        outputs = deploy(
            boto3.client("cloudformation", region_name=region_name),
            args.stage,
            clips_bucket,
            args.retention_days,
            {
                **delivery,
                "LogRetentionDays": args.log_retention_days,
                "WithDashboard": str(args.dashboard).lower(),
                "PerClientRateLimit": limit,
                "PerClientRateWindowSeconds": window,
            },
            boto3.client("wafv2", region_name=region_name),
        )
    except StageError as error:
        print(f"infra {args.stage}: {error}", file=sys.stderr)
        return 2
    values = {variable: outputs[output] for output, variable in RECORDED.items() if output in outputs}
    record_environment(args.config, args.stage, values)
    gone = [v for v in RECORDED.values() if v.startswith("CLOUDFRONT_") and v not in values and v in environment]
    if gone:  # the distribution was removed: the stage goes back to S3 pre-signed URLs
        update_config(args.config, lambda config: forget(config["stages"][args.stage]["environment_variables"], gone))
    for variable, value in values.items():
        print(f"{args.stage}: {variable}={value}")
    print(f"recorded in {args.config}: commit it, so that every clone and CI deploy this stage the same way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
