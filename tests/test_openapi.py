"""The published OpenAPI document against the running service: schemathesis drives chalice local (with moto's S3
and the demo episode) through every phase and check; no 5xx, every answer as documented."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import requests

from tests.local_stack import REPO_ROOT, LocalStack, local_stack  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")


def test_the_served_document_is_the_one_in_the_repo(local_stack: LocalStack):
    served = requests.get(f"{local_stack.base_url}/api/v1/openapi.json", timeout=10).json()
    with open(REPO_ROOT / "chalicelib" / "web" / "openapi.json") as handle:
        assert served == json.load(handle)
    assert served["openapi"].startswith("3.")


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(local_stack: LocalStack, tmp_path, capsys):
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(REPO_ROOT / "tests" / "schemathesis.toml"),
            "run",
            f"{local_stack.base_url}/api/v1/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--seed",
            "20261124",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    with capsys.disabled():
        print(f"\n[measure] schemathesis: {summary.group(0) if summary else 'no summary'}")
    assert result.returncode == 0, result.stdout[-6000:]
    assert summary and int(summary.group(1)) >= 100 and summary.group(1) == summary.group(2)
