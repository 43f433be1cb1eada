"""FFmpeg's network and TLS faults are the storage's (503, retry), not the audio's (422); FFmpeg always has a CA
bundle to verify S3's certificate with, certifi's or the system's."""

from __future__ import annotations

import http.server
import os
import stat
import sys
import threading
import time

import imageio_ffmpeg
import pytest

from chalicelib.audio import ffmpeg
from chalicelib.audio.ffmpeg import transcode_to_mp3
from chalicelib.errors import StorageUnavailable, Undecodable, WrongRegion
from tests.tls_server import TlsServer


@pytest.fixture
def tls_server(tmp_path, audio):
    server = TlsServer(tmp_path, audio["m4a"].data)
    yield server
    server.stop()


def test_an_untrusted_certificate_is_a_503_not_a_422(tls_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as failure:
        transcode_to_mp3(imageio_ffmpeg.get_ffmpeg_exe(), tls_server.url, 0, 2000, deadline=time.monotonic() + 20)
    assert failure.value.status == 503 and failure.value.headers["Retry-After"]
    assert "certificate verify failed" in failure.value.detail
    assert time.monotonic() - started < 5


def test_the_same_server_trusted_serves_the_clip(tls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.certificate))
    result = transcode_to_mp3(imageio_ffmpeg.get_ffmpeg_exe(), tls_server.url, 0, 2000, deadline=time.monotonic() + 20)
    assert result.data and (result.samples, result.sample_rate) == (88200, 44100)
    assert result.episode_duration_ms is None, "the clip ends before the episode: its length is not needed"


@pytest.fixture
def answering(request):
    """A plain HTTP server on 127.0.0.1 answering every GET with this status and no body."""
    status = request.param

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/episode.m4a"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("answering, error", [(400, WrongRegion), (503, StorageUnavailable)], indirect=["answering"])
def test_s3s_http_answers_to_ffmpeg_say_whether_to_retry(answering, error):
    with pytest.raises(error) as failure:
        transcode_to_mp3(imageio_ffmpeg.get_ffmpeg_exe(), answering, 0, 2000, deadline=time.monotonic() + 20)
    assert not isinstance(failure.value, Undecodable)
    assert ("Retry-After" in failure.value.headers) == (failure.value.status == 503)


def test_without_certifi_the_system_ca_bundle_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "certifi", None)  # import certifi now raises ImportError
    bundle = ffmpeg._ca_bundle()
    assert bundle in ffmpeg.SYSTEM_CA_BUNDLES and os.path.isfile(bundle)


def test_ffmpeg_is_never_handed_an_empty_ca_bundle_path(tmp_path, monkeypatch):
    seen = tmp_path / "ssl_cert_file"
    fake = tmp_path / "ffmpeg"
    fake.write_text(f'#!/bin/sh\nprintf "%s" "${{SSL_CERT_FILE-unset}}" > {seen}\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setitem(sys.modules, "certifi", None)
    with pytest.raises(Undecodable):
        transcode_to_mp3(str(fake), "https://127.0.0.1:9/x.m4a", 0, 1000, deadline=time.monotonic() + 5)
    assert seen.read_text() in ffmpeg.SYSTEM_CA_BUNDLES
