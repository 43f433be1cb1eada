"""`make bench S3_LATENCY_MS=50`: the S3 round trips a listener waits for, with every S3 request delayed.

In an AWS region each S3 request waits tens of milliseconds for its first byte; on loopback it waits almost nothing,
so a local run cannot tell requests made one after another from requests made together. Here every S3 request
passes a proxy (bench/s3latency.py) that holds it ``--delay-ms`` before passing it on to the local S3 (moto's
server, with bench/s3proxy.py serving the source files), and records when each one ran. For each case:

- requests: S3 requests made;
- ms and ms +delay: the median latency without and with the delay (the same process, interleaved);
- round trips: (ms +delay - ms) / delay, the S3 requests waited for one after another;
- chain: the same, read from the proxy's record (the longest run of requests each sent after the one before ended).

Cases, on 10-minute episodes whose seek index was stored when their audio arrived (as cleanup_clips does):
``hit`` (a warm process that has served the episode), ``warm-miss`` (the same process, a clip not cached yet),
``cold-miss`` and ``cold-hit`` (the first request of a fresh process, imports done), and ``floor`` (a ranged GET of
the clip's bytes, then a PUT of as many: what any service must do for a miss). Writes bench/round_trips.json
(``--out``). ``--code DIR`` measures another checkout's ``chalicelib`` (e.g. main's) with this same harness.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP_MS = 30_000
CASES = ("hit", "warm-miss", "cold-miss", "cold-hit", "floor")
EPISODES = ("10min-vbr", "10min-cbr")


def _control(proxy: str, path: str, post: bool = True):
    request = urllib.request.Request(proxy + path, method="POST" if post else "GET", data=b"" if post else None)
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def _measure(proxy: str, delay_ms: float, call: Callable[[], None]) -> dict:
    _control(proxy, f"/__latency__?ms={delay_ms}")
    _control(proxy, "/__requests__/reset")
    started = time.monotonic()
    call()
    ended = time.monotonic()
    requests = _control(proxy, "/__requests__", post=False)
    for entry in requests:  # the proxy runs on this machine: the same monotonic clock
        entry["start"] -= started
        entry["end"] -= started
    return {"delay_ms": delay_ms, "ms": (ended - started) * 1000, "requests": requests}


# ------------------------------------------------------------------ workers (run with PYTHONPATH = the code measured)


def _clip_request(episode_id: str, start_ms: int):
    try:
        from chalicelib.clips.service import ClipRequest
    except ImportError:  # a checkout from before chalicelib became packages
        from chalicelib.clips import ClipRequest  # type: ignore[no-redef]
    return ClipRequest(episode_id, start_ms, CLIP_MS)


def _get(episode_id: str, start_ms: int, hit: bool) -> None:
    from chalicelib import wiring

    result = wiring.current().clips.get_clip(_clip_request(episode_id, start_ms), time.monotonic() + 60)
    assert result.cache_hit == hit, f"expected cache_hit={hit}"


def _uncached(s3, bench, name: str, start_ms: int) -> Callable[[], None]:
    s3.delete_object(Bucket=bench.CLIPS_BUCKET, Key=_clip_request(bench.guid(name), start_ms).key)
    return lambda: _get(bench.guid(name), start_ms, hit=False)


def warm_worker(name: str, delays: List[float], rounds: int, proxy: str) -> List[dict]:
    """One process: it serves the episode once, then each round measures a miss, a hit and the floor at each delay."""
    from bench import run as bench
    from chalicelib import wiring

    s3 = wiring.current().s3
    seconds = bench.EPISODES[name][0]
    _uncached(s3, bench, name, int(seconds * 100))()  # warm: connections, the catalog, this episode's source
    start_ms = int(seconds * 500)
    offset = int(os.path.getsize(bench.episode_path(name)) * 0.5)
    results = []
    for number in range(rounds):
        for delay in delays if number % 2 else list(reversed(delays)):
            miss = _measure(proxy, delay, _uncached(s3, bench, name, start_ms))
            hit = _measure(proxy, delay, lambda: _get(bench.guid(name), start_ms, hit=True))
            key = _clip_request(bench.guid(name), start_ms).key
            size = s3.head_object(Bucket=bench.CLIPS_BUCKET, Key=key)["ContentLength"]

            byte_range = f"bytes={offset}-{offset + size - 1}"

            def floor(byte_range: str = byte_range) -> None:
                data = s3.get_object(Bucket=bench.SOURCE_BUCKET, Key=bench.source_key(name), Range=byte_range)
                s3.put_object(Bucket=bench.CLIPS_BUCKET, Key=f"floor/{name}.bin", Body=data["Body"].read())

            results += [
                dict(miss, case="warm-miss"),
                dict(hit, case="hit"),
                dict(_measure(proxy, delay, floor), case="floor"),
            ]
    return results


def cold_worker(name: str, delay: float, case: str, number: int, proxy: str) -> List[dict]:
    """A fresh process's first request, after the Lambda's init (imports) which is not what is measured."""
    import mongomock  # noqa: F401  (the embedded catalog's library; pymongo on a deployed stage)

    import app  # noqa: F401
    from bench import run as bench
    from chalicelib import wiring

    s3 = wiring.current().s3
    start_ms = int(bench.EPISODES[name][0] * 500) + 1000 * (1 + number)
    if case == "cold-miss":
        call = _uncached(s3, bench, name, start_ms)
    else:
        try:
            s3.head_object(Bucket=bench.CLIPS_BUCKET, Key=_clip_request(bench.guid(name), start_ms).key)
        except Exception:  # not cached yet: cut it, then forget everything this process learnt
            _get(bench.guid(name), start_ms, hit=False)
            wiring.reset()
            s3 = wiring.current().s3
        call = lambda: _get(bench.guid(name), start_ms, hit=True)
    return [dict(_measure(proxy, delay, call), case=case)]


def prepare(names: List[str]) -> None:
    """What cleanup_clips does when audio arrives: each episode's seek index, stored beside its clips."""
    from bench import run as bench
    from chalicelib import wiring

    prepare_episode = wiring.current().indexer.for_invocation(None)
    for name in names:
        outcome = prepare_episode(bench.SOURCE_BUCKET, bench.source_key(name), bench.guid(name))
        print(f"  {name}: seek index {outcome.outcome}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the driver


def summarise(results: List[dict], delay_ms: float) -> List[dict]:
    from bench.s3latency import sequential

    rows = []
    for name in sorted({r["episode"] for r in results}):
        for case in CASES:
            runs = [r for r in results if r["episode"] == name and r["case"] == case]
            plain = [r["ms"] for r in runs if r["delay_ms"] == 0]
            delayed = [r for r in runs if r["delay_ms"] == delay_ms]
            if not plain or not delayed:
                continue
            with_delay, without = statistics.median(r["ms"] for r in delayed), statistics.median(plain)
            rows.append(
                {
                    "episode": name,
                    "case": case,
                    "runs": len(delayed),
                    "requests": statistics.median(len(r["requests"]) for r in delayed),
                    "ms": round(without, 1),
                    "ms_delayed": round(with_delay, 1),
                    "round_trips": round((with_delay - without) / delay_ms, 2),
                    "chain": statistics.median(sequential(r["requests"]) for r in delayed),
                    "example": _timeline(delayed[0]),
                    "example_without_delay": _timeline(next(r for r in runs if r["delay_ms"] == 0)),
                }
            )
    return rows


def _timeline(run: dict) -> List[str]:
    return [
        f"{q['method']} {q['path'].rsplit('/', 1)[-1]} {q['start'] * 1000:.0f}-{q['end'] * 1000:.0f} ms ({run['ms']:.0f})"
        for q in run["requests"]
    ]


def print_table(rows: List[dict], delay_ms: float) -> None:
    print(
        f"\n{'episode':10} {'case':9} {'requests':>8} {'ms':>7} {f'ms +{delay_ms:g}':>8} {'round trips':>11} "
        f"{'chain':>5}   requests of one run with the delay (start-end)"
    )
    for r in rows:
        print(
            f"{r['episode']:10} {r['case']:9} {r['requests']:8g} {r['ms']:7.1f} {r['ms_delayed']:8.1f} "
            f"{r['round_trips']:11.2f} {r['chain']:5g}   {'; '.join(r['example'])}"
        )


def _job(code: str, env: Dict[str, str], arguments: List[str]) -> List[dict]:
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *arguments], env=env, cwd=code, stdout=subprocess.PIPE, text=True
    )
    if result.returncode:
        raise RuntimeError(f"{arguments} failed (exit {result.returncode}); its output is above")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(delay_ms: float, rounds: int, names: List[str], code: str, out: str) -> None:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from bench import run as bench
    from bench.s3latency import LatencyProxy
    from bench.s3proxy import S3Proxy

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    paths = {n: bench.episode_path(n) for n in names}
    moto_port = bench._free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    files = S3Proxy(moto_port, {(bench.SOURCE_BUCKET, bench.source_key(n)): p for n, p in paths.items()}).start()
    latency = LatencyProxy(files.port).start()
    try:
        env = bench._worker_env(latency.url, names, tempfile.mkdtemp(prefix="bench-rtt-"))
        env["PYTHONPATH"] = code
        boto3.client(
            "s3", endpoint_url=latency.url, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b"
        ).create_bucket(Bucket=bench.CLIPS_BUCKET)
        _job(code, env, ["--prepare", ",".join(names)])
        results: List[dict] = []
        for name in names:
            print(f"{name}: {rounds} rounds in one warm process ...", file=sys.stderr, flush=True)
            warm = _job(code, env, ["--warm", name, f"0,{delay_ms:g}", str(rounds), latency.url])
            results += [dict(r, episode=name) for r in warm]
            print(f"{name}: {4 * rounds} fresh processes ...", file=sys.stderr, flush=True)
            for number in range(rounds):
                for case in ("cold-miss", "cold-hit"):
                    for delay in (0, delay_ms) if number % 2 else (delay_ms, 0):
                        cold = _job(code, env, ["--cold", name, f"{delay:g}", case, str(number), latency.url])
                        results += [dict(r, episode=name) for r in cold]
        rows = summarise(results, delay_ms)
        print_table(rows, delay_ms)
        with open(out, "w") as handle:
            json.dump({"delay_ms": delay_ms, "rounds": rounds, "clip_ms": CLIP_MS, "rows": rows}, handle, indent=1)
        print(f"\nwrote {os.path.relpath(out, ROOT)}")
    finally:
        latency.stop()
        files.stop()
        moto.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--episodes", default=",".join(EPISODES))
    parser.add_argument("--code", default=ROOT, help="the checkout whose chalicelib is measured (default: this one)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "round_trips.json"))
    parser.add_argument("--prepare", metavar="EPISODES")
    parser.add_argument("--warm", nargs=4, metavar=("EPISODE", "DELAYS", "ROUNDS", "PROXY"))
    parser.add_argument("--cold", nargs=5, metavar=("EPISODE", "DELAY", "CASE", "NUMBER", "PROXY"))
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare.split(","))
        print("[]")
    elif args.warm:
        name, delays, rounds, proxy = args.warm
        print(json.dumps(warm_worker(name, [float(d) for d in delays.split(",")], int(rounds), proxy)))
    elif args.cold:
        name, delay, case, number, proxy = args.cold
        print(json.dumps(cold_worker(name, float(delay), case, int(number), proxy)))
    else:
        sys.path.insert(0, ROOT)
        run(args.delay_ms, args.rounds, args.episodes.split(","), os.path.abspath(args.code), args.out)


if __name__ == "__main__":
    main()
