"""Whatever goes wrong inside, the answer is the contract's JSON, and every request leaves one log line."""

from __future__ import annotations

import json
import logging

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.clips.service import ClipService
from tests.conftest import EPISODE

ROUTE = f"/api/v1/audio_clips/{EPISODE}?start_time_ms=0"


def request_lines(caplog) -> list:
    return [r for r in caplog.records if r.name == "audio_clips.request"]


@pytest.fixture
def failing_clips(monkeypatch):
    def boom(self, request, deadline):
        raise KeyError("an internal surprise")

    monkeypatch.setattr(ClipService, "get_clip", boom)


def test_an_unexpected_exception_is_the_contracts_500_naming_the_request_id(s3, catalog_file, failing_clips, caplog):
    caplog.set_level(logging.INFO)
    catalog_file([])
    with Client(app, stage_name="local") as client:
        response = client.http.get(ROUTE)
    body = json.loads(response.body)
    assert response.status_code == 500 and "Retry-After" not in response.headers
    assert set(body) == {"Code", "Message"} and body["Code"] == "InternalServerError"
    [line] = request_lines(caplog)
    request_id = line.fields["request_id"]
    assert request_id and request_id in body["Message"]
    assert "an internal surprise" not in body["Message"], "no internals in the answer"


def test_an_unexpected_exception_is_logged_once_with_its_traceback(s3, catalog_file, failing_clips, caplog):
    caplog.set_level(logging.INFO)
    catalog_file([])
    with Client(app, stage_name="local") as client:
        client.http.get(ROUTE)
    [line] = request_lines(caplog)
    assert line.fields["status"] == 500 and line.fields["error"] == "InternalServerError"
    assert line.exc_info and line.exc_info[0] is KeyError, "the traceback rides on the request's own line"
    assert "total_ms" in line.fields


def test_a_failure_outside_the_route_still_answers_in_shape_and_logs_a_line(monkeypatch, caplog):
    caplog.set_level(logging.INFO)

    def broken_cors(origin, allowed):
        raise RuntimeError("middleware bug")

    monkeypatch.setattr("chalicelib.web.middleware.cors_headers", broken_cors)
    with Client(app, stage_name="local") as client:
        response = client.http.get("/api/v1/health")
    assert response.status_code == 500 and json.loads(response.body)["Code"] == "InternalServerError"
    assert [r.fields["status"] for r in request_lines(caplog)] == [500]


def test_a_success_is_logged_once_too(caplog):
    caplog.set_level(logging.INFO)
    wiring.reset()
    with Client(app, stage_name="local") as client:
        assert client.http.get("/api/v1/health").status_code == 200
    assert [r.fields["status"] for r in request_lines(caplog)] == [200]


def test_the_json_line_keeps_the_error_code_and_the_traceback_apart():
    from chalicelib.ops.logs import _formatter

    try:
        raise KeyError("x")
    except KeyError:
        import sys

        record = logging.LogRecord("audio_clips.request", logging.ERROR, __file__, 1, "request", None, sys.exc_info())
    record.fields = {"error": "InternalServerError"}
    line = json.loads(_formatter().format(record))
    assert line["error"] == "InternalServerError" and "KeyError" in line["exception"]  # Powertools' key
