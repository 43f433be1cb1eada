"""Run the audio clip service on this machine, with nothing from AWS or MongoDB: what `make run` starts.

1. an S3 server (moto, in this process) on 127.0.0.1, with the source and clips buckets;
2. a 3-minute demo episode, made once with FFmpeg and cached in .local/, uploaded where the contract puts audio;
3. a local catalog (.local/catalog.json) holding that episode, in place of MongoDB (unless MONGODB_URI is set:
   then that MongoDB is the catalog, and nothing is written to it);
4. `chalice local` on 127.0.0.1, pointed at all of the above.

`--audio FILE` (make run AUDIO=FILE) adds your own MP3 or M4A as one more episode, `local:<file name>`.

Once the API answers its health check it prints `READY http://127.0.0.1:PORT` and commands to try.
Ctrl-C (or SIGTERM/SIGHUP) stops everything it started and exits 0; if chalice local dies by itself it exits 1.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Deque, Dict, List, NamedTuple, Optional

import boto3
from moto.server import ThreadedMotoServer

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_ROOT / ".local"  # gitignored
HOST = "127.0.0.1"

DEMO_SLUG = "demo-podcast"
DEMO_GUID = "0e983347-7815-4b62-87a6-84d988a772b7"
DEMO_SECONDS = 180
DEMO_FILE = "demo-episode-v1.mp3"  # bump the version whenever demo_episode_filter() changes

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",  # the app prefers AWS_REGION: keep the two from disagreeing
}
# Settings from a developer's shell that would send the app (or boto3) somewhere real, or fail on a missing profile.
# (MONGODB_URI is honoured: a developer may point the local stack at a MongoDB of their own.)
UNSET_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL_S3",
    "CLOUDFRONT_DOMAIN",  # local runs hand out S3 pre-signed URLs; CloudFront would need a real key in SSM
    "CLOUDFRONT_KEY_PAIR_ID",
    "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER",
)

CHALICE_STOP_TIMEOUT_S = 10
HEALTH_POLL_INTERVAL_S = 0.25


class SetupError(Exception):
    """Something the local stack needs is missing or failed; the message says what."""


class StopRequested(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived; raised by Stopper.check() between steps."""


class Stopper:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag that the main thread checks between steps.

    The handlers never raise: an exception thrown mid-step (say, inside Popen after the fork) could leave a child
    running that nobody knows to stop. Every wait in this script is short or watches `event`, so a stop is prompt.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    def install(self) -> None:
        for signum in self.SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise StopRequested(self.signal_name)


# --- arguments and environment ---------------------------------------------------------------


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000, help="port of the API (chalice local); default 8000")
    parser.add_argument("--moto-port", type=int, default=0, help="port of the S3 server; default: any free port")
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for the API's health check (default 60)"
    )
    parser.add_argument(
        "--audio", type=Path, help="an MP3 or M4A file of your own, served as one more episode (make run AUDIO=...)"
    )
    return parser.parse_args(argv)


def prepare_environment() -> None:
    """Fake credentials for this process and everything it starts; nothing that points at real AWS or MongoDB."""
    os.environ.update(FAKE_AWS_ENV)
    for name in UNSET_ENV:
        os.environ.pop(name, None)
    # A proxy from the shell must not catch the loopback traffic (boto3 and urllib both honour *_proxy).
    for name in ("NO_PROXY", "no_proxy"):
        present = [item for item in os.environ.get(name, "").split(",") if item]
        os.environ[name] = ",".join(present + [h for h in (HOST, "localhost") if h not in present])
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request log lines


def find_ffmpeg() -> str:
    explicit = os.environ.get("FFMPEG_PATH", "").strip()
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise SetupError(f"FFMPEG_PATH={explicit!r} is not an executable file")
        return str(Path(found).resolve())
    import imageio_ffmpeg

    return str(Path(imageio_ffmpeg.get_ffmpeg_exe()).resolve())


def ensure_port_free(port: int, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: connections of an earlier run in TIME_WAIT don't make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise SetupError(f"{HOST}:{port} is not free ({exc.strerror}); pick another with {option} PORT") from None


# --- S3 (moto) ---------------------------------------------------------------------------------


def start_moto(port: int) -> ThreadedMotoServer:
    if port:
        # ThreadedMotoServer.start() waits forever if its thread cannot bind: find out first.
        ensure_port_free(port, "--moto-port")
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    return server


def s3_client(endpoint_url: str):
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"])


def create_buckets(s3, names: List[str]) -> None:
    for name in names:
        s3.create_bucket(Bucket=name)


# --- the demo episode and its catalog entry ------------------------------------------------------


def demo_episode_filter(seconds: int) -> str:
    """An FFmpeg lavfi source whose sound tells where you are in it.

    Left: a tone that rises one semitone every 5 s, from A3 (220 Hz at 0:00) to F6 at 2:55, so 1:00 is A4 (440 Hz).
    Right: the same steps a fifth higher, plus a short 3 kHz tick at each whole second.
    Each 5 s step fades in and out over 25 ms, so the steps are heard as slight breaks, not clicks.
    """
    freq = "220*pow(2,floor(t/5)/12)"
    envelope = "min(1,min(mod(t,5),5-mod(t,5))*40)"
    left = f"0.35*{envelope}*sin(2*PI*{freq}*t)"
    right = f"0.25*{envelope}*sin(2*PI*1.5*{freq}*t)+0.2*lt(mod(t,1),0.015)*sin(2*PI*3000*t)"
    return f"aevalsrc=exprs='{left}|{right}':s=44100:d={seconds}"


def ensure_demo_episode(ffmpeg: str, stopper: Stopper) -> Path:
    """The demo MP3 (CBR 128 kb/s, 44.1 kHz, stereo, with its Info header), made on first use and then reused."""
    target = STATE_DIR / DEMO_FILE
    if target.is_file() and target.stat().st_size > 0:
        print(f"demo episode: {target.relative_to(REPO_ROOT)} (cached)", flush=True)
        return target
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # A regular, seekable file (not a pipe) so FFmpeg goes back and writes the Info/LAME header; renamed when whole.
    partial = STATE_DIR / f".{DEMO_FILE}.{os.getpid()}.partial"
    command = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", demo_episode_filter(DEMO_SECONDS),
        "-c:a", "libmp3lame", "-b:a", "128k", "-ar", "44100", "-ac", "2", "-write_xing", "1",
        "-metadata", "title=Demo episode", "-metadata", "artist=Demo Podcast",
        "-f", "mp3", str(partial),
    ]  # fmt: skip
    print(f"demo episode: generating {DEMO_SECONDS} s of audio with {ffmpeg} ...", flush=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
        stopper.check()  # a Ctrl-C in the terminal reaches FFmpeg too, which then stops early: not a failure
        if result.returncode != 0:
            raise SetupError(
                f"FFmpeg failed (exit {result.returncode}) making the demo episode:\n{result.stderr[-2000:]}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    print(f"demo episode: {target.relative_to(REPO_ROOT)} ({target.stat().st_size / 1e6:.1f} MB)", flush=True)
    return target


def demo_audio_key() -> str:
    """`{podcast_slug}/{guid}/audio/{file}`, the contract's layout for source audio."""
    return f"{DEMO_SLUG}/{DEMO_GUID}/audio/{DEMO_SLUG}-demo-episode_{DEMO_GUID[:8]}_audio.mp3"


def upload_episode(s3, bucket: str, key: str, path: Path, content_type: str = "audio/mpeg") -> None:
    with path.open("rb") as body:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


AUDIO_TYPES = {".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac"}


class OwnEpisode(NamedTuple):
    """A developer's own file as an episode: its guid, source key and catalog document."""

    guid: str
    key: str
    path: Path
    content_type: str
    document: Dict[str, object]


def own_episode(path: Path, source_bucket: str) -> OwnEpisode:
    """``local:<file name>`` as the guid (the contract's prefixed-id form), the contract's key layout."""
    if not path.is_file():
        raise SetupError(f"AUDIO={path}: no such file")
    content_type = AUDIO_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise SetupError(
            f"AUDIO={path}: the service cuts MP3 and M4A/AAC ({', '.join(AUDIO_TYPES)}), not {path.suffix!r}"
        )
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.")[:150] or "audio"
    guid = f"local:{stem}"
    key = f"local/{guid}/audio/{stem}{path.suffix.lower()}"
    document: Dict[str, object] = {
        "guid": guid,
        "s3_audio_path": f"s3://{source_bucket}/{key}",
        "podcast_title": "Local audio",
        "raw_entry_original_feed": {"podcast_slug": "local", "episode_title": path.name},
    }
    return OwnEpisode(guid, key, path, content_type, document)


def catalog_document(source_bucket: str, key: str) -> Dict[str, object]:
    """One `episode_metadata` document, shaped as in the contract."""
    return {
        "guid": DEMO_GUID,
        "s3_audio_path": f"s3://{source_bucket}/{key}",
        "podcast_title": "Demo Podcast",
        "raw_entry_original_feed": {
            "podcast_slug": DEMO_SLUG,
            "episode_title": "Demo episode: a tone that rises one semitone every 5 seconds",
        },
    }


def write_catalog(documents: List[Dict[str, object]]) -> Path:
    path = STATE_DIR / "catalog.json"
    partial = STATE_DIR / f".catalog.json.{os.getpid()}.partial"
    partial.write_text(json.dumps(documents, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)  # a concurrent run never reads half a file
    return path


# --- chalice local -------------------------------------------------------------------------------


class OutputPump:
    """Copies a child's output to our stderr, prefixed, and keeps the last lines for error messages."""

    def __init__(self, stream, prefix: str, keep: int = 60):
        self.tail: Deque[str] = collections.deque(maxlen=keep)
        self._stream = stream
        self._prefix = prefix
        self._thread = threading.Thread(target=self._run, name=f"pump {prefix}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self._stream:
            self.tail.append(line)
            sys.stderr.write(f"{self._prefix}{line}")
            sys.stderr.flush()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self, last: int = 15) -> str:
        lines = list(self.tail)[-last:]
        return "".join(f"  {line}" for line in lines) or "  (no output)\n"


def chalice_command(port: int) -> List[str]:
    chalice = Path(sys.executable).parent / "chalice"
    if not chalice.exists():
        raise SetupError(f"{chalice} not found: install the dev requirements (make venv)")
    # --no-autoreload: the reloader runs the server in a second process, which outlives a SIGTERM to the one we
    # started (keeping the port), and it restarts the server whenever any file under the repo changes.
    return [str(chalice), "local", "--host", HOST, "--port", str(port), "--stage", "local", "--no-autoreload"]


def start_chalice(port: int, env: Dict[str, str]) -> subprocess.Popen:
    ensure_port_free(port, "--port")
    # chalice local is in our process group, so a Ctrl-C in the terminal would reach it too, and it would die with a
    # traceback while we are still stopping. Started with SIGINT ignored (an ignored signal stays ignored across exec,
    # and Python leaves it so), it stops only when we stop it: SIGTERM by PID. A kill of the group still reaches it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(
            chalice_command(port),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def chalice_environment(moto_endpoint: str, catalog: Path, ffmpeg: str, buckets: Dict[str, str]) -> Dict[str, str]:
    """The app's environment: local S3, and the embedded catalog unless MONGODB_URI names a MongoDB to use."""
    env = dict(os.environ)  # with the fake credentials from prepare_environment()
    env.update(buckets)
    env.update(
        AWS_ENDPOINT_URL=moto_endpoint,
        FFMPEG_PATH=ffmpeg,
        PYTHONUNBUFFERED="1",  # its log lines arrive as they happen, not when a pipe buffer fills
        POWERTOOLS_METRICS_DISABLED=env.get("POWERTOOLS_METRICS_DISABLED", "true"),  # no EMF lines in the console
    )
    if env.get("MONGODB_URI", "").strip():
        env.pop("LOCAL_CATALOG_FILE", None)
    else:
        env.pop("MONGODB_URI", None)
        env["LOCAL_CATALOG_FILE"] = str(catalog.resolve())
    return env


def wait_until_healthy(
    url: str, chalice: subprocess.Popen, output: OutputPump, timeout_s: float, stopper: Stopper
) -> None:
    """Poll the health route until it answers 200; fail with chalice's output if it dies or the deadline passes."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read(300).decode('utf-8', 'replace')}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SetupError(
                f"chalice local did not answer 200 on {url} within {timeout_s:.0f} s (last: {last}).\n"
                f"The end of its output:\n{output.text()}"
            )
        stopper.event.wait(timeout=min(HEALTH_POLL_INTERVAL_S, remaining))  # the pause between polls
        stopper.check()
        code = chalice.poll()
        if code is not None:
            output.join(timeout=2)
            raise SetupError(
                f"chalice local exited with code {code} before it was ready. The end of its output:\n{output.text()}"
            )


def stop_chalice(chalice: subprocess.Popen) -> None:
    if chalice.poll() is None:
        chalice.terminate()
        try:
            chalice.wait(timeout=CHALICE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"chalice local (pid {chalice.pid}) ignored SIGTERM for {CHALICE_STOP_TIMEOUT_S} s: killing it",
                  file=sys.stderr, flush=True)  # fmt: skip
            chalice.kill()
            chalice.wait()


# --- the ready message ---------------------------------------------------------------------------


def print_own_episode(base_url: str, episode: OwnEpisode) -> None:
    clip = (
        f"{base_url}/api/v1/audio_clips/{urllib.parse.quote(episode.guid, safe='')}?start_time_ms=0&duration_ms=30000"
    )
    print(
        f"\nYour audio {episode.path} is episode {episode.guid}. Its first 30 s:\n"
        f"  curl -s '{clip}'\n"
        f"  curl -sL -o clip.mp3 '{clip}&redirect=true'",
        flush=True,
    )


def print_ready(base_url: str) -> None:
    clip = f"{base_url}/api/v1/audio_clips/{DEMO_GUID}?start_time_ms=60000&duration_ms=30000"
    print(
        f"READY {base_url}\n"
        f"\n"
        f"Episode {DEMO_GUID} is a {DEMO_SECONDS // 60}-minute demo: a tone rising one semitone every 5 s,\n"
        f"with a tick each second on the right (1:00 is A4, 440 Hz). Try:\n"
        f"\n"
        f"  # a 30 s clip from 1:00, as JSON\n"
        f"  curl -s '{clip}'\n"
        f"  # the same clip as an MP3 file (follows the 302 to the pre-signed URL)\n"
        f"  curl -sL -o clip.mp3 '{clip}&redirect=true'\n"
        f"  # the clip's share page (HTML) and its oEmbed description\n"
        f"  curl -s '{base_url}/clips/{DEMO_GUID}?start_time_ms=60000&duration_ms=30000'\n"
        f"  curl -s -G '{base_url}/api/v1/oembed' --data-urlencode "
        f"'url={base_url}/clips/{DEMO_GUID}?start_time_ms=60000&duration_ms=30000'\n"
        f"  # liveness\n"
        f"  curl -s '{base_url}/api/v1/health'\n"
        f"  # errors: a malformed episode id (400), an unknown one (404)\n"
        f"  curl -s '{base_url}/api/v1/audio_clips/bad!id?start_time_ms=0'\n"
        f"  curl -s '{base_url}/api/v1/audio_clips/no-such-episode?start_time_ms=0'\n"
        f"\n"
        f"Ctrl-C stops the API and the S3 server.",
        flush=True,
    )


# --- main ----------------------------------------------------------------------------------------


def serve_until_stopped(chalice: subprocess.Popen, stopper: Stopper) -> int:
    """Wait for a stop signal (then return 0) or for chalice local to exit by itself (then return 1)."""
    while chalice.poll() is None:
        if stopper.event.wait(timeout=0.5):
            raise StopRequested(stopper.signal_name)
    print(f"chalice local exited by itself (code {chalice.returncode}); stopping.", file=sys.stderr, flush=True)
    return 1


def run(args: argparse.Namespace, stopper: Stopper) -> int:
    moto: Optional[ThreadedMotoServer] = None
    own: Optional[OwnEpisode] = None
    chalice: Optional[subprocess.Popen] = None
    output: Optional[OutputPump] = None
    try:
        prepare_environment()
        ensure_port_free(args.port, "--port")  # fail now rather than after the setup below
        ffmpeg = find_ffmpeg()
        buckets = {
            "SOURCE_BUCKET": os.environ.get("SOURCE_BUCKET") or "pod-insights-raw",
            "CLIPS_BUCKET": os.environ.get("CLIPS_BUCKET") or "pod-insights-clips",
        }
        own = own_episode(args.audio, buckets["SOURCE_BUCKET"]) if args.audio else None

        moto = start_moto(args.moto_port)
        moto_endpoint = "http://%s:%d" % moto.get_host_and_port()
        print(f"S3 (moto): {moto_endpoint}", flush=True)
        s3 = s3_client(moto_endpoint)
        create_buckets(s3, list(buckets.values()))
        print(f"buckets: {', '.join(buckets.values())}", flush=True)

        stopper.check()
        episode = ensure_demo_episode(ffmpeg, stopper)
        key = demo_audio_key()
        upload_episode(s3, buckets["SOURCE_BUCKET"], key, episode)
        print(f"uploaded: s3://{buckets['SOURCE_BUCKET']}/{key}", flush=True)
        documents = [catalog_document(buckets["SOURCE_BUCKET"], key)]
        if own is not None:
            upload_episode(s3, buckets["SOURCE_BUCKET"], own.key, own.path, own.content_type)
            print(f"uploaded: s3://{buckets['SOURCE_BUCKET']}/{own.key} (AUDIO)", flush=True)
            documents.append(own.document)
        catalog = write_catalog(documents)
        if os.environ.get("MONGODB_URI", "").strip():
            print(
                "catalog: MongoDB from MONGODB_URI (nothing is written to it). To try the local episodes there, "
                f"insert these documents into {os.environ.get('MONGODB_DB') or 'podinsight'}.episode_metadata: "
                f"{catalog.relative_to(REPO_ROOT)}",
                flush=True,
            )
        else:
            print(f"catalog: {catalog.relative_to(REPO_ROOT)}", flush=True)

        base_url = f"http://{HOST}:{args.port}"
        stopper.check()
        print(f"starting chalice local on {base_url} ...", flush=True)
        chalice = start_chalice(args.port, chalice_environment(moto_endpoint, catalog, ffmpeg, buckets))
        output = OutputPump(chalice.stdout, prefix="chalice | ")
        wait_until_healthy(f"{base_url}/api/v1/health", chalice, output, args.startup_timeout, stopper)
        print_ready(base_url)
        if own is not None:
            print_own_episode(base_url, own)
        return serve_until_stopped(chalice, stopper)
    except StopRequested as stop:
        print(f"\n{stop} received: stopping.", file=sys.stderr, flush=True)
        return 0
    except SetupError as exc:
        print(f"run_local: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if chalice is not None:
            stop_chalice(chalice)
            if output is not None:
                output.join(timeout=2)
        if moto is not None:
            moto.stop()


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    stopper = Stopper()
    stopper.install()
    return run(args, stopper)


if __name__ == "__main__":
    sys.exit(main())
