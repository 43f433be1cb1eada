"""Links come from configuration or API Gateway, never from headers a client sets (issue 19, item 2): every route
that answers with links, asked with hostile ``Host``/``X-Forwarded-*``/``Forwarded`` headers, behind API Gateway
(its request context names the domain and stage) and without it (chalice local: only a loopback Host counts)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from chalice.test import Client

from app import app
from tests.conftest import EPISODE
from tests.gateway import EXECUTE_API, gateway_event, invoke
from tests.test_share_page import Page

HOSTILE = {
    "Host": "evil.example",
    "X-Forwarded-Proto": "javascript:alert(document.domain)//",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "666",
    "Forwarded": "for=1.2.3.4;host=evil.example;proto=javascript",
}
OTHER_HOSTILE = {"Host": "attacker.test:8443", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "attacker.test"}
QUERY = {"start_time_ms": "12000", "duration_ms": "5000"}
BASE = f"https://{EXECUTE_API}/dev"
SHARE = f"{BASE}/clips/{EPISODE}?start_time_ms=12000&duration_ms=5000"
PLAY = f"{BASE}/api/v1/audio_clips/{EPISODE}?start_time_ms=12000&duration_ms=5000&redirect=true"
EMBED = f"{BASE}/clips/{EPISODE}/embed?start_time_ms=12000&duration_ms=5000"
CLIP = "/api/v1/audio_clips/{episode_id}"


def untouched(answer: dict) -> None:
    """Nothing a hostile header said reached the answer: not its body, not a header (Location, CSP, ...)."""
    text = answer["body"] + json.dumps(answer.get("headers", {})) + json.dumps(answer.get("multiValueHeaders", {}))
    for word in ("evil", "javascript", "attacker", "666"):
        assert word not in text, (word, text[:500])


@pytest.fixture
def served(episode):
    episode("cbr")


def routes():
    return {
        "clip": gateway_event(CLIP, f"/api/v1/audio_clips/{EPISODE}", QUERY, HOSTILE),
        "redirect": gateway_event(CLIP, f"/api/v1/audio_clips/{EPISODE}", {**QUERY, "redirect": "true"}, HOSTILE),
        "share": gateway_event("/clips/{episode_id}", f"/clips/{EPISODE}", QUERY, HOSTILE),
        "embed": gateway_event("/clips/{episode_id}/embed", f"/clips/{EPISODE}/embed", QUERY, HOSTILE),
        "oembed": gateway_event("/api/v1/oembed", "/api/v1/oembed", {"url": SHARE, "format": "json"}, HOSTILE),
    }


@pytest.mark.parametrize("route", ["clip", "redirect", "share", "embed", "oembed"])
def test_behind_api_gateway_no_route_takes_its_links_from_headers(served, route):
    answer = invoke(routes()[route])
    assert answer["statusCode"] in (200, 302), answer
    untouched(answer)


def test_the_clip_routes_links_are_the_gateways_domain_and_stage_over_https(served):
    body = json.loads(invoke(routes()["clip"])["body"])
    assert body["play_url"] == PLAY and body["share_url"] == SHARE
    location = invoke(routes()["redirect"])["headers"]["Location"]
    assert location.startswith("https://pod-insights-clips.s3.") and f"/audio_clips/{EPISODE}/" in location


def test_the_pages_links_are_the_gateways_domain_and_stage(served):
    share = Page(invoke(routes()["share"])["body"])
    meta = share.meta()
    assert meta["og:url"] == SHARE and meta["og:audio"] == PLAY and meta["twitter:player"] == EMBED
    assert share.first("audio")["src"] == PLAY
    oembed_link = share.first("link", rel="alternate")["href"]
    assert oembed_link == f"{BASE}/api/v1/oembed?" + urlencode({"url": SHARE, "format": "json"})
    embed = Page(invoke(routes()["embed"])["body"])
    assert embed.first("audio")["src"] == PLAY and embed.first("a")["href"] == SHARE


def test_oembeds_iframe_is_the_gateways_embed_page(served):
    body = json.loads(invoke(routes()["oembed"])["body"])
    assert f'<iframe src="{EMBED.replace("&", "&amp;")}"' in body["html"]
    assert body["provider_url"] == f"{BASE}/"


@pytest.mark.parametrize("route", ["clip", "share", "embed", "oembed"])
def test_other_headers_give_the_same_answer_so_a_shared_cache_may_keep_it(served, route):
    """A public page that does not vary with headers needs no ``Vary``: the URL (domain and path) decides it."""
    first = invoke(routes()[route])
    event = routes()[route]
    event["headers"] = {"Accept": "*/*", **OTHER_HOSTILE}
    second = invoke(event)
    strip = ("generation_time_ms", "cache_hit", "clip_url", "expires_at")
    if route == "clip":
        first_body, second_body = (
            {k: v for k, v in json.loads(a["body"]).items() if k not in strip} for a in (first, second)
        )
        assert first_body == second_body
    else:
        assert first["body"] == second["body"]
        assert first["headers"].get("Content-Security-Policy") == second["headers"].get("Content-Security-Policy")
    untouched(second)


def test_a_custom_domain_keeps_its_base_path_mapping(served):
    event = gateway_event(
        "/clips/{episode_id}", f"/clips/{EPISODE}", QUERY, HOSTILE, "clips.example.com", "prod", "/audio"
    )
    meta = Page(invoke(event)["body"]).meta()
    assert meta["og:url"] == f"https://clips.example.com/audio/clips/{EPISODE}?start_time_ms=12000&duration_ms=5000"


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/audio_clips/{EPISODE}?start_time_ms=12000&duration_ms=5000",
        f"/clips/{EPISODE}?start_time_ms=12000&duration_ms=5000",
        f"/clips/{EPISODE}/embed?start_time_ms=12000&duration_ms=5000",
        "/api/v1/oembed?"
        + urlencode({"url": f"http://localhost/clips/{EPISODE}?start_time_ms=12000", "format": "json"}),
    ],
)
def test_without_api_gateway_a_hostile_host_gives_local_links(served, path):
    """chalice local and the test client have no request context domain: only a loopback Host is taken."""
    with Client(app, stage_name="local") as client:
        response = client.http.get(path, headers={**HOSTILE, "Accept": "*/*"})
    assert response.status_code == 200, response.body
    text = response.body.decode() + json.dumps(dict(response.headers))
    assert "evil" not in text and "javascript" not in text and "666" not in text
    assert "http://localhost/" in response.body.decode()


def test_pages_say_vary_origin_when_cors_is_on_even_without_an_origin(served, monkeypatch):
    from chalicelib import wiring

    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://app.example.com")
    wiring.reset()
    answer = invoke(gateway_event("/clips/{episode_id}", f"/clips/{EPISODE}", QUERY))
    assert answer["statusCode"] == 200 and answer["headers"]["Vary"] == "Origin"
    assert answer["headers"]["Cache-Control"].startswith("public")
