"""health_check: real sockets for MongoDB faults, an emulated Atlas Admin API on 127.0.0.1, SNS through moto."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from chalice.test import Client
from mockupdb import MockupDB
from moto import mock_aws

from chalicelib import wiring
from chalicelib.ops.health import AtlasApi, HealthState, ping_mongodb, run_check
from chalicelib.settings import AtlasSettings
from tests.conftest import CLIPS_BUCKET, free_port

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def mongo_up():
    server = MockupDB(auto_ismaster={"maxWireVersion": 21})  # binds "localhost": loopback
    server.autoresponds("ping", ok=1)
    port = server.run()
    yield f"mongodb://127.0.0.1:{port}/"
    server.stop()


@pytest.fixture
def silent_port():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # connections complete in the kernel's backlog and are never answered
    yield listener.getsockname()[1]
    listener.close()


# ------------------------------------------------------------------ diagnosis on real sockets


def test_a_healthy_server_answers_the_ping(mongo_up):
    probe = ping_mongodb(mongo_up, 2000)
    assert probe.ok and probe.diagnosis == "ok" and probe.latency_ms < 2000


def test_a_closed_port_is_connection_refused():
    probe = ping_mongodb(f"mongodb://127.0.0.1:{free_port()}/", 1000)
    assert (probe.ok, probe.diagnosis) == (False, "connection refused")


def test_a_port_that_never_answers_is_a_timeout_within_the_budget(silent_port):
    started = time.monotonic()
    probe = ping_mongodb(f"mongodb://127.0.0.1:{silent_port}/", 3000)
    elapsed = time.monotonic() - started
    assert (probe.ok, probe.diagnosis) == (False, "timeout")
    assert elapsed < 10, f"a 3 s budget took {elapsed:.1f} s"


@pytest.mark.parametrize(
    "uri", ["mongodb://no-such-host.invalid:27017/", "mongodb+srv://cluster0.no-such-host.invalid/"]
)
def test_an_unresolvable_host_is_a_dns_failure(uri):
    probe = ping_mongodb(uri, 1000)
    assert (probe.ok, probe.diagnosis) == (False, "DNS failure")


def test_rejected_credentials_are_an_authentication_failure():
    server = MockupDB(auto_ismaster={"maxWireVersion": 21})
    server.autoresponds("saslStart", ok=0, code=18, errmsg="Authentication failed.", codeName="AuthenticationFailed")
    port = server.run()
    try:
        probe = ping_mongodb(f"mongodb://user:pw@127.0.0.1:{port}/?authMechanism=SCRAM-SHA-256", 1000)
    finally:
        server.stop()
    assert (probe.ok, probe.diagnosis) == (False, "authentication failed")
    assert "pw@" not in probe.detail


# ------------------------------------------------------------------ the Atlas Admin API, emulated


class AtlasEmulator:
    """The token endpoint, the cluster read and the resume call, checking the auth headers as Atlas would."""

    def __init__(self, paused: bool):
        self.paused = paused
        self.tokens_issued = 0
        self.calls = []
        self.client_id, self.client_secret = "mdb_sa_id_x", "mdb_sa_sk_y"
        self.public_key, self.private_key = "pubkey", "privkey"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def settings(self, service_account: bool = True, auto_resume: bool = False) -> AtlasSettings:
        if service_account:
            return AtlasSettings(
                "grp1",
                "Cluster0",
                self.url,
                client_id=self.client_id,
                client_secret=self.client_secret,
                auto_resume=auto_resume,
            )
        return AtlasSettings(
            "grp1",
            "Cluster0",
            self.url,
            public_key=self.public_key,
            private_key=self.private_key,
            auto_resume=auto_resume,
        )

    def _handler(self):
        atlas = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                expected = "Basic " + base64.b64encode(f"{atlas.client_id}:{atlas.client_secret}".encode()).decode()
                if (
                    self.path != "/api/oauth/token"
                    or self.headers.get("Authorization") != expected
                    or "grant_type=client_credentials" not in body
                ):
                    return self._send(401, {"error": "invalid_client"})
                atlas.tokens_issued += 1
                self._send(
                    200, {"access_token": f"tok-{atlas.tokens_issued}", "expires_in": 3600, "token_type": "Bearer"}
                )

            def do_GET(self):
                self._cluster(None)

            def do_PATCH(self):
                self._cluster(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))

            def _cluster(self, patch):
                if self.path != "/api/atlas/v2/groups/grp1/clusters/Cluster0":
                    return self._send(404, {"error": "not found"})
                if self.headers.get("Accept") != "application/vnd.atlas.2024-08-05+json":
                    return self._send(406, {"error": "unversioned"})
                if not self._authorised():
                    return
                atlas.calls.append((self.command, patch))
                if patch is not None:
                    atlas.paused = patch["paused"]
                self._send(200, {"name": "Cluster0", "paused": atlas.paused, "stateName": "IDLE"})

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                if header.startswith("Bearer "):
                    if header == f"Bearer tok-{atlas.tokens_issued}" and atlas.tokens_issued:
                        return True
                    self._send(401, {"error": "bad token"})
                    return False
                if header.startswith("Digest ") and self._digest_ok(header):
                    return True
                self.send_response(401)
                self.send_header(
                    "WWW-Authenticate", 'Digest realm="MMS Public API", nonce="n0nce", qop="auth", algorithm=MD5'
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def _digest_ok(self, header: str) -> bool:
                fields = dict(part.strip().split("=", 1) for part in header[len("Digest ") :].split(","))
                fields = {k: v.strip('"') for k, v in fields.items()}
                md5 = lambda text: hashlib.md5(text.encode()).hexdigest()
                ha1 = md5(f"{atlas.public_key}:MMS Public API:{atlas.private_key}")
                ha2 = md5(f"{self.command}:{fields.get('uri')}")
                expected = md5(f"{ha1}:{fields.get('nonce')}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
                return fields.get("username") == atlas.public_key and fields.get("response") == expected

            def _send(self, status, document):
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def atlas_paused():
    emulator = AtlasEmulator(paused=True)
    yield emulator
    emulator.stop()


def test_a_service_account_token_is_fetched_once_and_reused(atlas_paused):
    api = AtlasApi(atlas_paused.settings())
    assert api.cluster().paused is True
    assert api.cluster().paused is True
    assert atlas_paused.tokens_issued == 1 and len(atlas_paused.calls) == 2


def test_legacy_api_keys_use_http_digest(atlas_paused):
    cluster = AtlasApi(atlas_paused.settings(service_account=False)).cluster()
    assert cluster.paused is True and atlas_paused.tokens_issued == 0


def test_wrong_credentials_are_refused_by_the_emulator(atlas_paused):
    settings = AtlasSettings("grp1", "Cluster0", atlas_paused.url, client_id="x", client_secret="wrong")
    with pytest.raises(Exception, match="401"):
        AtlasApi(settings).cluster()


# ------------------------------------------------------------------ runs, state and alerts, through moto


@pytest.fixture
def aws():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=CLIPS_BUCKET)
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="audio-clips-alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)

        def received():
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            return [json.loads(m["Body"]) for m in messages]

        def publish(alert):
            sns.publish(TopicArn=topic, Subject=alert.subject, Message=alert.message)

        yield type(
            "Aws", (), {"s3": s3, "topic": topic, "received": staticmethod(received), "publish": staticmethod(publish)}
        )


def run_sequence(aws, pings, atlas=None, auto_resume=False, publish=None):
    state = HealthState(aws.s3, CLIPS_BUCKET)
    outcomes = []
    for i, ping in enumerate(pings):
        outcomes.append(
            run_check(
                ping,
                atlas,
                auto_resume,
                state,
                publish or aws.publish,
                "MongoDB at test",
                now=T0 + timedelta(minutes=5 * i),
            )
        )
    return outcomes


def test_up_down_down_down_up_up_sends_exactly_two_alerts(aws, mongo_up):
    down = f"mongodb://127.0.0.1:{free_port()}/"
    uris = [mongo_up, down, down, down, mongo_up, mongo_up]
    outcomes = run_sequence(aws, [lambda u=u: ping_mongodb(u, 1000) for u in uris])
    assert [o.healthy for o in outcomes] == [True, False, False, False, True, True]
    messages = aws.received()
    assert len(messages) == 2
    assert messages[0]["Subject"] == "audio-clips: MongoDB catalog unreachable (connection refused)"
    assert "connection refused" in messages[0]["Message"] and "503" in messages[0]["Message"]
    assert messages[1]["Subject"] == "audio-clips: MongoDB catalog back after 15 min"
    assert "2026-11-24T10:05:00Z" in messages[1]["Message"]
    assert [o.alert is not None for o in outcomes] == [False, True, False, False, True, False]


def test_a_paused_atlas_cluster_is_diagnosed_and_resumed_when_allowed(aws, atlas_paused, capsys):
    down = f"mongodb://127.0.0.1:{free_port()}/"
    atlas = AtlasApi(atlas_paused.settings(auto_resume=True))
    outcome = run_sequence(aws, [lambda: ping_mongodb(down, 500)], atlas=atlas, auto_resume=True)[0]
    assert outcome.diagnosis == "cluster paused" and outcome.atlas_paused and outcome.resumed
    assert atlas_paused.calls == [("GET", None), ("PATCH", {"paused": False})] and atlas_paused.paused is False
    message = aws.received()[0]
    assert "cluster paused" in message["Subject"] and "resume it" in message["Message"]
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')][-1]
    assert metrics["AtlasClusterPaused"] == [1] and metrics["MongoPingOk"] == [0]
    assert metrics["Service"] == "audio-clips" and metrics["diagnosis"] == "cluster paused"
    directive = metrics["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "AudioClips" and directive["Dimensions"] == [["Service"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"MongoPingOk", "MongoPingLatencyMs", "AtlasClusterPaused"}


def test_a_paused_cluster_is_not_resumed_unless_allowed(aws, atlas_paused):
    down = f"mongodb://127.0.0.1:{free_port()}/"
    outcome = run_sequence(aws, [lambda: ping_mongodb(down, 500)], atlas=AtlasApi(atlas_paused.settings()))[0]
    assert outcome.diagnosis == "cluster paused" and not outcome.resumed and atlas_paused.paused


def test_two_overlapping_runs_alert_once(aws, monkeypatch):
    from chalicelib.ops.health import Probe

    state = HealthState(aws.s3, CLIPS_BUCKET)
    run_check(lambda: Probe(True, 1, "ok"), None, False, state, aws.publish, "c", now=T0)
    stale = state.load()  # both runs read this state before either writes
    monkeypatch.setattr(HealthState, "load", lambda self: stale)
    first = run_check(lambda: Probe(False, 1, "timeout"), None, False, state, aws.publish, "c", now=T0)
    second = run_check(lambda: Probe(False, 1, "timeout"), None, False, state, aws.publish, "c", now=T0)
    assert first.alert and not second.alert and not second.state_written
    assert len(aws.received()) == 1


def test_an_alert_that_cannot_be_sent_is_kept_and_sent_by_the_next_run(aws):
    from chalicelib.ops.health import Probe

    def broken(alert):
        raise RuntimeError("SNS is down")

    state = HealthState(aws.s3, CLIPS_BUCKET)
    first = run_check(lambda: Probe(False, 1, "timeout"), None, False, state, broken, "c", now=T0)
    assert first.alert_failed and "alert not sent" in first.errors[0]
    assert aws.received() == []
    second = run_check(
        lambda: Probe(False, 1, "timeout"), None, False, state, aws.publish, "c", now=T0 + timedelta(minutes=5)
    )
    messages = aws.received()
    assert len(messages) == 1 and "timeout" in messages[0]["Subject"] and second.alert


@pytest.mark.parametrize("content", [b"not json", b'{"healthy": "maybe"}', b"[]"])
def test_an_unreadable_state_is_unknown_not_an_error(aws, content):
    from chalicelib.ops.health import Probe

    aws.s3.put_object(Bucket=CLIPS_BUCKET, Key="_health/state.json", Body=content)
    outcome = run_sequence(aws, [lambda: Probe(False, 1, "timeout")])[0]
    assert outcome.alert and outcome.state_written and not outcome.errors


def test_s3_down_is_logged_and_never_raised(aws):
    from botocore.config import Config

    from chalicelib.ops.health import Probe

    dead = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=0.5),
    )
    outcome = run_check(
        lambda: Probe(False, 1, "timeout"), None, False, HealthState(dead, CLIPS_BUCKET), aws.publish, "c", now=T0
    )
    assert any("state" in e for e in outcome.errors)
    assert aws.received() == [], "no claim on the state, no alert: better silent once than twice"


def test_the_scheduled_function_runs_through_chalice(aws, monkeypatch, mongo_up, caplog):
    caplog.set_level("INFO")
    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/")
    monkeypatch.setenv("ALERT_TOPIC_ARN", aws.topic)
    monkeypatch.setenv("HEALTH_PING_BUDGET_MS", "500")
    wiring.reset()
    from app import app

    with Client(app, stage_name="local") as client:
        event = client.events.generate_cw_event(
            source="aws.events",
            detail_type="Scheduled Event",
            detail={},
            resources=["arn:aws:events:us-east-1:123456789012:rule/health"],
        )
        result = client.lambda_.invoke("health_check", event).payload
    assert result["healthy"] is False and result["diagnosis"] == "connection refused" and result["alert"]
    assert len(aws.received()) == 1
    line = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "health_check"][-1]
    assert line["diagnosis"] == "connection refused"
