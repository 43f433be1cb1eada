"""What signing one clip URL costs: `.venv/bin/python -m bench.signing`.

CPU time per URL (best of 5 runs of 2,000), so that other load on the machine does not count: a CloudFront
signed URL (canned policy, RSA-2048 with SHA-1, the RSA signature alone shown too) and an S3 pre-signed URL
(SigV4 with a session token). Nothing leaves the process.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

import boto3
from botocore.config import Config
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib.stores.signing import CloudFrontUrlSigner, S3UrlSigner

KEY = "audio_clips/0e983347-7815-4b62-87a6-84d988a772b7/60000-90000.mp3"
RUNS, CALLS = 5, 2_000


def cpu_us(call: Callable[[], object]) -> float:
    call()
    return min(timeit.repeat(call, number=CALLS, repeat=RUNS, timer=time.process_time)) / CALLS * 1e6


def main() -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cloudfront = CloudFrontUrlSigner("d111111abcdef8.cloudfront.net", "K2JCJMDEHXQW5F", private_key, 86_400)
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="ASIAEXAMPLE",
        aws_secret_access_key="secret",
        aws_session_token="token",
        config=Config(signature_version="s3v4"),
    )
    s3 = S3UrlSigner(client, "pod-insights-clips", 86_400)
    policy = cloudfront.sign(KEY).url.encode()  # a message of a canned policy's size
    for name, call in (
        ("CloudFront signed URL", lambda: cloudfront.sign(KEY)),
        (
            "  of which RSA-2048 SHA-1 signature",
            lambda: private_key.sign(policy[:200], padding.PKCS1v15(), hashes.SHA1()),
        ),
        ("S3 pre-signed URL (SigV4)", lambda: s3.sign(KEY)),
    ):
        print(f"{name:38} {cpu_us(call):7.0f} µs CPU per URL")


if __name__ == "__main__":
    main()
