"""What cleanup_clips spends to index an episode when its audio arrives: time, peak RSS, bytes streamed.

    .venv/bin/python -m bench.upload_index [3h-vbr 3h-cbr 3h-joined ...]

Each episode (bench/cache/, generated once by bench.run) is served by bench/s3proxy.py on 127.0.0.1 with S3's
range semantics (moto's own ranged GET reads the whole object first); the clips bucket lives in moto's server
behind it. ``prepare_episode`` (the function cleanup_clips calls) runs in a fresh worker process, so its peak RSS
is the function's: the interpreter, boto3, the app's modules and the build.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.run import CACHE, CLIPS_BUCKET, SIGNAL, SOURCE_BUCKET, _free_port, ffmpeg, guid, source_key  # noqa: E402
from bench.run import episode_path as uniform_path  # noqa: E402

EPISODE_SECONDS = 10_800


def episode_path(name: str) -> str:
    """bench.run's episodes, and "3h-joined": a 15 s mono pre-roll (own Info tag) before the 3-hour CBR show,
    the shape that makes today's engine resync on every frame."""
    if name != "3h-joined":
        return uniform_path(name)
    path = os.path.join(CACHE, "episode-3h-joined.mp3")
    if not os.path.exists(path):
        preroll = os.path.join(CACHE, "preroll-mono.mp3")
        subprocess.run(
            [
                ffmpeg(),
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                SIGNAL.format(seconds=15),
                "-ac",
                "1",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "64k",
                preroll,
            ],
            check=True,
        )
        with open(path + ".part", "wb") as out:
            for part in (preroll, uniform_path("3h-cbr")):
                with open(part, "rb") as handle:
                    out.write(handle.read())
        os.replace(path + ".part", path)
    return path


def worker(name: str) -> dict:
    import app  # noqa: F401  (the Lambda's init, as cleanup_clips pays it)
    from chalicelib import wiring
    from chalicelib.clips.seek_index import prepare_episode

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    current = wiring.current()
    started, cpu_started = time.perf_counter(), time.process_time()
    prepared = prepare_episode(
        current.s3, current.clip_store, SOURCE_BUCKET, source_key(name), guid(name), time.monotonic() + 600
    )
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    index = current.clip_store.artefact(guid(name), "seek-index.json").load() or {}
    misses = [first_miss(name, offset) for offset in (0.25, 0.5, 0.95)]
    return {
        "episode": name,
        "outcome": prepared.outcome,
        "error": prepared.error,
        "ms": round(elapsed * 1000),
        "cpu_ms": round(cpu * 1000),
        "source_bytes_read": prepared.source_bytes_read,
        "index_json_bytes": len(json.dumps(index)),
        "rss_before_build_mb": round(before / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "first_misses": misses,
    }


def first_miss(name: str, offset: float) -> dict:
    """A 30 s clip cut after the upload's index: what it read of the source beyond the clip's own bytes."""
    from chalicelib import wiring
    from chalicelib.clips.service import ClipRequest

    start_ms = int(EPISODE_SECONDS * 1000 * offset)
    result = wiring.current().clips.get_clip(ClipRequest(guid(name), start_ms, 30_000), time.monotonic() + 25)
    return {
        "offset": offset,
        "method": result.method,
        "index_built": result.index_built,
        "source_bytes_read": result.source_bytes_read,
        "clip_bytes": result.clip_bytes,
        "over_clip": (result.source_bytes_read or 0) - (result.clip_bytes or 0),
    }


def main(names: list) -> None:
    from moto.server import ThreadedMotoServer

    from bench.s3proxy import S3Proxy

    paths = {n: episode_path(n) for n in names}
    moto_port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    proxy = S3Proxy(moto_port, {(SOURCE_BUCKET, source_key(n)): p for n, p in paths.items()}).start()
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        env = dict(
            os.environ,
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_REGION="us-east-1",
            SOURCE_BUCKET=SOURCE_BUCKET,
            CLIPS_BUCKET=CLIPS_BUCKET,
            PYTHONPATH=ROOT,
        )
        env.pop("MONGODB_URI", None)
        catalog = os.path.join(CACHE, "upload-index-catalog.json")
        with open(catalog, "w") as handle:
            json.dump(
                [{"guid": guid(n), "s3_audio_path": f"s3://{SOURCE_BUCKET}/{source_key(n)}"} for n in names], handle
            )
        env["LOCAL_CATALOG_FILE"] = catalog
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=CLIPS_BUCKET)
        for name in names:
            result = subprocess.run(
                [sys.executable, "-m", "bench.upload_index", "--worker", name],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(result.stderr[-3000:])
            report = json.loads(result.stdout.strip().splitlines()[-1])
            report["episode_bytes"] = os.path.getsize(paths[name])
            print(json.dumps(report), flush=True)
    finally:
        proxy.stop()
        moto.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2])))
    else:
        main(sys.argv[1:] or ["3h-vbr"])
