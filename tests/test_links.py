from __future__ import annotations

import pytest

from chalicelib.errors import ConfigurationError
from chalicelib.settings import Settings
from chalicelib.web import links


class FakeRequest:
    def __init__(self, headers, context_path, event_path, domain=None, stage=None):
        self.headers = headers
        self.context = {"path": context_path, "domainName": domain, "stage": stage}
        self._event = {"path": event_path} if event_path is not None else {}

    def to_original_event(self):
        return self._event


EXECUTE_API = "abc.execute-api.us-east-1.amazonaws.com"
HOSTILE_HEADERS = {
    "host": "evil.example",
    "x-forwarded-proto": "javascript:alert(document.domain)//",
    "x-forwarded-host": "evil.example",
    "forwarded": "host=evil.example;proto=javascript",
}


def test_public_base_url_wins_over_the_request():
    request = FakeRequest({"host": EXECUTE_API}, "/prod/api/v1/x", "/api/v1/x", EXECUTE_API, "prod")
    assert links.base_url(request, "https://clips.example.com/") == "https://clips.example.com"


def test_an_execute_api_domain_gets_https_and_its_stage_from_the_request_context():
    request = FakeRequest(HOSTILE_HEADERS, "/prod/api/v1/audio_clips/e", "/api/v1/audio_clips/e", EXECUTE_API, "prod")
    assert links.base_url(request, None) == f"https://{EXECUTE_API}/prod"


def test_a_custom_domain_gets_its_base_path_mapping_not_the_stage():
    request = FakeRequest(
        HOSTILE_HEADERS, "/audio/api/v1/audio_clips/e", "/api/v1/audio_clips/e", "clips.example.com", "prod"
    )
    assert links.base_url(request, None) == "https://clips.example.com/audio"
    request = FakeRequest(
        HOSTILE_HEADERS, "/api/v1/audio_clips/e", "/api/v1/audio_clips/e", "clips.example.com", "prod"
    )
    assert links.base_url(request, None) == "https://clips.example.com"


@pytest.mark.parametrize(
    "domain", ["evil.example/x", "javascript:alert(1)//", "a b", "user@evil.example", "evil.example:443", "", None]
)
def test_a_request_context_domain_that_is_not_a_domain_name_is_not_used(domain):
    request = FakeRequest(HOSTILE_HEADERS, "/api/v1/audio_clips/e", "/api/v1/audio_clips/e", domain, "prod")
    assert links.base_url(request, None) == "http://localhost"


def test_chalice_local_has_no_stage_and_plain_http():
    request = FakeRequest({"host": "127.0.0.1:8000"}, "/api/v1/audio_clips/e", None)
    assert links.base_url(request, None) == "http://127.0.0.1:8000"
    assert links.base_url(FakeRequest({"host": "localhost:8000"}, "/x", None), None) == "http://localhost:8000"
    assert links.base_url(FakeRequest({"host": "[::1]:8000"}, "/x", None), None) == "http://[::1]:8000"


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.evil.example", "localhost:80@evil.example", "localhost/x", "127.0.0.1:8000 x"]
)
def test_without_api_gateway_a_host_header_other_than_loopback_is_ignored(host):
    assert links.base_url(FakeRequest({**HOSTILE_HEADERS, "host": host}, "/x", None), None) == "http://localhost"


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
