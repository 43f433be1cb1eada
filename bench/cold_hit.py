"""A cold cache hit, as a new Lambda container sees it: a fresh ``python`` process imports app.py and serves one
cached clip through chalice.test.Client (the middleware, logging and metrics included).

    python -m bench.cold_hit [--runs 7]

Starts moto's S3 server on 127.0.0.1, puts a short MP3 episode and warms its clip once, then times RUNS fresh
processes from ``exec`` to the answer (interpreter start included) and prints the median and spread in ms:
wall time, and CPU time (user + system of the child, which a busy shared machine disturbs far less).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUID = "0e983347-7815-4b62-87a6-84d988a772b7"
SOURCE_BUCKET, CLIPS_BUCKET = "pod-insights-raw", "pod-insights-clips"
KEY = f"demo/{GUID}/audio/episode.mp3"

CHILD = (
    """
import time, os
started = time.perf_counter()
import app
from chalice.test import Client
imported = time.perf_counter()
with Client(app.app) as client:
    response = client.http.get("/api/v1/audio_clips/%s?start_time_ms=1000&duration_ms=5000", headers={"Accept": "*/*"})
done = time.perf_counter()
assert response.status_code == 200, response.body
import json, sys
body = json.loads(response.body)
print("RESULT " + json.dumps({"import_ms": (imported - started) * 1000, "serve_ms": (done - imported) * 1000,
                              "cache_hit": body["cache_hit"]}))
"""
    % GUID
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(env: Dict[str, str], app_dir: str) -> Dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    env = {**env, "PYTHONPATH": app_dir}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=app_dir, capture_output=True, text=True, check=True
    )
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return {**json.loads(line[len("RESULT ") :]), "wall_ms": wall, "cpu_ms": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--compare",
        metavar="DIR",
        help="another checkout (say, an older commit's): its runs are "
        "interleaved with this one's and both are reported",
    )
    args = parser.parse_args()
    import boto3
    import imageio_ffmpeg
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: no request lines
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    work = tempfile.mkdtemp(prefix="cold-hit-")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        mp3 = os.path.join(work, "episode.mp3")
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=d=20",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "128k",
                mp3,
            ],
            check=True,
        )
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        for bucket in (SOURCE_BUCKET, CLIPS_BUCKET):
            s3.create_bucket(Bucket=bucket)
        s3.upload_file(mp3, SOURCE_BUCKET, KEY)
        catalog = os.path.join(work, "catalog.json")
        with open(catalog, "w") as handle:
            json.dump([{"guid": GUID, "s3_audio_path": f"s3://{SOURCE_BUCKET}/{KEY}"}], handle)
        env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        env.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="t",
            AWS_SECRET_ACCESS_KEY="t",
            AWS_DEFAULT_REGION="us-east-1",
            LOCAL_CATALOG_FILE=catalog,
            FFMPEG_PATH=imageio_ffmpeg.get_ffmpeg_exe(),
        )
        warm = _child(env, ROOT)  # the miss that caches the clip
        assert not warm["cache_hit"]
        dirs = {"this": ROOT, **({"compare": os.path.abspath(args.compare)} if args.compare else {})}
        runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in dirs}
        for _ in range(args.runs):
            for name, app_dir in dirs.items():  # interleaved: both see the same load on the machine
                runs[name].append(_child(env, app_dir))
        for name, results in runs.items():
            assert all(r["cache_hit"] for r in results)
            print(f"{name} ({dirs[name]}), {len(results)} fresh processes:")
            for key in ("wall_ms", "cpu_ms", "import_ms", "serve_ms"):
                values = [r[key] for r in results]
                print(
                    f"  {key:10} median {statistics.median(values):7.1f}  min {min(values):7.1f}  "
                    f"max {max(values):7.1f}"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
