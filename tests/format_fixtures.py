"""Sources of every format the service takes, made by FFmpeg (and LAME where a quirk is LAME's), each one kind of
file that real podcast hosts serve: M4A with an edit list at 44.1 and 32 kHz, MP4 with a video track before its
audio, raw ADTS, ALAC, several audio tracks, and MP3 heads that FFmpeg's demuxer reads in its own way.

AAC is encoded without perceptual noise substitution (``-aac_pns 0``): the decoder fills PNS bands from a random
generator whose state depends on where decoding began, so only without it do two decodes of one position agree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from tests.audio_tools import FFMPEG
from tests.joined_audio import LAME, id3_tag, lame_encode, strip_id3
from tests.joined_audio import encode as mp3_part

SIGNAL = (
    "anoisesrc=d={seconds}:c=pink:r={rate}:a=0.5:seed={seed},volume='0.15+0.85*abs(sin(t*2.3)*cos(t*0.71))':eval=frame"
)
AAC = ("-c:a", "aac", "-aac_pns", "0", "-b:a", "96k")
MPG123 = shutil.which("mpg123")


@dataclass(frozen=True)
class Fixture:
    name: str
    path: str
    rate: int  # FFmpeg's decode of the whole file comes out at this rate: clips are compared at it
    frame_copy: bool  # an MP3 cut from the source's own frames (sample-equal), else re-encoded by FFmpeg

    @property
    def extension(self) -> str:
        return os.path.splitext(self.path)[1]

    @property
    def data(self) -> bytes:
        with open(self.path, "rb") as handle:
            return handle.read()


def _ffmpeg(path: str, *args: str) -> str:
    if not os.path.exists(path):
        subprocess.run([FFMPEG, "-v", "error", "-y", *args, path + ".part" + os.path.splitext(path)[1]], check=True)
        os.replace(path + ".part" + os.path.splitext(path)[1], path)
    return path


def _signal(seconds: float, rate: int, seed: int = 7) -> Tuple[str, ...]:
    return ("-f", "lavfi", "-i", SIGNAL.format(seconds=seconds, rate=rate, seed=seed))


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def m4a(d: str, name: str = "m4a_44k", seconds: float = 12, rate: int = 44100) -> Fixture:
    """FFmpeg's AAC in M4A: an edit list that skips the encoder's 1,024 priming samples."""
    path = _ffmpeg(os.path.join(d, f"{name}.m4a"), *_signal(seconds, rate), "-ac", "2", *AAC)
    return Fixture(name, path, rate, False)


def he_aac(d: str) -> Fixture:
    """HE-AAC (SBR: 2,048 samples per frame at twice the core's rate). FFmpeg's encoder writes only AAC-LC, but its
    M4A already signals SBR the backward-compatible way (sync extension 0x2b7, object type 5) with the "SBR present"
    flag off: turned on, with 44.1 kHz as the extension rate, FFmpeg decodes the 22.05 kHz core through its SBR
    tool at 44.1 kHz (no high band: the frames carry no SBR data), and its edit list's 1,024 core samples of priming
    become 2,048 output samples. The timeline is an HE-AAC one, which is what is under test."""
    path = os.path.join(d, "he_aac.m4a")
    if not os.path.exists(path):
        core = _ffmpeg(os.path.join(d, "he_core.m4a"), *_signal(12, 22050), "-ac", "2", *AAC[:-1], "48k")
        with open(core, "rb") as handle:
            data = bytearray(handle.read())
        config = bytes.fromhex("139056e500")  # AAC-LC, 22.05 kHz, stereo; 0x2b7, SBR, not present
        at = data.find(config)
        assert at > 0 and data.count(config) == 1, "the AudioSpecificConfig FFmpeg's muxer writes"
        data[at + 4] = 0xA0  # SBR present, extension rate index 4 (44.1 kHz)
        _write(path, bytes(data))
    return Fixture("he_aac", path, 44100, False)


def mp4_video_first(d: str) -> Fixture:
    """An MP4 whose first track is video, its second the audio."""
    path = _ffmpeg(
        os.path.join(d, "mp4_video.mp4"),
        *("-f", "lavfi", "-i", "color=c=blue:s=160x120:r=25:d=12"),
        *_signal(12, 44100),
        *("-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-ac", "2", *AAC),
    )
    return Fixture("mp4_video", path, 44100, False)


def mp4_audio_after_video(d: str) -> Fixture:
    """Video from 0, audio from about 0.48 s (an edit list that delays it): a plain decode of the audio starts at
    its first sample, while the file's timestamps start with the video."""
    path = _ffmpeg(
        os.path.join(d, "mp4_late_audio.mp4"),
        *("-f", "lavfi", "-i", "color=c=blue:s=160x120:r=25:d=13", "-itsoffset", "0.5"),
        *_signal(12, 44100),
        *("-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-ac", "2", *AAC),
    )
    return Fixture("mp4_late_audio", path, 44100, False)


def two_audio_tracks(d: str) -> Fixture:
    """A mono track, then a stereo one: FFmpeg (and so a plain `ffmpeg -i` transcription) decodes the stereo one."""
    path = _ffmpeg(
        os.path.join(d, "two_tracks.m4a"),
        *_signal(12, 44100, seed=3),
        *_signal(12, 44100, seed=7),
        *("-map", "0:a", "-map", "1:a", "-ac:0", "1", "-ac:1", "2", *AAC),
    )
    return Fixture("two_tracks", path, 44100, False)


def adts(d: str) -> Fixture:
    """Raw AAC in ADTS frames: no container, no edit list, a duration FFmpeg can only estimate from the bitrate."""
    path = _ffmpeg(os.path.join(d, "adts.aac"), *_signal(12, 44100), "-ac", "2", *AAC, "-f", "adts")
    return Fixture("adts", path, 44100, False)


def alac(d: str) -> Fixture:
    path = _ffmpeg(os.path.join(d, "alac.m4a"), *_signal(12, 44100), "-ac", "2", "-c:a", "alac")
    return Fixture("alac", path, 44100, False)


def lame_zero_padding(d: str) -> Optional[Fixture]:
    """LAME's CBR file behind an ID3v2 tag and 20 kB of zero bytes: FFmpeg plays LAME's Info frame as a frame of
    silence (its header matches the audio's), and so skips no encoder delay."""
    if LAME is None:
        return None
    body = lame_encode(d, "zeros", 12, 44100, ("-b", "128"), 5)
    path = _write(os.path.join(d, "lame_zeros.mp3"), id3_tag(d, "zeros", "Episode") + bytes(20_000) + body)
    return Fixture("lame_zeros", path, 44100, True)


def ffmpeg_zero_padding(d: str) -> Fixture:
    """The same with FFmpeg's encoder: its Info frame (plain stereo mode) is skipped as junk."""
    body = mp3_part(d, "zeros-ff", 12, 44100, 2, ("-b:a", "128k"), 6)
    path = _write(os.path.join(d, "ffmpeg_zeros.mp3"), id3_tag(d, "zeros", "Episode") + bytes(20_000) + strip_id3(body))
    return Fixture("ffmpeg_zeros", path, 44100, True)


def info_frame_then_junk(d: str) -> Fixture:
    """An Info frame right after the ID3v2 tag, then junk, then the audio (mutagen's apev2-lyricsv2.mp3 is such a
    file): FFmpeg honours the Info frame's encoder delay and skips the junk."""
    body = strip_id3(mp3_part(d, "junk-after-info", 12, 44100, 2, ("-b:a", "128k"), 8))
    info = 417  # FFmpeg's Info frame at 128 kbit/s
    junk = bytes((i * 7 + 1) % 251 for i in range(585))
    path = _write(os.path.join(d, "info_junk.mp3"), id3_tag(d, "junk", "Episode") + body[:info] + junk + body[info:])
    return Fixture("info_junk", path, 44100, True)


def ape_and_lyrics_at_the_end(d: str) -> Fixture:
    """APEv2 (written by mutagen), then Lyrics3v2 and ID3v1 after the last frame."""
    from mutagen.apev2 import APEv2

    path = os.path.join(d, "ape_lyrics.mp3")
    if not os.path.exists(path):
        _write(path, mp3_part(d, "ape-lyrics", 12, 44100, 2, ("-b:a", "128k"), 9))
        ape = APEv2()
        ape["Title"] = "Episode"
        ape.save(path)
        lyrics = b"LYRICSBEGIN" + b"IND00002" + b"11" + b"LYR00011" + b"hello world"
        with open(path, "ab") as handle:
            handle.write(lyrics + b"%06d" % len(lyrics) + b"LYRICS200" + b"TAG" + b"Episode".ljust(125, b"\0"))
    return Fixture("ape_lyrics", path, 44100, True)


def ape_at_the_head(d: str) -> Fixture:
    """An APEv2 tag (with its header) before the first frame, where some taggers put it."""
    from mutagen.apev2 import APEv2

    tag_path = os.path.join(d, "head.ape")
    with open(tag_path, "wb"):
        pass
    ape = APEv2()
    ape["Title"] = "Episode"
    ape.save(tag_path)
    with open(tag_path, "rb") as handle:
        tag = handle.read()
    body = strip_id3(mp3_part(d, "ape-head", 12, 44100, 2, ("-b:a", "128k"), 10))
    return Fixture("ape_head", _write(os.path.join(d, "ape_head.mp3"), tag + body), 44100, True)


FIXTURES: Dict[str, Callable[[str], Optional[Fixture]]] = {
    "m4a_44k": m4a,
    "m4a_32k": lambda d: m4a(d, "m4a_32k", 12, 32000),
    "he_aac": he_aac,
    "mp4_video": mp4_video_first,
    "mp4_late_audio": mp4_audio_after_video,
    "two_tracks": two_audio_tracks,
    "adts": adts,
    "alac": alac,
    "lame_zeros": lame_zero_padding,
    "ffmpeg_zeros": ffmpeg_zero_padding,
    "info_junk": info_frame_then_junk,
    "ape_lyrics": ape_and_lyrics_at_the_end,
    "ape_head": ape_at_the_head,
}


def need_tool(path: Optional[str], name: str) -> str:
    """The tool, else skip on a laptop; under CI (CI=true), where `make test` installs it, a missing tool fails."""
    if path:
        return path
    message = f"needs Debian's `{name}` (`make test-tools` installs it as root: apt-get install -y {name})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def mpg123_decode(path: str) -> List[int]:
    """mpg123's decode (gapless, its default) as interleaved 16-bit stereo samples."""
    import array

    out = subprocess.run([need_tool(MPG123, "mpg123"), "-q", "--stereo", "-s", path], capture_output=True, check=True)
    samples = array.array("h")
    samples.frombytes(out.stdout[: len(out.stdout) // 2 * 2])
    return list(samples)
