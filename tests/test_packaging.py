"""The wheel holds every file the packages track, data files included: the TensorRT operator table
(exporters/data) was left out, so every ONNX export failed from an installed package while the
editable checkout CI uses worked."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gtcompress", "exporters", "trt_plugins", "runtime", "cli")


def _tracked() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--", *PACKAGES], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout: the wheel is compared with the files git tracks")
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def test_the_wheel_holds_every_tracked_package_file(tmp_path: Path) -> None:
    tracked = _tracked()
    src = tmp_path / "src"
    for f in [*tracked, "pyproject.toml", "README.md"]:  # a copy: building in place leaves build/ behind
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=src,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "exporters/data/tensorrt-onnx-ops.tsv" in names
    assert sorted(set(tracked) - names) == []
