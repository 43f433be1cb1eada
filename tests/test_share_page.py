"""The share page, the embeddable player and oEmbed, through Chalice's test client over in-process S3: their tags
parsed and checked, hostile catalog text escaped in every context, and the HTML error pages."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Dict, List, Tuple
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from chalice.test import Client

from app import app
from chalicelib.audio import attribution
from tests.conftest import EPISODE, SOURCE_BUCKET, episode_doc, source_key

BASE = "http://localhost"
QUERY = "start_time_ms=12000&duration_ms=5000"
SHARE = f"{BASE}/clips/{EPISODE}?{QUERY}"
PLAY = f"{BASE}/api/v1/audio_clips/{EPISODE}?{QUERY}&redirect=true"
EMBED = f"{BASE}/clips/{EPISODE}/embed?{QUERY}"
HOSTILE_EPISODE = (
    '\u202e</script><script>alert(1)</script>"\' onmouseover="x" <img src=x onerror=alert(1)> '
    "\u200fשלום\u200f & co " + "Ω" * 5_000
)
HOSTILE_PODCAST = "</title><style>*{display:none}</style>\"'><img src=x onerror=alert(2)>"


class Page(HTMLParser):
    """Every start tag with its attributes (entities decoded, as a browser reads them) and the text of each."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, Dict[str, str]]] = []
        self.text: Dict[str, str] = {}
        self._open: List[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._open.append(tag)

    def handle_endtag(self, tag):
        if tag in self._open:
            self._open.remove(tag)

    def handle_data(self, data):
        for tag in self._open:
            self.text[tag] = self.text.get(tag, "") + data

    def meta(self) -> Dict[str, str]:
        return {
            a.get("property") or a.get("name"): a["content"] for t, a in self.tags if t == "meta" and "content" in a
        }

    def first(self, tag: str, **match: str) -> Dict[str, str]:
        return next(a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in match.items()))

    def names(self) -> set:
        return {t for t, _ in self.tags}


@pytest.fixture
def client():
    with Client(app, stage_name="local") as test_client:
        yield test_client


@pytest.fixture
def titled(s3, audio, catalog_file):
    """The CBR source under EPISODE, with the catalog entry given: ``titled(episode_title=..., ...)``."""

    def put(podcast_title="Tëst Podcast", **feed):
        key = source_key(EPISODE)
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["cbr"].data, ContentType="audio/mpeg")
        doc = episode_doc(EPISODE, key)
        doc["podcast_title"] = podcast_title
        doc["raw_entry_original_feed"].update(feed)
        catalog_file([doc])

    return put


def get(client, path):
    return client.http.get(path, headers={"Accept": "text/html"})


def test_the_share_page_shows_titles_range_and_a_player_on_play_url(client, titled):
    titled(episode_title="Stablecoins & Startups", enclosures=[{"href": "https://cdn.example.com/ep.mp3"}])
    response = get(client, f"/clips/{EPISODE}?{QUERY}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = Page(response.body.decode())
    assert page.text["h1"] == "Stablecoins & Startups"
    assert page.first("p", **{"class": "podcast"}) is not None and "Tëst Podcast" in page.text["p"]
    assert "Clip from 0:12 to 0:17 · 5.0 s" in page.text["p"]
    audio = page.first("audio")
    assert audio["src"] == PLAY and audio["preload"] == "none" and "controls" in audio
    assert page.first("a", rel="noopener nofollow")["href"] == "https://cdn.example.com/ep.mp3#t=12,17"
    assert "script" not in page.names() and "img" not in page.names() and "iframe" not in page.names()
    assert page.first("meta", name="viewport")["content"] == "width=device-width, initial-scale=1"


def test_the_head_carries_open_graph_twitter_player_and_oembed_discovery(client, titled):
    titled(episode_title="Stablecoins & Startups")
    page = Page(get(client, f"/clips/{EPISODE}?{QUERY}").body.decode())
    meta = page.meta()
    assert meta["og:title"] == "Stablecoins & Startups (0:12–0:17)"
    assert meta["og:description"] == "A clip of “Stablecoins & Startups” of Tëst Podcast, from 0:12 to 0:17."
    assert meta["og:type"] == "website" and meta["og:url"] == SHARE
    assert meta["og:audio"] == PLAY and meta["og:audio:type"] == "audio/mpeg"
    assert meta["twitter:card"] == "player" and meta["twitter:player"] == EMBED
    assert meta["twitter:player:width"] == "480" and meta["twitter:player:height"] == "152"
    assert meta["twitter:player:stream"] == PLAY
    oembed = page.first("link", rel="alternate")
    assert oembed["type"] == "application/json+oembed"
    href = urlsplit(oembed["href"])
    assert href.path == "/api/v1/oembed" and parse_qs(href.query) == {"url": [SHARE], "format": ["json"]}


def test_the_share_page_allows_only_its_style_and_the_clip_s_audio(client, titled):
    titled(episode_title="Stablecoins")
    response = get(client, f"/clips/{EPISODE}?{QUERY}")
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["style-src"].startswith("'sha256-") and "unsafe" not in policy["style-src"]
    assert policy["media-src"] == "'self' https://pod-insights-clips.s3.us-east-1.amazonaws.com"
    assert policy["frame-ancestors"] == "'none'" and response.headers["X-Frame-Options"] == "DENY"
    assert "script-src" not in policy and "img-src" not in policy and "font-src" not in policy


def test_the_style_hash_matches_the_inline_style():
    import base64
    import hashlib

    from chalicelib.web.pages import _STYLE_SOURCE, STYLE

    assert "'sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() + "'" == _STYLE_SOURCE


def test_the_embed_page_plays_the_same_clip_and_may_be_framed_anywhere(client, titled):
    titled(episode_title="Stablecoins")
    response = get(client, f"/clips/{EPISODE}/embed?{QUERY}")
    assert response.status_code == 200
    page = Page(response.body.decode())
    assert page.first("audio")["src"] == PLAY
    assert page.first("a")["href"] == SHARE and page.first("a")["target"] == "_blank"
    assert "frame-ancestors *" in response.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in response.headers


def test_hostile_catalog_text_is_text_in_every_context(client, titled):
    titled(episode_title=HOSTILE_EPISODE, podcast_title=HOSTILE_PODCAST, link="javascript:alert(3)")
    for path in (f"/clips/{EPISODE}?{QUERY}", f"/clips/{EPISODE}/embed?{QUERY}"):
        response = get(client, path)
        assert response.status_code == 200
        text = response.body.decode()
        page = Page(text)
        assert page.names() <= {
            "html",
            "head",
            "meta",
            "title",
            "link",
            "style",
            "body",
            "main",
            "p",
            "h1",
            "bdi",
            "time",
            "audio",
            "a",
            "svg",
            "path",
        }, "no element comes from the catalog"
        assert text.count("<style>") == 1 and "<script" not in text and "javascript:" not in text
        assert "\u202e" not in text, "bidi overrides are dropped; marks (U+200F) stay, isolated in <bdi>"
        assert len(text.encode()) < 9_500, "titles are bounded (the card's tags and the waveform add ~1.7 KB)"
        allowed = {
            "charset",
            "name",
            "content",
            "property",
            "rel",
            "href",
            "type",
            "title",
            "lang",
            "class",
            "controls",
            "preload",
            "src",
            "target",
            *("viewbox", "role", "aria-label", "xmlns", "d", "stroke", "stroke-width", "stroke-linecap", "fill"),
        }
        assert all(set(a) <= allowed for _, a in page.tags), "no attribute comes from the catalog"
    page = Page(get(client, f"/clips/{EPISODE}?{QUERY}").body.decode())
    cleaned = attribution.clean_text(HOSTILE_EPISODE)
    assert page.text["bdi"].startswith(attribution.clean_text(HOSTILE_PODCAST))
    assert page.text["h1"] == cleaned and "\u200fשלום\u200f" in cleaned
    assert page.meta()["og:title"] == f"{cleaned} ({attribution.time_range(12000, 5000)})"
    assert page.text["title"].startswith(cleaned)


def test_oembed_describes_a_share_page_with_an_iframe_of_the_player(client, titled):
    titled(episode_title="Stablecoins & Startups")
    response = client.http.get(f"/api/v1/oembed?url={quote(SHARE, safe='')}&format=json")
    assert response.status_code == 200
    body = json.loads(response.body)
    assert {k: body[k] for k in ("version", "type", "provider_name", "width", "height")} == {
        "version": "1.0",
        "type": "rich",
        "provider_name": "Podcast clips",
        "width": 480,
        "height": 152,
    }
    assert body["title"] == "Stablecoins & Startups (0:12–0:17)" and body["author_name"] == "Tëst Podcast"
    iframe = Page(body["html"])
    assert iframe.names() == {"iframe"}
    assert iframe.first("iframe")["src"] == EMBED and iframe.first("iframe")["title"] == body["title"]


def test_oembed_respects_maxwidth(client, titled):
    titled(episode_title="Stablecoins")
    body = json.loads(client.http.get(f"/api/v1/oembed?url={quote(SHARE, safe='')}&maxwidth=300").body)
    assert body["width"] == 300 and 'width="300"' in body["html"]


def test_oembed_escapes_hostile_titles_inside_its_html(client, titled):
    titled(episode_title=HOSTILE_EPISODE)
    body = json.loads(client.http.get(f"/api/v1/oembed?url={quote(SHARE, safe='')}").body)
    iframe = Page(body["html"])
    assert iframe.names() == {"iframe"} and set(iframe.first("iframe")) == {
        "src",
        "width",
        "height",
        "title",
        "style",
        "loading",
    }
    assert iframe.first("iframe")["title"] == body["title"]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/clips/" + EPISODE + "?" + QUERY,  # another host
        f"{BASE}/api/v1/audio_clips/{EPISODE}?{QUERY}",  # not a share page
        f"{BASE}/clips/{EPISODE}/embed?{QUERY}",
        f"{BASE}/clips/{EPISODE}?start_time_ms=abc",  # not a valid share page
        f"{BASE}/clips/no-such-episode?{QUERY}",
        "not a url",
    ],
)
def test_oembed_answers_404_for_anything_but_a_share_page_here(client, titled, url):
    titled(episode_title="Stablecoins")
    response = client.http.get(f"/api/v1/oembed?url={quote(url, safe='')}&format=json")
    assert response.status_code == 404, response.body
    assert json.loads(response.body)["Code"] == "NotFoundError"


def test_oembed_answers_501_for_xml(client, titled):
    titled(episode_title="Stablecoins")
    response = client.http.get(f"/api/v1/oembed?url={quote(SHARE, safe='')}&format=xml")
    assert response.status_code == 501
    assert json.loads(response.body) == {
        "Code": "NotImplementedError",
        "Message": "format 'xml' is not supported: this service answers format=json",
    }


def test_oembed_needs_a_url(client):
    response = client.http.get("/api/v1/oembed?format=json")
    assert response.status_code == 400 and "url is required" in json.loads(response.body)["Message"]


def test_public_base_url_names_every_link_and_oembed_accepts_it(client, titled, monkeypatch):
    from chalicelib import wiring

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://clips.example.com")
    wiring.reset()
    titled(episode_title="Stablecoins")
    meta = Page(get(client, f"/clips/{EPISODE}?{QUERY}").body.decode()).meta()
    assert meta["og:url"] == f"https://clips.example.com/clips/{EPISODE}?{QUERY}"
    assert meta["og:audio"].startswith("https://clips.example.com/api/v1/audio_clips/")
    assert meta["og:audio:secure_url"] == meta["og:audio"]
    response = client.http.get(f"/api/v1/oembed?url={quote(meta['og:url'], safe='')}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "path, status, heading",
    [
        (f"/clips/no-such-episode?{QUERY}", 404, "Clip not found"),
        ("/clips/bad!id?start_time_ms=0", 400, "This clip link is not valid"),
        (f"/clips/{EPISODE}", 400, "This clip link is not valid"),
        (f"/clips/{EPISODE}?start_time_ms=0&duration_ms=5", 400, "This clip link is not valid"),
        (f"/clips/{EPISODE}?start_time_ms=99000000", 400, "This clip link is not valid"),
        (f"/clips/no-such-episode/embed?{QUERY}", 404, "Clip not found"),
    ],
)
def test_errors_are_html_pages_with_the_clip_route_s_status(client, titled, path, status, heading):
    titled(episode_title="Stablecoins")
    response = get(client, path)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = Page(response.body.decode())
    assert page.text["h1"] == heading and page.text["p"]
    assert "script" not in page.names()


def test_an_error_page_escapes_what_the_client_sent(client, titled):
    titled()
    response = get(client, f"/clips/{EPISODE}?start_time_ms=%3Cimg%20src%3Dx%3E")
    assert response.status_code == 400
    assert "<img" not in response.body.decode() and "&lt;img src=x&gt;" in response.body.decode()


def test_a_missing_source_is_a_404_page(client, titled, s3):
    titled(episode_title="Stablecoins")
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=source_key(EPISODE))
    response = get(client, f"/clips/{EPISODE}?{QUERY}")
    assert response.status_code == 404 and b"missing" in response.body


def test_an_unreachable_catalog_is_a_503_page_with_retry_after(client, titled, monkeypatch):
    from chalicelib.errors import CatalogUnavailable
    from chalicelib.stores import catalog

    titled(episode_title="Stablecoins")

    def down(*args, **kwargs):
        raise CatalogUnavailable("The episode catalog is unavailable; try again later", retry_after_seconds=30)

    monkeypatch.setattr(catalog.Catalog, "find_episode", down)
    response = get(client, f"/clips/{EPISODE}?{QUERY}")
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert Page(response.body.decode()).text["h1"] == "Temporarily unavailable"


def test_a_cached_clip_s_page_is_served_while_the_catalog_is_down(client, titled, monkeypatch):
    from chalicelib.errors import CatalogUnavailable
    from chalicelib.stores import catalog

    titled(episode_title="Stablecoins")
    assert get(client, f"/clips/{EPISODE}?{QUERY}").status_code == 200  # the clip is cut and cached

    def down(*args, **kwargs):
        raise CatalogUnavailable("The episode catalog is unavailable; try again later", retry_after_seconds=30)

    monkeypatch.setattr(catalog.Catalog, "find_episode", down)
    response = get(client, f"/clips/{EPISODE}?{QUERY}")
    assert response.status_code == 200, "as the clip route serves a hit without MongoDB, so does its page"
    assert Page(response.body.decode()).text["h1"] == "Stablecoins"  # the title stored beside the clip


def test_an_unexpected_fault_is_a_500_page_without_details(client, titled, monkeypatch):
    from chalicelib.stores import catalog

    titled(episode_title="Stablecoins")
    monkeypatch.setattr(catalog.Catalog, "find_episode", lambda *a, **k: 1 / 0)
    response = get(client, f"/clips/{EPISODE}?{QUERY}")
    assert response.status_code == 500
    assert b"ZeroDivisionError" not in response.body and b"Traceback" not in response.body
    assert Page(response.body.decode()).text["h1"] == "Something went wrong"
