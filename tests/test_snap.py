"""``snap=pause`` (contract section 6) on real speech: espeak-ng phrases with gaps of known lengths over a -50 dBFS
noise floor (tests/speech.py), as CBR and VBR MP3 and as M4A.

The truth is the fixture's own: where each gap lies, to the sample. For every request the test works out from
that truth which gap the contract's rules pick (the one nearest the asked start among those overlapping
``[start - 2000, start + 250]``; then, from the served start, the one nearest the end among those overlapping
``[end - 2000, end + 2000]``) and checks that the served start and end lie inside it as the rules say: the start
at most 400 ms before the gap ends, the end at least 100 ms after it begins; no such gap, no change.
"""

from __future__ import annotations

import json
import math
from typing import Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.clips.service import ClipRequest
from tests.audio_tools import decode
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET, episode_doc, source_key
from tests.speech import Speech, make_speech, require_espeak
from tests.test_cleanup import invoke, record

pytestmark = pytest.mark.usefixtures("stage_lambda_timeout")  # cleanup_clips with its stage's 120 s

ROUTE = f"/api/v1/audio_clips/{EPISODE}"
# (asked start, asked duration): gaps of 160 to 1,500 ms near both ends, and boundaries with no gap in reach
ASKED = [
    (600, 3000),
    (5500, 10_000),
    (6600, 5000),
    (9000, 30_000),
    (12_000, 8000),
    (13_500, 15_000),
    (16_000, 4000),
    (19_000, 12_000),
    (22_000, 20_000),
    (27_000, 6000),
    (31_000, 10_000),
    (36_000, 5000),
    (40_000, 5000),
    (45_000, 3000),
]


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    require_espeak()
    return make_speech(str(tmp_path_factory.mktemp("speech")))


def put_episode(s3, catalog_file, speech: Speech, name: str) -> str:
    key = source_key(EPISODE, "episode.m4a" if name.endswith(".m4a") else "episode.mp3")
    with open(speech.path(name), "rb") as handle:
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=handle.read())
    catalog_file([episode_doc(EPISODE, key)])
    return key


def ask(client, start_ms: int, duration_ms: int, snap: str = "pause", **extra: str):
    query = f"start_time_ms={start_ms}&duration_ms={duration_ms}&snap={snap}"
    query += "".join(f"&{name}={value}" for name, value in extra.items())
    return client.http.get(f"{ROUTE}?{query}", headers={"Host": "127.0.0.1:8000"})


def served(client, start_ms: int, duration_ms: int) -> dict:
    response = ask(client, start_ms, duration_ms)
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def nearest_gap(speech: Speech, at: int, low: int, high: int, after: int = -1) -> Optional[Tuple[int, int]]:
    """The true gap the contract's rule picks: nearest ``at`` among those overlapping [low, high] (ending after
    ``after``: an end's gap must leave a clip behind the start)."""
    near = [g for g in speech.gaps if g[0] < high and g[1] > low and g[1] > after and g[1] - g[0] >= 150]
    return min(near, key=lambda g: max(g[0] - at, at - g[1], 0), default=None)


def assert_snapped_per_contract(speech: Speech, asked: Tuple[int, int], body: dict, slack_ms: int = 0) -> None:
    """``slack_ms``: how far the served timeline may sit from FFmpeg's decode of the source (M4A clips: one AAC
    frame, issue 20)."""
    start, duration = asked
    got_start, got_end = body["start_time_ms"], body["start_time_ms"] + body["duration_ms"]
    gap = nearest_gap(speech, start, start - 2000, start + 250)
    if gap is None:
        assert got_start == start, (asked, body, "no gap in the start's window: the start stays")
    else:
        assert gap[0] - slack_ms <= got_start <= gap[1] + slack_ms, (asked, got_start, gap)
        assert gap[1] - got_start <= 400 + slack_ms, (asked, got_start, gap, "at most 400 ms before the gap ends")
    end = got_start + duration
    gap = nearest_gap(speech, end, end - 2000, end + 2000, after=got_start + 1000)
    if gap is None:
        assert got_end == end, (asked, body, "no gap in the end's window: the end stays")
    else:
        assert gap[0] + 100 - slack_ms <= got_end <= gap[1] + slack_ms, (asked, got_end, gap)
    assert body["requested_start_time_ms"] == start and body["requested_duration_ms"] == duration
    assert body["snap"] == "pause"


# ---------------------------------------------------------------- where the clip starts and ends


@pytest.mark.slow
@pytest.mark.parametrize("name", ["speech-cbr.mp3", "speech-vbr.mp3"])
def test_snapped_mp3_clips_start_and_end_inside_the_true_gaps(s3, catalog_file, speech, name):
    put_episode(s3, catalog_file, speech, name)
    with Client(app, stage_name="local") as client:
        for asked in ASKED:
            body = served(client, *asked)
            assert_snapped_per_contract(speech, asked, body)
            assert wiring.current().clips.served_request(ClipRequest(EPISODE, *asked, "pause"), 1e12) == ClipRequest(
                EPISODE, body["start_time_ms"], body["duration_ms"]
            )


@pytest.mark.slow
def test_snapped_m4a_clips_start_and_end_inside_the_true_gaps(moto_server, catalog_file, speech):
    put_episode(moto_server, catalog_file, speech, "speech.m4a")
    with Client(app, stage_name="local") as client:
        for asked in ASKED[::2]:
            assert_snapped_per_contract(speech, asked, served(client, *asked), slack_ms=25)


def test_levels_stored_at_upload_place_the_same_clips_as_decoded_windows(s3, catalog_file, speech, caplog):
    key = put_episode(s3, catalog_file, speech, "speech-cbr.mp3")
    with Client(app, stage_name="local") as client:
        decoded = [served(client, *asked) for asked in ASKED[1:6]]
    invoke(record(key, "ObjectCreated:Put"))  # keeps those clips (cut from the current audio); stores its levels
    assert s3.head_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{EPISODE}/levels.bin")["ContentLength"] == round(
        speech.seconds * 100
    )
    listed = s3.list_objects_v2(Bucket=CLIPS_BUCKET, Prefix=f"audio_clips/{EPISODE}/")["Contents"]
    clips = [o["Key"] for o in listed if o["Key"].endswith((".mp3", ".snap-pause.json"))]
    assert len(clips) >= 5, "a late event of the current audio keeps its clips"
    for clip in clips:  # so that the same requests are misses again, now with the stored levels
        s3.delete_object(Bucket=CLIPS_BUCKET, Key=clip)
    with Client(app, stage_name="local") as client:
        stored = [served(client, *asked) for asked in ASKED[1:6]]
    assert [b["cache_hit"] for b in stored] == [False] * 5
    for asked, body in zip(ASKED[1:6], stored, strict=True):
        assert_snapped_per_contract(speech, asked, body)
    lines = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "request"]
    assert [line.get("levels") for line in lines[-5:]] == ["stored"] * 5
    assert [line.get("levels") for line in lines[:5]] == ["decoded"] * 5
    for a, b in zip(decoded, stored, strict=True):  # the same levels up to rounding to half a decibel
        assert abs(a["start_time_ms"] - b["start_time_ms"]) <= 20 and abs(a["duration_ms"] - b["duration_ms"]) <= 40


def test_levels_of_replaced_audio_are_not_used(s3, catalog_file, speech, caplog):
    key = put_episode(s3, catalog_file, speech, "speech-cbr.mp3")
    invoke(record(key, "ObjectCreated:Put"))
    with open(speech.path("speech-vbr.mp3"), "rb") as handle:  # replaced, its event not delivered yet
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=handle.read())
    with Client(app, stage_name="local") as client:
        body = served(client, 19_000, 12_000)
    assert_snapped_per_contract(speech, (19_000, 12_000), body)
    lines = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "request"]
    assert lines[-1]["levels"] == "decoded", "the stored levels measured another version of the source"


def test_over_a_music_bed_the_clip_still_starts_and_ends_in_the_gaps(s3, catalog_file, speech):
    """Best effort (README): a bed 17 dB under the speech; the quiet end of a word over it can read as the start of
    the pause, so an end is only asked to be inside the gap, not 100 ms into it."""
    put_episode(s3, catalog_file, speech, "speech-bed.mp3")
    with Client(app, stage_name="local") as client:
        for start, duration in ASKED[1:]:
            body = served(client, start, duration)
            got_start, got_end = body["start_time_ms"], body["start_time_ms"] + body["duration_ms"]
            gap = nearest_gap(speech, start, start - 2000, start + 250)
            assert (gap is None and got_start == start) or (gap and 0 <= gap[1] - got_start <= 400), (start, body)
            end = got_start + duration
            gap = nearest_gap(speech, end, end - 2000, end + 2000, after=got_start + 1000)
            assert (gap is None and got_end == end) or (gap and gap[0] <= got_end <= gap[1]), (start, body)


def test_music_without_pauses_is_served_as_asked(s3, catalog_file, speech):
    put_episode(s3, catalog_file, speech, "music.mp3")
    with Client(app, stage_name="local") as client:
        for start, duration in ((5000, 10_000), (20_000, 5000)):
            body = served(client, start, duration)
            assert (body["start_time_ms"], body["duration_ms"]) == (start, duration)
            assert (body["requested_start_time_ms"], body["requested_duration_ms"]) == (start, duration)


def test_a_boundary_with_no_pause_in_its_window_stays(s3, catalog_file, speech):
    put_episode(s3, catalog_file, speech, "speech-cbr.mp3")
    start = 9000  # the nearest gaps end at 5,722 and begin at 9,861: outside [7,000, 9,250]
    assert nearest_gap(speech, start, start - 2000, start + 250) is None
    with Client(app, stage_name="local") as client:
        body = served(client, start, 30_000)
    assert body["start_time_ms"] == start
    assert_snapped_per_contract(speech, (start, 30_000), body)


# ---------------------------------------------------------------- the clip served


def test_the_clip_is_the_sources_samples_from_the_served_start(s3, catalog_file, speech):
    put_episode(s3, catalog_file, speech, "speech-vbr.mp3")
    with Client(app, stage_name="local") as client:
        body = served(client, 12_000, 8000)
    assert body["start_time_ms"] != 12_000, "it snapped"
    key = f"audio_clips/{EPISODE}/{body['start_time_ms']}-{body['start_time_ms'] + body['duration_ms']}.mp3"
    clip = decode(s3.get_object(Bucket=CLIPS_BUCKET, Key=key)["Body"].read())
    source = decode(speech.path("speech-vbr.mp3"))
    at = body["start_time_ms"] * 44100 / 1000  # 11,585 ms is sample 510,898.5: either neighbour is the start
    expected = body["duration_ms"] * 44100 / 1000
    assert abs(clip.frames - expected) <= 1, "the served duration, to the sample"
    count = clip.frames - 1
    starts = [
        first for first in {math.floor(at), math.ceil(at)} if clip.samples[:count] == source.samples[first:][:count]
    ]
    assert starts and abs(starts[0] - at) <= 0.5, "sample for sample from the served start"


def test_play_url_answers_the_same_clip_and_a_second_request_is_a_hit(s3, catalog_file, speech):
    put_episode(s3, catalog_file, speech, "speech-cbr.mp3")
    with Client(app, stage_name="local") as client:
        first = served(client, 16_000, 4000)
        again = served(client, 16_000, 4000)
        play = urlsplit(first["play_url"])
        redirect = client.http.get(f"{play.path}?{play.query}")
    assert first["cache_hit"] is False and again["cache_hit"] is True
    assert {k: again[k] for k in ("start_time_ms", "duration_ms")} == {
        k: first[k] for k in ("start_time_ms", "duration_ms")
    }
    assert parse_qs(play.query) == {
        "start_time_ms": ["16000"],
        "duration_ms": ["4000"],
        "snap": ["pause"],
        "redirect": ["true"],
    }, "the request as asked"
    share = parse_qs(urlsplit(first["share_url"]).query)
    assert share == {"start_time_ms": ["16000"], "duration_ms": ["4000"], "snap": ["pause"]}
    served_key = f"{first['start_time_ms']}-{first['start_time_ms'] + first['duration_ms']}.mp3"
    assert redirect.status_code == 302
    assert urlsplit(redirect.headers["Location"]).path.endswith(served_key)
    assert urlsplit(again["clip_url"]).path.endswith(served_key)


def test_an_unsnapped_request_for_the_served_range_shares_the_clip(s3, catalog_file, speech):
    put_episode(s3, catalog_file, speech, "speech-cbr.mp3")
    with Client(app, stage_name="local") as client:
        snapped = served(client, 27_000, 6000)
        plain = client.http.get(
            f"{ROUTE}?start_time_ms={snapped['start_time_ms']}&duration_ms={snapped['duration_ms']}"
        )
    assert json.loads(plain.body)["cache_hit"] is True
    clips = [o["Key"] for o in s3.list_objects_v2(Bucket=CLIPS_BUCKET)["Contents"]]
    assert sorted(k.rsplit("/", 1)[-1] for k in clips) == sorted(
        [
            f"{snapped['start_time_ms']}-{snapped['start_time_ms'] + snapped['duration_ms']}.mp3",
            "27000-33000.snap-pause.json",
        ]
    )


def test_snapped_clips_are_purged_with_the_others(s3, catalog_file, speech):
    key = put_episode(s3, catalog_file, speech, "speech-cbr.mp3")
    with Client(app, stage_name="local") as client:
        served(client, 5500, 10_000)
    assert s3.list_objects_v2(Bucket=CLIPS_BUCKET)["KeyCount"] == 2
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=key)  # the audio is gone: what was made from it goes too
    invoke(record(key, "ObjectRemoved:Delete"))
    assert s3.list_objects_v2(Bucket=CLIPS_BUCKET)["KeyCount"] == 0


def test_the_share_page_shows_the_served_range_and_links_the_request_as_asked(s3, catalog_file, speech):
    put_episode(s3, catalog_file, speech, "speech-cbr.mp3")
    with Client(app, stage_name="local") as client:
        body = served(client, 13_500, 15_000)
        page = client.http.get(
            f"/clips/{EPISODE}?start_time_ms=13500&duration_ms=15000&snap=pause", headers={"Host": "127.0.0.1:8000"}
        )
    assert page.status_code == 200
    html = page.body.decode()
    assert "snap=pause" in html and "start_time_ms=13500" in html
    served_seconds = body["start_time_ms"] // 1000
    assert f"0:{served_seconds:02d}" in html, "the time range shown is the one served"


# ---------------------------------------------------------------- the parameter


@pytest.mark.parametrize("value", ["", "Pause", "silence", "true"])
def test_any_other_snap_is_a_400_naming_the_allowed_value(s3, value):
    with Client(app, stage_name="local") as client:
        response = ask(client, 1000, 5000, snap=value)
        page = client.http.get(f"/clips/{EPISODE}?start_time_ms=1000&snap={value}")
    assert response.status_code == 400
    assert "snap must be 'pause'" in json.loads(response.body)["Message"]
    assert page.status_code == 400
    assert s3.list_objects_v2(Bucket=CLIPS_BUCKET)["KeyCount"] == 0
