"""FFmpeg: where the binary is, and transcoding a clip of what is not MP3 (M4A/AAC) into MP3."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NoReturn, Optional, Sequence, Tuple

from chalicelib.audio.attribution import leading_id3_bytes
from chalicelib.audio.mp3 import NotMp3, read_layout
from chalicelib.errors import ClipTimeout, ConfigurationError, NotFound, StorageUnavailable, Undecodable, WrongRegion

log = logging.getLogger(__name__)

LAYER_FFMPEG = "/opt/bin/ffmpeg"
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_HTTP_MISSING = re.compile(r"HTTP error 404|Server returned 404")
_HTTP_WRONG_REGION = re.compile(r"(?:HTTP error|Server returned) 400\b")  # a URL signed for another region
_HTTP_FAULT = re.compile(
    r"HTTP error|Server returned|Connection refused|Connection reset|Connection timed out|timed out|"
    r"I/O error|Failed to resolve hostname|Name or service not known|Network is unreachable|"
    r"Input/output error|\[tls @|SSL routines|certificate verify|handshake"
)  # TLS and network
MP4_FIRST_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")  # an ISO/QuickTime file's first box
_SIGNATURES = ((b"OggS", "ogg"), (b"RIFF", "wav"))
SYSTEM_CA_BUNDLES = (
    "/etc/pki/tls/certs/ca-bundle.crt",  # Amazon Linux 2023 (Lambda python3.12+)
    "/etc/ssl/certs/ca-certificates.crt",
)  # Debian, Ubuntu


def find_ffmpeg(explicit: Optional[str]) -> Optional[str]:
    """``FFMPEG_PATH``, else the layer's ``/opt/bin/ffmpeg``, else imageio-ffmpeg's binary, else one on PATH."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ConfigurationError(f"FFMPEG_PATH is set to {explicit!r}, which is not an executable file")
        return explicit
    if os.access(LAYER_FFMPEG, os.X_OK):
        return LAYER_FFMPEG
    try:
        import imageio_ffmpeg  # a development dependency: local runs and tests

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=4)
def ffmpeg_version(path: str) -> str:
    result = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=10)
    first = (result.stdout or "").splitlines()[:1]
    return first[0].removeprefix("ffmpeg version ").split(" Copyright")[0] if first else "unknown"


SEEK_MARGIN_S = 0.5  # decoded before the clip and dropped: the decoder settles (AAC's overlap, SBR) before the cut
_FRAMECRC = re.compile(rb"^\s*\d+,\s*(-?\d+),\s*(-?\d+),\s*(\d+),", re.MULTILINE)
_FRAMECRC_RATE = re.compile(rb"^#sample_rate \d+: (\d+)", re.MULTILINE)


@dataclass
class Transcoded:
    data: bytes
    samples: int  # what a gapless decoder plays of the clip
    sample_rate: int
    episode_duration_ms: Optional[float]  # exact (FFmpeg's decoded length) when the clip reached the end, else None


def input_format(head: bytes) -> str:
    """FFmpeg's demuxer for a source, chosen from its first bytes, never by FFmpeg's own probing: a probe could
    pick a demuxer that opens other URLs (an HLS playlist's segments, a concat list's files). MP4/M4A (an ISO
    box first), ADTS AAC (after any ID3v2 tags), WAV, Ogg, FLAC by their signatures; anything else is read as MP3,
    whose demuxer opens nothing else (and fails on what is not MPEG audio: a 422)."""
    if head[4:8] in MP4_FIRST_BOXES:
        return "mov"
    for signature, name in _SIGNATURES:
        if head.startswith(signature) and (name != "wav" or head[8:12] == b"WAVE"):
            return name
    at = leading_id3_bytes(head)
    if head[at : at + 1] == b"\xff" and head[at + 1 : at + 2] and head[at + 1] & 0xF6 == 0xF0:
        return "aac"  # ADTS: a 12-bit sync word and layer 0 (MPEG audio frames have layers 1-3)
    if head[at : at + 4] == b"fLaC":
        return "flac"
    return "mp3"


def transcode_to_mp3(
    ffmpeg: str, url: str, start_ms: int, duration_ms: int, deadline: float, demuxer: str = "mov"
) -> Transcoded:
    """An MP3 clip of exactly ``duration_ms`` from ``start_ms`` on the timeline of FFmpeg's decode of the whole
    source at ``url`` (its edit list applied: the encoder's priming is not audio), shorter when the source ends.

    FFmpeg seeks the input by its sample tables to ``SEEK_MARGIN_S`` before the start without trimming there
    (``-noaccurate_seek``), keeps the source's own timestamps counted from its start (``-copyts -start_at_zero``),
    and the clip is cut from the decoded samples by those timestamps (``atrim``), to the sample, then encoded once.
    FFmpeg's own accurate seek trims by the timestamp it seeked to, which it gets wrong by up to a frame on MP4
    (and by the whole priming at 0). Written to a file so that FFmpeg writes the Info frame and its LAME tag
    (encoder ``Lavc``: delay and padding that gapless decoders, Firefox's too, trim). Killed at ``deadline``.

    A decode of the audio begins at the audio stream's first sample, while timestamps count from the file's
    start, the earliest of its streams: when FFmpeg's report shows the audio starting later (an MP4 whose video
    starts first), the clip is cut again, that much later."""
    data, stderr = _cut(ffmpeg, url, demuxer, start_ms / 1000, duration_ms / 1000, deadline)
    offset = _audio_offset_s(stderr)
    if abs(offset) > 5e-6:  # under half a sample at 48 kHz: nothing to correct
        data, stderr = _cut(ffmpeg, url, demuxer, start_ms / 1000 + offset, duration_ms / 1000, deadline)
    samples, rate = tagged_samples(data)
    episode_ms: Optional[float] = None
    if not samples:  # nothing after the start: how long the source is, for the answer's message
        end_ms = decoded_duration_ms(ffmpeg, url, demuxer, deadline, _episode_duration_ms(stderr))
        episode_ms = None if end_ms is None else end_ms - offset * 1000
    elif samples < (duration_ms * rate * 2 + 1000) // 2000:  # atrim's count, rounded half up: the source ended
        episode_ms = start_ms + samples * 1000 / rate
    return Transcoded(data, samples, rate, episode_ms)


def _cut(ffmpeg: str, url: str, demuxer: str, start_s: float, duration_s: float, deadline: float) -> Tuple[bytes, str]:
    """One run of FFmpeg: the decoded samples from ``start_s`` (on timestamps counted from the file's start) for
    ``duration_s``, as MP3. (the MP3's bytes, FFmpeg's report with the URL masked)."""
    seek = max(0.0, start_s - SEEK_MARGIN_S)
    with tempfile.TemporaryDirectory(prefix="clip-") as work:
        out = os.path.join(work, "clip.mp3")
        command = [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-rw_timeout",
            "5000000",
            "-noaccurate_seek",
            "-copyts",
            "-start_at_zero",
            *(["-ss", f"{seek:.6f}"] if seek > 0 else []),
            *_input(url, demuxer),
            "-vn",
            "-sn",
            "-dn",  # FFmpeg's own choice of audio stream, as a plain `ffmpeg -i` decode makes it
            "-af",
            f"atrim=start={start_s:.6f}:duration={duration_s:.6f},asetpts=PTS-STARTPTS",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-f",
            "mp3",
            "-y",
            out,
        ]
        result = run(command, deadline)
        data = Path(out).read_bytes() if os.path.exists(out) else b""
    stderr = result.stderr.decode("utf-8", "replace").replace(url, "<source-url>")
    if result.returncode != 0:
        _raise_failure(result.returncode, stderr)
    return data, stderr


_FILE_START = re.compile(r"Duration: [^\n]*?, start: (-?\d+\.\d+)")
_DECODED_STREAM = re.compile(r"Stream #0:(\d+) -> #0:0")
_AUDIO_START = re.compile(r"Stream #0:(\d+)[^\n]*: Audio: [^\n]*, start (-?\d+\.\d+)")


def _audio_offset_s(stderr: str) -> float:
    """How much later than the file's start the decoded audio stream starts, from FFmpeg's report of the input
    (each stream's own start is printed when it has one); 0 when the report does not say."""
    decoded, file_start = _DECODED_STREAM.search(stderr), _FILE_START.search(stderr)
    if not decoded or not file_start:
        return 0.0
    for stream in _AUDIO_START.finditer(stderr):
        if stream.group(1) == decoded.group(1):
            return float(stream.group(2)) - float(file_start.group(1))
    return 0.0


def decoded_duration_ms(
    ffmpeg: str, url: str, demuxer: str, deadline: float, estimate_ms: Optional[int] = None
) -> Optional[float]:
    """The length of FFmpeg's decode of the whole source, from the timestamps of its last decoded samples: a seek to
    a few seconds before the container's end, then a decode to the end. Raw ADTS has no duration but an estimate
    from its bitrate, which can miss the end: then every packet is read (no decoding) and the last one's end
    counts. None if neither works (then ``estimate_ms``, FFmpeg's container duration, 10 ms steps, is returned)."""
    base = [ffmpeg, "-nostdin", "-v", "error", "-rw_timeout", "5000000", "-copyts", "-start_at_zero"]
    tail = [
        *base,
        "-sseof",
        "-3",
        *_input(url, demuxer),
        "-vn",
        "-sn",
        "-dn",
        "-c:a",
        "pcm_s16le",
        "-f",
        "framecrc",
        "-",
    ]
    whole = [*base, *_input(url, demuxer), "-vn", "-sn", "-dn", "-c:a", "copy", "-f", "framecrc", "-"]
    for command in (tail, whole):
        result = run(command, deadline)
        end = _framecrc_end_ms(result.stdout)
        if result.returncode == 0 and end is not None:
            return end
    return float(estimate_ms) if estimate_ms is not None else None


def _framecrc_end_ms(listing: bytes) -> Optional[float]:
    rows = _FRAMECRC.findall(listing)
    rate = _FRAMECRC_RATE.search(listing)
    if not rows or not rate:
        return None
    _, pts, duration = rows[-1]
    return (int(pts) + int(duration)) * 1000 / int(rate.group(1))


def tagged_samples(data: bytes) -> Tuple[int, int]:
    """(samples a gapless decoder plays, sample rate) of an MP3 written by FFmpeg's muxer to a file: its Info frame
    counts the frames, its LAME tag the encoder's delay and padding. (0, 44100) when there is none."""
    try:
        layout = read_layout(lambda start, end: data[start:end])
    except NotMp3:
        return 0, 44100
    if layout.tag is None or not layout.tag.frames:
        return 0, layout.first.sample_rate
    samples = layout.tag.frames * layout.first.samples - layout.start_skip - layout.end_trim
    return max(samples, 0), layout.first.sample_rate


def run(
    command: Sequence[str], deadline: float, doing: str = "Cutting the clip", what: str = "ffmpeg"
) -> subprocess.CompletedProcess:
    """One FFmpeg run, killed at ``deadline`` (a ``time.monotonic()`` value): ClipTimeout (503) then, saying what
    was ``doing``. HTTPS reads trust the CA bundle boto3 trusts."""
    started = time.monotonic()
    try:
        return subprocess.run(command, capture_output=True, timeout=max(0.1, deadline - started), env=_url_env())
    except subprocess.TimeoutExpired:
        raise ClipTimeout(
            f"{doing} took too long; try again shortly",
            detail=f"{what} killed after {time.monotonic() - started:.1f}s",
        ) from None


def _raise_failure(returncode: int, stderr: str) -> NoReturn:
    """The contract's error for an FFmpeg run that failed reading or decoding the source."""
    log.warning("ffmpeg failed (exit %s): %s", returncode, stderr[-2000:])
    if _HTTP_MISSING.search(stderr):
        raise NotFound("The episode's source audio is missing from storage")
    if _HTTP_WRONG_REGION.search(stderr):
        raise WrongRegion(
            "S3 refused the pre-signed URL of the episode's source audio: its bucket is in another "
            "AWS region than the service",
            detail=stderr[-500:],
        )
    if _HTTP_FAULT.search(stderr):
        raise StorageUnavailable("Audio storage is unavailable; try again shortly", detail=stderr[-500:])
    raise Undecodable("The episode's source audio cannot be decoded", detail=stderr[-500:])


def _input(url: str, demuxer: str) -> List[str]:
    """FFmpeg's input options for a source: its demuxer forced, only its own protocol allowed, then the URL."""
    return ["-protocol_whitelist", protocols(url), "-f", demuxer, "-i", url]


def protocols(url: str) -> str:
    """What FFmpeg may open to read ``url``: HTTPS (over TLS and TCP), plain HTTP to a local S3, a pipe (bytes this
    service feeds it) or a file (a window this service cut)."""
    if url.startswith("https:"):
        return "https,tls,tcp"
    if url.startswith("http:"):
        return "http,tcp"
    return "pipe" if url.startswith("pipe:") else "file"


def _episode_duration_ms(stderr: str) -> Optional[int]:
    match = _DURATION.search(stderr)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * 1000)


def _url_env() -> Dict[str, str]:
    """FFmpeg's environment for reading a pre-signed HTTPS URL: the CA bundle boto3 trusts."""
    env = dict(os.environ)
    bundle = _ca_bundle()
    if bundle and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = bundle  # never an empty path: that would fail every HTTPS read
    return env


def _ca_bundle() -> Optional[str]:
    """certifi's bundle (what boto3 trusts), else the system's, else None (FFmpeg then uses its own default)."""
    try:
        import certifi

        return certifi.where()
    except ImportError:
        return next((path for path in SYSTEM_CA_BUNDLES if os.path.isfile(path)), None)


def join_to_mp3(
    ffmpeg: str, pieces: Sequence[bytes], sample_rate: int, channels: int, bitrate: int, samples: int, deadline: float
) -> bytes:
    """One MP3 of exactly ``samples`` samples at ``sample_rate`` and ``channels``: the ``pieces`` (gapless MP3
    files of other formats, e.g. a show and an ad stitched into it) decoded, resampled, joined and encoded once.
    Written to a file so that FFmpeg adds the Info header with the encoder delay and padding."""
    with tempfile.TemporaryDirectory(prefix="join-") as work:
        inputs, chains = [], []
        layout = "mono" if channels == 1 else "stereo"
        for number, data in enumerate(pieces):
            path = os.path.join(work, f"piece{number}.mp3")
            with open(path, "wb") as handle:
                handle.write(data)
            inputs += ["-protocol_whitelist", "file", "-f", "mp3", "-i", path]  # frames this service cut
            chains.append(
                f"[{number}:a]aresample={sample_rate},"
                f"aformat=sample_fmts=fltp:sample_rates={sample_rate}:channel_layouts={layout}[p{number}]"
            )
        joined = "".join(f"[p{number}]" for number in range(len(pieces)))
        graph = (
            ";".join(chains) + f";{joined}concat=n={len(pieces)}:v=0:a=1,"
            f"apad=whole_len={samples},atrim=end_sample={samples}[clip]"
        )
        out = os.path.join(work, "clip.mp3")
        kbps = max(8, min(320, round(bitrate / 1000)))
        command = [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-v",
            "error",
            *inputs,
            "-filter_complex",
            graph,
            "-map",
            "[clip]",
            "-c:a",
            "libmp3lame",
            "-b:a",
            f"{kbps}k",
            "-ar",
            str(sample_rate),
            "-f",
            "mp3",
            "-y",
            out,
        ]
        result = run(command, deadline, what="ffmpeg (join)")
        if result.returncode != 0 or not os.path.exists(out):
            stderr = result.stderr.decode("utf-8", "replace")
            log.warning("ffmpeg join failed (exit %s): %s", result.returncode, stderr[-2000:])
            raise Undecodable("The episode's source audio cannot be decoded at this position", detail=stderr[-500:])
        with open(out, "rb") as handle:
            return handle.read()


# ---------------------------------------------------------------- PCM for measuring levels (snap=pause)


@dataclass(frozen=True)
class PcmInput:
    """One stretch to decode: a file or a pre-signed URL, from ``from_ms`` for ``ms`` (None: from the start, to
    the end)."""

    source: str
    demuxer: str  # forced, never probed (see ``input_format``)
    from_ms: Optional[int] = None
    ms: Optional[int] = None


def decode_pcm(ffmpeg: str, inputs: Sequence[PcmInput], rate: int, deadline: float) -> List[bytes]:
    """Each input decoded to mono s16le at ``rate``, all by one FFmpeg process (one start-up for several
    windows). FFmpeg seeks an MP4 by its sample tables; an MP3 window is handed over as a file already cut."""
    with tempfile.TemporaryDirectory(prefix="pcm-") as work:
        command = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-rw_timeout", "5000000"]
        outputs = []
        for item in inputs:
            if item.from_ms is not None:
                command += ["-ss", f"{item.from_ms / 1000:.3f}"]
            if item.ms is not None:
                command += ["-t", f"{item.ms / 1000:.3f}"]
            command += _input(item.source, item.demuxer)
        for number in range(len(inputs)):
            outputs.append(os.path.join(work, f"window{number}.pcm"))
            command += ["-map", f"{number}:a:0", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-y", outputs[-1]]
        result = run(command, deadline, "Finding the pauses", "ffmpeg (levels)")
        if result.returncode != 0:
            stderr = result.stderr.decode("utf-8", "replace")
            for item in inputs:
                stderr = stderr.replace(item.source, "<source>")
            _raise_failure(result.returncode, stderr)
        return [Path(out).read_bytes() if os.path.exists(out) else b"" for out in outputs]


def stream_pcm(
    ffmpeg: str, chunks: Iterable[bytes], demuxer: str, rate: int, deadline: float, consume: Callable[[bytes], None]
) -> None:
    """A whole source, whose bytes ``chunks`` yields in order, decoded to mono s16le at ``rate`` and handed to
    ``consume`` as FFmpeg writes it: a three-hour episode is never held, and FFmpeg opens no URL (an MP4 whose
    index comes after its audio cannot be read this way: Undecodable). Killed at ``deadline`` (ClipTimeout)."""
    command = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", *_input("pipe:0", demuxer)]
    command += ["-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", "s16le", "pipe:1"]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        killer = threading.Timer(max(0.1, deadline - time.monotonic()), process.kill)
        feeding: List[BaseException] = []
        feeder = threading.Thread(target=_feed, args=(process, chunks, feeding), daemon=True)
        killer.start()
        feeder.start()
        try:
            assert process.stdout is not None
            while True:
                chunk = process.stdout.read(1 << 16)
                if not chunk:
                    break
                consume(chunk)
            returncode = process.wait()
        finally:
            killer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            feeder.join(timeout=5)
        if feeding:
            raise feeding[0]  # reading the source failed: its own error
        if returncode != 0 and time.monotonic() >= deadline:
            raise ClipTimeout("Measuring the episode's levels took too long", detail="ffmpeg (levels) killed")
        if returncode != 0:
            errors.seek(0)
            _raise_failure(returncode, errors.read().decode("utf-8", "replace"))


def _feed(process: subprocess.Popen, chunks: Iterable[bytes], failed: List[BaseException]) -> None:
    """FFmpeg's stdin, from the source's bytes; a source read that fails is kept for the caller."""
    assert process.stdin is not None
    try:
        for chunk in chunks:
            process.stdin.write(chunk)
    except (BrokenPipeError, ValueError):
        pass  # FFmpeg stopped reading (it failed, or was killed): its own exit says why
    except Exception as error:  # handed to the caller's thread
        failed.append(error)
    finally:
        try:
            process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
