"""``play_url``: the lasting link of a clip. Absolute (behind API Gateway's stage path, or under PUBLIC_BASE_URL),
it names the clip as asked, and following it answers 302 to a clip URL that serves the clip."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from chalice.test import Client

from app import app
from tests.audio_tools import FRAME_MS, decode
from tests.conftest import EPISODE, SOURCE_BUCKET, episode_doc, source_key

ROUTE = "/api/v1/audio_clips/{episode_id}"
EXECUTE_API_HOST = "abc123.execute-api.us-east-1.amazonaws.com"


class LambdaContext:
    aws_request_id = "test-request"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 28_000


def api_gateway(url: str, stage_prefix: str = "") -> dict:
    """Invoke the app as API Gateway (REST, proxy integration) does for ``url``: the route's path in ``path``, the
    path the client used (with any stage or base path) in ``requestContext.path``. Returns Chalice's answer."""
    parts = urlsplit(url)
    assert parts.path.startswith(stage_prefix + "/api/v1/audio_clips/"), url
    route_path = parts.path[len(stage_prefix) :]
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    event = {
        "resource": ROUTE,
        "path": route_path,
        "httpMethod": "GET",
        "headers": {"Host": parts.netloc, "X-Forwarded-Proto": parts.scheme, "Accept": "*/*"},
        "multiValueHeaders": {},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None,
        "pathParameters": {"episode_id": route_path.rsplit("/", 1)[-1]},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": ROUTE,
            "httpMethod": "GET",
            "path": parts.path,
            "stage": stage_prefix.strip("/") or "dev",
            "domainName": parts.hostname,
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": None,
        "isBase64Encoded": False,
    }
    return app(event, LambdaContext())


@pytest.fixture
def served_episode(moto_server, audio, catalog_file):
    key = source_key(EPISODE)
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["cbr"].data, ContentType="audio/mpeg")
    catalog_file([episode_doc(EPISODE, key)])


def follow_to_the_clip(play_url: str, stage_prefix: str = "") -> bytes:
    answer = api_gateway(play_url, stage_prefix)
    assert answer["statusCode"] == 302, answer
    clip = requests.get(answer["headers"]["Location"], timeout=10)
    assert clip.status_code == 200 and clip.headers["Content-Type"] == "audio/mpeg"
    return clip.content


def test_play_url_names_the_clip_as_asked_with_redirect_true(s3, episode):
    episode("cbr")
    with Client(app, stage_name="local") as client:
        response = client.http.get(
            f"/api/v1/audio_clips/{EPISODE}?start_time_ms=35000&duration_ms=30000", headers={"Host": "127.0.0.1:8000"}
        )
    body = json.loads(response.body)
    assert body["duration_ms"] == 5000  # clamped at the end of the 40 s episode; the link keeps what was asked
    assert body["play_url"] == (
        f"http://127.0.0.1:8000/api/v1/audio_clips/{EPISODE}?start_time_ms=35000&duration_ms=30000&redirect=true"
    )


def test_play_url_behind_api_gateway_keeps_the_stage_path_and_answers_302_to_a_working_clip(served_episode):
    answer = api_gateway(
        f"https://{EXECUTE_API_HOST}/dev/api/v1/audio_clips/{EPISODE}?start_time_ms=5000&duration_ms=4000",
        stage_prefix="/dev",
    )
    assert answer["statusCode"] == 200, answer
    play_url = json.loads(answer["body"])["play_url"]
    assert play_url == (
        f"https://{EXECUTE_API_HOST}/dev/api/v1/audio_clips/{EPISODE}?start_time_ms=5000&duration_ms=4000&redirect=true"
    )
    clip = decode(follow_to_the_clip(play_url, stage_prefix="/dev"))
    assert clip.stderr == "" and abs(clip.duration_ms - 4000) <= FRAME_MS


def test_play_url_under_public_base_url_answers_302_to_a_working_clip(served_episode, monkeypatch):
    from chalicelib import wiring

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://clips.example.com/audio")
    wiring.reset()
    answer = api_gateway(
        f"https://{EXECUTE_API_HOST}/prod/api/v1/audio_clips/{EPISODE}?start_time_ms=0", stage_prefix="/prod"
    )
    play_url = json.loads(answer["body"])["play_url"]
    assert play_url == (
        f"https://clips.example.com/audio/api/v1/audio_clips/{EPISODE}?start_time_ms=0&duration_ms=30000&redirect=true"
    )
    clip = decode(follow_to_the_clip(play_url, stage_prefix="/audio"))  # the custom domain's base path mapping
    assert clip.stderr == "" and abs(clip.duration_ms - 30000) <= FRAME_MS
