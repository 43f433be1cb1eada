"""X-Ray tracing as a stage option: off, the X-Ray SDK is not even imported; on, each invocation is traced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVE_ONE_REQUEST = """
import json, sys
from chalice.test import Client
from app import app
with Client(app, stage_name="local") as client:
    status = client.http.get("/api/v1/health").status_code
print(json.dumps({"status": status, "tracer": "aws_lambda_powertools.tracing" in sys.modules,
                  "xray_sdk": "aws_xray_sdk" in sys.modules}))
"""


def serve(tracing: str) -> dict:
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "TRACING": tracing,
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_REQUEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_tracing_the_xray_sdk_is_never_imported():
    # Powertools' package imports its tracing module along with the Logger (chalicelib/logs.py); what costs, the
    # X-Ray SDK the Tracer drives, is imported only when a stage traces
    outcome = serve("false")
    assert outcome["status"] == 200 and outcome["xray_sdk"] is False


def test_with_tracing_requests_are_served_inside_the_tracer():
    assert serve("true") == {"status": 200, "tracer": True, "xray_sdk": True}
