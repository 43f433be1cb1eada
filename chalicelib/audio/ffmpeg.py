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
from typing import Callable, Dict, Iterable, List, NoReturn, Optional, Sequence

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


@dataclass
class Transcoded:
    data: bytes
    episode_duration_ms: Optional[int]


def transcode_to_mp3(ffmpeg: str, url: str, start_ms: int, duration_ms: int, deadline: float) -> Transcoded:
    """An MP3 clip of ``duration_ms`` from ``start_ms`` of the audio at ``url`` (FFmpeg seeks MP4 by its sample
    tables and reads it by ranges). Written to a file so that FFmpeg adds the Info header; killed at ``deadline``
    (a ``time.monotonic()`` value)."""
    with tempfile.TemporaryDirectory(prefix="clip-") as work:
        out = os.path.join(work, "clip.mp3")
        command = [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-rw_timeout",
            "5000000",
            "-ss",
            f"{start_ms / 1000:.3f}",
            "-i",
            url,
            "-t",
            f"{duration_ms / 1000:.3f}",
            "-map",
            "0:a:0",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-f",
            "mp3",
            "-y",
            out,
        ]
        env = _url_env()
        started = time.monotonic()
        try:
            result = subprocess.run(command, capture_output=True, timeout=max(0.1, deadline - started), env=env)
        except subprocess.TimeoutExpired:
            raise ClipTimeout(
                "Cutting the clip took too long; try again shortly",
                detail=f"ffmpeg killed after {time.monotonic() - started:.1f}s",
            ) from None
        stderr = result.stderr.decode("utf-8", "replace").replace(url, "<source-url>")
        duration = _episode_duration_ms(stderr)
        data = Path(out).read_bytes() if os.path.exists(out) else b""
    if result.returncode != 0:
        _raise_failure(result.returncode, stderr)
    return Transcoded(data, duration)


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
            inputs += ["-i", path]
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
        started = time.monotonic()
        try:
            result = subprocess.run(command, capture_output=True, timeout=max(0.1, deadline - started))
        except subprocess.TimeoutExpired:
            raise ClipTimeout(
                "Cutting the clip took too long; try again shortly",
                detail=f"ffmpeg (join) killed after {time.monotonic() - started:.1f}s",
            ) from None
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
            command += ["-i", item.source]
        for number in range(len(inputs)):
            outputs.append(os.path.join(work, f"window{number}.pcm"))
            command += ["-map", f"{number}:a:0", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-y", outputs[-1]]
        started = time.monotonic()
        try:
            result = subprocess.run(command, capture_output=True, timeout=max(0.1, deadline - started), env=_url_env())
        except subprocess.TimeoutExpired:
            raise ClipTimeout(
                "Finding the pauses took too long; try again shortly",
                detail=f"ffmpeg (levels) killed after {time.monotonic() - started:.1f}s",
            ) from None
        if result.returncode != 0:
            stderr = result.stderr.decode("utf-8", "replace")
            for item in inputs:
                stderr = stderr.replace(item.source, "<source>")
            _raise_failure(result.returncode, stderr)
        return [Path(out).read_bytes() if os.path.exists(out) else b"" for out in outputs]


def stream_pcm(
    ffmpeg: str, chunks: Iterable[bytes], rate: int, deadline: float, consume: Callable[[bytes], None]
) -> None:
    """A whole source, whose bytes ``chunks`` yields in order, decoded to mono s16le at ``rate`` and handed to
    ``consume`` as FFmpeg writes it: a three-hour episode is never held, and FFmpeg opens no URL (an MP4 whose
    index comes after its audio cannot be read this way: Undecodable). Killed at ``deadline`` (ClipTimeout)."""
    command = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-i", "pipe:0"]
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
