"""Bounded work per source (issue 19, item 5): S3 requests counted for files built to cost work, and FFmpeg held to
one protocol and a demuxer chosen from the file's first bytes."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.audio.cutting import HEAD_READS
from chalicelib.audio.ffmpeg import input_format, protocols
from chalicelib.stores.source import MAX_READS
from tests.audio_tools import FFMPEG
from tests.conftest import EPISODE, SOURCE_BUCKET, clip_objects, episode_doc, source_key

pytestmark = pytest.mark.usefixtures("stage_lambda_timeout")

EMPTY_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # a whole ID3v2.4 tag of no frames: 10 bytes
TWO_MB_OF_TAGS = EMPTY_ID3 * (2 * 1024 * 1024 // 10)  # 209,715 tags: 208,080 ranged GETs, one per tag, before


@pytest.fixture
def counted(s3, catalog_file):
    """Put a source under EPISODE; the S3 requests the service then sends, by method."""
    sent: list = []

    def put(data: bytes, name: str = "episode.mp3", content_type: str = "audio/mpeg"):
        key = source_key(EPISODE, name)
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=data, ContentType=content_type)
        catalog_file([episode_doc(EPISODE, key)])
        wiring.current().s3.meta.events.register_last("before-send.s3", lambda request, **kw: sent.append(request))
        return key

    put.sent = sent
    return put


def get(start_ms: int = 1000, duration_ms: int = 5000):
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")
    return response.status_code, json.loads(response.body)


def test_two_mb_of_empty_id3_tags_cost_a_handful_of_requests_and_a_422(counted, audio, capsys):
    counted(TWO_MB_OF_TAGS + audio["cbr"].data)
    status, body = get()
    assert status == 422 and "more tags than this service reads" in body["Message"]
    methods = [r.method for r in counted.sent]
    # the clip's HEAD with the stored seek index's GET (the first round of a process that knows nothing of the
    # episode), the source's head, HEAD_READS blocks past it: never one request per tag
    assert sorted(methods) == sorted(["HEAD", "GET", "GET"] + ["GET"] * HEAD_READS), methods
    assert clip_objects(wiring.current().s3) == []
    with capsys.disabled():
        print(f"\n[measure] 2 MB of empty ID3v2 tags: {len(methods)} S3 requests for one clip request ({methods})")


def test_a_real_files_leading_tags_still_take_no_extra_request(counted, audio):
    counted(EMPTY_ID3 * 40 + audio["cbr"].data)  # several tags in a row (WMP, DAI tools), within the head
    status, body = get()
    assert status == 200 and body["duration_ms"] == 5000
    gets = [r.method for r in counted.sent].count("GET")
    assert gets == 3, "the stored seek index (with the clip's HEAD), the head, then the clip's frames"


def test_big_artwork_then_tiny_tags_then_audio_is_still_served(counted, audio):
    from tests.audio_tools import id3v2_tag

    counted(id3v2_tag(600 * 1024) + EMPTY_ID3 * 5000 + audio["cbr"].data)  # 600 KB of art, 50 KB of tiny tags
    status, body = get()
    assert status == 200 and body["duration_ms"] == 5000
    assert len(counted.sent) <= 6


def test_cleanup_reads_the_crafted_file_under_its_own_bounds(counted, audio, caplog):
    key = counted(TWO_MB_OF_TAGS + audio["cbr"].data)
    with Client(app, stage_name="local") as client:
        client.lambda_.invoke(
            "cleanup_clips", client.events.generate_s3_event(SOURCE_BUCKET, key, event_name="ObjectCreated:Put")
        )
    line = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "cleanup"][-1]
    assert line["index"] == "failed" and "reads of" in line["index_error"]
    gets = [r for r in counted.sent if r.method == "GET" and SOURCE_BUCKET in r.url]
    levels = 2  # snap=pause's levels: the head, then the rest streamed once into FFmpeg
    assert len(gets) == 1 + HEAD_READS + levels, [r.url for r in counted.sent]


def test_cleanups_source_reads_stop_at_its_deadline(counted, audio, caplog):
    """With less time left than one S3 attempt may take, cleanup_clips sends no read of the new audio at all."""
    from types import SimpleNamespace

    import app as app_module

    key = counted(audio["vbr"].data)
    context = SimpleNamespace(aws_request_id="r", get_remaining_time_in_millis=lambda: 3_000)
    with pytest.raises(Exception, match="did not answer in time"):
        app_module.cleanup_clips(
            {"Records": [json.loads(json.dumps(created_record(key)))]}, context
        )  # the purge's first HEAD is refused: Lambda retries the event
    assert counted.sent == []


def created_record(key: str) -> dict:
    return {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": SOURCE_BUCKET}, "object": {"key": key, "size": 1}},
    }


def alternating_frames(parts_dir, seconds: int) -> bytes:
    """MP3 frames alternating between 44.1 and 48 kHz four by four: a seek index of one run per four frames."""
    import subprocess

    from chalicelib.audio import mp3

    streams = []
    for rate in (44100, 48000):
        path = parts_dir / f"tone{rate}.mp3"
        subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"sine=d={seconds}:r={rate}",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "64k",
                "-reservoir",
                "0",
                "-write_xing",
                "0",
                "-id3v2_version",
                "0",
                str(path),
            ],
            check=True,
        )
        data = path.read_bytes()
        layout = mp3.read_layout(lambda start, end, data=data: data[start:end])
        streams.append([data[at : at + h.length] for at, h in mp3.walk_frames(data, layout.audio_start)])
    groups = [[b"".join(frames[i : i + 4]) for i in range(0, len(frames) - 3, 4)] for frames in streams]
    return b"".join(a + b for a, b in zip(*groups, strict=False))


def test_a_source_laid_out_in_hundreds_of_pieces_is_a_422_after_max_reads(counted, tmp_path):
    counted(alternating_frames(tmp_path, 20))
    status, body = get(5000, 5000)
    assert status == 422 and "more pieces than this service reads" in body["Message"]
    source_gets = [r for r in counted.sent if r.method == "GET" and SOURCE_BUCKET in r.url]
    assert len(source_gets) == MAX_READS, len(source_gets)


# ---------------------------------------------------------------- FFmpeg: one protocol, a demuxer we chose


@pytest.mark.parametrize(
    "head, demuxer",
    [
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00", "mov"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "mov"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac"),
        (EMPTY_ID3 * 3 + b"\xff\xf9\x50\x80\x02\x1f\xfc", "aac"),
        (b"OggS\x00\x02", "ogg"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"\xff\xfb\x90\x64", "mp3"),
        (b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n", "mp3"),
        (b"ffconcat version 1.0\nfile http://169.254.169.254/\n", "mp3"),
        (b"RIFF\x24\x00\x00\x00AVI LIST", "mp3"),
    ],
)
def test_the_demuxer_is_chosen_from_the_first_bytes_never_by_ffmpegs_probe(head, demuxer):
    assert input_format(head) == demuxer


def test_ffmpeg_may_open_only_the_sources_own_protocol():
    assert protocols("https://bucket.s3.us-east-1.amazonaws.com/k?X-Amz-Signature=x") == "https,tls,tcp"
    assert protocols("http://127.0.0.1:5000/bucket/k") == "http,tcp"


@pytest.fixture
def listener():
    """A loopback HTTP server recording every path asked of it (a URL an attacker would like FFmpeg to open)."""
    asked: list = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def test_an_hls_playlist_posing_as_audio_never_makes_ffmpeg_open_its_segments(moto_server, catalog_file, listener):
    url, asked = listener
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/internal-secret.ts\n#EXT-X-ENDLIST\n"
    key = source_key(EPISODE)
    moto_server.put_object(
        Bucket=SOURCE_BUCKET, Key=key, Body=playlist.encode(), ContentType="application/vnd.apple.mpegurl"
    )
    catalog_file([episode_doc(EPISODE, key)])
    status, body = get(0)
    assert status == 422 and body["Code"] == "UnprocessableEntityError"
    assert asked == [], "FFmpeg opened a URL the source named"


def test_adts_aac_is_read_with_the_aac_demuxer(moto_server, catalog_file, tmp_path):
    import subprocess

    path = tmp_path / "episode.aac"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=12", "-c:a", "aac", "-f", "adts", str(path)],
        check=True,
    )
    key = source_key(EPISODE, "episode.aac")
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=path.read_bytes(), ContentType="audio/aac")
    catalog_file([episode_doc(EPISODE, key)])
    status, body = get(3000, 4000)
    assert status == 200 and abs(body["duration_ms"] - 4000) <= 30
