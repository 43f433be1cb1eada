"""Build the FFmpeg Lambda layer zips from the pinned imageio-ffmpeg wheels in wheels.lock.

    .venv/bin/python layers/ffmpeg/build.py [--arch x86_64] [--dist-dir DIR] [--cache-dir DIR] [--lock FILE]

For each architecture in the lock: download the wheel with pip (once: it is cached in cache/), check its sha256
against the lock (a mismatch stops the build), take the FFmpeg binary out of it, strip it only if it has symbols
to strip and still runs afterwards, and write dist/<zip> holding `bin/` and `bin/ffmpeg` (Lambda mounts layers
at /opt, so FFmpeg is /opt/bin/ffmpeg), plus dist/<zip stem>.json describing it for publish.py.
The zips are reproducible: fixed entry order, timestamps (1980-01-01) and modes, so a rebuild is byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # 250 MB (262,144,000 bytes): a function and all its layers, unzipped
MAX_UNZIPPED_LAYER = 240 * 1024 * 1024  # leaves at least 10 MiB of that for the function itself
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # larger zips must go through S3
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower()
)
LICENSES = {  # (--enable-gpl, --enable-version3) -> SPDX id, per FFmpeg's LICENSE.md
    (True, True): "GPL-3.0-or-later",
    (True, False): "GPL-2.0-or-later",
    (False, True): "LGPL-3.0-or-later",
    (False, False): "LGPL-2.1-or-later",
}


class BuildError(Exception):
    pass


def mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB ({n / 1e6:.1f} MB)"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(lock: dict, lock_path: Path, arch: str, cache_dir: Path) -> Path:
    """The arch's wheel from cache_dir, downloaded by pip if absent; refuses one whose sha256 is not the pinned one."""
    wheel = lock["wheels"][arch]
    path = cache_dir / wheel["filename"]
    if path.exists():
        print(f"[{arch}] cached: {path}")
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / ".gitignore").write_text("*\n")  # the wheels (130 MB) never belong in git
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            wheel["platform"],
            "--python-version",
            lock["python_version"],
            f"{lock['package']}=={lock['version']}",
            "-d",
            str(cache_dir),
        ]
        print(f"[{arch}] downloading: {' '.join(cmd[2:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise BuildError(f"pip download failed for {lock['package']}=={lock['version']} ({wheel['platform']})")
        if not path.exists():
            raise BuildError(
                f"pip did not produce {wheel['filename']} in {cache_dir} (has: {sorted(os.listdir(cache_dir))})"
            )
    actual = sha256_of(path)
    if actual != wheel["sha256"]:
        raise BuildError(
            f"sha256 mismatch for {path.name}: refusing to build.\n"
            f"  pinned in {lock_path}: {wheel['sha256']}\n"
            f"  actual ({path}): {actual}\n"
            f"If the pin is right, delete the cached wheel and run again; if the wheel really changed, review it "
            f"and update the lock."
        )
    print(f"[{arch}] sha256 ok: {actual}")
    return path


def extract_binary(wheel_path: Path, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel, wheel.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    dest.chmod(0o755)


def strippable_sections(binary: Path) -> list | None:
    """Names of the sections `strip` would remove (.symtab, .debug_*), or None when readelf is missing."""
    if not shutil.which("readelf"):
        return None
    out = subprocess.run(["readelf", "-S", "-W", str(binary)], capture_output=True, text=True, check=True).stdout
    names = re.findall(r"^\s*\[\s*\d+\]\s+(\S+)", out, re.MULTILINE)  # "  [29] .symtab  SYMTAB ..."
    return [n for n in names if n == ".symtab" or n.startswith(".debug")]


def runs(binary: Path) -> bool:
    return subprocess.run([str(binary), "-version"], capture_output=True).returncode == 0


def maybe_strip(binary: Path, arch: str) -> bool:
    """Strips the binary in place only if it has symbols to strip and still runs afterwards; True if stripped."""
    before = binary.stat().st_size
    sections = strippable_sections(binary)
    if sections is None:
        print(f"[{arch}] strip: skipped (readelf not found, cannot tell whether there is anything to strip)")
        return False
    if not sections:
        print(f"[{arch}] strip: nothing to strip (no .symtab or .debug_* sections); {mb(before)} as shipped")
        return False
    if arch != HOST_ARCH or not shutil.which("strip"):
        print(
            f"[{arch}] strip: skipped ({', '.join(sections)} present, but it cannot be stripped and run-checked here)"
        )
        return False
    stripped = binary.with_name(binary.name + ".stripped")
    shutil.copy2(binary, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    if not runs(stripped):
        stripped.unlink()
        print(f"[{arch}] strip: skipped (the stripped binary no longer runs `-version`)")
        return False
    os.replace(stripped, binary)
    print(f"[{arch}] strip: removed {', '.join(sections)}: {mb(before)} -> {mb(binary.stat().st_size)}")
    return True


def license_of(configuration: str) -> str:
    """SPDX id of an FFmpeg build from its `configuration:` line; refuses a non-redistributable one."""
    flags = configuration.split()
    if "--enable-nonfree" in flags:
        raise BuildError("this FFmpeg was built with --enable-nonfree: it may not be redistributed in a layer")
    return LICENSES["--enable-gpl" in flags, "--enable-version3" in flags]


def probe(binary: Path, arch: str, wheel: dict) -> tuple:
    """(FFmpeg version, SPDX license) from `ffmpeg -version` when it can run here; else from the binary's name."""
    if arch != HOST_ARCH:
        version = wheel["binary"].rsplit("-v", 1)[-1]
        print(
            f"[{arch}] cannot run the {arch} binary on this {HOST_ARCH} host: version {version} from its name, license unchecked"
        )
        return version, None
    out = subprocess.run([str(binary), "-version"], capture_output=True, text=True, check=True).stdout
    version = out.split()[2]  # "ffmpeg version n9.0.2-... Copyright ..."
    spdx = license_of(next((line for line in out.splitlines() if line.startswith("configuration:")), ""))
    print(f"[{arch}] ffmpeg {version}, license {spdx}")
    return version, spdx


def write_zip(binary: Path, zip_path: Path) -> None:
    """bin/ and bin/ffmpeg, in that order, with fixed dates and modes: the same binary gives the same bytes."""
    directory = zipfile.ZipInfo("bin/", ZIP_DATE)
    directory.create_system = 3  # Unix, so that the mode bits below are honoured
    directory.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10  # 0x10: MS-DOS directory flag
    entry = zipfile.ZipInfo("bin/ffmpeg", ZIP_DATE)
    entry.create_system = 3
    entry.external_attr = (stat.S_IFREG | 0o755) << 16
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.file_size = binary.stat().st_size
    partial = zip_path.with_name(zip_path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as zf:
        zf.writestr(directory, b"")
        with open(binary, "rb") as src, zf.open(entry, "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(partial, zip_path)


def check_sizes(arch: str, zipped: int, unzipped: int) -> None:
    print(
        f"[{arch}] zipped {mb(zipped)}, unzipped {mb(unzipped)}; Lambda allows {mb(LAMBDA_UNZIPPED_LIMIT)} unzipped "
        f"for function + layers, leaving {mb(LAMBDA_UNZIPPED_LIMIT - unzipped)} for the function"
    )
    if unzipped > MAX_UNZIPPED_LAYER:
        raise BuildError(
            f"the unzipped layer ({mb(unzipped)}) exceeds {mb(MAX_UNZIPPED_LAYER)}: too little room is "
            f"left for the function within Lambda's {mb(LAMBDA_UNZIPPED_LIMIT)}"
        )
    if zipped > DIRECT_UPLOAD_LIMIT:
        print(f"[{arch}] over the {mb(DIRECT_UPLOAD_LIMIT)} direct-upload limit: publish.py uploads it through S3")
    else:
        print(f"[{arch}] under the {mb(DIRECT_UPLOAD_LIMIT)} direct-upload limit (publish.py uses S3 all the same)")


def build(lock: dict, lock_path: Path, arch: str, cache_dir: Path, dist_dir: Path) -> dict:
    wheel = lock["wheels"][arch]
    wheel_path = fetch_wheel(lock, lock_path, arch, cache_dir)
    with tempfile.TemporaryDirectory(prefix=f"ffmpeg-layer-{arch}-") as staging:
        binary = Path(staging) / "bin" / "ffmpeg"
        extract_binary(wheel_path, wheel["binary"], binary)
        size_before = binary.stat().st_size
        stripped = maybe_strip(binary, arch)
        version, spdx = probe(binary, arch, wheel)
        dist_dir.mkdir(parents=True, exist_ok=True)
        zip_path = dist_dir / wheel["zip"]
        write_zip(binary, zip_path)
        unzipped = binary.stat().st_size
    zipped = zip_path.stat().st_size
    check_sizes(arch, zipped, unzipped)
    manifest = {
        "arch": arch,
        "zip": zip_path.name,
        "zip_sha256": sha256_of(zip_path),
        "zipped_bytes": zipped,
        "unzipped_bytes": unzipped,
        "binary_bytes_in_wheel": size_before,
        "stripped": stripped,
        "ffmpeg_version": version,
        "license": spdx,
        "wheel": wheel["filename"],
        "wheel_sha256": wheel["sha256"],
    }
    zip_path.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"[{arch}] wrote {zip_path}  sha256 {manifest['zip_sha256']}")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help="an architecture from the lock (x86_64, arm64); default: all")
    parser.add_argument("--lock", type=Path, default=HERE / "wheels.lock", help="pinned wheels (filename, sha256)")
    parser.add_argument("--cache-dir", type=Path, default=HERE / "cache", help="where downloaded wheels are kept")
    parser.add_argument("--dist-dir", type=Path, default=HERE / "dist", help="where the zips are written")
    args = parser.parse_args(argv)
    lock = json.loads(args.lock.read_text())
    arches = args.arch or list(lock["wheels"])
    unknown = sorted(set(arches) - set(lock["wheels"]))
    if unknown:
        parser.error(f"no wheel pinned for {', '.join(unknown)} in {args.lock} (pinned: {', '.join(lock['wheels'])})")
    started = time.monotonic()
    try:
        for arch in arches:
            build(lock, args.lock, arch, args.cache_dir, args.dist_dir)
    except BuildError as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return 1
    print(f"built {', '.join(arches)} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
