"""A clip file says what it is: an ID3v2 tag with the episode's and podcast's titles, the time range and a link
back, in front of the engine's audio, which stays byte for byte what it was."""

from __future__ import annotations

import io
import json

import pytest
from chalice.test import Client
from mutagen.id3 import ID3
from mutagen.mp3 import MP3

from app import app
from chalicelib.audio import attribution
from chalicelib.audio.attribution import ClipStory, clean_text, clean_url, leading_id3_bytes
from chalicelib.audio.cutting import tagged_duration_ms
from chalicelib.clips import service as clips
from chalicelib.stores import catalog
from tests.audio_tools import decode
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, episode_doc, source_key

AUDIO_URL = "https://cdn.example.com/show/ep-42.mp3"


def request(start_ms: int, duration_ms: int):
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def stored(s3, start_ms: int, duration_ms: int) -> bytes:
    key = f"audio_clips/{EPISODE}/{start_ms}-{start_ms + duration_ms}.mp3"
    return s3.get_object(Bucket=CLIPS_BUCKET, Key=key)["Body"].read()


@pytest.fixture
def titled_episode(s3, audio, catalog_file):
    """An episode whose catalog entry has titles and the feed item's enclosure: ``titled_episode('cbr')``."""

    def put(kind: str, **feed):
        key = source_key(EPISODE, "episode.m4a" if kind == "m4a" else "episode.mp3")
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio[kind].data, ContentType=audio[kind].content_type)
        doc = episode_doc(EPISODE, key)
        doc["podcast_title"] = "Tëst Podcast"
        doc["raw_entry_original_feed"].update(episode_title="Stablecoins, Startups — and the Crypto Stack", **feed)
        catalog_file([doc])

    return put


def test_the_tag_holds_the_titles_the_range_and_a_link_back(s3, titled_episode):
    titled_episode("cbr", enclosures=[{"href": AUDIO_URL, "type": "audio/mpeg"}], link="https://example.com/ep-42")
    request(12000, 5000)
    tag = ID3(io.BytesIO(stored(s3, 12000, 5000)))
    assert tag.version[:2] == (2, 4)
    assert tag["TIT2"].text == ["Stablecoins, Startups — and the Crypto Stack (0:12–0:17)"]
    assert tag["TALB"].text == ["Tëst Podcast"] and tag["TPE1"].text == ["Tëst Podcast"]
    assert tag["TLEN"].text == ["5000"]
    assert tag.getall("COMM")[0].text == [
        "A clip of “Stablecoins, Startups — and the Crypto Stack” of Tëst Podcast, from 0:12 to 0:17."
    ]
    assert tag["WOAS"].url == AUDIO_URL
    assert tag.getall("WXXX")[0].url == AUDIO_URL + "#t=12,17"
    assert tag.getall("WXXX")[0].desc == "Full episode at this moment"


def test_without_titles_the_tag_gives_the_range_alone(s3, episode, catalog_file):
    episode("cbr")
    catalog_file([{"guid": EPISODE, "s3_audio_path": f"s3://{SOURCE_BUCKET}/{source_key(EPISODE)}"}])
    body = request(25000, 3000)
    tag = ID3(io.BytesIO(stored(s3, 25000, 3000)))
    assert tag["TIT2"].text == ["Clip 0:25–0:28"]
    assert "TALB" not in tag and "WOAS" not in tag and not tag.getall("WXXX")
    assert "episode_title" not in body and "podcast_title" not in body
    assert body["soundbite"]["title"] == "Clip 0:25–0:28"


@pytest.mark.parametrize("kind", ["cbr", "vbr", "big_id3"])
def test_the_audio_after_the_tag_is_byte_for_byte_the_untagged_clip(s3, titled_episode, monkeypatch, kind):
    titled_episode(kind)
    request(17017, 7000)
    with_tag = stored(s3, 17017, 7000)
    s3.delete_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/17017-24017.mp3")
    monkeypatch.setattr(clips, "tagged", lambda story, audio: audio)
    request(17017, 7000)
    without_tag = stored(s3, 17017, 7000)
    assert with_tag[:3] == b"ID3" and without_tag[:3] != b"ID3"
    assert with_tag[leading_id3_bytes(with_tag) :] == without_tag


@pytest.mark.parametrize("kind", ["cbr", "vbr"])
def test_tagged_clips_stay_sample_exact_and_gapless(s3, titled_episode, audio, kind):
    titled_episode(kind)
    body = request(17017, 7000)
    data = stored(s3, 17017, 7000)
    source, clip = decode(audio[kind].path), decode(data)
    first, expected = round(17017 * 44.1), round(7000 * 44.1)
    assert clip.stderr == ""
    assert clip.frames == expected, "the LAME tag after the ID3 tag still trims the clip to the sample"
    assert clip.samples == source.samples[first : first + expected]
    assert MP3(io.BytesIO(data)).info.length == pytest.approx(7.0, abs=0.03), "tag readers skip the ID3 tag too"
    assert tagged_duration_ms(data) == 7000, "so does the engine's own duration helper"
    assert body["duration_ms"] == 7000


def test_an_m4a_sourced_clip_is_tagged_in_place_of_ffmpegs_own_tag(moto_server, audio, catalog_file):
    key = source_key(EPISODE, "episode.m4a")
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["m4a"].data, ContentType="audio/mp4")
    doc = episode_doc(EPISODE, key)
    catalog_file([doc])
    body = request(5000, 4000)
    data = stored(moto_server, 5000, 4000)
    tag = ID3(io.BytesIO(data))
    assert tag["TIT2"].text == [f"Episode {EPISODE} ({attribution.time_range(5000, body['duration_ms'])})"]
    assert tag["TALB"].text == ["Test Podcast"] and tag["TLEN"].text == [str(body["duration_ms"])]
    assert "TSSE" not in tag, "one tag, ours: FFmpeg's own tag is replaced, not followed"
    assert data[leading_id3_bytes(data) :][:2] in (b"\xff\xfb", b"\xff\xfa"), "the audio's first frame follows"
    assert decode(data).stderr == ""


def test_a_hit_serves_the_tagged_clip_and_its_titles_without_the_catalog(s3, titled_episode, monkeypatch):
    titled_episode("cbr")
    first = request(1000, 2000)

    def no_catalog(*args, **kwargs):
        raise AssertionError("a hit must not ask the catalog")

    monkeypatch.setattr(catalog.Catalog, "find_episode", no_catalog)
    again = request(1000, 2000)
    assert again["cache_hit"] is True
    assert again["episode_title"] == first["episode_title"] == "Stablecoins, Startups — and the Crypto Stack"
    assert again["podcast_title"] == "Tëst Podcast"
    assert again["soundbite"] == first["soundbite"]
    assert ID3(io.BytesIO(stored(s3, 1000, 2000)))["TALB"].text == ["Tëst Podcast"]


def test_the_answer_carries_share_url_titles_and_a_soundbite(s3, titled_episode):
    titled_episode("cbr")
    body = request(12500, 4000)
    assert body["share_url"] == f"http://localhost/clips/{EPISODE}?start_time_ms=12500&duration_ms=4000"
    assert body["soundbite"] == {
        "startTime": 12.5,
        "duration": 4.0,
        "title": "Stablecoins, Startups — and the Crypto Stack (0:12–0:16)",
    }


def test_a_clamped_clip_shares_the_clip_as_asked_and_describes_the_clip_served(s3, titled_episode):
    titled_episode("cbr")
    body = request(38000, 5000)
    assert body["duration_ms"] == 2000
    assert body["share_url"].endswith("start_time_ms=38000&duration_ms=5000")
    assert body["soundbite"]["duration"] == 2.0


def test_hostile_catalog_text_is_cleaned_and_bounded_in_the_tag_and_metadata(s3, episode, catalog_file):
    episode("cbr")
    doc = episode_doc(EPISODE, source_key(EPISODE))
    doc["raw_entry_original_feed"].update(episode_title=HOSTILE, link="javascript:alert(1)")
    catalog_file([doc])
    body = request(0, 2000)
    data = stored(s3, 0, 2000)
    title = ID3(io.BytesIO(data))["TIT2"].text[0]
    assert title.startswith("evil </script>\"'<img src=x onerror=alert(1)>éé")
    assert "\u202e" not in title and "\x00" not in title
    assert len(body["episode_title"].encode()) <= attribution.MAX_TITLE_BYTES
    assert "WOAS" not in ID3(io.BytesIO(data)), "only http(s) links are written"
    assert leading_id3_bytes(data) < 2_000, "a 10 kB title makes no 10 kB tag"
    with Client(app, stage_name="local") as client:  # the hit reads the same title back from S3 metadata
        hit = json.loads(client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=0&duration_ms=2000").body)
    assert hit["cache_hit"] and hit["episode_title"] == body["episode_title"]


HOSTILE = "\u202eevil\u0000</script>\"'<img src=x onerror=alert(1)>" + "é" * 10_000


def test_clean_text_drops_controls_and_overrides_but_keeps_marks():
    assert clean_text("a\u200fb\u202ec\n\td") == "a\u200fbc d"
    assert clean_text("   ") is None and clean_text(None) is None and clean_text(42) is None  # type: ignore[arg-type]


def test_clean_text_cuts_long_text_on_a_character():
    text = clean_text("日本" * 1000, max_bytes=100)
    assert text is not None and len(text.encode()) <= 100 and text.endswith("…")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,x",
        "//example.com/x",
        "https://a b.com/x",
        "ftp://example.com/x",
        "https://example.com/\u0000x",
    ],
)
def test_only_absolute_http_links_are_kept(url):
    assert clean_url(url) is None


def test_a_link_loses_its_own_fragment_for_the_clip_s_one():
    story = ClipStory.of(750_000, 30_000, episode_link="https://example.com/ep.mp3#old")
    assert story.link_at_moment == "https://example.com/ep.mp3#t=750,780"


def test_time_ranges_read_as_clock_times():
    assert attribution.time_range(750_000, 30_000) == "12:30–13:00"
    assert attribution.time_range(3_725_000, 1_000) == "1:02:05–1:02:06"


def test_every_leading_id3_tag_is_replaced():
    first, second = b"ID3\x04\x00\x00\x00\x00\x00\x02ab", b"ID3\x03\x00\x10\x00\x00\x00\x00" + b"\x00" * 10
    audio = b"\xff\xfb\x90\x00rest"
    assert leading_id3_bytes(first + second + audio) == len(first + second)
    assert attribution.tagged(ClipStory.of(0, 1000), first + second + audio).endswith(audio)
    assert leading_id3_bytes(audio) == 0 and leading_id3_bytes(b"ID3") == 0


def test_titles_that_would_overflow_s3_metadata_are_left_out_not_the_clip(s3):
    from chalicelib.stores.clip_cache import METADATA_LIMIT, ClipStore
    from chalicelib.stores.source import SourceObject

    store = ClipStore(s3, CLIPS_BUCKET, 3600)
    source = SourceObject(SOURCE_BUCKET, "show/" + "k" * 1500 + ".mp3", 10, '"etag"')
    titles = {"episode-title": "é" * 200, "podcast-title": "Short"}
    assert store.put("audio_clips/x/0-1000.mp3", b"ID3", source, "x", 1000, False, titles=titles)
    meta = s3.head_object(Bucket=CLIPS_BUCKET, Key="audio_clips/x/0-1000.mp3")["Metadata"]
    assert sum(len(k) + len(v) for k, v in meta.items()) <= METADATA_LIMIT
    assert "episode-title" not in meta and "podcast-title" in meta
    assert store.lookup("audio_clips/x/0-1000.mp3").podcast_title == "Short"
