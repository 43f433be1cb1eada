"""A web app on another origin can read clips: the clips bucket's CORS rule (infra/template.yaml, S3 mode) answers
a browser's preflight for an allowed origin, refuses others, and ranged reads keep their CORS headers.

moto's server normally adds CORS headers to every answer (flask-cors), which would pass any origin; these tests
run it with MOTO_DISABLE_GLOBAL_CORS so that only the bucket's own rule answers, as S3 does."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import requests
from botocore.config import Config

from chalicelib.stores.signing import S3UrlSigner
from tests.conftest import CLIPS_BUCKET, free_port, wait_for_port

pytestmark = pytest.mark.slow

WEB_APP = "https://app.example.com"
CLIP_KEY = "audio_clips/0e983347-7815-4b62-87a6-84d988a772b7/0-1000.mp3"
CLIP = bytes(range(256)) * 40


def template_cors_rules(origins: list[str]) -> list[dict]:
    """The clips bucket's CorsRules from infra/template.yaml, as the S3 API takes them, for these origins."""
    from cfnlint.decode import decode

    document, _ = decode(os.path.join(os.path.dirname(os.path.dirname(__file__)), "infra", "template.yaml"))
    condition, configuration, _ = document["Resources"]["ClipsBucket"]["Properties"]["CorsConfiguration"]["Fn::If"]
    assert condition == "HasCorsOrigins"
    rules = []
    for rule in configuration["CorsRules"]:
        assert rule["AllowedOrigins"] == {"Ref": "CorsAllowOrigins"}
        rules.append(
            {
                "ID": rule["Id"],
                "AllowedMethods": rule["AllowedMethods"],
                "AllowedOrigins": origins,
                "AllowedHeaders": rule["AllowedHeaders"],
                "ExposeHeaders": rule["ExposedHeaders"],
                "MaxAgeSeconds": rule["MaxAge"],
            }
        )
    return rules


@pytest.fixture
def strict_s3() -> Iterator:
    """moto's S3 server in its own process, without its blanket CORS headers; the clips bucket holds one clip."""
    port = free_port()
    env = {**os.environ, "MOTO_DISABLE_GLOBAL_CORS": "true"}
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 20)
        client = boto3.client(
            "s3",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            config=Config(signature_version="s3v4"),
        )
        client.create_bucket(Bucket=CLIPS_BUCKET)
        client.put_object(Bucket=CLIPS_BUCKET, Key=CLIP_KEY, Body=CLIP, ContentType="audio/mpeg")
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


def clip_url(s3) -> str:
    return S3UrlSigner(s3, CLIPS_BUCKET, 3600).sign(CLIP_KEY).url


def preflight(url: str, origin: str) -> requests.Response:
    return requests.options(
        url,
        timeout=10,
        headers={"Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"},
    )


def test_without_the_rule_the_bucket_grants_no_origin(strict_s3):
    answer = preflight(clip_url(strict_s3), WEB_APP)
    assert "Access-Control-Allow-Origin" not in answer.headers, "moto must not be lenient here"


def test_the_bucket_answers_an_allowed_origins_preflight_for_a_ranged_get(strict_s3):
    strict_s3.put_bucket_cors(Bucket=CLIPS_BUCKET, CORSConfiguration={"CORSRules": template_cors_rules([WEB_APP])})
    answer = preflight(clip_url(strict_s3), WEB_APP)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == WEB_APP
    assert "GET" in answer.headers["Access-Control-Allow-Methods"]
    assert "range" in answer.headers["Access-Control-Allow-Headers"].lower()


def test_the_bucket_refuses_another_origins_preflight(strict_s3):
    strict_s3.put_bucket_cors(Bucket=CLIPS_BUCKET, CORSConfiguration={"CORSRules": template_cors_rules([WEB_APP])})
    answer = preflight(clip_url(strict_s3), "https://elsewhere.example.net")
    assert answer.status_code == 403
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_a_ranged_read_from_an_allowed_origin_is_206_with_readable_range_headers(strict_s3):
    strict_s3.put_bucket_cors(Bucket=CLIPS_BUCKET, CORSConfiguration={"CORSRules": template_cors_rules([WEB_APP])})
    answer = requests.get(clip_url(strict_s3), timeout=10, headers={"Origin": WEB_APP, "Range": "bytes=100-199"})
    assert answer.status_code == 206 and answer.content == CLIP[100:200]
    assert answer.headers["Content-Range"] == f"bytes 100-199/{len(CLIP)}"
    assert answer.headers["Access-Control-Allow-Origin"] == WEB_APP
    exposed = {h.strip().lower() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-range", "accept-ranges", "content-length"} <= exposed


CHROMIUM = "/usr/bin/chromium"
PAGE = """<!doctype html><title>pending</title><script>
fetch(%r, {headers: {Range: "bytes=100-199"}})
  .then(r => r.arrayBuffer().then(b => [r.status, r.headers.get("Content-Range"), b.byteLength]))
  .then(v => { document.title = "read " + v.join(" "); })
  .catch(e => { document.title = "blocked " + e; });
</script>"""


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")
@pytest.mark.parametrize("allowed", [True, False])
def test_headless_chromium_on_another_port_reads_a_clip_only_from_an_allowed_origin(strict_s3, allowed):
    page_port = free_port()
    origin = f"http://127.0.0.1:{page_port}"
    rules = template_cors_rules([origin if allowed else WEB_APP])
    strict_s3.put_bucket_cors(Bucket=CLIPS_BUCKET, CORSConfiguration={"CORSRules": rules})
    body = (PAGE % clip_url(strict_s3)).encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", page_port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=10000",
                "--dump-dom",
                f"{origin}/",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    if allowed:
        assert f"<title>read 206 bytes 100-199/{len(CLIP)} 100</title>" in result.stdout, result.stdout[-2000:]
    else:
        assert "<title>blocked TypeError" in result.stdout, result.stdout[-2000:]
