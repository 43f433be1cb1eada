"""The FFmpeg Lambda layer: layers/ffmpeg/build.py (pinned wheel → reproducible zip) and publish.py (S3 + Lambda + config).

The slow tests run build.py once for the module (the wheels are cached in layers/ffmpeg/cache/, so only the first
run on a machine downloads them) and publish.py against moto over HTTP.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest

REPO = Path(__file__).resolve().parent.parent
LAYER_DIR = REPO / "layers" / "ffmpeg"
LOCK = json.loads((LAYER_DIR / "wheels.lock").read_text())
ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64
MiB = 1024 * 1024


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"ffmpeg_layer_{name}", LAYER_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LAYER_DIR / f"{name}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """Every pinned architecture built once, into a temporary dist dir."""
    out = tmp_path_factory.mktemp("dist")
    result = run_script("build", "--dist-dir", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def zip_of(dist: Path, arch: str) -> Path:
    return dist / LOCK["wheels"][arch]["zip"]


def unzip_like_lambda(zip_path: Path, dest: Path) -> None:
    """Extracts with the modes recorded in the zip (Python's extractall drops them; Lambda keeps them)."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            path.chmod(stat.S_IMODE(info.external_attr >> 16))


# ---------------------------------------------------------------- the zip


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(LOCK["wheels"]))
def test_zip_layout_modes_and_dates(dist, arch):
    with zipfile.ZipFile(zip_of(dist, arch)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["bin/", "bin/ffmpeg"]  # Lambda mounts it at /opt: /opt/bin/ffmpeg
        directory, binary = infos
        assert all(i.create_system == 3 and i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
        assert directory.external_attr >> 16 == stat.S_IFDIR | 0o755
        assert binary.external_attr >> 16 == stat.S_IFREG | 0o755
        assert binary.compress_type == zipfile.ZIP_DEFLATED
        with zf.open(binary) as f:
            header = f.read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == ELF_MACHINE[arch]


@pytest.mark.slow
def test_unzipped_ffmpeg_runs_and_encodes_mp3(dist, tmp_path):
    unzip_like_lambda(zip_of(dist, "x86_64"), tmp_path)
    ffmpeg = tmp_path / "bin" / "ffmpeg"
    assert os.access(ffmpeg, os.X_OK)
    version = subprocess.run([str(ffmpeg), "-version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("ffmpeg version n9.0.2"), version.stderr
    assert "--enable-gpl" in version.stdout and "--enable-version3" in version.stdout
    encoders = subprocess.run([str(ffmpeg), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    assert " libmp3lame " in encoders.stdout


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(LOCK["wheels"]))
def test_sizes_within_lambda_limits_and_manifest(dist, arch):
    zip_path = zip_of(dist, arch)
    with zipfile.ZipFile(zip_path) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    assert unzipped <= 240 * MiB  # leaves ≥ 10 MiB of Lambda's 250 MiB (function + layers, unzipped)
    assert zip_path.stat().st_size > 50 * MiB  # too big to upload directly: publish.py goes through S3
    manifest = json.loads(zip_path.with_suffix(".json").read_text())
    wheel = LOCK["wheels"][arch]
    assert manifest["zip_sha256"] == sha256_of(zip_path)
    assert (manifest["unzipped_bytes"], manifest["zipped_bytes"]) == (unzipped, zip_path.stat().st_size)
    assert (manifest["wheel"], manifest["wheel_sha256"]) == (wheel["filename"], wheel["sha256"])
    if arch == "x86_64":
        assert manifest["license"] == "GPL-3.0-or-later"
        assert manifest["ffmpeg_version"].startswith("n9.0.2")


@pytest.mark.slow
def test_rebuild_is_byte_identical_and_uses_the_cache(dist, tmp_path):
    result = run_script("build", "--arch", "x86_64", "--dist-dir", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[x86_64] cached:" in result.stdout and "downloading" not in result.stdout
    assert sha256_of(tmp_path / "ffmpeg-layer.zip") == sha256_of(zip_of(dist, "x86_64"))
    assert f"sha256 {sha256_of(tmp_path / 'ffmpeg-layer.zip')}" in result.stdout


# ---------------------------------------------------------------- pinned sha256


@pytest.mark.slow
def test_a_wrong_pin_is_refused(dist, tmp_path):
    lock = copy.deepcopy(LOCK)
    lock["wheels"]["x86_64"]["sha256"] = "0" * 64
    (tmp_path / "wheels.lock").write_text(json.dumps(lock))
    result = run_script("build", "--arch", "x86_64", "--lock", tmp_path / "wheels.lock", "--dist-dir", tmp_path / "out")
    assert result.returncode == 1
    assert "sha256 mismatch for imageio_ffmpeg-0.8.1-py3-none-manylinux_2_28_x86_64.whl: refusing" in result.stderr
    assert "0" * 64 in result.stderr and LOCK["wheels"]["x86_64"]["sha256"] in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_tampered_wheel_is_refused(dist, tmp_path):
    name = LOCK["wheels"]["x86_64"]["filename"]
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(LAYER_DIR / "cache" / name, cache / name)
    with open(cache / name, "r+b") as f:  # one byte changed in the middle of the wheel
        f.seek(30_000_000)
        byte = f.read(1)
        f.seek(30_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run_script("build", "--arch", "x86_64", "--cache-dir", cache, "--dist-dir", tmp_path / "out")
    assert result.returncode == 1 and "sha256 mismatch" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- build.py's pieces


@pytest.mark.parametrize(
    "configuration, spdx",
    [
        ("--enable-gpl --enable-version3 --enable-libmp3lame", "GPL-3.0-or-later"),
        ("--enable-gpl --enable-libx264", "GPL-2.0-or-later"),
        ("--enable-version3", "LGPL-3.0-or-later"),
        ("--disable-debug", "LGPL-2.1-or-later"),
    ],
)
def test_license_follows_the_configuration(configuration, spdx):
    assert load("build").license_of(f"configuration: {configuration}") == spdx


def test_a_nonfree_build_is_refused():
    build = load("build")
    with pytest.raises(build.BuildError, match="may not be redistributed"):
        build.license_of("configuration: --enable-gpl --enable-nonfree --enable-libfdk-aac")


@pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("readelf") and shutil.which("strip")),
    reason="needs gcc, readelf and strip",
)
def test_strip_removes_symbols_only_when_there_are_some(tmp_path, capsys):
    build = load("build")
    (tmp_path / "t.c").write_text('#include <stdio.h>\nint main(void) { puts("ffmpeg version test"); return 0; }\n')
    binary = tmp_path / "ffmpeg"
    subprocess.run(["gcc", "-g", "-o", str(binary), str(tmp_path / "t.c")], check=True)
    assert ".symtab" in build.strippable_sections(binary)
    assert build.maybe_strip(binary, build.HOST_ARCH) is True
    assert build.strippable_sections(binary) == [] and build.runs(binary)
    assert build.maybe_strip(binary, build.HOST_ARCH) is False
    assert "nothing to strip" in capsys.readouterr().out


# ---------------------------------------------------------------- publish.py


def test_publish_needs_a_bucket(tmp_path):
    config = tmp_path / "config.json"
    copied = json.loads((REPO / ".chalice" / "config.json").read_text())
    copied.get("environment_variables", {}).pop("LAYER_ARTIFACTS_BUCKET", None)
    copied["stages"]["dev"].get("environment_variables", {}).pop("LAYER_ARTIFACTS_BUCKET", None)
    config.write_text(json.dumps(copied, indent=2) + "\n")
    before = config.read_text()
    result = run_script("publish", "dev", "--config", config, "--dist-dir", tmp_path)
    assert result.returncode == 1
    assert "no artifacts bucket: pass --bucket, or set LAYER_ARTIFACTS_BUCKET" in result.stderr
    assert config.read_text() == before


def test_record_layer_keeps_the_rest_of_the_config(tmp_path):
    publish = load("publish")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"version": "2.0", "stages": {"dev": {"api_gateway_stage": "dev"}, "prod": {}}}))
    publish.record_layer(config, "dev", "arn:aws:lambda:us-east-1:123456789012:layer:x:1")
    text = config.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "version": "2.0",')
    assert json.loads(text) == {
        "version": "2.0",
        "stages": {
            "dev": {
                "api_gateway_stage": "dev",
                "lambda_functions": {
                    "api_handler": {"layers": ["arn:aws:lambda:us-east-1:123456789012:layer:x:1"]},
                    "cleanup_clips": {"layers": ["arn:aws:lambda:us-east-1:123456789012:layer:x:1"]},
                },
            },
            "prod": {},
        },
    }


@pytest.mark.slow
def test_publish_to_moto(dist, moto_server, tmp_path):
    """Upload through S3, publish_layer_version, ARN recorded for the stage's api_handler and cleanup_clips; nothing
    else changed."""
    bucket = "audio-clips-layer-artifacts-dev"
    moto_server.create_bucket(Bucket=bucket)
    config = tmp_path / "config.json"
    original = json.loads((REPO / ".chalice" / "config.json").read_text())
    original["stages"]["dev"].setdefault("environment_variables", {})["LAYER_ARTIFACTS_BUCKET"] = bucket
    config.write_text(json.dumps(original, indent=2) + "\n")

    result = run_script("publish", "dev", "--config", config, "--dist-dir", dist)
    assert result.returncode == 0, result.stdout + result.stderr

    manifest = json.loads((dist / "ffmpeg-layer.json").read_text())
    key = f"layers/ffmpeg/{manifest['zip_sha256']}.zip"
    assert moto_server.head_object(Bucket=bucket, Key=key)["ContentLength"] == manifest["zipped_bytes"]
    awslambda = boto3.client("lambda", region_name="us-east-1", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    versions = awslambda.list_layer_versions(LayerName="audio-clips-ffmpeg-dev")["LayerVersions"]
    assert len(versions) == 1
    layer = versions[0]
    assert layer["CompatibleRuntimes"] == ["python3.12", "python3.13"]
    assert layer["CompatibleArchitectures"] == ["x86_64"]
    assert layer["LicenseInfo"] == "GPL-3.0-or-later"
    assert manifest["wheel"] in layer["Description"] and manifest["ffmpeg_version"] in layer["Description"]

    expected = copy.deepcopy(original)
    for function in ("api_handler", "cleanup_clips"):  # cleanup_clips measures an upload's levels with FFmpeg
        expected["stages"]["dev"].setdefault("lambda_functions", {}).setdefault(function, {})["layers"] = [
            layer["LayerVersionArn"]
        ]
    assert json.loads(config.read_text()) == expected
    assert config.read_text().endswith("}\n")
    assert f"published {layer['LayerVersionArn']}" in result.stdout

    again = run_script("publish", "dev", "--config", config, "--dist-dir", dist)  # same zip: no second upload
    assert again.returncode == 0 and "already uploaded" in again.stdout, again.stdout + again.stderr
    assert len(awslambda.list_layer_versions(LayerName="audio-clips-ffmpeg-dev")["LayerVersions"]) == 2
