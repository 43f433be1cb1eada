"""Quirks of real MP3 files, each in one test: which path cuts it, what it reads, what it answers."""

from __future__ import annotations

import functools
import json
import time
from typing import Optional

import pytest
from chalice.test import Client

from app import app
from chalicelib.audio import cutting, mp3
from chalicelib.audio.cutting import Mp3Source, build_index
from chalicelib.clips.seek_index import load_or_build_index
from chalicelib.stores.source import SourceAudio
from tests.audio_tools import decode
from tests.conftest import EPISODE, SOURCE_BUCKET, source_key
from tests.joined_audio import LAME, encode, lame_encode


def cut_mp3(source: Mp3Source, start_ms: int, want_ms: int, stored_index, deadline: float) -> cutting.ClipAudio:
    """The engine's cut, with its seek index kept (as the clip service keeps it) in ``stored_index``."""
    load_index = functools.partial(load_or_build_index, source, stored_index, deadline)
    return cutting.cut_mp3(source, start_ms, want_ms, load_index, deadline)


class MemoryArtefact:
    """An episode artefact (the stored seek index, or the lease beside it) kept in memory."""

    def __init__(self, key: str = "audio_clips/episode/seek-index.json"):
        self.key = key
        self.doc: Optional[dict] = None
        self.version = 0
        self.neighbours: dict = {}

    def load(self) -> Optional[dict]:
        return self.doc

    def save(self, doc: dict) -> None:
        self.doc, self.version = doc, self.version + 1

    def beside(self, name: str) -> "MemoryArtefact":
        return self.neighbours.setdefault(name, MemoryArtefact(self.key.rsplit("/", 1)[0] + "/" + name))

    def load_versioned(self):
        return None if self.doc is None else (self.doc, str(self.version))

    def create(self, doc: dict) -> Optional[str]:
        if self.doc is not None:
            return None
        self.save(doc)
        return str(self.version)

    def replace(self, doc: dict, etag: str) -> Optional[str]:
        if self.doc is None or str(self.version) != etag:
            return None
        self.save(doc)
        return str(self.version)


def open_source(s3, data: bytes) -> Mp3Source:
    s3.put_object(Bucket=SOURCE_BUCKET, Key=source_key(EPISODE), Body=data)
    source = Mp3Source.sniff(SourceAudio.open(s3, SOURCE_BUCKET, source_key(EPISODE)))
    assert source is not None, "cut by hand, not handed to FFmpeg"
    return source


def get(start_ms: int, duration_ms: int = 1000):
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start_ms}&duration_ms={duration_ms}")
    return response, json.loads(response.body)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return str(tmp_path_factory.mktemp("parts"))


def frames_of(data: bytes):
    layout = mp3.read_layout(lambda start, end: data[start:end])
    return [(data[at : at + h.length], h) for at, h in mp3.walk_frames(data, layout.audio_start)]


@pytest.mark.skipif(LAME is None, reason="needs Debian's `lame` (make test installs it as root)")
def test_a_crc_protected_lame_cbr_file_is_cut_by_arithmetic_after_its_info_frame(s3, parts):
    data = lame_encode(parts, "crc", 20, 44100, ("-p", "-b", "128"), 5)
    source = open_source(s3, data)
    assert source.layout.tag is not None and source.layout.tag.kind == "Info", "the tag is found despite the CRC"
    clip = cut_mp3(source, 10000, 5000, MemoryArtefact(), time.monotonic() + 30)
    assert clip.method == "mp3-cbr"
    assert source.audio.bytes_read <= len(clip.data) + 64 * 1024


def test_a_joined_file_never_takes_the_cbr_shortcut_of_its_first_parts_info_tag(s3, parts):
    data = encode(parts, "pre5", 5, 44100, 2, ("-b:a", "128k"), 1) + encode(
        parts, "show20", 20, 44100, 2, ("-b:a", "128k"), 2
    )
    clip = cut_mp3(open_source(s3, data), 20000, 2000, MemoryArtefact(), time.monotonic() + 30)
    assert clip.method == "mp3-index" and clip.duration_ms == 2000


def test_a_source_of_one_frame_is_a_422(episode, parts):
    data = encode(parts, "short1", 1, 44100, 2, ("-b:a", "128k"), 3)
    episode("cbr", data=frames_of(data)[5][0])
    response, body = get(0)
    assert response.status_code == 422 and "too short" in body["Message"]


def test_three_frames_whose_delay_and_padding_exceed_their_samples_are_a_422_not_a_negative_duration(episode, parts):
    frames = frames_of(encode(parts, "short2", 1, 44100, 2, ("-b:a", "128k"), 4))[5:8]
    info = mp3.info_frame([h for _, h in frames], [len(f) for f, _ in frames], 576, 4000, True)
    episode("cbr", data=info + b"".join(f for f, _ in frames))
    response, body = get(0)
    assert response.status_code == 422 and "-" not in body["Message"]


def test_a_file_under_16_kib_is_read_once(s3, parts):
    data = encode(parts, "tiny", 1, 22050, 1, ("-b:a", "32k"), 6)
    assert len(data) < 16 * 1024
    source = open_source(s3, data)
    clip = cut_mp3(source, 0, 1000, MemoryArtefact(), time.monotonic() + 30)
    assert clip.duration_ms == 1000
    assert (source.audio.requests, source.audio.bytes_read) == (1, len(data))


def test_a_clip_of_a_cbr_source_says_info_and_of_a_vbr_source_xing(s3, audio):
    for kind, word in (("cbr", b"Info"), ("vbr", b"Xing")):
        clip = cut_mp3(open_source(s3, audio[kind].data), 17017, 3000, MemoryArtefact(), time.monotonic() + 30)
        layout = mp3.read_layout(lambda start, end, data=clip.data: data[start:end])
        assert layout.tag is not None and layout.tag.kind == word.decode(), kind


def test_an_untagged_mp3_cut_at_zero_starts_on_its_first_sample(s3, audio, tmp_path):
    source = open_source(s3, audio["vbr_no_header"].data)
    clip = cut_mp3(source, 0, 2000, MemoryArtefact(), time.monotonic() + 30)
    whole = decode(audio["vbr_no_header"].path)
    decoded = decode(clip.data, tmp_dir=str(tmp_path))
    assert decoded.samples[:2000] == whole.samples[:2000]
    assert decoded.frames == round(2000 * 44.1)


def test_the_index_of_a_joined_file_holds_every_part(s3, parts):
    show = encode(parts, "show10", 10, 44100, 2, ("-b:a", "128k"), 7)
    ad = encode(parts, "ad5", 5, 48000, 1, ("-b:a", "64k"), 8)
    index = build_index(open_source(s3, show + ad + show), time.monotonic() + 30)
    assert [(s.sample_rate, s.channels) for s in index.segments] == [(44100, 2), (48000, 1), (44100, 2)]
    assert index.lost_frames == 2, "FFmpeg drops each part's Info frame, read in one packet with its ID3 tag"
    assert abs(index.duration_ticks / mp3.TICKS_PER_SECOND * 1000 - 25_060) < 30
    assert mp3.SeekIndex.from_json(json.loads(json.dumps(index.to_json()))) == index


@pytest.mark.slow
def test_indexing_a_joined_episode_costs_about_what_a_uniform_one_does(parts):
    """Resync after a tag or a change of format is as cheap as walking frames (it once cost 20x: every frame
    after a mono pre-roll went through resync). The issue's target is 1.5x; 2x here leaves room for a busy CI."""
    uniform = encode(parts, "uniform300", 300, 44100, 2, ("-b:a", "128k"), 9)
    show = encode(parts, "show90", 90, 44100, 2, ("-b:a", "128k"), 10)
    ad = encode(parts, "ad15", 15, 48000, 1, ("-b:a", "64k"), 11)
    preroll = encode(parts, "mono15", 15, 44100, 1, ("-b:a", "64k"), 12)
    joined = preroll + show + ad + show + ad + show + show[: len(uniform) - len(preroll + show * 3 + ad * 2)]

    def seconds_per_megabyte(data: bytes) -> float:
        layout = mp3.read_layout(lambda start, end: data[start:end])
        best = None
        for _ in range(5):
            started = time.perf_counter()
            chunks = (data[at : at + (1 << 20)] for at in range(layout.audio_start, len(data), 1 << 20))
            mp3.scan(chunks, layout, "etag", len(data), time.monotonic, time.monotonic() + 60)
            elapsed = (time.perf_counter() - started) / len(data) * 1e6
            best = elapsed if best is None else min(best, elapsed)
        return best

    assert seconds_per_megabyte(joined) <= 2.0 * seconds_per_megabyte(uniform)


@pytest.mark.parametrize("chunk", [1000, 4099, 1 << 20])
def test_the_index_is_the_same_whatever_the_chunks_tags_and_frames_straddle(parts, chunk):
    from tests.joined_audio import id3_tag

    show = encode(parts, "show10", 10, 44100, 2, ("-b:a", "128k"), 7)
    ad = encode(parts, "ad5", 5, 48000, 1, ("-b:a", "64k"), 8)
    data = show + id3_tag(parts, "chunks", "Chapter", 9_000) + ad + bytes(700) + show + b"TAG" + bytes(125)
    layout = mp3.read_layout(lambda start, end: data[start:end])

    def index(size: int) -> mp3.SeekIndex:
        chunks = (data[at : at + size] for at in range(layout.audio_start, len(data), size))
        return mp3.scan(chunks, layout, "etag", len(data), time.monotonic, time.monotonic() + 30)

    assert index(chunk) == index(len(data))
    assert [s.sample_rate for s in index(chunk).segments] == [44100, 48000, 44100]
    assert index(chunk).lost_frames == 2, "each part's Info frame, behind an ID3v2 tag"
