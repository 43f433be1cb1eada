"""The benchmark's bookkeeping (the measurements themselves are `make bench`, not part of the suite)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench import run

ROOT = Path(__file__).resolve().parent.parent


def test_a_quick_run_writes_to_an_untracked_place_and_never_over_the_committed_results():
    quick = Path(run.output_dir(quick=True))
    assert quick != Path(run.output_dir(quick=False)) and quick.parent == ROOT / "bench"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(quick / "results.json")], cwd=ROOT)
    assert ignored.returncode == 0, "bench/quick/ must be ignored by git"


def test_ratios_divide_each_methods_summed_medians_by_the_services_miss():
    rows = [
        {"episode": "e", "method": m, "offset": o, "median_ms": ms, "median_cpu_ms": ms / 2}
        for m, values in (("service-miss", (100, 300)), ("naive", (1000, 3000)), ("floor", (50, 50)))
        for o, ms in zip((0.25, 0.5), values, strict=True)
    ]
    found = run.ratios(rows, {"e": {}})["e"]
    assert found["naive_over_service_miss"] == 10 and found["floor_over_service_miss"] == 0.25
    assert found["naive_over_service_miss_cpu"] == 10 and "ffmpeg-ss-url_over_service_miss" not in found


def test_every_method_has_plain_words_and_a_colour_told_apart_by_colour_blind_readers():
    assert set(run.LABELS) == set(run.METHODS) == set(run.COLOURS)
    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    assert set(run.COLOURS.values()) <= okabe_ito
    assert not any(word in " ".join(run.LABELS.values()) for word in ("floor", "naive", "ffmpeg-ss-url"))


def test_the_round_trips_chain_counts_requests_sent_one_after_another_not_requests():
    from bench.s3latency import sequential

    together_then_two = [
        {"start": 0.0, "end": 1.0},  # two HEADs together
        {"start": 0.1, "end": 1.1},
        {"start": 1.2, "end": 2.0},  # then a GET
        {"start": 2.1, "end": 3.0},  # then a PUT
    ]
    assert sequential(together_then_two) == 3
    assert sequential([{"start": 0.0, "end": 1.0}, {"start": 0.5, "end": 2.0}]) == 1
    assert sequential([]) == 0


def test_the_round_trips_summary_divides_the_added_latency_by_the_delay():
    from bench.round_trips import summarise

    def run(delay_ms, ms, chain):
        requests = [{"method": "GET", "path": f"/b/{i}", "start": i, "end": i + 0.5} for i in range(chain)]
        return {"episode": "e", "case": "hit", "delay_ms": delay_ms, "ms": ms, "requests": requests}

    [row] = summarise([run(0, 10, 2), run(50, 110, 2), run(0, 12, 2), run(50, 112, 2)], 50)
    assert (row["round_trips"], row["chain"], row["requests"], row["runs"]) == (2.0, 2, 2, 2)


def test_the_latency_proxy_passes_s3_requests_on_and_records_each(moto_server):
    import boto3

    from bench.s3latency import LatencyProxy

    port = int(moto_server.meta.endpoint_url.rsplit(":", 1)[1])
    proxy = LatencyProxy(port, delay_ms=1).start()
    try:
        client = boto3.client("s3", region_name="us-east-1", endpoint_url=proxy.url)
        client.put_object(Bucket="pod-insights-clips", Key="a/b.bin", Body=b"0123456789")
        data = client.get_object(Bucket="pod-insights-clips", Key="a/b.bin", Range="bytes=2-4")["Body"].read()
        assert data == b"234"
        seen = [(r["method"], r["path"], r["range"], r["status"]) for r in proxy.requests]
        assert seen == [
            ("PUT", "/pod-insights-clips/a/b.bin", None, 200),
            ("GET", "/pod-insights-clips/a/b.bin", "bytes=2-4", 206),
        ]
        assert all(r["start"] <= r["end"] for r in proxy.requests)
    finally:
        proxy.stop()
