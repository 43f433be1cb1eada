"""Browsers, secrets and cost: what the public route allows, and what never leaks."""

from __future__ import annotations

import json
import os

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from tests.conftest import EPISODE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUTE = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=0"


def call(method, path, origin=None):
    with Client(app, stage_name="local") as client:
        headers = {"Origin": origin} if origin else {}
        return getattr(client.http, method)(path, headers=headers)


@pytest.fixture
def origins(monkeypatch):
    def set_origins(value):
        monkeypatch.setenv("CORS_ALLOW_ORIGINS", value)
        wiring.reset()

    return set_origins


def test_an_allowed_origin_may_read_answers_errors_included(s3, episode, origins):
    origins("https://app.example.com, https://staging.example.com")
    episode("cbr")
    ok = call("get", ROUTE, "https://app.example.com")
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert ok.headers["Vary"] == "Origin"
    error = call("get", "/api/v1/audio_clips/bad!id?start_time_ms=0", "https://staging.example.com")
    assert error.status_code == 400 and error.headers["Access-Control-Allow-Origin"] == "https://staging.example.com"


def test_another_origin_gets_no_cors_grant(s3, episode, origins):
    origins("https://app.example.com")
    episode("cbr")
    response = call("get", ROUTE, "https://evil.example.net")
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers


def test_a_preflight_is_answered_for_allowed_origins(origins):
    origins("https://app.example.com")
    response = call("options", f"/api/v1/audio_clips/{EPISODE}", "https://app.example.com")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert "X-Api-Key" in response.headers["Access-Control-Allow-Headers"]


def test_prod_does_not_allow_every_origin():
    with open(os.path.join(ROOT, ".chalice", "config.json")) as handle:
        config = json.load(handle)
    prod = {**config.get("environment_variables", {}), **config["stages"]["prod"].get("environment_variables", {})}
    assert "*" not in prod.get("CORS_ALLOW_ORIGINS", "")


SECRET_URI = "mongodb+srv://clipsvc:S3cr3t-Pa55w0rd@cluster0.abcde.mongodb.net/?retryWrites=true"


def test_secrets_appear_in_neither_config_nor_logs(s3, episode, monkeypatch, caplog, capsys):
    caplog.set_level("DEBUG")
    for name in os.listdir(os.path.join(ROOT, ".chalice")):
        if name.endswith(".json"):
            with open(os.path.join(ROOT, ".chalice", name)) as handle:
                text = handle.read()
            assert "mongodb://" not in text and "mongodb+srv://" not in text, name
            assert 'ATLAS_CLIENT_SECRET"' not in text and 'ATLAS_PRIVATE_KEY"' not in text, name
    monkeypatch.setenv("MONGODB_URI", "mongodb://clipsvc:S3cr3t-Pa55w0rd@127.0.0.1:9/?authSource=admin")
    monkeypatch.setenv("MONGODB_TIMEOUT_MS", "300")
    monkeypatch.setenv("ATLAS_PROJECT_ID", "g")
    monkeypatch.setenv("ATLAS_CLUSTER_NAME", "c")
    monkeypatch.setenv("ATLAS_CLIENT_ID", "id")
    monkeypatch.setenv("ATLAS_CLIENT_SECRET", "atlas-S3cr3t-value")
    wiring.reset()
    episode("cbr")
    with Client(app, stage_name="local") as client:
        assert client.http.get(ROUTE).status_code == 503  # a catalog failure, logged in detail
        assert client.http.get("/api/v1/health?deep=true").status_code == 503
    from chalicelib.ops.health import scheduled_run

    scheduled_run(wiring.current())
    logged = capsys.readouterr().out + "\n".join(
        r.getMessage() + json.dumps(getattr(r, "fields", {}), default=str) for r in caplog.records
    )
    assert "S3cr3t-Pa55w0rd" not in logged and "atlas-S3cr3t-value" not in logged
    assert "clipsvc" not in logged, "not even the user name"
