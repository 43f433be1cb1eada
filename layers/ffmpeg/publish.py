"""Publish the built FFmpeg layer for a stage and record its ARN in .chalice/config.json.

    .venv/bin/python layers/ffmpeg/publish.py STAGE [--bucket ARTIFACTS_BUCKET] [--config .chalice/config.json]

Uploads dist/ffmpeg-layer.zip (over Lambda's 50 MB direct-upload limit) to
s3://BUCKET/layers/ffmpeg/<zip sha256>.zip, publishes it as a version of the layer audio-clips-ffmpeg-STAGE
(x86_64; python3.12 and python3.13), then sets stages.STAGE.lambda_functions.{api_handler,cleanup_clips}.layers to [that ARN].
The bucket is --bucket, else the stage's LAYER_ARTIFACTS_BUCKET environment variable in the config.
boto3 takes credentials, region and AWS_ENDPOINT_URL from the environment as usual.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "infra"))
from stage import StageError, architecture, layer_name, region  # noqa: E402  (infra/stage.py: shared by every deploy command)

ZIP_NAME = "ffmpeg-layer.zip"  # the x86_64 zip; each architecture's is named in wheels.lock
LOCK = HERE / "wheels.lock"


def zip_name(arch: str) -> str:
    """The zip build.py writes for an architecture (the stage's lambda_architecture)."""
    return json.loads(LOCK.read_text())["wheels"][arch]["zip"]


RUNTIMES = ["python3.12", "python3.13"]  # the wheel needs glibc 2.28 (Amazon Linux 2023), so not python3.11


class PublishError(Exception):
    pass


def artifacts_bucket(config: dict, stage: str, flag: str | None) -> str:
    """--bucket if given, else LAYER_ARTIFACTS_BUCKET from the stage's (or the top-level) environment_variables."""
    if flag:
        return flag
    stage_env = config["stages"][stage].get("environment_variables", {})
    bucket = stage_env.get("LAYER_ARTIFACTS_BUCKET") or config.get("environment_variables", {}).get(
        "LAYER_ARTIFACTS_BUCKET"
    )
    if not bucket:
        raise PublishError(
            f"no artifacts bucket: pass --bucket, or set LAYER_ARTIFACTS_BUCKET in stage {stage!r}'s "
            f"environment_variables (make infra records it)"
        )
    return bucket


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(zip_path: Path) -> dict:
    """What build.py wrote beside the zip; refuses a zip that is missing or does not match it."""
    manifest_path = zip_path.with_suffix(".json")
    if not zip_path.exists() or not manifest_path.exists():
        raise PublishError(f"{zip_path} or {manifest_path.name} is missing: run `make layer` first")
    manifest = json.loads(manifest_path.read_text())
    if sha256_of(zip_path) != manifest["zip_sha256"]:
        raise PublishError(f"{zip_path} does not match {manifest_path.name}: run `make layer` again")
    if not manifest.get("license"):
        raise PublishError(f"{manifest_path.name} has no license: the build could not check FFmpeg's configuration")
    return manifest


def upload(s3, zip_path: Path, bucket: str, key: str) -> None:
    """Uploads unless the same object is already there (the key is the zip's sha256)."""
    try:
        if s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == zip_path.stat().st_size:
            print(f"already uploaded: s3://{bucket}/{key}")
            return
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    size = zip_path.stat().st_size
    print(f"uploading {zip_path} ({size / 1e6:.0f} MB) to s3://{bucket}/{key}", flush=True)
    s3.upload_file(str(zip_path), bucket, key, Callback=UploadProgress(size))


class UploadProgress:
    """A line at each further tenth of the upload (boto3 calls it from its transfer threads)."""

    def __init__(self, size: int):
        self._size, self._sent, self._tenths = max(size, 1), 0, 0

    def __call__(self, sent: int) -> None:
        self._sent += sent
        tenths = self._sent * 10 // self._size
        if tenths > self._tenths:
            self._tenths = tenths
            print(f"  uploaded {min(tenths * 10, 100)} % ({self._sent / 1e6:.0f} MB)", flush=True)


def publish(lambda_client, stage: str, bucket: str, key: str, manifest: dict) -> str:
    """A version of the stage's layer for the zip's architecture (arm64 layers carry it in their name, so that
    make deploy can check, offline, that api_handler and its layer match)."""
    description = (f"FFmpeg {manifest['ffmpeg_version']} from {manifest['wheel']} sha256 {manifest['wheel_sha256']}")[
        :256
    ]
    response = lambda_client.publish_layer_version(
        LayerName=layer_name(stage, manifest["arch"]),
        Content={"S3Bucket": bucket, "S3Key": key},
        CompatibleRuntimes=RUNTIMES,
        CompatibleArchitectures=[manifest["arch"]],
        Description=description,
        LicenseInfo=manifest["license"],
    )
    return response["LayerVersionArn"]


FFMPEG_FUNCTIONS = ("api_handler", "cleanup_clips")  # cuts and pictures; levels measured at upload (snap=pause)


def record_layer(config_path: Path, stage: str, arn: str) -> None:
    """Sets stages.STAGE.lambda_functions.F.layers = [arn] for each F of FFMPEG_FUNCTIONS, keeping the rest of the
    file as it was."""
    config = json.loads(config_path.read_text())
    functions = config["stages"][stage].setdefault("lambda_functions", {})
    for name in FFMPEG_FUNCTIONS:
        functions.setdefault(name, {})["layers"] = [arn]
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage")
    parser.add_argument("--bucket", help="artifacts bucket (default: the stage's LAYER_ARTIFACTS_BUCKET)")
    parser.add_argument("--config", type=Path, default=REPO / ".chalice" / "config.json")
    parser.add_argument("--dist-dir", type=Path, default=HERE / "dist", help="where build.py wrote the zip")
    parser.add_argument("--region", help="default: AWS_REGION, else AWS_DEFAULT_REGION")
    args = parser.parse_args(argv)
    try:
        try:
            region_name = region(os.environ, args.region)
        except StageError as error:
            raise PublishError(str(error)) from error
        config = json.loads(args.config.read_text())
        if args.stage not in config.get("stages", {}):
            raise PublishError(
                f"stage {args.stage!r} is not in {args.config} (has: {', '.join(config.get('stages', {}))})"
            )
        bucket = artifacts_bucket(config, args.stage, args.bucket)
        zip_path = args.dist_dir / zip_name(architecture(config, args.stage))
        manifest = load_manifest(zip_path)
        key = f"layers/ffmpeg/{manifest['zip_sha256']}.zip"
        try:
            upload(boto3.client("s3", region_name=region_name), zip_path, bucket, key)
            arn = publish(boto3.client("lambda", region_name=region_name), args.stage, bucket, key, manifest)
        except (BotoCoreError, ClientError, S3UploadFailedError) as error:
            raise PublishError(f"AWS call failed: {error}") from error
        record_layer(args.config, args.stage, arn)
    except PublishError as error:
        print(f"publish.py: error: {error}", file=sys.stderr)
        return 1
    print(
        f"published {arn}\nrecorded in {args.config} under stages.{args.stage}.lambda_functions.{{api_handler,cleanup_clips}}.layers: "
        f"commit it, so that every clone and CI deploy this stage with its FFmpeg layer"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
