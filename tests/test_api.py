"""Every row of the contract's API and error tables, through Chalice's test client over in-process S3."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.stores.signing import SESSION_CREDENTIALS_BOUND_S
from tests.audio_tools import FRAME_MS, decode
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, clip_objects

ROUTE = "/api/v1/audio_clips/"


@pytest.fixture
def client():
    with Client(app, stage_name="local") as test_client:
        yield test_client


def get(client, path):
    response = client.http.get(path)
    body = json.loads(response.body) if response.body else None
    return response, body


def fetch_clip(s3, body) -> bytes:
    key = urlparse(body["clip_url"]).path.split(f"/{CLIPS_BUCKET}/", 1)[-1].lstrip("/")
    return s3.get_object(Bucket=CLIPS_BUCKET, Key=key)["Body"].read()


def test_a_miss_cuts_stores_and_describes_the_clip(client, s3, episode):
    episode("cbr")
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=5000&duration_ms=10000")
    assert response.status_code == 200
    assert body["cache_hit"] is False
    assert body["episode_id"] == EPISODE
    assert body["start_time_ms"] == 5000 and body["duration_ms"] == 10000
    assert isinstance(body["generation_time_ms"], int) and body["generation_time_ms"] >= 0
    assert body["expires_at"].endswith("Z")
    url = urlparse(body["clip_url"])
    query = parse_qs(url.query)
    assert url.hostname == f"{CLIPS_BUCKET}.s3.us-east-1.amazonaws.com"
    assert url.path == f"/audio_clips/{EPISODE}/5000-15000.mp3"
    # the test credentials carry a session token, like a Lambda role's: the URL lasts the stated bound, not the TTL
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == [str(SESSION_CREDENTIALS_BOUND_S)]
    head = s3.head_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/5000-15000.mp3")
    assert head["ContentType"] == "audio/mpeg"
    assert "max-age" in head["CacheControl"]
    clip = decode(fetch_clip(s3, body))
    assert clip.stderr == ""
    assert abs(clip.duration_ms - 10000) <= FRAME_MS


def test_duration_defaults_to_30_seconds(client, s3, episode):
    episode("cbr")
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=0")
    assert response.status_code == 200 and body["duration_ms"] == 30000
    assert abs(decode(fetch_clip(s3, body)).duration_ms - 30000) <= FRAME_MS


def test_a_second_request_is_a_cache_hit_for_the_same_object(client, s3, episode):
    episode("cbr")
    first = get(client, f"{ROUTE}{EPISODE}?start_time_ms=1000&duration_ms=2000")[1]
    response, second = get(client, f"{ROUTE}{EPISODE}?start_time_ms=1000&duration_ms=2000")
    assert response.status_code == 200
    assert second["cache_hit"] is True and second["duration_ms"] == 2000
    assert urlparse(first["clip_url"]).path == urlparse(second["clip_url"]).path
    assert len(clip_objects(s3)) == 1


def test_redirect_answers_302_to_the_clip(client, s3, episode):
    episode("cbr")
    response = client.http.get(f"{ROUTE}{EPISODE}?start_time_ms=1000&duration_ms=2000&redirect=true")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert urlparse(location).path == f"/audio_clips/{EPISODE}/1000-3000.mp3"
    assert "X-Amz-Signature=" in location


def test_a_clip_past_the_end_is_clamped_to_the_end(client, s3, episode, audio):
    episode("cbr")
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=35000&duration_ms=30000")
    assert response.status_code == 200
    assert body["duration_ms"] == 5000  # the episode is 40 s long
    assert urlparse(body["clip_url"]).path.endswith("/35000-65000.mp3")  # the key names what was asked
    assert abs(decode(fetch_clip(s3, body)).duration_ms - 5000) <= FRAME_MS
    again = get(client, f"{ROUTE}{EPISODE}?start_time_ms=35000&duration_ms=30000")[1]
    assert again["cache_hit"] is True and again["duration_ms"] == 5000


@pytest.mark.parametrize("start", [40000, 40001, 999999999])
def test_a_start_at_or_beyond_the_end_is_a_400_stating_the_duration(client, s3, episode, start):
    episode("cbr")
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms={start}")
    assert response.status_code == 400
    assert body["Code"] == "BadRequestError"
    assert "40000 ms" in body["Message"] and "start_time_ms" in body["Message"]
    assert clip_objects(s3) == []


@pytest.mark.parametrize(
    "episode_id",
    [
        "0e983347-7815-4b62-87a6-84d988a772b7",
        "substack:123456",
        "flightcast:abc-def",
        "a",
        "x" * 200,
        "v1.2_3",
        "substack%3A123456",
    ],
)
def test_well_formed_episode_ids_reach_the_catalog(client, s3, catalog_file, episode_id):
    catalog_file([])
    response, body = get(client, f"{ROUTE}{episode_id}?start_time_ms=0")
    assert response.status_code == 404
    assert body["Code"] == "NotFoundError" and episode_id.replace("%3A", ":") in body["Message"]


@pytest.mark.parametrize(
    "episode_id",
    [
        "x" * 201,
        "has%20space",
        "semi%3Bcolon",
        "slash%2Fslash",
        "quote%27",
        "%00",
        "%2E%2E",
        "pct%2541",
        "..",
        ".",
        "%C3%A9t%C3%A9",
    ],
)
def test_a_malformed_episode_id_is_a_400_before_any_io(client, s3, monkeypatch, episode_id):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100")  # would fail loudly
    calls = []
    wiring.current().s3.meta.events.register("before-call.s3", lambda **kwargs: calls.append(kwargs["model"].name))
    response, body = get(client, f"{ROUTE}{episode_id}?start_time_ms=0")
    assert response.status_code == 400
    assert body["Code"] == "BadRequestError" and "episode_id" in body["Message"]
    assert calls == []


@pytest.mark.parametrize(
    "query, parameter",
    [
        ("", "start_time_ms"),
        ("start_time_ms=", "start_time_ms"),
        ("start_time_ms=-1", "start_time_ms"),
        ("start_time_ms=1.5", "start_time_ms"),
        ("start_time_ms=abc", "start_time_ms"),
        ("start_time_ms=1e3", "start_time_ms"),
        ("start_time_ms=0&duration_ms=999", "duration_ms"),
        ("start_time_ms=0&duration_ms=60001", "duration_ms"),
        ("start_time_ms=0&duration_ms=-5", "duration_ms"),
        ("start_time_ms=0&duration_ms=ten", "duration_ms"),
        ("start_time_ms=0&redirect=yes", "redirect"),
        ("start_time_ms=0&redirect=", "redirect"),
        ("start_time_ms=0&duration_ms=", "duration_ms"),
    ],
)
def test_a_missing_or_malformed_parameter_is_a_400_naming_it(client, s3, episode, query, parameter):
    episode("cbr")
    response, body = get(client, f"{ROUTE}{EPISODE}?{query}")
    assert response.status_code == 400
    assert body["Code"] == "BadRequestError"
    assert parameter in body["Message"]
    assert clip_objects(s3) == []


def test_duration_bounds_follow_max_clip_ms(client, s3, episode, monkeypatch):
    monkeypatch.setenv("MAX_CLIP_MS", "20000")
    episode("cbr")
    too_long = get(client, f"{ROUTE}{EPISODE}?start_time_ms=0&duration_ms=20001")
    assert too_long[0].status_code == 400 and "1000 to 20000" in too_long[1]["Message"]
    assert get(client, f"{ROUTE}{EPISODE}?start_time_ms=0&duration_ms=20000")[0].status_code == 200
    assert get(client, f"{ROUTE}{EPISODE}?start_time_ms=0&duration_ms=1000")[0].status_code == 200


def test_an_unknown_episode_is_a_404(client, s3, episode):
    episode("cbr")
    response, body = get(client, f"{ROUTE}substack:999?start_time_ms=0")
    assert response.status_code == 404 and body["Code"] == "NotFoundError"
    assert clip_objects(s3) == []


def test_an_episode_whose_source_audio_is_missing_is_a_404(client, s3, episode):
    _, key = episode("cbr")
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=key)
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=0")
    assert response.status_code == 404
    assert body["Code"] == "NotFoundError" and "source audio" in body["Message"]
    assert clip_objects(s3) == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"<!DOCTYPE html><html><body>Not Found</body></html>" * 40,
        bytes(range(256)) * 400,
    ],
)
def test_undecodable_source_audio_is_a_422_leaving_no_clip(client, moto_server, catalog_file, garbage):
    from tests.conftest import episode_doc, source_key

    key = source_key(EPISODE)  # over HTTP: FFmpeg really reads these bytes
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=garbage)
    catalog_file([episode_doc(EPISODE, key)])
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=0&duration_ms=5000")
    assert response.status_code == 422
    assert body["Code"] == "UnprocessableEntityError"
    assert "decode" in body["Message"] or "empty" in body["Message"]
    assert clip_objects(moto_server) == []


def test_an_unreachable_catalog_is_a_503_with_retry_after(client, s3, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")  # the discard port: closed here
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "300")
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=0")
    assert response.status_code == 503
    assert body["Code"] == "ServiceUnavailableError" and "catalog" in body["Message"]
    assert int(response.headers["Retry-After"]) > 0
    assert "127.0.0.1" not in body["Message"]


def test_an_unresolvable_srv_record_is_a_503_not_a_500(client, s3, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb+srv://user:pw@cluster0.no-such-host.invalid/")
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=0")
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert "no-such-host" not in body["Message"] and "pw" not in body["Message"]
    monkeypatch.setenv("MONGODB_URI", "mongodb+srv://user:pw@cluster0.no-such-host.invalid/")
    assert get(client, f"{ROUTE}{EPISODE}?start_time_ms=0")[0].status_code == 503, "and again: nothing cached"


def test_anything_else_is_a_500_without_internals(client, s3, episode, monkeypatch):
    episode("cbr")
    from chalicelib.clips import service as clips

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail mongodb+srv://user:pw@host")

    monkeypatch.setattr(clips.ClipService, "get_clip", broken)
    response, body = get(client, f"{ROUTE}{EPISODE}?start_time_ms=0")
    assert response.status_code == 500
    assert set(body) == {"Code", "Message"} and body["Code"] == "InternalServerError"
    assert body["Message"].startswith("An internal server error occurred") and "mongodb" not in body["Message"]


def test_health_is_cheap_and_names_ffmpeg(client, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")  # not touched without deep
    response, body = get(client, "/api/v1/health")
    assert response.status_code == 200
    assert body["status"] == "ok" and "version" in body["ffmpeg"] and body["ffmpeg"]["version"]


def test_health_refuses_a_deep_that_is_not_a_boolean(client):
    response, body = get(client, "/api/v1/health?deep=LPT1")
    assert response.status_code == 400 and "deep" in body["Message"]


def test_deep_health_pings_mongodb_and_s3(client, s3, catalog_file):
    catalog_file([])
    response, body = get(client, "/api/v1/health?deep=true")
    assert response.status_code == 200
    assert body["checks"]["mongodb"]["ok"] and body["checks"]["s3"]["ok"]


def test_deep_health_is_503_when_mongodb_fails(client, s3, monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "300")
    response, body = get(client, "/api/v1/health?deep=true")
    assert response.status_code == 503
    assert body["checks"]["mongodb"]["ok"] is False and body["checks"]["s3"]["ok"] is True
    assert "Retry-After" in response.headers


def test_deep_health_is_503_when_s3_fails(client, catalog_file):
    catalog_file([])
    from moto import mock_aws

    with mock_aws():  # no buckets at all
        response, body = get(client, "/api/v1/health?deep=true")
    assert response.status_code == 503
    assert body["checks"]["s3"]["ok"] is False and body["checks"]["mongodb"]["ok"] is True
