"""The request's deadline runs from when API Gateway received it (issue 19, item 9): its 29 s include a cold start
and the invoke latency, which ``requestContext.requestTimeEpoch`` shows; without it, from the handler's start."""

from __future__ import annotations

import json
import time

import pytest

from chalicelib import wiring
from tests.conftest import EPISODE
from tests.gateway import gateway_event, invoke

CLIP = "/api/v1/audio_clips/{episode_id}"


@pytest.fixture
def sent(episode):
    episode("cbr")
    requests = []
    wiring.current().s3.meta.events.register_last("before-send.s3", lambda request, **kw: requests.append(request))
    return requests


def clip_request(received_ms_ago: int) -> dict:
    received = int(time.time() * 1000) - received_ms_ago
    return gateway_event(
        CLIP, f"/api/v1/audio_clips/{EPISODE}", {"start_time_ms": "1000"}, request_time_epoch_ms=received
    )


def test_a_request_the_gateway_received_25_s_ago_answers_503_without_starting_an_s3_call(sent):
    answer = invoke(clip_request(25_000), remaining_ms=28_000)  # the Lambda itself still has 28 s
    assert answer["statusCode"] == 503 and int(answer["headers"]["Retry-After"]) > 0
    assert json.loads(answer["body"])["Message"] == "Audio storage did not answer in time; try again shortly"
    assert sent == [], "no S3 attempt could end before the gateway's 29 s"


def test_a_request_the_gateway_just_received_is_served(sent):
    answer = invoke(clip_request(0), remaining_ms=28_000)
    assert answer["statusCode"] == 200 and sent


@pytest.mark.parametrize("epoch", [None, "1796423189730", True, -5])
def test_without_a_usable_request_time_the_budget_is_the_lambdas(sent, epoch):
    event = clip_request(0)
    event["requestContext"]["requestTimeEpoch"] = epoch
    assert invoke(event, remaining_ms=28_000)["statusCode"] == 200


def test_a_gateway_clock_ahead_of_ours_costs_nothing(sent):
    assert invoke(clip_request(-60_000), remaining_ms=28_000)["statusCode"] == 200
