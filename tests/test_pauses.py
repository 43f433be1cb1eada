"""The pause finder and the contract's snapping rules (section 6), on PCM made here and on pauses stated here.

Speech-like bursts: noise under a syllable-rate envelope at about -20 dBFS, over a -50 dBFS noise floor, with gaps
of known lengths. The espeak-ng speech fixtures (tests/test_snap.py) try the same finder on real speech."""

from __future__ import annotations

import array
import math
import random

import pytest

from chalicelib.audio.pauses import (
    END_AROUND_MS,
    END_TAIL_MIN_MS,
    HOP_MS,
    PCM_RATE,
    START_AFTER_MS,
    START_BEFORE_MS,
    START_LEAD_MAX_MS,
    LevelMeter,
    Pause,
    Window,
    decode_levels,
    encode_levels,
    end_window,
    find_pauses,
    hop_levels,
    snap,
    snap_end,
    snap_start,
    start_window,
)


def pcm(parts, noise_dbfs=-50.0, seed=5) -> bytes:
    """``parts``: (ms, "speech" | "gap" | "closure"). Speech is noise at -20 dBFS under a 4 Hz syllable envelope;
    a closure is a 60 ms dip to the floor inside a word; everything sits on a white-noise floor."""
    rng = random.Random(seed)
    floor = 10 ** (noise_dbfs / 20) * 32768 * math.sqrt(3)
    out = array.array("h")
    for ms, kind in parts:
        for n in range(ms * PCM_RATE // 1000):
            value = rng.uniform(-floor, floor)
            if kind == "speech":
                envelope = 0.55 + 0.45 * math.sin(2 * math.pi * 4 * n / PCM_RATE)
                value += rng.gauss(0, 0.1 * 32768) * envelope
            out.append(max(-32768, min(32767, round(value))))
    return out.tobytes()


def test_levels_are_dbfs_per_10_ms_hop():
    tone = array.array("h", (round(32767 * math.sin(2 * math.pi * 440 * n / PCM_RATE)) for n in range(PCM_RATE)))
    levels = hop_levels(tone.tobytes())
    assert len(levels) == 100
    assert all(abs(level + 3.01) < 0.1 for level in levels)  # a full-scale sine: -3 dBFS
    floor = hop_levels(pcm([(1000, "gap")]))
    assert abs(sum(floor) / len(floor) + 50) < 1


def test_the_meter_takes_chunks_of_any_size():
    data = pcm([(700, "speech"), (300, "gap")])
    meter = LevelMeter()
    for at in range(0, len(data), 777):
        meter.feed(data[at : at + 777])
    assert meter.levels == hop_levels(data)


def test_stored_levels_keep_half_a_decibel():
    levels = hop_levels(pcm([(500, "speech"), (500, "gap")]))
    assert all(abs(a - b) <= 0.25 for a, b in zip(levels, decode_levels(encode_levels(levels)), strict=True))
    assert decode_levels(encode_levels([0.0, -300.0])) == [0.0, -127.5]


def test_gaps_of_150_ms_and_more_are_pauses_and_gaps_inside_words_are_not():
    parts = [(1200, "speech"), (400, "gap"), (900, "speech"), (60, "gap"), (700, "speech"), (120, "gap")]
    parts += [(800, "speech"), (150, "gap"), (1000, "speech"), (700, "gap"), (1000, "speech")]
    found = find_pauses(hop_levels(pcm(parts)), Window(0, 7030))
    truth = [(1200, 1600), (4180, 4330), (5330, 6030)]
    assert len(found) == len(truth), found
    for pause, (start, end) in zip(found, truth, strict=True):
        assert abs(pause.start_ms - start) <= 2 * HOP_MS and abs(pause.end_ms - end) <= 2 * HOP_MS, (pause, start)


@pytest.mark.parametrize(
    "parts",
    [
        [(5000, "gap")],  # room noise alone
        [(5000, "speech")],  # speech with no gap
    ],
    ids=["noise", "no-gap"],
)
def test_audio_without_pauses_has_none(parts):
    assert find_pauses(hop_levels(pcm(parts)), Window(0, 5000)) == []


def test_a_stretch_only_12_db_under_the_speech_is_not_well_below_it():
    loud = hop_levels(pcm([(3000, "speech")]))
    reference = sorted(loud)[int(0.95 * len(loud))]
    assert find_pauses(loud[:100] + [reference - 12] * 60 + loud[100:], Window(0, 3600)) == []
    assert find_pauses(loud[:100] + [reference - 30] * 60 + loud[100:], Window(0, 3600)) == [Pause(1000, 1600)]


def test_pauses_at_a_window_edge_are_open_unless_the_episode_ends_there():
    levels = hop_levels(pcm([(300, "gap"), (2000, "speech"), (300, "gap")]))
    inner = find_pauses(levels, Window(5000, 7600))
    assert [(p.open_start, p.open_end) for p in inner] == [(True, False), (False, True)]
    ending = find_pauses(levels, Window(5000, 8000))  # fewer hops than the window: the episode ends
    assert ending[-1].open_end is False
    first = find_pauses(levels, Window(0, 2600))
    assert first[0].open_start is False


def test_windows_cover_the_contract_and_context_in_whole_hops():
    window = start_window(10_005)
    assert window.from_ms <= 10_005 - START_BEFORE_MS - 1000 and window.to_ms >= 10_005 + START_AFTER_MS + 1000
    assert window.from_ms % HOP_MS == 0 and window.to_ms % HOP_MS == 0
    assert start_window(500).from_ms == 0
    ends = end_window(10_000, 30_000)
    for start in (10_000 - START_BEFORE_MS - 200, 10_000 + START_AFTER_MS + 1000):  # wherever the start lands
        assert ends.from_ms <= start + 30_000 - END_AROUND_MS and ends.to_ms >= start + 30_000 + END_AROUND_MS


# ---------------------------------------------------------------- the rules, on stated pauses


def start_ok(pause: Pause, start: int) -> bool:
    return pause.start_ms <= start < pause.end_ms and pause.end_ms - start <= START_LEAD_MAX_MS


def test_the_start_moves_into_the_nearest_pause_shortly_before_it_ends():
    near, far = Pause(8600, 9000), Pause(10_100, 10_300)
    start = snap_start([far, near], 10_000)
    assert start_ok(far, start)  # 100 ms away, against 1,000 for the other
    assert start_ok(near, snap_start([near], 10_000))


@pytest.mark.parametrize("length", [150, 160, 250, 400, 900, 3000])
def test_the_start_is_inside_the_pause_at_most_400_ms_before_it_ends(length):
    pause = Pause(9000, 9000 + length)
    assert start_ok(pause, snap_start([pause], 9500))


def test_a_start_with_no_pause_overlapping_its_window_stays():
    before, after = Pause(7000, 7990), Pause(10_260, 11_000)  # end before start - 2000; begin after start + 250
    assert snap_start([before, after], 10_000) == 10_000
    assert snap_start([], 10_000) == 10_000


def test_a_pause_whose_end_is_not_known_does_not_place_the_start():
    assert snap_start([Pause(9800, 12_000, open_end=True)], 10_000) == 10_000


def test_the_end_lands_at_least_100_ms_into_the_nearest_pause():
    far, near = Pause(37_000, 37_500), Pause(40_500, 40_700)
    end = snap_end([far, near], 10_000, 40_000, 1000)
    assert near.start_ms + END_TAIL_MIN_MS <= end <= near.end_ms
    for length in (150, 200, 600, 2000):
        pause = Pause(40_000, 40_000 + length)
        end = snap_end([pause], 10_000, 41_000, 1000)
        assert pause.start_ms + END_TAIL_MIN_MS <= end <= pause.end_ms, length


def test_an_end_with_no_pause_in_its_window_stays():
    assert snap_end([Pause(37_000, 37_990), Pause(42_010, 43_000)], 10_000, 40_000, 1000) == 40_000


def test_the_end_never_leaves_less_than_the_shortest_clip():
    start_pause = Pause(9_700, 10_000)
    start = snap_start([start_pause], 10_000)
    assert snap_end([start_pause], start, start + 1000, 1000) == start + 1000


def test_snap_measures_the_end_from_the_snapped_start():
    served = snap([Pause(8_000, 8_500)], [Pause(37_800, 38_400)], 10_000, 30_000, 1000)
    assert start_ok(Pause(8_000, 8_500), served[0])
    assert 37_900 <= served[0] + served[1] <= 38_400
