"""`make bench`: what a clip costs, against a naive baseline, FFmpeg's own seek, and the floor, in one run.

Episodes (10 minutes and 3 hours: CBR, VBR, and a "joined" one made of parts concatenated as dynamic ad insertion
does, each part with its own ID3v2 tag and Info frame, a 48 kHz mono ad between two 44.1 kHz stereo halves) are
generated once into bench/cache/. The clips bucket lives in moto's server on 127.0.0.1; every request goes through
a byte-counting proxy (bench/s3proxy.py) that serves the source objects itself with S3's range semantics.

Measured the same way: one worker process per episode, one S3 client, one timer around each request. After a
warm-up round (which also builds each VBR or joined episode's seek index, so misses are measured with the index
built; the index build is timed on its own), every round measures each method at each offset, the methods in a
different order each round (interleaved), and the report gives the median and the spread (min, max) of the
rounds. `make bench` writes bench/results.json and bench/results.png; `make bench-quick` (10-minute episodes,
no 3-hour ones) writes bench/quick/ (untracked) and never touches the committed results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CACHE = os.path.join(ROOT, "bench", "cache")
SOURCE_BUCKET, CLIPS_BUCKET = "bench-raw", "bench-clips"
CLIP_MS = 30_000
OFFSETS = (0.01, 0.25, 0.50, 0.95)
SIGNAL = "anoisesrc=d={seconds}:c=pink:r=44100:a=0.5:seed=7,volume='0.15+0.85*abs(sin(t*2.3)*cos(t*0.71))':eval=frame"
EPISODES = {  # name: (seconds, encoder options); a joined episode is generated from JOINED's parts instead
    "10min-cbr": (600, ("-b:a", "128k")),
    "10min-vbr": (600, ("-q:a", "4")),
    "10min-joined": (600, ()),
    "3h-cbr": (10_800, ("-b:a", "128k")),
    "3h-vbr": (10_800, ("-q:a", "4")),
    "3h-joined": (10_800, ()),
    "10min-m4a": (600, ("-c:a", "aac", "-b:a", "96k")),  # AAC in M4A: cut by FFmpeg over a pre-signed URL
    "3h-m4a": (10_800, ("-c:a", "aac", "-b:a", "96k")),
}
M4A = ("10min-m4a", "3h-m4a")
AD_SECONDS = 30
JOINED = (  # (share of the episode's length, or None for the ad; sample rate; channels; encoder options)
    (0.5, 44_100, 2, ("-q:a", "4")),
    (None, 48_000, 1, ("-b:a", "64k")),
    (0.5, 44_100, 2, ("-q:a", "4")),
)
METHODS = (
    "service-miss",
    "service-hit",
    "snap-miss",
    "snap-hit",
    "snap-miss-decoded",
    "floor",
    "ffmpeg-ss-url",
    "naive",
)
SNAP_METHODS = ("snap-miss", "snap-hit", "snap-miss-decoded")  # snap=pause, on the same clips
LABELS = {  # the chart's and the table's plain words
    "service-miss": "this service, clip not cached yet",
    "service-hit": "this service, clip already cached",
    "snap-miss": "this service, snap=pause, not cached yet",
    "snap-hit": "this service, snap=pause, already cached",
    "snap-miss-decoded": "this service, snap=pause, not cached, no stored levels",
    "floor": "lower bound: read and write only the clip's bytes",
    "ffmpeg-ss-url": "FFmpeg seeking in the episode's URL",
    "naive": "download the whole episode, then cut with FFmpeg",
}
ROUNDS = {"full": 5, "quick": 5}
LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.20 / 1_000_000
SEED_MISS_MS, SEED_MEMORY_MB = 1128, 1024


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def episode_path(name: str) -> str:
    seconds, options = EPISODES[name]
    path = os.path.join(CACHE, f"episode-{name}{_extension(name)}")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        print(f"generating {name} ({seconds} s of audio, once)...", flush=True)
        partial = path + ".part" + _extension(name)
        if name.endswith("joined"):
            _joined(seconds, partial)
        else:
            _encode(seconds, 44_100, 2, options, partial)
        os.replace(partial, path)
    return path


def _extension(name: str) -> str:
    return ".m4a" if name in M4A else ".mp3"


def _encode(seconds: float, rate: int, channels: int, options, out: str) -> None:
    subprocess.run(
        [
            ffmpeg(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            SIGNAL.format(seconds=seconds),
            "-ar",
            str(rate),
            "-ac",
            str(channels),
            *(options if "-c:a" in options else ("-c:a", "libmp3lame", *options, "-compression_level", "9")),
            out,
        ],
        check=True,
    )


def _joined(seconds: float, out: str) -> None:
    """Parts encoded one by one (FFmpeg's muxer gives each its own ID3v2 tag and Info frame), then concatenated
    byte for byte, as dynamic ad insertion stitches files."""
    with tempfile.TemporaryDirectory() as work, open(out, "wb") as joined:
        show = seconds - AD_SECONDS
        for number, (share, rate, channels, options) in enumerate(JOINED):
            part = os.path.join(work, f"part{number}.mp3")
            _encode(AD_SECONDS if share is None else show * share, rate, channels, options, part)
            with open(part, "rb") as handle:
                joined.write(handle.read())


def guid(name: str) -> str:
    return f"bench:{name}"


def source_key(name: str) -> str:
    return f"bench/{guid(name)}/audio/{name}{_extension(name)}"


# ------------------------------------------------------------------ the worker: every method, one episode


def worker(name: str, rounds: int, proxy: str) -> dict:
    """Warm-up, then ``rounds`` rounds of every method at every offset, interleaved; progress on stderr."""
    from chalicelib import wiring

    s3 = wiring.current().s3
    methods = (
        list(METHODS)
        if name in ("10min-cbr", "10min-vbr", "3h-cbr", "3h-vbr")
        else [m for m in METHODS if m != "naive"]
    )  # the joined episode asks how the service does, not the baselines; M4A compares with the previous cut
    only = [m for m in os.environ.get("BENCH_ONLY", "").split(",") if m]
    methods = [m for m in methods if not only or m in only]
    levels = _prepare_levels(name) if any(m in SNAP_METHODS for m in methods) else None
    runs: List[dict] = []
    sizes: Dict[float, int] = {}
    errors: Dict[str, str] = {}
    for number in range(rounds + 1):  # round 0 is the warm-up: connections, imports, the seek index
        order = methods[number % len(methods) :] + methods[: number % len(methods)]
        for fraction in OFFSETS:
            for method in order:
                slow = method in ("naive", "ffmpeg-ss-url") and name.startswith("3h")
                if method in errors or (slow and not 1 <= number <= 2):
                    continue  # each reads up to the whole 3-hour episode: two measured rounds, no warm-up
                try:
                    ms, cpu_ms, source_bytes = _measure(method, name, fraction, s3, proxy, sizes)
                except Exception as error:  # the engine may not handle an input (joins): say so, go on
                    errors[method] = f"{type(error).__name__}: {error}"[:300]
                    continue
                if number:
                    runs.append(
                        {
                            "method": method,
                            "offset": fraction,
                            "round": number,
                            "ms": ms,
                            "cpu_ms": cpu_ms,
                            "source_bytes": source_bytes,
                        }
                    )
        done = [r for r in runs if r["round"] == number]
        summary = ", ".join(
            f"{m} {statistics.median([r['ms'] for r in done if r['method'] == m]):.0f} ms"
            for m in methods
            if any(r["method"] == m for r in done)
        )
        print(
            f"  {name:12} {'warm-up' if number == 0 else f'round {number}/{rounds}'}: {summary or 'done'}",
            file=sys.stderr,
            flush=True,
        )
    return {"episode": name, "runs": runs, "errors": errors, "levels_build": levels}


def _prepare_levels(name: str) -> dict:
    """The episode's levels, made as cleanup_clips makes them when its audio arrives (what snap=pause reads)."""
    from chalicelib import wiring
    from chalicelib.clips.snapping import prepare_levels

    started = time.perf_counter()
    cpu = _cpu_ms()
    done = prepare_levels(
        wiring.current().s3,
        wiring.current().clip_store,
        SOURCE_BUCKET,
        source_key(name),
        guid(name),
        ffmpeg(),
        time.monotonic() + 900,
    )
    assert done.outcome == "built", done
    return {"ms": (time.perf_counter() - started) * 1000, "cpu_ms": _cpu_ms() - cpu, "hops": done.hops}


def _measure(method: str, name: str, fraction: float, s3, proxy: str, sizes: Dict[float, int]):
    from chalicelib import wiring
    from chalicelib.clips.service import ClipRequest
    from chalicelib.stores.keys import clip_key

    start_ms = int(EPISODES[name][0] * 1000 * fraction)
    key = clip_key(guid(name), start_ms, start_ms + CLIP_MS)
    snapped = ClipRequest(guid(name), start_ms, CLIP_MS, "pause")
    if method in SNAP_METHODS:
        served = sizes.get(("served", fraction))  # the served clip's key, once known
        if method != "snap-hit":
            for stale in {snapped.key, key, served or key}:
                s3.delete_object(Bucket=CLIPS_BUCKET, Key=stale)
        elif not _exists(s3, snapped.key):
            _measure("snap-miss", name, fraction, s3, proxy, sizes)
    if method == "service-miss":
        s3.delete_object(Bucket=CLIPS_BUCKET, Key=key)
    if method == "floor" and fraction not in sizes:
        _measure("service-hit" if _exists(s3, key) else "service-miss", name, fraction, s3, proxy, sizes)
        sizes[fraction] = s3.head_object(Bucket=CLIPS_BUCKET, Key=key)["ContentLength"]
    if method == "service-hit" and not _exists(s3, key):
        _measure("service-miss", name, fraction, s3, proxy, sizes)
    _reset(proxy)
    cpu_before = _cpu_ms()
    started = time.perf_counter()
    if method in ("service-miss", "service-hit"):
        result = wiring.current().clips.get_clip(ClipRequest(guid(name), start_ms, CLIP_MS), time.monotonic() + 120)
        assert result.cache_hit == (method == "service-hit")
    elif method in SNAP_METHODS:
        with _without_stored_levels(method == "snap-miss-decoded"):
            result = wiring.current().clips.get_clip(snapped, time.monotonic() + 120)
        assert result.cache_hit == (method == "snap-hit")
        assert result.cache_hit or result.levels == ("decoded" if method == "snap-miss-decoded" else "stored")
        sizes[("served", fraction)] = result.key  # type: ignore[index]
    elif method == "floor":
        size = sizes[fraction]
        offset = int(os.path.getsize(episode_path(name)) * fraction)
        data = s3.get_object(Bucket=SOURCE_BUCKET, Key=source_key(name), Range=f"bytes={offset}-{offset + size - 1}")[
            "Body"
        ].read()
        s3.put_object(Bucket=CLIPS_BUCKET, Key=f"floor/{name}.bin", Body=data)
    elif method == "ffmpeg-ss-url":
        url = s3.generate_presigned_url("get_object", Params={"Bucket": SOURCE_BUCKET, "Key": source_key(name)})
        seek = ["-ss", f"{start_ms / 1000}", "-i", url, "-t", f"{CLIP_MS / 1000}"]
        if name in M4A:  # what the service did before issue 20: FFmpeg's accurate seek, re-encoded to MP3
            _ffmpeg_cut([*seek, "-map", "0:a:0", "-c:a", "libmp3lame", "-b:a", "128k"], s3, name)
        else:
            _ffmpeg_cut([*seek, "-c", "copy"], s3, name)
    elif method == "naive":
        with tempfile.NamedTemporaryFile(suffix=".mp3") as whole:
            s3.download_fileobj(SOURCE_BUCKET, source_key(name), whole)
            whole.flush()
            _ffmpeg_cut(
                [
                    "-ss",
                    f"{start_ms / 1000}",
                    "-i",
                    whole.name,
                    "-t",
                    f"{CLIP_MS / 1000}",
                    "-c:a",
                    "libmp3lame",
                    "-b:a",
                    "128k",
                ],
                s3,
                name,
            )
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, _cpu_ms() - cpu_before, _stats(proxy)


@contextlib.contextmanager
def _without_stored_levels(active: bool):
    """An episode whose audio arrived before its levels were made: a snapped miss decodes its windows."""
    from chalicelib.stores.clip_cache import LevelsArtefact

    original = LevelsArtefact.read
    if active:
        LevelsArtefact.read = lambda self, first, end: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        LevelsArtefact.read = original  # type: ignore[method-assign]


def _cpu_ms() -> float:
    """CPU time of this process (all its threads) and of its finished children (FFmpeg), in ms: unlike wall time,
    it hardly moves when other work shares the machine, so ratios of it are stable from run to run."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) * 1000


def _exists(s3, key: str) -> bool:
    try:
        s3.head_object(Bucket=CLIPS_BUCKET, Key=key)
        return True
    except Exception:
        return False


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
    """The seek index of one episode, built as the engine builds it (one streaming pass), timed on its own."""
    from chalicelib import wiring
    from chalicelib.audio.cutting import Mp3Source, build_index
    from chalicelib.stores.source import SourceAudio

    audio = SourceAudio.open(wiring.current().s3, SOURCE_BUCKET, source_key(name))
    started = time.perf_counter()
    try:
        index = build_index(Mp3Source.sniff(audio), time.monotonic() + 300)
    except Exception as error:  # the engine may refuse an input (a join): report what it did
        return {"episode": name, "error": f"{type(error).__name__}: {error}"[:300]}
    elapsed = (time.perf_counter() - started) * 1000
    return {
        "episode": name,
        "ms": elapsed,
        "frames": index.frames,
        "bytes_read": audio.bytes_read,
        "index_json_bytes": len(json.dumps(index.to_json(), separators=(",", ":"))),
    }


def cold_start(name: str) -> dict:
    """A fresh process: import the app, serve one hit, then one miss."""
    started = time.perf_counter()
    import app  # noqa: F401  (the Lambda's init)
    from chalicelib import wiring
    from chalicelib.clips.service import ClipRequest

    imported = time.perf_counter()
    start_ms = int(EPISODES[name][0] * 1000 * 0.5)
    hit = wiring.current().clips.get_clip(ClipRequest(guid(name), start_ms, CLIP_MS), time.monotonic() + 60)
    after_hit = time.perf_counter()
    loaded = {
        "pymongo": "pymongo" in sys.modules,
        "ffmpeg_ran": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > 0,
    }
    wiring.current().s3.delete_object(
        Bucket=CLIPS_BUCKET, Key=f"audio_clips/{guid(name)}/{start_ms + 1000}-{start_ms + 1000 + CLIP_MS}.mp3"
    )
    miss = wiring.current().clips.get_clip(ClipRequest(guid(name), start_ms + 1000, CLIP_MS), time.monotonic() + 60)
    done = time.perf_counter()
    assert hit.cache_hit and not miss.cache_hit
    return {
        "import_ms": (imported - started) * 1000,
        "first_hit_ms": (after_hit - imported) * 1000,
        "first_miss_ms": (done - after_hit) * 1000,
        "hit_loaded_pymongo": loaded["pymongo"],
        "hit_ran_ffmpeg": loaded["ffmpeg_ran"],
    }


# ------------------------------------------------------------------ the driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=3, metavar=("EPISODE", "ROUNDS", "PROXY"))
    parser.add_argument("--job", nargs=2, metavar=("JOB", "EPISODE"))
    parser.add_argument("--quick", action="store_true", help="10-minute episodes only, into bench/quick/")
    parser.add_argument("--only", help="comma-separated methods (e.g. the snap=pause rows), into bench/rows/")
    parser.add_argument(
        "--episodes", help="only these episodes (comma-separated, e.g. 10min-m4a,3h-m4a), into bench/quick/"
    )
    args = parser.parse_args()
    if args.worker:
        name, rounds, proxy = args.worker
        print(json.dumps(worker(name, int(rounds), proxy)))
        return
    if args.job:
        job, name = args.job
        print(json.dumps(index_build(name) if job == "index" else cold_start(name)))
        return
    only = [m for m in (args.only or "").split(",") if m]
    unknown = set(only) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    run_all(args.quick, only, [n for n in (args.episodes or "").split(",") if n])


def output_dir(quick: bool, rows: bool = False) -> str:
    """Where results go: the committed bench/ for `make bench`, bench/quick/ (gitignored) for `make bench-quick`,
    bench/rows/ (gitignored) for a run of some methods only."""
    path = os.path.join(ROOT, "bench", "rows" if rows else "quick" if quick else "")
    os.makedirs(path, exist_ok=True)
    return path.rstrip("/")


def run_all(quick: bool, only: Optional[List[str]] = None, episodes: Optional[List[str]] = None) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    from bench.s3proxy import S3Proxy

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: no request lines among the progress
    names = [n for n in EPISODES if (not quick or n.startswith("10min")) and (not episodes or n in episodes)]
    quick = quick or bool(episodes)  # a partial run never writes over the committed results
    rounds = ROUNDS["quick" if quick else "full"]
    paths = {n: episode_path(n) for n in names}
    moto_port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    proxy = S3Proxy(moto_port, {(SOURCE_BUCKET, source_key(n)): p for n, p in paths.items()}).start()
    work = tempfile.mkdtemp(prefix="bench-")
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        env = _worker_env(endpoint, names, work)
        env["BENCH_ONLY"] = ",".join(only or ())
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=CLIPS_BUCKET)
        report: dict = {
            "quick": quick,
            "rounds": rounds,
            "clip_ms": CLIP_MS,
            "offsets": OFFSETS,
            "labels": LABELS,
            "workers": [],
            "index_build": [],
            "episodes": {n: {"seconds": EPISODES[n][0], "bytes": os.path.getsize(p)} for n, p in paths.items()},
        }
        for step, name in enumerate(names, 1):
            if not name.endswith("cbr") and name not in M4A and not only:  # M4A: FFmpeg reads its tables
                print(f"[{step}/{len(names)}] {name}: building its seek index ...", flush=True)
                report["index_build"].append(_job(["--job", "index", name], env))
            print(f"[{step}/{len(names)}] {name}: warm-up and {rounds} interleaved rounds ...", flush=True)
            report["workers"].append(_job(["--worker", name, str(rounds), endpoint], env))
        if not only:
            print("cold start ...", flush=True)
            report["cold_start"] = _job(["--job", "cold", names[0]], env)
        summarise(report, output_dir(quick, rows=bool(only)))
    finally:
        proxy.stop()
        moto.stop()


def _worker_env(endpoint: str, names: List[str], work: str) -> Dict[str, str]:
    catalog = os.path.join(work, "catalog.json")
    with open(catalog, "w") as handle:
        json.dump([{"guid": guid(n), "s3_audio_path": f"s3://{SOURCE_BUCKET}/{source_key(n)}"} for n in names], handle)
    env = dict(os.environ)
    env.pop("MONGODB_URI", None)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        SOURCE_BUCKET=SOURCE_BUCKET,
        CLIPS_BUCKET=CLIPS_BUCKET,
        LOCAL_CATALOG_FILE=catalog,
        PYTHONPATH=ROOT,
        SOURCE_ALLOWED_BUCKETS=SOURCE_BUCKET,
        LOG_LEVEL="ERROR",
        POWERTOOLS_METRICS_DISABLED="true",
    )  # no request lines or metrics in the output
    return env


def _job(arguments: List[str], env: Dict[str, str]) -> dict:
    """A worker process: its progress (stderr) passes through, its result is the last line of its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", *arguments], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{arguments} failed (exit {result.returncode}); its output is above")
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


# ------------------------------------------------------------------ the report


def summarise(report: dict, out: str) -> None:
    rows = []
    for entry in report["workers"]:
        for method in METHODS:
            for fraction in OFFSETS:
                runs = [r for r in entry["runs"] if r["method"] == method and r["offset"] == fraction]
                if not runs:
                    continue
                ms = [r["ms"] for r in runs]
                rows.append(
                    {
                        "episode": entry["episode"],
                        "method": method,
                        "offset": fraction,
                        "rounds": len(runs),
                        "median_ms": statistics.median(ms),
                        "min_ms": min(ms),
                        "max_ms": max(ms),
                        "median_cpu_ms": statistics.median(r["cpu_ms"] for r in runs),
                        "source_bytes": int(statistics.median(r["source_bytes"] for r in runs)),
                    }
                )
    report["table"] = rows
    report["errors"] = {e["episode"]: e["errors"] for e in report["workers"] if e["errors"]}
    report["ratios"] = ratios(rows, report["episodes"])
    memory = _memory_mb()
    miss = statistics.median([r["median_ms"] for r in rows if r["method"] == "service-miss"] or [0.0])
    hit = statistics.median([r["median_ms"] for r in rows if r["method"] == "service-hit"] or [0.0])

    def cost(ms: float, mb: int) -> float:
        return 1000 * (ms / 1000 * mb / 1024 * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD)

    report["lambda_cost_usd_per_1000"] = {
        "memory_mb": memory,
        "miss": cost(miss, memory),
        "hit": cost(hit, memory),
        "seed_miss": cost(SEED_MISS_MS, SEED_MEMORY_MB),
        "miss_ms_used": miss,
        "hit_ms_used": hit,
    }
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print_table(report)
    chart(report, os.path.join(out, "results.png"))
    print(f"\nwrote {os.path.relpath(os.path.join(out, 'results.json'), ROOT)} and results.png beside it")


def ratios(rows: List[dict], episodes: Dict[str, dict]) -> Dict[str, Dict[str, float]]:
    """Per episode, each method's time over the service's miss: the sums over the four offsets of the medians, in
    wall time (what a caller waits) and in CPU time (the work done; stable when the machine is busy)."""

    def total(name: str, method: str, key: str) -> Optional[float]:
        values = [r[key] for r in rows if r["episode"] == name and r["method"] == method]
        return sum(values) if values else None

    found: Dict[str, Dict[str, float]] = {}
    for name in episodes:
        for key, suffix in (("median_ms", ""), ("median_cpu_ms", "_cpu")):
            service = total(name, "service-miss", key)
            if not service:
                continue
            found.setdefault(name, {}).update(
                {
                    f"{method}_over_service_miss{suffix}": value / service
                    for method in ("naive", "ffmpeg-ss-url", "floor", "snap-miss", "snap-miss-decoded")
                    if (value := total(name, method, key))
                }
            )
            hit, snap_hit = total(name, "service-hit", key), total(name, "snap-hit", key)
            if hit and snap_hit:
                found[name][f"snap-hit_over_service_hit{suffix}"] = snap_hit / hit
    return found


def print_table(report: dict) -> None:
    print(
        f"\n{'episode':13} {'method':14} {'offset':>6} {'median ms':>10} {'min':>8} {'max':>8} {'CPU ms':>8} "
        f"{'source bytes':>13}"
    )
    for r in report["table"]:
        print(
            f"{r['episode']:13} {r['method']:14} {r['offset'] * 100:5.0f}% {r['median_ms']:10.1f} {r['min_ms']:8.1f} "
            f"{r['max_ms']:8.1f} {r['median_cpu_ms']:8.1f} {r['source_bytes']:13,d}"
        )
    print("\nratios (each method's medians summed over the offsets, over the service's miss; _cpu: in CPU time):")
    for name, values in report["ratios"].items():
        print(f"  {name:13} " + "  ".join(f"{k}={v:.2f}" for k, v in values.items()))
    for entry in report["workers"]:
        if entry.get("levels_build"):
            built = entry["levels_build"]
            seconds = report["episodes"][entry["episode"]]["seconds"]
            print(
                f"  levels of {entry['episode']} (snap=pause, made at upload): {built['ms']:.0f} ms wall, "
                f"{built['cpu_ms']:.0f} ms CPU, {built['hops']:,d} bytes; {built['cpu_ms'] / seconds * 3.6:.1f} s CPU "
                "per hour of audio"
            )
    for name, errors in report["errors"].items():
        for method, error in errors.items():
            print(f"  {name}: {method} failed: {error}")
    for entry in report["index_build"]:
        if "error" in entry:
            print(f"seek index, {entry['episode']}: not built: {entry['error']}")
        else:
            print(
                f"seek index, {entry['episode']}: {entry['ms']:.0f} ms for {entry['frames']:,} frames "
                f"({entry['bytes_read']:,} bytes read; index {entry['index_json_bytes']:,} bytes of JSON)"
            )
    cold = report.get("cold_start")  # not measured by a run of some rows only (--only)
    if cold:
        print(
            f"cold start: import {cold['import_ms']:.0f} ms, first hit {cold['first_hit_ms']:.0f} ms "
            f"(pymongo loaded: {cold['hit_loaded_pymongo']}, FFmpeg ran: {cold['hit_ran_ffmpeg']}), "
            f"first miss {cold['first_miss_ms']:.0f} ms"
        )
    c = report["lambda_cost_usd_per_1000"]
    print(
        f"Lambda cost per 1,000 at {c['memory_mb']} MB: misses ${c['miss']:.5f}, hits ${c['hit']:.5f}; "
        f"seed system's misses (1,128 ms at 1 GB) ${c['seed_miss']:.5f}"
    )


# Okabe & Ito's palette: told apart with every common colour-vision deficiency.
COLOURS = {
    "service-miss": "#0072B2",
    "service-hit": "#56B4E9",
    "snap-miss": "#CC79A7",
    "snap-hit": "#F0E442",
    "snap-miss-decoded": "#000000",
    "floor": "#009E73",
    "ffmpeg-ss-url": "#E69F00",
    "naive": "#D55E00",
}
EPISODE_WORDS = {
    "cbr": "constant bitrate",
    "vbr": "variable bitrate",
    "joined": "joined parts (ad inserted)",
    "m4a": "AAC in M4A (FFmpeg)",
}


def chart(report: dict, path: str) -> None:
    """One figure: time per 30 s clip, by method, for each episode (10-minute and 3-hour side by side)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; `make bench` installs it)")
        return
    lengths = [n for n in ("10min", "3h") if any(e.startswith(n) for e in report["episodes"])]
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(1, len(lengths), figsize=(max(11, 7 * len(lengths)), 6), squeeze=False, sharex=True)
    for column, length in enumerate(lengths):
        axis = axes[0][column]
        names = [n for n in report["episodes"] if n.startswith(length)]
        height = 0.8 / len(METHODS)
        for m, method in enumerate(METHODS):
            for e, name in enumerate(names):
                rows = [r for r in report["table"] if r["episode"] == name and r["method"] == method]
                if not rows:
                    continue
                median = statistics.median(r["median_ms"] for r in rows) / 1000
                low = min(r["min_ms"] for r in rows) / 1000
                high = max(r["max_ms"] for r in rows) / 1000
                y = e + (m - (len(METHODS) - 1) / 2) * height
                axis.barh(
                    y,
                    median,
                    height * 0.9,
                    color=COLOURS[method],
                    label=LABELS[method] if e == 0 else None,
                    xerr=[[median - low], [high - median]],
                    error_kw={"elinewidth": 0.8, "capsize": 2},
                )
                axis.text(
                    high * 1.08,
                    y,
                    f"{median:.2f} s" if median >= 0.1 else f"{median * 1000:.0f} ms",
                    va="center",
                    fontsize=7,
                )
        axis.set_yticks(range(len(names)), [EPISODE_WORDS[n.split("-", 1)[1]] for n in names])
        axis.invert_yaxis()
        axis.set_xscale("log")
        slowest = max(r["max_ms"] for r in report["table"]) / 1000
        axis.set_xlim(0.005, slowest * 3)  # from 5 ms, so every bar starts at a labelled place; room for labels
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x * 1000:.0f} ms" if x < 1 else f"{x:.0f} s"))
        axis.set_xlabel("time per 30 s clip (log scale: each step is 10 times longer)")
        axis.set_title("10-minute episodes" if length == "10min" else "3-hour episodes")
        axis.grid(axis="x", which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    figure.suptitle(f"Cutting a 30-second clip out of a podcast episode\n{takeaway(report)}", fontsize=12)
    figure.text(
        0.5,
        0.86,
        "bars: median over clips at 1, 25, 50 and 95 % into the episode; whiskers: the fastest "
        "and slowest run; the longer the bar, the slower",
        ha="center",
        fontsize=8,
    )
    figure.tight_layout(rect=(0, 0.13, 1, 0.86))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def takeaway(report: dict) -> str:
    """The one line the chart says, from the numbers."""
    longest = [n for n in report["ratios"] if "naive_over_service_miss" in report["ratios"][n]]
    if not longest:
        return "how long each method takes"
    name = longest[-1]
    ratio = report["ratios"][name]["naive_over_service_miss"]
    length = "3-hour" if name.startswith("3h") else "10-minute"
    return f"On a {length} episode the service is {ratio:.0f} times faster than downloading it and re-encoding"


if __name__ == "__main__":
    main()
