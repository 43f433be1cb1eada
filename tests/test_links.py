from __future__ import annotations

import pytest

from chalicelib.errors import ConfigurationError
from chalicelib.settings import Settings
from chalicelib.web import links


class FakeRequest:
    def __init__(self, headers, context_path, event_path):
        self.headers = headers
        self.context = {"path": context_path}
        self._event = {"path": event_path} if event_path is not None else {}

    def to_original_event(self):
        return self._event


def test_public_base_url_wins_over_the_request():
    request = FakeRequest({"host": "abc.execute-api.us-east-1.amazonaws.com"}, "/prod/api/v1/x", "/api/v1/x")
    assert links.base_url(request, "https://clips.example.com/") == "https://clips.example.com"


def test_the_stage_path_of_an_execute_api_host_is_kept():
    request = FakeRequest(
        {"host": "abc.execute-api.us-east-1.amazonaws.com", "x-forwarded-proto": "https"},
        "/prod/api/v1/audio_clips/e",
        "/api/v1/audio_clips/e",
    )
    assert links.base_url(request, None) == "https://abc.execute-api.us-east-1.amazonaws.com/prod"


def test_chalice_local_has_no_stage_and_plain_http():
    request = FakeRequest({"host": "127.0.0.1:8000"}, "/api/v1/audio_clips/e", None)
    assert links.base_url(request, None) == "http://127.0.0.1:8000"


def test_play_and_share_urls_name_the_clip():
    base = "https://clips.example.com"
    assert links.play_url(base, "substack:12", 5000, 30000) == (
        "https://clips.example.com/api/v1/audio_clips/substack:12?start_time_ms=5000&duration_ms=30000&redirect=true"
    )
    assert (
        links.share_url(base, "e-1", 0, 1000) == "https://clips.example.com/clips/e-1?start_time_ms=0&duration_ms=1000"
    )


@pytest.mark.parametrize("value", ["clips.example.com", "ftp://x", "https://x/?a=1", "https://"])
def test_a_malformed_public_base_url_fails_naming_it(value):
    with pytest.raises(ConfigurationError, match="PUBLIC_BASE_URL"):
        Settings.from_env({"PUBLIC_BASE_URL": value})


def test_public_base_url_is_read_without_its_trailing_slash():
    assert (
        Settings.from_env({"PUBLIC_BASE_URL": "https://c.example.com/v/"}).public_base_url == "https://c.example.com/v"
    )
