"""Catalog links are made ASCII before they reach the clip's ID3 tag (issue 19, item 4): ID3's URL frames are
Latin-1, and a link such as ``https://example.com/épisode—1`` made every new clip of its episode a 500. The path
and query are percent-encoded (UTF-8), the host IDNA-encoded; a link that still cannot be encoded is left out."""

from __future__ import annotations

import io
import json

import pytest
from chalice.test import Client
from mutagen.id3 import ID3

from app import app
from chalicelib.audio.attribution import ClipStory, clean_url, id3_tag
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, episode_doc, source_key
from tests.test_share_page import Page

UNENCODABLE_HOST = "https://" + "ü" * 70 + ".example/épisode"  # one label, 70 characters: IDNA refuses it


@pytest.mark.parametrize(
    "link, ascii_link",
    [
        ("https://example.com/épisode—1", "https://example.com/%C3%A9pisode%E2%80%941"),
        ("https://bücher.example/épisode—1?t=ü#x", "https://xn--bcher-kva.example/%C3%A9pisode%E2%80%941?t=%C3%BC"),
        ("https://例え.テスト/パス", "https://xn--r8jz45g.xn--zckzah/%E3%83%91%E3%82%B9"),
        ("https://example.com/already%20escaped/é", "https://example.com/already%20escaped/%C3%A9"),
        ("https://user:pä@Example.COM:8443/x", "https://user:p%C3%A4@example.com:8443/x"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        (UNENCODABLE_HOST, None),
        ("https://example.com:99999/x", None),
        ("javascript:alert(1)", None),
    ],
)
def test_catalog_links_are_made_ascii_or_dropped(link, ascii_link):
    assert clean_url(link) == ascii_link


def test_the_tag_of_a_clip_with_an_em_dash_link_holds_it_percent_encoded():
    tag = ID3(io.BytesIO(id3_tag(ClipStory.of(0, 5000, "Épisode", "Podcast", "https://example.com/épisode—1"))))
    assert tag["WOAS"].url == "https://example.com/%C3%A9pisode%E2%80%941"
    assert tag.getall("WXXX")[0].url == "https://example.com/%C3%A9pisode%E2%80%941#t=0,5"


@pytest.fixture
def linked(s3, audio, catalog_file):
    def put(link):
        key = source_key(EPISODE)
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["cbr"].data, ContentType="audio/mpeg")
        doc = episode_doc(EPISODE, key)
        doc["raw_entry_original_feed"]["enclosures"] = [{"href": link}]
        catalog_file([doc])

    return put


@pytest.mark.parametrize(
    "link, woas",
    [
        ("https://example.com/épisode—1", "https://example.com/%C3%A9pisode%E2%80%941"),
        ("https://bücher.example/épisode—1", "https://xn--bcher-kva.example/%C3%A9pisode%E2%80%941"),
        (UNENCODABLE_HOST, None),
    ],
)
def test_a_unicode_catalog_link_gives_a_clip_and_a_share_page_not_a_500(s3, linked, link, woas):
    linked(link)
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=5000")
        page = client.http.get(f"/clips/{EPISODE}?start_time_ms=1000&duration_ms=5000", headers={"Accept": "*/*"})
    assert response.status_code == 200, response.body
    assert json.loads(response.body)["duration_ms"] == 5000
    clip = s3.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/1000-6000.mp3")["Body"].read()
    tag = ID3(io.BytesIO(clip))
    assert str(tag["TIT2"]) == f"Episode {EPISODE} (0:01–0:06)"
    assert (tag["WOAS"].url if "WOAS" in tag else None) == woas
    assert page.status_code == 200
    links = [a["href"] for t, a in Page(page.body.decode()).tags if t == "a"]
    assert links == ([f"{woas}#t=1,6"] if woas else [])
