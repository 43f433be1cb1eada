"""The api_handler's deployment package (what `chalice package` zips: the code, the fonts, the Lambda requirements
with Pillow) and the FFmpeg layer fit together within Lambda's 250 MB limit for a function and its layers,
unzipped. Measured on 2026-12-04: 49.6 MiB before Pillow and the fonts, 73.8 MiB after, plus FFmpeg's 164.7 MiB."""

from __future__ import annotations

import os
import zipfile

import imageio_ffmpeg
import pytest

from tests.test_deployment import package_stage, project_copy

LAMBDA_UNZIPPED_LIMIT = 262_144_000  # 250 MiB: a function and all its layers, unzipped
MiB = 1024 * 1024


@pytest.mark.slow
def test_the_function_package_and_the_ffmpeg_layer_fit_lambdas_unzipped_limit(tmp_path, capsys):
    out = package_stage(project_copy(tmp_path))
    package = os.path.join(out, "deployment.zip")
    with zipfile.ZipFile(package) as archive:
        names = {info.filename: info.file_size for info in archive.infolist()}
    unzipped = sum(names.values())
    assert any(name.startswith("PIL/") for name in names), "Pillow is in the package Lambda gets"
    for font in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DroidSansFallback.ttf", "DejaVu-LICENSE.txt"):
        assert f"chalicelib/cards/fonts/{font}" in names, f"{font} travels with the code"
    layer = os.path.getsize(imageio_ffmpeg.get_ffmpeg_exe())  # the binary the layer holds (same pinned wheel)
    with capsys.disabled():
        print(
            f"\n[measure] deployment package {os.path.getsize(package) / MiB:.1f} MiB zipped, {unzipped / MiB:.1f} "
            f"MiB unzipped; with the FFmpeg layer {(unzipped + layer) / MiB:.1f} of {LAMBDA_UNZIPPED_LIMIT / MiB:.0f} MiB"
        )
    assert unzipped + layer <= LAMBDA_UNZIPPED_LIMIT
