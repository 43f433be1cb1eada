"""What a clip's waveform and card cost, cold (a fresh process: a new Lambda container) and warm.

    python -m bench.pictures [--runs 5]      (make bench-pictures)

Each run is a fresh ``python`` process that imports app.py and serves, through chalice.test.Client over in-process
S3 (moto), a 10-minute MP3 episode's 30-second clips:

- cold: the first waveform (its clip cut, then one decode) and the first card (Pillow and the fonts loaded, one
  render; its waveform cached by then), then each again (cached);
- warm, on other clips (their clip cut first by the clip route, so only the picture's own work is timed): a
  waveform (one decode), a card whose waveform is cached (one render), a card with nothing cached (one decode and
  one render), and cached ones.

The ``decode`` and ``render`` columns are the use case's own laps (clips/pictures.py); the route columns are the
whole request. moto answers S3 in-process, so S3 round trips cost nearly nothing here: on AWS add one round trip
per S3 request (a cached waveform or card: the clip's HEAD, the source's HEAD, then one GET or HEAD of it). Prints a
table and writes bench/pictures.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUID = "0e983347-7815-4b62-87a6-84d988a772b7"
SIGNAL = "anoisesrc=d=600:c=pink:r=44100:a=0.5:seed=7,volume='0.15+0.85*abs(sin(t*2.3)*cos(t*0.71))':eval=frame"

CHILD = r"""
import json, os, sys, time
started = time.perf_counter()
import boto3
from moto import mock_aws
with mock_aws():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="pod-insights-raw"); s3.create_bucket(Bucket="pod-insights-clips")
    key = "bench/%(guid)s/audio/episode.mp3"
    with open(os.environ["BENCH_EPISODE"], "rb") as handle:
        s3.put_object(Bucket="pod-insights-raw", Key=key, Body=handle.read(), ContentType="audio/mpeg")
    t0 = time.perf_counter()
    import app
    from chalice.test import Client
    from chalicelib import wiring
    from chalicelib.clips.service import ClipRequest
    imported = time.perf_counter()
    out = {"import_app_ms": (imported - t0) * 1000, "pillow_loaded_at_import": "PIL" in sys.modules}

    def route(client, path):
        begin = time.perf_counter()
        response = client.http.get(path, headers={"Accept": "*/*"})
        assert response.status_code in (200, 302), (path, response.status_code, response.body[:300])
        return (time.perf_counter() - begin) * 1000

    def q(start):
        return "start_time_ms=%%d&duration_ms=30000" %% start

    with Client(app.app) as client:
        out["cold_waveform_with_cut_ms"] = route(client, "/api/v1/audio_clips/%(guid)s/waveform?" + q(60000))
        out["cold_card_ms"] = route(client, "/clips/%(guid)s/card.png?" + q(60000))
        out["waveform_cached_ms"] = route(client, "/api/v1/audio_clips/%(guid)s/waveform?" + q(60000))
        out["card_cached_ms"] = route(client, "/clips/%(guid)s/card.png?" + q(60000))
        pictures = wiring.current().pictures
        warm = {"waveform_ms": [], "decode_ms": [], "card_ms": [], "render_ms": [], "card_nothing_cached_ms": []}
        for n, start in enumerate(range(120000, 420000, 60000)):
            route(client, "/api/v1/audio_clips/%(guid)s?" + q(start))  # the clip, cut
            route(client, "/api/v1/audio_clips/%(guid)s?" + q(start + 30000))
            begin = time.perf_counter()
            wave = pictures.waveform(ClipRequest("%(guid)s", start, 30000), time.monotonic() + 25)
            warm["waveform_ms"].append((time.perf_counter() - begin) * 1000)
            warm["decode_ms"].append(wave.timings_ms["decode"])
            begin = time.perf_counter()
            card = pictures.card(ClipRequest("%(guid)s", start, 30000), time.monotonic() + 25)
            warm["card_ms"].append((time.perf_counter() - begin) * 1000)
            warm["render_ms"].append(card.timings_ms["render"])
            begin = time.perf_counter()
            pictures.card(ClipRequest("%(guid)s", start + 30000, 30000), time.monotonic() + 25)
            warm["card_nothing_cached_ms"].append((time.perf_counter() - begin) * 1000)
        for name, values in warm.items():
            out["warm_" + name] = sorted(values)[len(values) // 2]
        head = s3.head_object(Bucket="pod-insights-clips", Key="audio_clips/%(guid)s/60000-90000.card.png")
        wave_head = s3.head_object(Bucket="pod-insights-clips", Key="audio_clips/%(guid)s/60000-90000.waveform.json")
        out["card_bytes"], out["waveform_bytes"] = head["ContentLength"], wave_head["ContentLength"]
print("RESULT " + json.dumps(out))
""" % {"guid": GUID}

ROWS = [
    ("import_app_ms", "import app.py (Pillow not loaded)"),
    ("cold_waveform_with_cut_ms", "cold: first waveform (clip cut + 1 decode)"),
    ("cold_card_ms", "cold: first card (Pillow, fonts, 1 render)"),
    ("waveform_cached_ms", "cached waveform (route)"),
    ("card_cached_ms", "cached card (route, 302)"),
    ("warm_waveform_ms", "warm waveform, clip cached (use case)"),
    ("warm_decode_ms", "  of which: FFmpeg decode"),
    ("warm_card_ms", "warm card, waveform cached (use case)"),
    ("warm_render_ms", "  of which: render"),
    ("warm_card_nothing_cached_ms", "warm card, clip cached, no waveform (use case)"),
]


def episode(directory: str) -> str:
    import imageio_ffmpeg

    path = os.path.join(directory, "episode.mp3")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", SIGNAL]
    subprocess.run([*command, "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", path], check=True)
    return path


def run(runs: int) -> Dict[str, Dict[str, float]]:
    results: List[Dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pictures-") as work:
        catalog = os.path.join(work, "catalog.json")
        with open(catalog, "w") as handle:
            json.dump(
                [
                    {
                        "guid": GUID,
                        "s3_audio_path": f"s3://pod-insights-raw/bench/{GUID}/audio/episode.mp3",
                        "podcast_title": "Bench Podcast",
                        "raw_entry_original_feed": {"episode_title": "A ten-minute episode of pink noise"},
                    }
                ],
                handle,
            )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MONGODB_", "PUBLIC_BASE"))},
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LOCAL_CATALOG_FILE": catalog,
            "BENCH_EPISODE": episode(work),
            "POWERTOOLS_METRICS_DISABLED": "true",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": ROOT,
        }
        for _ in range(runs):
            done = subprocess.run(
                [sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
            )
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                raise SystemExit(
                    f"bench child failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                )
            results.append(json.loads(line[len("RESULT ") :]))
    summary: Dict[str, Dict[str, float]] = {}
    for key in [*(name for name, _ in ROWS), "card_bytes", "waveform_bytes"]:
        values = [float(r[key]) for r in results]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    summary = run(args.runs)
    print(f"\nWaveform and card of a 30 s clip, {args.runs} fresh processes (median, min-max, ms)\n")
    for key, label in ROWS:
        row = summary[key]
        print(f"  {label:<50} {row['median']:8.1f}   ({row['min']:.1f}-{row['max']:.1f})")
    print(
        f"\n  card PNG {summary['card_bytes']['median'] / 1024:.1f} KiB, "
        f"waveform JSON {summary['waveform_bytes']['median'] / 1024:.1f} KiB"
    )
    with open(os.path.join(ROOT, "bench", "pictures.json"), "w") as handle:
        json.dump({"runs": args.runs, "results": summary}, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
