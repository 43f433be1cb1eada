from __future__ import annotations

import json
import socket
import time
from typing import Dict, Iterator, Optional

import boto3
import pytest
import requests
from moto import mock_aws

from chalicelib import wiring
from tests.audio_tools import Source, generate_all

SOURCE_BUCKET = "pod-insights-raw"
CLIPS_BUCKET = "pod-insights-clips"
EPISODE = "0e983347-7815-4b62-87a6-84d988a772b7"

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def audio(tmp_path_factory) -> Dict[str, Source]:
    """Every kind of source the service must cut, generated once per run by real FFmpeg."""
    return generate_all(str(tmp_path_factory.mktemp("audio")))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Each test starts from the contract's defaults, fake AWS credentials and fresh clients."""
    for name in (
        "SOURCE_BUCKET",
        "CLIPS_BUCKET",
        "MONGODB_URI",
        "MONGODB_DB",
        "MAX_CLIP_MS",
        "CLIP_URL_TTL_SECONDS",
        "FFMPEG_PATH",
        "ALERT_TOPIC_ARN",
        "LOCAL_CATALOG_FILE",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "MONGODB_TIMEOUT_MS",
        "PUBLIC_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    wiring.reset()
    yield
    wiring.reset()


@pytest.fixture
def s3() -> Iterator:
    """In-process S3 (moto) with both buckets."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=SOURCE_BUCKET)
        client.create_bucket(Bucket=CLIPS_BUCKET)
        yield client


def source_key(episode_id: str, name: str = "episode.mp3") -> str:
    return f"test-podcast/{episode_id}/audio/{name}"


def episode_doc(episode_id: str, key: str, bucket: str = SOURCE_BUCKET) -> dict:
    return {
        "guid": episode_id,
        "s3_audio_path": f"s3://{bucket}/{key}",
        "podcast_title": "Test Podcast",
        "raw_entry_original_feed": {"podcast_slug": "test-podcast", "episode_title": f"Episode {episode_id}"},
    }


@pytest.fixture
def catalog_file(tmp_path, monkeypatch):
    """Write the embedded catalog: ``catalog_file([docs])``; points LOCAL_CATALOG_FILE at it."""
    path = tmp_path / "catalog.json"

    def write(documents):
        path.write_text(json.dumps(documents))
        monkeypatch.setenv("LOCAL_CATALOG_FILE", str(path))
        wiring.reset()
        return path

    return write


@pytest.fixture
def episode(s3, audio, catalog_file):
    """Put a source in S3 and the catalog: ``episode('cbr')`` → (episode_id, key)."""
    documents = []

    def put(kind: str, episode_id: str = EPISODE, data: Optional[bytes] = None):
        name = "episode.m4a" if kind == "m4a" else "episode.mp3"
        key = source_key(episode_id, name)
        body = audio[kind].data if data is None else data
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=body, ContentType=audio[kind].content_type)
        documents.append(episode_doc(episode_id, key))
        catalog_file(documents)
        return episode_id, key

    return put


def clip_objects(s3) -> list:
    listing = s3.list_objects_v2(Bucket=CLIPS_BUCKET, Prefix="audio_clips/")
    return [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".mp3")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s}s")


@pytest.fixture
def moto_server(monkeypatch):
    """moto's S3 over HTTP on 127.0.0.1, with both buckets; boto3 (and the service) follow AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        reset_moto(endpoint)  # moto keeps its state per process: every server in it shares what tests left
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        wiring.reset()
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)
        client.create_bucket(Bucket=SOURCE_BUCKET)
        client.create_bucket(Bucket=CLIPS_BUCKET)
        yield client
        reset_moto(endpoint)
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()


@pytest.fixture
def stage_lambda_timeout(monkeypatch):
    """Chalice's test client invokes a function with 3 s left whatever its ``lambda_timeout``; cleanup_clips bounds
    its S3 calls by its remaining time, so its tests give it the 120 s every stage gives it."""
    import functools

    import chalice.test
    from chalice.local import LambdaContext

    monkeypatch.setattr(chalice.test, "LambdaContext", functools.partial(LambdaContext, max_runtime_ms=120_000))
