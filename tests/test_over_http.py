"""The service against moto's S3 server on 127.0.0.1: ranged reads, the clip upload and the pre-signed URL all
cross a real socket, and the URL is fetched the way a browser would."""

from __future__ import annotations

import json

import requests
from chalice.test import Client

from app import app
from tests.audio_tools import FRAME_MS, decode
from tests.conftest import EPISODE, SOURCE_BUCKET, episode_doc, source_key


def test_a_clip_is_cut_over_http_and_its_presigned_url_serves_playable_mp3(moto_server, audio, catalog_file):
    key = source_key(EPISODE)
    moto_server.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=audio["vbr"].data, ContentType="audio/mpeg")
    catalog_file([episode_doc(EPISODE, key)])
    with Client(app, stage_name="local") as client:
        miss = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=12345&duration_ms=6000")
        hit = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=12345&duration_ms=6000&redirect=true")
    assert miss.status_code == 200
    body = json.loads(miss.body)
    assert body["clip_url"].startswith("http://127.0.0.1:")
    response = requests.get(body["clip_url"], timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/mpeg"
    clip = decode(response.content)
    assert clip.stderr == "" and abs(clip.duration_ms - 6000) <= FRAME_MS
    assert hit.status_code == 302
    assert requests.get(hit.headers["Location"], timeout=10).content == response.content
