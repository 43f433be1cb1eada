"""`make load`: N concurrent clients for M seconds against `make run`'s stack (chalice local, moto's S3 server,
the demo episode) on 127.0.0.1, mixing cache hits and misses. Prints throughput, latency percentiles and the error
count (which must be 0), then decodes every clip left in the bucket; writes bench/load.json. Not part of make test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.audio_tools import FRAME_MS, decode  # noqa: E402  (FFmpeg decoding, as the tests do it)

GUID = "0e983347-7815-4b62-87a6-84d988a772b7"
DEMO_MS = 180_000
HOT_STARTS = [i * 15_000 for i in range(10)]  # the clips most requests ask for: hits once cut


def start_stack(api_port: int, moto_port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "run_local.py"),
            "--port",
            str(api_port),
            "--moto-port",
            str(moto_port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if line.startswith("READY"):
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # keep draining
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError("the local stack did not become ready")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client(base: str, until: float, hit_share: float, seed: int) -> list:
    rng = random.Random(seed)
    session = requests.Session()
    session.trust_env = False
    results = []
    while time.monotonic() < until:
        if rng.random() < hit_share:
            start, duration = rng.choice(HOT_STARTS), 30_000
        else:
            start, duration = rng.randrange(0, DEMO_MS - 1_000), rng.choice([5_000, 10_000, 30_000, 60_000])
        began = time.perf_counter()
        try:
            response = session.get(
                f"{base}/api/v1/audio_clips/{GUID}",
                params={"start_time_ms": start, "duration_ms": duration},
                timeout=30,
            )
            status, hit = response.status_code, response.json().get("cache_hit") if response.ok else None
        except requests.RequestException as error:
            status, hit = f"error: {type(error).__name__}", None
        results.append({"ms": (time.perf_counter() - began) * 1000, "status": status, "hit": hit})
    return results


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def validate_clips(moto_port: int) -> dict:
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{moto_port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="pod-insights-clips", Prefix=f"audio_clips/{GUID}/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".mp3")]
    bad = []
    for key in keys:
        head = s3.head_object(Bucket="pod-insights-clips", Key=key)
        clip = decode(s3.get_object(Bucket="pod-insights-clips", Key=key)["Body"].read())
        served = int(head["Metadata"]["duration-ms"])
        if clip.stderr or abs(clip.duration_ms - served) > FRAME_MS:
            bad.append({"key": key, "stderr": clip.stderr[:200], "decoded_ms": clip.duration_ms, "served_ms": served})
    return {"clips": len(keys), "invalid": bad}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--hit-share", type=float, default=0.7)
    args = parser.parse_args()
    api_port, moto_port = free_port(), free_port()
    stack = start_stack(api_port, moto_port)
    try:
        base = f"http://127.0.0.1:{api_port}"
        began = time.monotonic()
        until = began + args.seconds
        with ThreadPoolExecutor(args.clients) as pool:
            runs = list(pool.map(lambda i: client(base, until, args.hit_share, i), range(args.clients)))
        elapsed = time.monotonic() - began
        results = [r for run in runs for r in run]
        validity = validate_clips(moto_port)
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
    errors = [r for r in results if r["status"] != 200]
    report = {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "requests": len(results),
        "throughput_rps": round(len(results) / elapsed, 1),
        "hits": sum(1 for r in results if r["hit"] is True),
        "misses": sum(1 for r in results if r["hit"] is False),
        "errors": len(errors),
        "error_kinds": sorted({str(r["status"]) for r in errors}),
        "latency_ms": {
            k: round(percentile([r["ms"] for r in results], q), 1)
            for k, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
        },
        "miss_latency_ms_p50": round(statistics.median([r["ms"] for r in results if r["hit"] is False] or [0]), 1),
        "hit_latency_ms_p50": round(statistics.median([r["ms"] for r in results if r["hit"] is True] or [0]), 1),
        **validity,
    }
    with open(os.path.join(ROOT, "bench", "load.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=2))
    ok = not errors and not validity["invalid"]
    print("OK: no errors, every clip valid MP3 of its served duration" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
