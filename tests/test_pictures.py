"""The clip's waveform (audiowaveform JSON) and share card (PNG), through Chalice's test client over in-process S3:
shapes and bounds, loudness followed, cached beside the clip with the source version, and the clip route's errors."""

from __future__ import annotations

import io
import json
import subprocess
from urllib.parse import unquote, urlsplit

import pytest
from chalice.test import Client
from PIL import Image, ImageStat

from app import app
from chalicelib.clips import pictures as pictures_module
from tests.audio_tools import FFMPEG
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, episode_doc, source_key

LOUD_S, QUIET_S = 10, 10


@pytest.fixture(scope="session")
def loud_then_quiet(tmp_path_factory) -> bytes:
    """Twenty seconds of pink noise: loud for ten, then 40 dB quieter for ten."""
    path = tmp_path_factory.mktemp("loudness") / "loud-quiet.mp3"
    graph = (
        f"anoisesrc=d={LOUD_S}:c=pink:r=44100:a=0.5:seed=3[a];anoisesrc=d={QUIET_S}:c=pink:r=44100:a=0.005:seed=4[b];"
        "[a][b]concat=n=2:v=0:a=1"
    )
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-filter_complex", graph, "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", path],
        check=True,
    )
    return path.read_bytes()


@pytest.fixture
def client():
    with Client(app, stage_name="local") as test_client:
        yield test_client


@pytest.fixture
def loudness_episode(s3, catalog_file, loud_then_quiet):
    key = source_key(EPISODE)
    s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=loud_then_quiet, ContentType="audio/mpeg")
    catalog_file([episode_doc(EPISODE, key)])
    return key


def get_waveform(client, query: str, episode_id: str = EPISODE):
    return client.http.get(f"/api/v1/audio_clips/{episode_id}/waveform?{query}")


def test_the_waveform_is_audiowaveform_version_2_within_the_contract_bounds(client, loudness_episode):
    response = get_waveform(client, "start_time_ms=2000&duration_ms=12000")
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/json"
    wave = json.loads(response.body)
    assert set(wave) == {"version", "channels", "sample_rate", "samples_per_pixel", "bits", "length", "data"}
    assert (wave["version"], wave["channels"], wave["bits"]) == (2, 1, 8)
    assert 100 <= wave["length"] <= 2000 and len(wave["data"]) == 2 * wave["length"]
    assert all(isinstance(v, int) and -128 <= v <= 127 for v in wave["data"])
    assert all(low <= high for low, high in zip(wave["data"][::2], wave["data"][1::2], strict=True))
    seconds = wave["length"] * wave["samples_per_pixel"] / wave["sample_rate"]
    assert abs(seconds - 12.0) <= wave["samples_per_pixel"] / wave["sample_rate"] + 0.03  # the clip's own length


def test_the_waveform_is_loud_where_the_clip_is_loud(client, loudness_episode):
    """A clip from 5 s to 15 s: its first half is the loud part of the episode, its second the quiet part."""
    wave = json.loads(get_waveform(client, "start_time_ms=5000&duration_ms=10000").body)
    peaks = [max(-low, high) for low, high in zip(wave["data"][::2], wave["data"][1::2], strict=True)]
    cut = len(peaks) // 2
    loud, quiet = peaks[: cut - 5], peaks[cut + 5 :]  # a few pixels either side of the change left out
    assert min(loud) >= 8, "every pixel of the loud half shows it"
    assert max(quiet) <= 2, "the quiet half stays near zero"
    assert sum(loud) / len(loud) > 8 * max(1, sum(quiet) / len(quiet))


def test_the_waveform_is_cached_beside_the_clip_with_the_source_version(client, s3, loudness_episode, monkeypatch):
    first = get_waveform(client, "start_time_ms=1000&duration_ms=4000")
    assert first.status_code == 200
    head = s3.head_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/1000-5000.waveform.json")
    source = s3.head_object(Bucket=SOURCE_BUCKET, Key=loudness_episode)
    assert head["ContentType"] == "application/json" and head["ContentLength"] < 16_000
    assert head["Metadata"]["source-etag"] == source["ETag"]
    assert head["Metadata"]["source-key"] == loudness_episode and head["Metadata"]["episode-id"] == EPISODE

    def no_decode(*args, **kwargs):
        raise AssertionError("a cached waveform is not computed again")

    monkeypatch.setattr(pictures_module, "waveform", no_decode)
    again = get_waveform(client, "start_time_ms=1000&duration_ms=4000")
    assert again.status_code == 200 and json.loads(again.body) == json.loads(first.body)


def test_a_waveform_of_older_audio_is_computed_again(client, s3, loudness_episode, audio):
    first = json.loads(get_waveform(client, "start_time_ms=1000&duration_ms=4000").body)
    s3.put_object(Bucket=SOURCE_BUCKET, Key=loudness_episode, Body=audio["cbr"].data, ContentType="audio/mpeg")
    second = json.loads(get_waveform(client, "start_time_ms=1000&duration_ms=4000").body)
    assert second["data"] != first["data"]
    head = s3.head_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/1000-5000.waveform.json")
    assert head["Metadata"]["source-etag"] == s3.head_object(Bucket=SOURCE_BUCKET, Key=loudness_episode)["ETag"]


@pytest.mark.parametrize(
    ("query", "episode_id", "status", "says"),
    [
        ("start_time_ms=1000", "bad id!", 400, "episode_id"),
        ("duration_ms=5000", EPISODE, 400, "start_time_ms"),
        ("start_time_ms=1000&duration_ms=999", EPISODE, 400, "duration_ms"),
        ("start_time_ms=25000", EPISODE, 400, "duration"),
        ("start_time_ms=1000&snap=loud", EPISODE, 400, "snap"),
        ("start_time_ms=1000", "no-such-episode", 404, "episode"),
    ],
)
def test_the_waveform_answers_the_clip_routes_errors_and_stores_nothing(
    client, s3, loudness_episode, query, episode_id, status, says
):
    response = get_waveform(client, query, episode_id)
    assert response.status_code == status
    body = json.loads(response.body)
    assert set(body) == {"Code", "Message"} and says in body["Message"]
    assert s3.list_objects_v2(Bucket=CLIPS_BUCKET).get("KeyCount", 0) == 0


# ---------------------------------------------------------------- the card route


def card_object(s3, response):
    """The PNG the card route redirects to (the key in its signed URL's path), with its head."""
    assert response.status_code == 302, response.body
    key = unquote(urlsplit(response.headers["Location"]).path).split(f"/{CLIPS_BUCKET}/", 1)[-1].lstrip("/")
    obj = s3.get_object(Bucket=CLIPS_BUCKET, Key=key)
    return key, obj, obj["Body"].read()


def test_the_card_is_a_1200_by_630_png_cached_beside_the_clip(client, s3, loudness_episode, monkeypatch):
    response = client.http.get(f"/clips/{EPISODE}/card.png?start_time_ms=5000&duration_ms=10000")
    key, obj, png = card_object(s3, response)
    assert key == f"audio_clips/{EPISODE}/5000-15000.card.png"
    assert response.headers["Cache-Control"] == "no-store"
    assert obj["ContentType"] == "image/png"
    assert obj["Metadata"]["source-etag"] == s3.head_object(Bucket=SOURCE_BUCKET, Key=loudness_episode)["ETag"]
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (1200, 630))
    assert ImageStat.Stat(image.convert("L")).stddev[0] > 10, "not blank"

    def no_render(*args, **kwargs):
        raise AssertionError("a cached card is not drawn again")

    monkeypatch.setattr(pictures_module.ClipPictures, "waveform_of", no_render)
    monkeypatch.setattr("chalicelib.cards.card.render_card", no_render)
    again = client.http.get(f"/clips/{EPISODE}/card.png?start_time_ms=5000&duration_ms=10000")
    assert card_object(s3, again)[2] == png


@pytest.mark.parametrize("accept", ["*/*", "image/png", "image/webp,image/*;q=0.8,*/*;q=0.5"])
def test_a_client_that_accepts_png_gets_the_card_itself(client, s3, loudness_episode, accept):
    """Contract 6: the card route answers 200 image/png (link-preview crawlers and browsers send such an Accept)."""
    url = f"/clips/{EPISODE}/card.png?start_time_ms=5000&duration_ms=10000"
    first = client.http.get(url, headers={"Accept": accept})  # drawn by this request
    again = client.http.get(url, headers={"Accept": accept})  # read from the cache
    stored = s3.get_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/5000-15000.card.png")["Body"].read()
    for response in (first, again):
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
        assert response.body == stored and Image.open(io.BytesIO(response.body)).size == (1200, 630)
        assert response.headers["Cache-Control"].startswith("public")


@pytest.mark.parametrize(
    ("accept", "inline"),
    [(None, False), ("", False), ("text/html", False), ("image/png;q=0", False), ("*/*", True), ("IMAGE/*", True)],
)
def test_which_accept_headers_get_the_png_itself(accept, inline):
    from chalicelib.web.pictures import accepts_png

    assert accepts_png(accept) is inline


def test_the_card_errors_are_the_share_pages_html_pages(client, s3, loudness_episode):
    response = client.http.get(f"/clips/{EPISODE}/card.png?start_time_ms=99000")
    assert response.status_code == 400 and response.headers["Content-Type"].startswith("text/html")
    assert "duration" in response.body.decode()
    response = client.http.get("/clips/no-such-episode/card.png?start_time_ms=1000")
    assert response.status_code == 404 and response.headers["Content-Type"].startswith("text/html")
    assert s3.list_objects_v2(Bucket=CLIPS_BUCKET).get("KeyCount", 0) == 0


# ---------------------------------------------------------------- the share page


def test_the_share_page_names_its_card_and_the_card_url_answers_the_png(client, s3, loudness_episode):
    from tests.test_share_page import Page

    response = client.http.get(f"/clips/{EPISODE}?start_time_ms=5000&duration_ms=10000")
    assert response.status_code == 200
    page = Page(response.body.decode())
    meta = page.meta()
    card_url = f"http://localhost/clips/{EPISODE}/card.png?start_time_ms=5000&duration_ms=10000"
    assert meta["og:image"] == card_url and meta["twitter:image"] == card_url
    assert (meta["og:image:width"], meta["og:image:height"], meta["og:image:type"]) == ("1200", "630", "image/png")
    assert "0:05 to 0:15" in meta["og:image:alt"] and "waveform" in meta["og:image:alt"]
    assert meta["twitter:card"] == "player"
    location = urlsplit(card_url)
    _, obj, png = card_object(s3, client.http.get(f"{location.path}?{location.query}"))
    assert obj["ContentType"] == "image/png" and Image.open(io.BytesIO(png)).size == (1200, 630)


def test_the_share_page_draws_the_clips_waveform_without_script(client, loudness_episode):
    from tests.test_share_page import Page

    text = client.http.get(f"/clips/{EPISODE}?start_time_ms=5000&duration_ms=10000").body.decode()
    page = Page(text)
    svg = page.first("svg")
    assert svg["role"] == "img" and svg["aria-label"] == "Waveform of the clip"
    assert "script" not in page.names() and "<script" not in text
    strokes = [[int(n) for n in part.replace("V", " ").split()] for part in page.first("path")["d"].split("M") if part]
    heights = [bottom - top for _, top, bottom in strokes]
    assert len(heights) == 90
    assert min(heights[:40]) > 5 * max(heights[50:]), "tall bars where the clip is loud (its first half)"
    assert text.index("<svg") < text.index("<audio"), "above the player, as its picture"


def test_the_share_page_is_served_without_the_waveform_when_it_cannot_be_had(client, loudness_episode, monkeypatch):
    from tests.test_share_page import Page

    def broken(*args, **kwargs):
        raise RuntimeError("FFmpeg crashed")

    monkeypatch.setattr(pictures_module.ClipPictures, "waveform_of", broken)
    response = client.http.get(f"/clips/{EPISODE}?start_time_ms=5000&duration_ms=10000")
    assert response.status_code == 200
    page = Page(response.body.decode())
    assert "svg" not in page.names() and page.first("audio") is not None


def test_an_m4a_episodes_clip_has_its_waveform_too(moto_server, audio, catalog_file):
    """FFmpeg transcodes an M4A source's clip to MP3 (reading the source over S3's HTTP: moto's server here)."""
    key = source_key(EPISODE, "episode.m4a")
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["m4a"].data, ContentType="audio/mp4")
    catalog_file([episode_doc(EPISODE, key)])
    with Client(app, stage_name="local") as client:
        response = get_waveform(client, "start_time_ms=3000&duration_ms=5000")
    assert response.status_code == 200, response.body
    wave = json.loads(response.body)
    assert 100 <= wave["length"] <= 2000 and max(wave["data"]) > 4


def test_the_waveform_and_the_card_are_purged_with_the_episodes_clips(
    client, s3, loudness_episode, stage_lambda_timeout
):
    from tests.test_cleanup import invoke, record

    assert get_waveform(client, "start_time_ms=1000&duration_ms=4000").status_code == 200
    assert client.http.get(f"/clips/{EPISODE}/card.png?start_time_ms=1000&duration_ms=4000").status_code == 302
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=CLIPS_BUCKET)["Contents"]}
    assert {f"audio_clips/{EPISODE}/1000-5000.{name}" for name in ("mp3", "waveform.json", "card.png")} <= keys
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=loudness_episode)  # the audio is gone: what was made from it goes
    invoke(record(loudness_episode))
    assert s3.list_objects_v2(Bucket=CLIPS_BUCKET).get("KeyCount", 0) == 0
