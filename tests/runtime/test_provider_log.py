"""A provider asked for by name that cannot run here is one ``error:`` line on stderr, not ONNX Runtime's
own log lines (its C++ logger, in colour) above it. Real processes: that logger writes to fd 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from runtime.backends import nvidia_gpu_present

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers() or nvidia_gpu_present(),
    reason="needs an ONNX Runtime build listing CUDA on a machine without an NVIDIA GPU, where it cannot load",
)


def _gtc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _refusal(path: Path) -> str:
    return (
        f"error: {path}: execution provider CUDAExecutionProvider could not be used here (ONNX Runtime runs it on "
        "CPUExecutionProvider): use --providers cpu, or install what it needs\n"
    )


def test_serve_with_a_provider_that_cannot_load_prints_one_line(exported) -> None:
    path = exported["graph"].path
    res = _gtc("serve", str(path), "--providers", "cuda", "--port", "0")
    assert (res.returncode, res.stdout, res.stderr) == (2, "", _refusal(path))


def test_profile_with_a_provider_that_cannot_load_prints_one_line_before_its_bar(exported, tmp_path: Path) -> None:
    """It was ONNX Runtime's lines, then the bar, then the measuring child's error."""
    path = exported["graph"].path
    res = _gtc("profile", str(path), "--providers", "cuda", "--sizes", "8", "--out", str(tmp_path / "p"))
    assert (res.returncode, res.stdout, res.stderr) == (2, "", _refusal(path))
    assert not (tmp_path / "p").exists()
