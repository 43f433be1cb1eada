from __future__ import annotations

import pytest

from chalicelib.errors import ConfigurationError
from chalicelib.settings import Settings


def test_defaults_are_the_contracts():
    settings = Settings.from_env({})
    assert settings.source_bucket == "pod-insights-raw" and settings.clips_bucket == "pod-insights-clips"
    assert settings.mongodb_uri is None and settings.mongodb_db == "podinsight"
    assert settings.max_clip_ms == 60_000 and settings.clip_url_ttl_seconds == 86_400
    assert settings.mongodb_timeout_ms <= 3_000


def test_variables_override_defaults():
    settings = Settings.from_env({"CLIPS_BUCKET": "c", "MAX_CLIP_MS": "90000", "MONGODB_URI": "mongodb://h/"})
    assert (settings.clips_bucket, settings.max_clip_ms, settings.mongodb_uri) == ("c", 90_000, "mongodb://h/")


@pytest.mark.parametrize(
    "name, value",
    [
        ("MAX_CLIP_MS", "sixty"),
        ("MAX_CLIP_MS", "999"),
        ("CLIP_URL_TTL_SECONDS", "-1"),
        ("CLIP_URL_TTL_SECONDS", "99999999"),
        ("MONGODB_TIMEOUT_MS", "30000"),
    ],
)
def test_a_malformed_variable_fails_at_start_naming_it(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({name: value})


def test_a_bad_ffmpeg_path_fails_naming_it(tmp_path):
    from chalicelib.audio.ffmpeg import find_ffmpeg

    with pytest.raises(ConfigurationError, match="FFMPEG_PATH"):
        find_ffmpeg(str(tmp_path / "missing"))


def test_secrets_can_be_read_from_ssm_by_name(monkeypatch):
    import boto3
    from moto import mock_aws

    from chalicelib import wiring

    with mock_aws():
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(Name="/audio-clips/mongodb-uri", Value="mongodb://u:pw@db.example/", Type="SecureString")
        ssm.put_parameter(Name="/audio-clips/atlas-secret", Value="sk-123", Type="SecureString")
        for name, value in {
            "MONGODB_URI_SSM_PARAMETER": "/audio-clips/mongodb-uri",
            "ATLAS_PROJECT_ID": "g",
            "ATLAS_CLUSTER_NAME": "c",
            "ATLAS_CLIENT_ID": "id",
            "ATLAS_CLIENT_SECRET_SSM_PARAMETER": "/audio-clips/atlas-secret",
        }.items():
            monkeypatch.setenv(name, value)
        wiring.reset()
        settings = wiring.current().settings
    assert settings.mongodb_uri == "mongodb://u:pw@db.example/" and settings.atlas.client_secret == "sk-123"
    assert "pw@" not in repr(settings) and "sk-123" not in repr(settings)


def test_a_missing_ssm_parameter_fails_naming_it(monkeypatch):
    from moto import mock_aws

    from chalicelib import wiring

    with mock_aws():
        monkeypatch.setenv("MONGODB_URI_SSM_PARAMETER", "/nope")
        wiring.reset()
        with pytest.raises(ConfigurationError, match="/nope"):
            wiring.current().settings


@pytest.mark.parametrize(
    "env, names",
    [
        ({"ATLAS_PROJECT_ID": "g"}, "ATLAS_CLUSTER_NAME"),
        ({"ATLAS_PROJECT_ID": "g", "ATLAS_CLUSTER_NAME": "c"}, "ATLAS_CLIENT_ID"),
        ({"ATLAS_AUTO_RESUME": "yes"}, "ATLAS_AUTO_RESUME"),
    ],
)
def test_incomplete_atlas_settings_fail_naming_what_is_missing(env, names):
    with pytest.raises(ConfigurationError, match=names):
        Settings.from_env(env)
