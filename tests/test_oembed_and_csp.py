"""Small holes of issue 19 (item 6): oEmbed's size parameters, and the share page's CSP under PUBLIC_BASE_URL."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from chalice.test import Client

from app import app
from tests.conftest import EPISODE

SHARE = f"http://localhost/clips/{EPISODE}?start_time_ms=12000&duration_ms=5000"


@pytest.fixture
def client(episode):
    episode("cbr")
    with Client(app, stage_name="local") as test_client:
        yield test_client


def oembed(client, **extra):
    query = urlencode({"url": SHARE, "format": "json", **extra})
    response = client.http.get(f"/api/v1/oembed?{query}")
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize(
    "name, value",
    [("maxwidth", "²"), ("maxwidth", "9" * 5000), ("maxheight", "٣"), ("maxwidth", "12a"), ("maxwidth", "0")],
)
def test_an_oembed_size_that_is_not_a_plain_positive_integer_is_a_400_naming_it(client, name, value):
    status, body = oembed(client, **{name: value})
    assert status == 400 and body["Code"] == "BadRequestError"
    assert name in body["Message"] and "positive integer" in body["Message"]


def test_an_oembed_size_within_bounds_is_honoured(client):
    status, body = oembed(client, maxwidth="320", maxheight="999999999")
    assert status == 200 and (body["width"], body["height"]) == (320, 152)


def media_sources(response) -> list:
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    return policy["media-src"].split()


@pytest.mark.parametrize("page", ["", "/embed"])
def test_under_public_base_url_a_page_reached_through_another_host_may_play_its_play_url(client, monkeypatch, page):
    from chalicelib import wiring

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://clips.example.com/audio")
    wiring.reset()
    response = client.http.get(f"/clips/{EPISODE}{page}?start_time_ms=12000&duration_ms=5000")
    assert response.status_code == 200
    assert "https://clips.example.com/audio/api/v1/audio_clips/" in response.body.decode()
    assert media_sources(response) == [
        "'self'",
        "https://clips.example.com",
        "https://pod-insights-clips.s3.us-east-1.amazonaws.com",
    ]


def test_without_public_base_url_self_is_where_play_url_points(client):
    response = client.http.get(f"/clips/{EPISODE}?start_time_ms=12000&duration_ms=5000")
    assert media_sources(response) == ["'self'", "https://pod-insights-clips.s3.us-east-1.amazonaws.com"]
