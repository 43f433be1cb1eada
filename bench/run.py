"""`make bench`: what a clip costs, against a naive baseline, FFmpeg's own seek, and the floor, in one run.

Episodes (10 minutes and 3 hours, CBR and VBR) are generated once into bench/cache/. The clips bucket lives in
moto's server on 127.0.0.1; every request goes through a byte-counting proxy (bench/s3proxy.py) that serves the
source objects itself with S3's range semantics. Each method runs in its own worker process, so that the peak
RSS reported is that method's (and FFmpeg's, as the largest child). Writes bench/results.json and
bench/results.png and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CACHE = os.path.join(ROOT, "bench", "cache")
SOURCE_BUCKET, CLIPS_BUCKET = "bench-raw", "bench-clips"
CLIP_MS = 30_000
OFFSETS = (0.01, 0.25, 0.50, 0.95)
SIGNAL = "anoisesrc=d={seconds}:c=pink:r=44100:a=0.5:seed=7,volume='0.15+0.85*abs(sin(t*2.3)*cos(t*0.71))':eval=frame"
EPISODES = {  # name: (seconds, encoder options)
    "10min-cbr": (600, ("-b:a", "128k")),
    "10min-vbr": (600, ("-q:a", "4")),
    "3h-cbr": (10_800, ("-b:a", "128k")),
    "3h-vbr": (10_800, ("-q:a", "4")),
}
RUNS = {"service-miss": 5, "service-hit": 5, "floor": 5, "ffmpeg-ss-url": 3, "naive": 2}
LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.20 / 1_000_000
SEED_MISS_MS, SEED_MEMORY_MB = 1128, 1024


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def episode_path(name: str) -> str:
    seconds, options = EPISODES[name]
    path = os.path.join(CACHE, f"episode-{name}.mp3")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        print(f"generating {name} ({seconds} s of audio, once)...", flush=True)
        partial = path + ".part.mp3"
        subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", SIGNAL.format(seconds=seconds),
                        "-ac", "2", "-c:a", "libmp3lame", *options, "-compression_level", "9", partial], check=True)
        os.replace(partial, path)
    return path


def guid(name: str) -> str:
    return f"bench:{name}"


def source_key(name: str) -> str:
    return f"bench/{guid(name)}/audio/{name}.mp3"


# ------------------------------------------------------------------ the worker: one method, one episode

def worker(method: str, name: str, runs: int, proxy: str) -> dict:
    from chalicelib import wiring
    from chalicelib.clips import ClipRequest
    from chalicelib.storage import clip_key

    s3 = wiring.current().s3
    seconds = EPISODES[name][0]
    results = []
    for fraction in OFFSETS:
        start_ms = int(seconds * 1000 * fraction)
        key = clip_key(guid(name), start_ms, start_ms + CLIP_MS)
        for _ in range(runs):
            if method == "service-miss":
                s3.delete_object(Bucket=CLIPS_BUCKET, Key=key)
            _reset(proxy)
            started = time.perf_counter()
            if method in ("service-miss", "service-hit"):
                result = wiring.current().clips.get_clip(ClipRequest(guid(name), start_ms, CLIP_MS), time.monotonic() + 60)
                assert result.cache_hit == (method == "service-hit")
            elif method == "floor":
                size = s3.head_object(Bucket=CLIPS_BUCKET, Key=key)["ContentLength"]
                offset = int(os.path.getsize(episode_path(name)) * fraction)
                data = s3.get_object(Bucket=SOURCE_BUCKET, Key=source_key(name),
                                     Range=f"bytes={offset}-{offset + size - 1}")["Body"].read()
                s3.put_object(Bucket=CLIPS_BUCKET, Key=f"floor/{name}.bin", Body=data)
            elif method == "ffmpeg-ss-url":
                url = s3.generate_presigned_url("get_object", Params={"Bucket": SOURCE_BUCKET, "Key": source_key(name)})
                _ffmpeg_cut(["-ss", f"{start_ms / 1000}", "-i", url, "-t", f"{CLIP_MS / 1000}", "-c", "copy"], s3, name)
            elif method == "naive":
                with tempfile.NamedTemporaryFile(suffix=".mp3") as whole:
                    s3.download_fileobj(SOURCE_BUCKET, source_key(name), whole)
                    whole.flush()
                    _ffmpeg_cut(["-ss", f"{start_ms / 1000}", "-i", whole.name, "-t", f"{CLIP_MS / 1000}",
                                 "-c:a", "libmp3lame", "-b:a", "128k"], s3, name)
            elapsed = (time.perf_counter() - started) * 1000
            results.append({"offset": fraction, "ms": elapsed, "source_bytes": _stats(proxy)})
    return {
        "method": method, "episode": name, "runs": results,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ffmpeg_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _ffmpeg_cut(options: List[str], s3, name: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "clip.mp3")
        subprocess.run([ffmpeg(), "-nostdin", "-v", "error", *options, "-y", out], check=True)
        with open(out, "rb") as handle:
            s3.put_object(Bucket=CLIPS_BUCKET, Key=f"baseline/{name}.mp3", Body=handle.read())


def _reset(proxy: str) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(proxy + "/__reset__", method="POST"), timeout=5).read()


def _stats(proxy: str) -> int:
    import urllib.request

    return json.loads(urllib.request.urlopen(proxy + "/__stats__", timeout=5).read())["source_bytes"]


def index_build(name: str) -> dict:
    from chalicelib import wiring
    from chalicelib.audio import Mp3Source, build_index
    from chalicelib.storage import SourceAudio

    audio = SourceAudio.open(wiring.current().s3, SOURCE_BUCKET, source_key(name))
    started = time.perf_counter()
    index = build_index(Mp3Source.sniff(audio), time.monotonic() + 300)
    elapsed = (time.perf_counter() - started) * 1000
    return {"episode": name, "ms": elapsed, "frames": index.frames, "bytes_read": audio.bytes_read,
            "index_json_bytes": len(json.dumps(index.to_json(), separators=(",", ":")))}


def cold_start(name: str) -> dict:
    """A fresh process: import the app, serve one hit, then one miss."""
    started = time.perf_counter()
    import app  # noqa: F401  (the Lambda's init)
    from chalicelib import wiring
    from chalicelib.clips import ClipRequest

    imported = time.perf_counter()
    start_ms = int(EPISODES[name][0] * 1000 * 0.5)
    hit = wiring.current().clips.get_clip(ClipRequest(guid(name), start_ms, CLIP_MS), time.monotonic() + 60)
    after_hit = time.perf_counter()
    loaded = {"pymongo": "pymongo" in sys.modules, "ffmpeg_ran": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > 0}
    wiring.current().s3.delete_object(Bucket=CLIPS_BUCKET, Key=f"audio_clips/{guid(name)}/{start_ms + 1000}-{start_ms + 1000 + CLIP_MS}.mp3")
    miss = wiring.current().clips.get_clip(ClipRequest(guid(name), start_ms + 1000, CLIP_MS), time.monotonic() + 60)
    done = time.perf_counter()
    assert hit.cache_hit and not miss.cache_hit
    return {"import_ms": (imported - started) * 1000, "first_hit_ms": (after_hit - imported) * 1000,
            "first_miss_ms": (done - after_hit) * 1000, "hit_loaded_pymongo": loaded["pymongo"],
            "hit_ran_ffmpeg": loaded["ffmpeg_ran"]}


# ------------------------------------------------------------------ the driver

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "EPISODE", "RUNS", "PROXY"))
    parser.add_argument("--job", nargs=2, metavar=("JOB", "EPISODE"))
    parser.add_argument("--quick", action="store_true", help="10-minute episodes only, fewer runs")
    args = parser.parse_args()
    if args.worker:
        method, name, runs, proxy = args.worker
        print(json.dumps(worker(method, name, int(runs), proxy)))
        return
    if args.job:
        job, name = args.job
        print(json.dumps(index_build(name) if job == "index" else cold_start(name)))
        return
    run_all(args.quick)


def run_all(quick: bool) -> None:
    from moto.server import ThreadedMotoServer

    from bench.s3proxy import S3Proxy

    names = [n for n in EPISODES if not quick or n.startswith("10min")]
    paths = {n: episode_path(n) for n in names}
    moto_port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    proxy = S3Proxy(moto_port, {(SOURCE_BUCKET, source_key(n)): p for n, p in paths.items()}).start()
    work = tempfile.mkdtemp(prefix="bench-")
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        env = _worker_env(endpoint, names, work)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket=CLIPS_BUCKET)
        report = {"clip_ms": CLIP_MS, "offsets": OFFSETS, "methods": [], "index_build": [], "episodes": {
            n: {"seconds": EPISODES[n][0], "bytes": os.path.getsize(p)} for n, p in paths.items()}}
        for name in names:
            if name.endswith("vbr"):
                report["index_build"].append(_job(["--job", "index", name], env))
            for method in ("service-miss", "service-hit", "floor", "ffmpeg-ss-url", "naive"):
                runs = 1 if quick else RUNS[method]
                print(f"  {name:10} {method:14} ...", flush=True)
                report["methods"].append(_job(["--worker", method, name, str(runs), endpoint], env))
        report["cold_start"] = _job(["--job", "cold", names[-1]], env)
        summarise(report)
    finally:
        proxy.stop()
        moto.stop()


def _worker_env(endpoint: str, names: List[str], work: str) -> Dict[str, str]:
    catalog = os.path.join(work, "catalog.json")
    with open(catalog, "w") as handle:
        json.dump([{"guid": guid(n), "s3_audio_path": f"s3://{SOURCE_BUCKET}/{source_key(n)}"} for n in names], handle)
    env = dict(os.environ)
    env.pop("MONGODB_URI", None)
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", SOURCE_BUCKET=SOURCE_BUCKET,
               CLIPS_BUCKET=CLIPS_BUCKET, LOCAL_CATALOG_FILE=catalog, PYTHONPATH=ROOT)
    return env


def _job(arguments: List[str], env: Dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-m", "bench.run", *arguments], env=env, cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{arguments} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    with open(os.path.join(ROOT, ".chalice", "config.json")) as handle:
        config = json.load(handle)
    return config["stages"]["prod"]["lambda_functions"]["api_handler"]["lambda_memory_size"]


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(report: dict) -> None:
    rows = []
    for entry in report["methods"]:
        for fraction in OFFSETS:
            runs = [r for r in entry["runs"] if r["offset"] == fraction]
            rows.append({
                "episode": entry["episode"], "method": entry["method"], "offset": fraction,
                "median_ms": statistics.median(r["ms"] for r in runs), "p95_ms": _percentile([r["ms"] for r in runs], 0.95),
                "source_bytes": int(statistics.median(r["source_bytes"] for r in runs)),
                "rss_mb": entry["rss_mb"], "ffmpeg_rss_mb": entry["ffmpeg_rss_mb"],
            })
    report["table"] = rows
    cell = {(r["episode"], r["method"], r["offset"]): r for r in rows}
    ratios = {}
    for name in report["episodes"]:
        service = cell[(name, "service-miss", 0.5)]["median_ms"]
        ratios[name] = {
            "naive_over_service_at_50pct": cell[(name, "naive", 0.5)]["median_ms"] / service,
            "ffmpeg_ss_over_service_at_50pct": cell[(name, "ffmpeg-ss-url", 0.5)]["median_ms"] / service,
            "service_over_floor_at_50pct": service / cell[(name, "floor", 0.5)]["median_ms"],
            "miss_95pct_over_1pct": cell[(name, "service-miss", 0.95)]["median_ms"] / cell[(name, "service-miss", 0.01)]["median_ms"],
        }
    report["ratios"] = ratios
    memory = _memory_mb()
    miss = statistics.median(r["median_ms"] for r in rows if r["method"] == "service-miss")
    hit = statistics.median(r["median_ms"] for r in rows if r["method"] == "service-hit")

    def cost(ms: float, mb: int) -> float:
        return 1000 * (ms / 1000 * mb / 1024 * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD)

    report["lambda_cost_usd_per_1000"] = {
        "memory_mb": memory, "miss": cost(miss, memory), "hit": cost(hit, memory),
        "seed_miss": cost(SEED_MISS_MS, SEED_MEMORY_MB), "miss_ms_used": miss, "hit_ms_used": hit,
    }
    with open(os.path.join(ROOT, "bench", "results.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print_table(report)
    chart(report)


def print_table(report: dict) -> None:
    print(f"\n{'episode':10} {'method':14} {'offset':>6} {'median ms':>10} {'p95 ms':>9} {'source bytes':>13} "
          f"{'RSS MB':>7} {'FFmpeg MB':>9}")
    for r in report["table"]:
        print(f"{r['episode']:10} {r['method']:14} {r['offset'] * 100:5.0f}% {r['median_ms']:10.1f} {r['p95_ms']:9.1f} "
              f"{r['source_bytes']:13,d} {r['rss_mb']:7.0f} {r['ffmpeg_rss_mb']:9.0f}")
    print("\nratios (medians):")
    for name, values in report["ratios"].items():
        print(f"  {name:10} " + "  ".join(f"{k}={v:.2f}" for k, v in values.items()))
    for entry in report["index_build"]:
        print(f"seek index, {entry['episode']}: {entry['ms']:.0f} ms for {entry['frames']:,} frames "
              f"({entry['bytes_read']:,} bytes read; index {entry['index_json_bytes']:,} bytes of JSON)")
    cold = report["cold_start"]
    print(f"cold start: import {cold['import_ms']:.0f} ms, first hit {cold['first_hit_ms']:.0f} ms "
          f"(pymongo loaded: {cold['hit_loaded_pymongo']}, FFmpeg ran: {cold['hit_ran_ffmpeg']}), "
          f"first miss {cold['first_miss_ms']:.0f} ms")
    c = report["lambda_cost_usd_per_1000"]
    print(f"Lambda cost per 1,000 at {c['memory_mb']} MB: misses ${c['miss']:.5f}, hits ${c['hit']:.5f}; "
          f"seed system's misses (1,128 ms at 1 GB) ${c['seed_miss']:.5f}")


def chart(report: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; `make bench` installs it)")
        return
    names = [n for n in report["episodes"] if n.startswith("3h")] or list(report["episodes"])
    figure, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 8), squeeze=False)
    for column, name in enumerate(names):
        for method in ("service-miss", "service-hit", "floor", "ffmpeg-ss-url", "naive"):
            rows = [r for r in report["table"] if r["episode"] == name and r["method"] == method]
            x = [r["offset"] * 100 for r in rows]
            axes[0][column].plot(x, [r["median_ms"] for r in rows], marker="o", label=method)
            axes[1][column].plot(x, [max(r["source_bytes"], 1) for r in rows], marker="o", label=method)
        axes[0][column].set(title=f"{name}: latency (median)", xlabel="clip offset, % of episode", ylabel="ms", yscale="log")
        axes[1][column].set(title=f"{name}: bytes read from the source", xlabel="clip offset, % of episode",
                            ylabel="bytes", yscale="log")
        axes[0][column].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(ROOT, "bench", "results.png"), dpi=90)


if __name__ == "__main__":
    main()
