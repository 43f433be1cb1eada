"""The Python client (clients/python): against `make run`'s stack, and against a loopback fake for retries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from tests.local_stack import DEMO_GUID, LocalStack, local_stack  # noqa: F401  (a fixture)

CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "python"
sys.path.insert(0, str(CLIENT_DIR))

from audio_clips_client import (  # noqa: E402
    AudioClipsClient,
    BadRequest,
    Clip,
    ClipServiceError,
    NotFound,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
)

CLIP = {
    "clip_url": "http://127.0.0.1/clip.mp3",
    "expires_at": "2026-11-24T10:00:00Z",
    "cache_hit": False,
    "episode_id": "substack:1",
    "start_time_ms": 1000,
    "duration_ms": 30000,
    "generation_time_ms": 412,
    "play_url": "http://127.0.0.1/play",
    "future_field": 7,
}


TRUNCATED = "truncated"  # a header: announce the body's length, send half of it, close the connection


class Script:
    """A loopback server that answers each request with the next scripted (status, headers, body); a ``TRUNCATED``
    header makes it send half the body it announced and close the connection (HTTP/1.0: one request each)."""

    def __init__(self, answers: List[Tuple[int, dict, object]]) -> None:
        self.answers = list(answers)
        self.paths: List[str] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                script.paths.append(self.path)
                status, headers, body = script.answers.pop(0) if script.answers else (500, {}, {"Code": "X"})
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    if name != TRUNCATED:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if TRUNCATED in headers else data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator:
    servers: List[Script] = []

    def start(*answers: Tuple[int, dict, object]) -> Script:
        servers.append(Script(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def client_for(url: str, sleeps: List[float], **options: float) -> AudioClipsClient:
    return AudioClipsClient(url, sleep=sleeps.append, timeout_s=options.pop("timeout_s", 5), **options)


UNAVAILABLE = {"Code": "ServiceUnavailableError", "Message": "The episode catalog is unavailable; try again later"}


def test_a_503_is_retried_after_its_retry_after(fake):
    server = fake((503, {"Retry-After": "2"}, UNAVAILABLE), (200, {}, CLIP))
    sleeps: List[float] = []
    clip = client_for(server.url, sleeps).get_clip("substack:1", 1000, 30000)
    assert sleeps == [2.0] and len(server.paths) == 2
    assert server.paths[0] == "/api/v1/audio_clips/substack%3A1?start_time_ms=1000&duration_ms=30000"
    assert isinstance(clip, Clip) and clip.episode_id == "substack:1" and clip.generation_time_ms == 412
    assert clip.expires_at.isoformat() == "2026-11-24T10:00:00+00:00" and clip.play_url == "http://127.0.0.1/play"
    assert clip.extra == {"future_field": 7}


def test_a_503_without_retry_after_backs_off_exponentially_then_raises_with_code_and_message(fake):
    server = fake(*[(503, {}, UNAVAILABLE)] * 4)
    sleeps: List[float] = []
    with pytest.raises(ServiceUnavailable) as raised:
        client_for(server.url, sleeps, retries=3, backoff_s=1, max_backoff_s=100).get_clip("e", 0)
    assert raised.value.status == 503 and raised.value.code == "ServiceUnavailableError"
    assert raised.value.message == UNAVAILABLE["Message"]
    assert len(server.paths) == 4 and len(sleeps) == 3
    assert all(0 <= wait <= 2**n for n, wait in enumerate(sleeps))  # full jitter under 1, 2, 4 s


def test_a_retry_after_longer_than_the_caller_allows_is_raised_at_once(fake):
    server = fake((503, {"Retry-After": "120"}, UNAVAILABLE), (200, {}, CLIP))
    sleeps: List[float] = []
    with pytest.raises(ServiceUnavailable) as raised:
        client_for(server.url, sleeps, max_retry_after_s=30).get_clip("e", 0)
    assert raised.value.retry_after_s == 120 and sleeps == [] and len(server.paths) == 1


@pytest.mark.parametrize("status, kind", [(400, BadRequest), (404, NotFound)])
def test_a_4xx_is_never_retried(fake, status, kind):
    body = {"Code": "BadRequestError" if status == 400 else "NotFoundError", "Message": "start_time_ms is required"}
    server = fake((status, {}, body), (200, {}, CLIP))
    sleeps: List[float] = []
    with pytest.raises(kind) as raised:
        client_for(server.url, sleeps).get_clip("e", 0)
    assert raised.value.code == body["Code"] and raised.value.message == body["Message"]
    assert len(server.paths) == 1 and sleeps == []


TOO_MANY = {"Code": "TooManyRequests", "Message": "Too many requests: the stage's rate limit is exceeded"}
GATEWAY_500 = {"message": "Internal server error"}  # API Gateway's own answer when the function is throttled


def test_a_429_is_retried_after_its_retry_after(fake):
    server = fake((429, {"Retry-After": "3"}, TOO_MANY), (200, {}, CLIP))
    sleeps: List[float] = []
    clip = client_for(server.url, sleeps).get_clip("substack:1", 1000)
    assert sleeps == [3.0] and len(server.paths) == 2 and clip.episode_id == "substack:1"


def test_a_429_without_retry_after_backs_off_then_raises_too_many_requests(fake):
    server = fake(*[(429, {}, TOO_MANY)] * 3)
    sleeps: List[float] = []
    with pytest.raises(TooManyRequests) as raised:
        client_for(server.url, sleeps, retries=2, backoff_s=1, max_backoff_s=100).get_clip("e", 0)
    assert raised.value.status == 429 and raised.value.code == "TooManyRequests"
    assert len(server.paths) == 3 and len(sleeps) == 2 and all(0 <= w <= 2**n for n, w in enumerate(sleeps))


def test_a_429_asking_for_more_than_the_caller_allows_is_raised_at_once(fake):
    server = fake((429, {"Retry-After": "300"}, TOO_MANY), (200, {}, CLIP))
    sleeps: List[float] = []
    with pytest.raises(TooManyRequests) as raised:
        client_for(server.url, sleeps, max_retry_after_s=30).get_clip("e", 0)
    assert raised.value.retry_after_s == 300 and sleeps == [] and len(server.paths) == 1


@pytest.mark.parametrize("status", [500, 502])
def test_a_gateway_5xx_without_the_contracts_code_is_retried_with_backoff(fake, status):
    server = fake((status, {}, GATEWAY_500), (status, {}, GATEWAY_500), (200, {}, CLIP))
    sleeps: List[float] = []
    clip = client_for(server.url, sleeps, backoff_s=1, max_backoff_s=100).get_clip("substack:1", 1000)
    assert clip.episode_id == "substack:1" and len(server.paths) == 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1 and 0 <= sleeps[1] <= 2


def test_a_gateway_500_is_an_error_naming_the_gateways_message_once_the_retries_are_spent(fake):
    server = fake(*[(500, {}, GATEWAY_500)] * 2)
    with pytest.raises(ServerError) as raised:
        client_for(server.url, [], retries=1).get_clip("e", 0)
    assert raised.value.status == 500 and raised.value.code == "GatewayError"
    assert raised.value.message == "Internal server error" and raised.value.from_service is False


def test_the_services_own_500_is_not_retried(fake):
    body = {"Code": "InternalServerError", "Message": "An internal error occurred (request id 1-abc)"}
    server = fake((500, {}, body), (200, {}, CLIP))
    sleeps: List[float] = []
    with pytest.raises(ServerError) as raised:
        client_for(server.url, sleeps).get_clip("e", 0)
    assert raised.value.code == "InternalServerError" and raised.value.from_service is True
    assert sleeps == [] and len(server.paths) == 1


def test_a_gateway_answer_in_the_contracts_shape_with_retry_after_is_retried(fake):
    """What the stage's gateway responses answer when the function is throttled (infra/stage.py)."""
    body = {"Code": "ServiceUnavailable", "Message": "The service is busy; retry after Retry-After seconds"}
    server = fake((503, {"Retry-After": "2"}, body), (200, {}, CLIP))
    sleeps: List[float] = []
    client_for(server.url, sleeps).get_clip("e", 0)
    assert sleeps == [2.0]


def test_a_truncated_body_is_retried_and_never_escapes_as_http_client_incomplete_read(fake):
    import http.client

    server = fake((200, {TRUNCATED: "1"}, CLIP), (200, {}, CLIP))
    sleeps: List[float] = []
    assert client_for(server.url, sleeps).get_clip("substack:1", 1000).episode_id == "substack:1"
    assert len(server.paths) == 2 and len(sleeps) == 1

    server = fake(*[(200, {TRUNCATED: "1"}, CLIP)] * 2)
    with pytest.raises(TransportError) as raised:
        client_for(server.url, [], retries=1).get_clip("e", 0)
    assert not isinstance(raised.value, http.client.HTTPException)
    assert raised.value.status == 0 and "IncompleteRead" in raised.value.message
    assert isinstance(raised.value.__cause__ or raised.value.__context__, http.client.IncompleteRead)


@pytest.mark.parametrize("status", [403, 404, 413])
def test_a_4xx_other_than_429_is_never_retried_even_from_a_gateway(fake, status):
    server = fake((status, {}, {"message": "Missing Authentication Token"}), (200, {}, CLIP))
    sleeps: List[float] = []
    with pytest.raises(ClipServiceError) as raised:
        client_for(server.url, sleeps).get_clip("e", 0)
    assert raised.value.status == status and sleeps == [] and len(server.paths) == 1


def test_no_answer_within_the_timeout_is_a_transport_error_after_the_retries(fake):
    import socket

    listener = socket.socket()  # accepts connections (the backlog) and never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        sleeps: List[float] = []
        client = client_for(f"http://127.0.0.1:{listener.getsockname()[1]}", sleeps, timeout_s=0.3, retries=1)
        with pytest.raises(TransportError) as raised:
            client.health()
        assert raised.value.status == 0 and "timed out" in raised.value.message and len(sleeps) == 1
    finally:
        listener.close()


def test_the_redirect_form_returns_the_clip_location_without_following_it(fake):
    server = fake((302, {"Location": "http://127.0.0.1:1/clip.mp3"}, b""))
    assert client_for(server.url, []).get_clip_location("e", 0) == "http://127.0.0.1:1/clip.mp3"
    assert server.paths[0].endswith("redirect=true")


@pytest.mark.slow
def test_against_make_runs_stack(local_stack: LocalStack):
    client = AudioClipsClient(local_stack.base_url, timeout_s=60)
    first = client.get_clip(DEMO_GUID, 60_000, 5_000)
    again = client.get_clip(DEMO_GUID, 60_000, 5_000)
    assert first.cache_hit is False and again.cache_hit is True and again.duration_ms == 5_000
    assert client.get_clip_location(DEMO_GUID, 60_000, 5_000).startswith("http://127.0.0.1:")
    health = client.health()
    assert health.ok and health.ffmpeg_version
    assert client.openapi()["openapi"].startswith("3.")
    with pytest.raises(NotFound) as missing:
        client.get_clip("no-such-episode", 0)
    assert missing.value.code == "NotFoundError"
    with pytest.raises(BadRequest) as bad:
        client.get_clip(DEMO_GUID, 0, 10)
    assert bad.value.code == "BadRequestError" and "duration_ms" in bad.value.message


@pytest.mark.slow
def test_the_client_installs_with_pip_from_its_path(tmp_path):
    target = tmp_path / "site"
    source = tmp_path / "client"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    probe = "import audio_clips_client, sys; print(audio_clips_client.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.startswith(str(target))
    assert (target / "audio_clips_client" / "py.typed").exists()
