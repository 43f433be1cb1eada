"""Every outside call on the request path is bounded by the request's deadline (api.deadline: the Lambda's
remaining time, at most API Gateway's 29 s, less a margin to answer): the service answers its own 503 with
Retry-After before the deadline, never leaving API Gateway to answer 504."""

from __future__ import annotations

import json
import logging
import time

import pytest
from chalice.local import LambdaContext
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.errors import CatalogUnavailable, StorageTimeout
from chalicelib.settings import Settings
from chalicelib.stores.catalog import open_catalog
from chalicelib.stores.s3 import ATTEMPT_BUDGET_S
from chalicelib.stores.source import SourceAudio, SourceObject
from tests.conftest import EPISODE, SOURCE_BUCKET, episode_doc, source_key
from tests.test_catalog_recovery import Relay


@pytest.fixture
def silent():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a stalled S3 or MongoDB)."""
    relay = Relay()
    yield relay
    relay.stop()


@pytest.fixture
def lambda_remaining_ms(monkeypatch):
    def set_remaining(ms: int):
        monkeypatch.setattr(LambdaContext, "get_remaining_time_in_millis", lambda self: ms)

    return set_remaining


@pytest.mark.parametrize("remaining_ms", [6_000, 9_000])
def test_stalled_s3_is_answered_with_a_503_before_the_deadline(
    silent, catalog_file, lambda_remaining_ms, monkeypatch, caplog, remaining_ms
):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{silent.port}")
    catalog_file([episode_doc(EPISODE, source_key(EPISODE))])
    lambda_remaining_ms(remaining_ms)
    deadline_s = remaining_ms / 1000 - 2  # api.deadline keeps 2 s to answer
    with Client(app, stage_name="local") as client:
        started = time.monotonic()
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=0")
        elapsed = time.monotonic() - started
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert json.loads(response.body)["Message"] == "Audio storage did not answer in time; try again shortly"
    assert elapsed < deadline_s, f"answered after {elapsed:.1f} s, the deadline was {deadline_s} s"
    [line] = [r for r in caplog.records if r.name == "audio_clips.request"]
    assert line.fields["status"] == 503 and line.fields["total_ms"] < deadline_s * 1000


def test_no_s3_attempt_starts_that_could_not_end_before_the_deadline(s3):
    sent = []
    client = wiring.current().s3
    client.meta.events.register_last("before-send.s3", lambda request, **kw: sent.append(request.url))
    source = SourceObject(SOURCE_BUCKET, "k.mp3", 1_000_000, '"etag"')
    audio = SourceAudio(client, source, deadline=time.monotonic() + ATTEMPT_BUDGET_S - 0.5)
    with pytest.raises(StorageTimeout):
        audio.read(0, 1000)
    assert sent == [], "refused before it reached the network"


def test_a_silent_mongodb_is_bounded_by_the_deadline_not_only_by_its_own_timeout(silent):
    catalog = open_catalog(
        Settings.from_env({"MONGODB_URI": f"mongodb://127.0.0.1:{silent.port}/", "MONGODB_TIMEOUT_MS": "3000"})
    )
    started = time.monotonic()
    with pytest.raises(CatalogUnavailable):
        catalog.find_episode(EPISODE, deadline=time.monotonic() + 1.0)
    assert time.monotonic() - started < 1.5


def test_a_catalog_query_with_no_time_left_is_not_sent(silent):
    catalog = open_catalog(Settings.from_env({"MONGODB_URI": f"mongodb://127.0.0.1:{silent.port}/"}))
    started = time.monotonic()
    with pytest.raises(CatalogUnavailable):
        catalog.find_episode(EPISODE, deadline=time.monotonic() - 0.1)
    assert time.monotonic() - started < 0.1


def test_the_catalogs_secret_is_not_fetched_when_no_attempt_could_end_before_the_deadline(monkeypatch):
    from moto import mock_aws

    from chalicelib import deadlines
    from chalicelib.errors import SecretUnavailable
    from chalicelib.stores import secrets

    sent = []
    with mock_aws():
        secrets.reset()
        secrets._install_bounded_provider()
        from aws_lambda_powertools.utilities.parameters import base

        base.DEFAULT_PROVIDERS["ssm"].client.meta.events.register_last(
            "before-send.ssm", lambda request, **kw: sent.append(request.url)
        )
        with deadlines.until(time.monotonic() + 1.0), pytest.raises(SecretUnavailable, match="catalog's config"):
            secrets.fetch_secret("/audio-clips/test/mongodb-uri", "The episode catalog's configuration")
    assert sent == [], "refused before it reached the network"
