"""Property-based: whatever a client sends, parsing either yields a request inside the contract or a 400, before any
I/O; and no accepted input names an S3 key outside audio_clips/{guid}/."""

from __future__ import annotations

import re
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.errors import BadRequest
from chalicelib.stores.keys import clip_key, is_episode_id
from chalicelib.web.params import parse_clip_request

GRAMMAR = re.compile(r"[A-Za-z0-9._:-]{1,200}")
MAX_CLIP_MS = 60_000
EXAMPLES = {"ids": 0, "queries": 0}

id_like = st.one_of(
    st.text(min_size=0, max_size=260),
    st.from_regex(r"[A-Za-z0-9._:-]{1,210}", fullmatch=True),
    st.text(alphabet="%2F%2E./\\:;?#&=+ \x00\n", max_size=40),
)
number_like = st.one_of(
    st.integers(-(10**15), 10**15).map(str),
    st.text(max_size=15),
    st.sampled_from(["", " 1", "1 ", "+5", "1e3", "0x10", "１２", "007", "1.0"]),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(episode_id=id_like)
def test_an_episode_id_is_accepted_exactly_when_it_is_in_the_grammar(episode_id):
    EXAMPLES["ids"] += 1
    decoded = unquote(episode_id)
    expected = bool(GRAMMAR.fullmatch(decoded)) and set(decoded) != {"."}
    try:
        parsed = parse_clip_request(episode_id, {"start_time_ms": "0"}, MAX_CLIP_MS)
    except BadRequest as error:
        assert not expected and "episode_id" in error.message
        return
    assert expected and is_episode_id(parsed.clip.episode_id)
    key = parsed.clip.key
    assert key.startswith(f"audio_clips/{parsed.clip.episode_id}/") and key.count("/") == 2
    assert ".." not in key.split("/") and "\\" not in key and "%" not in key


@settings(max_examples=1500, deadline=None)
@given(
    start=number_like,
    duration=st.one_of(st.none(), number_like),
    redirect=st.one_of(st.none(), st.sampled_from(["true", "false", "TRUE", "False", "", "yes", "1", "0", "tru"])),
)
def test_parameters_are_accepted_exactly_within_their_bounds(start, duration, redirect):
    EXAMPLES["queries"] += 1
    query = {"start_time_ms": start}
    if duration is not None:
        query["duration_ms"] = duration
    if redirect is not None:
        query["redirect"] = redirect
    digits = re.compile(r"[0-9]{1,12}")
    ok_start = bool(digits.fullmatch(start))
    ok_duration = duration is None or (bool(digits.fullmatch(duration)) and 1000 <= int(duration) <= MAX_CLIP_MS)
    ok_redirect = redirect is None or redirect.lower() in ("true", "false")
    try:
        parsed = parse_clip_request("substack:1", query, MAX_CLIP_MS)
    except BadRequest as error:
        assert not (ok_start and ok_duration and ok_redirect)
        assert any(name in error.message for name in ("start_time_ms", "duration_ms", "redirect"))
        return
    assert ok_start and ok_duration and ok_redirect
    assert parsed.clip.start_ms == int(start) and 1000 <= parsed.clip.duration_ms <= MAX_CLIP_MS
    assert parsed.clip.key == clip_key(
        "substack:1", parsed.clip.start_ms, parsed.clip.start_ms + parsed.clip.duration_ms
    )


def test_hypothesis_tried_what_it_was_asked_to(capsys):
    """Runs last in this module: the property tests above really did try their 1,500 inputs each."""
    with capsys.disabled():
        print(f"\n[measure] hypothesis: {EXAMPLES['ids']} episode ids, {EXAMPLES['queries']} queries tried")
    assert EXAMPLES["ids"] >= 1500 and EXAMPLES["queries"] >= 1500
