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
