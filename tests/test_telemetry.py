"""Logs and metrics (Powertools for AWS Lambda): the request line's keys, LOG_LEVEL, the per-request EMF line."""

from __future__ import annotations

import io
import json
import logging

import pytest
from chalice.test import Client

from app import app
from chalicelib.errors import ConfigurationError
from chalicelib.ops import logs
from tests.conftest import EPISODE

PATH = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=3000"
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def get(path: str = PATH):
    with Client(app, stage_name="local") as client:
        return client.http.get(path)


@pytest.fixture
def log_lines():
    """Every line the service logs meanwhile, exactly as its own handler writes them (a copy on a StringIO)."""
    service = next(h for h in logging.getLogger().handlers if getattr(h, "audio_clips", False))
    stream = io.StringIO()
    copy = logging.StreamHandler(stream)
    copy.setFormatter(service.formatter)
    logging.getLogger().addHandler(copy)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger().removeHandler(copy)


def emf_lines(capsys) -> list:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]


def test_the_request_line_carries_time_level_ids_and_trace(s3, episode, log_lines, monkeypatch):
    monkeypatch.setenv("_X_AMZN_TRACE_ID", TRACE)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "audio-clips-dev")
    episode("cbr")
    assert get().status_code == 200
    line = [line for line in log_lines() if line.get("event") == "request"][-1]
    assert line["level"] == "INFO" and line["timestamp"].endswith("+00:00") and line["service"] == "audio-clips"
    assert line["xray_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert line["function_name"] == "audio-clips-dev"
    assert line["function_request_id"] and isinstance(line["cold_start"], bool)
    assert line["event"] == "request" and line["status"] == 200 and line["cache_hit"] is False
    assert line["episode_id"] == EPISODE and "total_ms" in line and "fields" not in line
    assert line["location"].startswith("serve:")  # the caller of logs.emit, not emit itself


def test_only_the_first_invocation_of_a_process_is_a_cold_start(monkeypatch):
    monkeypatch.setattr(logs, "_first_request_id", None)
    assert logs.cold_start("-") is None  # outside an invocation (the module's import)
    assert logs.cold_start("first") is True
    assert logs.cold_start("first") is True  # every line of that invocation
    assert logs.cold_start("second") is False


def test_log_level_comes_from_the_environment(monkeypatch):
    for name in logs.LEVEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert logs.level_from_env() == "INFO"
    monkeypatch.setenv("LOG_LEVEL", "warning")
    assert logs.level_from_env() == "WARNING"
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    assert logs.level_from_env() == "DEBUG"


def test_a_bad_log_level_is_refused_by_name(monkeypatch):
    monkeypatch.delenv("POWERTOOLS_LOG_LEVEL", raising=False)
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigurationError, match="LOG_LEVEL"):
        logs.level_from_env()


def test_a_miss_then_a_hit_publish_their_metrics(s3, episode, capsys):
    episode("cbr")
    capsys.readouterr()
    assert get().status_code == 200
    miss = emf_lines(capsys)[-1]
    directive = miss["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "AudioClips"
    assert directive["Dimensions"] == [["Service"], ["Service", "CutMethod"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"Requests", "Misses", "MissLatency", "SourceBytesRead"}
    assert miss["Misses"] == [1] and miss["SourceBytesRead"][0] > 0 and miss["MissLatency"][0] > 0
    assert miss["CutMethod"] and miss["function_request_id"]
    assert get().status_code == 200
    hit = emf_lines(capsys)[-1]
    assert hit["Hits"] == [1] and "Misses" not in hit
    assert hit["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service"]]


def test_an_error_is_counted_by_its_status(s3, capsys):
    capsys.readouterr()
    assert get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=-5").status_code == 400
    line = emf_lines(capsys)[-1]
    assert line["Errors"] == [1] and line["StatusCode"] == "400"
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service"], ["Service", "StatusCode"]]


def test_metrics_can_be_switched_off(s3, capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    capsys.readouterr()
    get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=-5")
    assert emf_lines(capsys) == []
