"""``bench/gpu_check.sh``, the GPU run's one script, run here on a stand-in tree.

The device run cannot be repeated, so what its log keeps when a step runs out of time is checked
here: the real script and the real ``tests/conftest.py`` in a temporary tree whose test files (the
paths the script names) hold one failing test and one that never ends, and whose
``bench/kernel.py`` only prints its arguments.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"

FAILING = """
import time


def test_fails_before_the_cut():
    assert 1 == 2, "the failure the log must keep"


def test_never_ends():
    time.sleep(600)
"""


NEEDS_SHELL = pytest.mark.skipif(
    shutil.which("timeout") is None or shutil.which("bash") is None, reason="needs bash and timeout"
)


def _run(tmp_path: Path, gpu_tests: str, **env_extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The real script on a stand-in tree whose tests/gpu holds ``gpu_tests``; its $OUT."""
    tree = tmp_path / "tree"
    for name in ("gpu", "runtime", "cli"):
        (tree / "tests" / name).mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", tree / "tests" / "conftest.py")
    (tree / "tests" / "gpu" / "test_a.py").write_text(gpu_tests)
    for path in ("runtime/test_torch_backend.py", "cli/test_runtime_device.py"):
        (tree / "tests" / path).write_text("def test_nothing():\n    pass\n")
    (tree / "bench").mkdir()
    (tree / "bench" / "kernel.py").write_text("import sys\nprint('bench args', *sys.argv[1:])\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python3"  # the script's python3: this interpreter, with pytest
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "OUT": str(out),
        "GPU_TEST_WORKERS": "0",  # no xdist workers: the tests run in order, the failing one first
        "GTC_COMMIT": "test",
        **env_extra,
    }
    res = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    return res, out


@NEEDS_SHELL
def test_tests_cut_by_their_timeout_still_log_their_failures(tmp_path: Path) -> None:
    """Cut at GPU_TEST_TIMEOUT, pytest must still write the failures it found, with their tracebacks:
    killed by timeout's default SIGTERM it left only its progress dots. The script is started with
    SIGINT ignored, as a shell without job control starts a background command."""
    res, out = _run(tmp_path, FAILING, GPU_TEST_TIMEOUT="15")
    log = (out / "gpu_tests.log").read_text()
    assert "AssertionError: the failure the log must keep" in log, log
    assert "FAILED tests/gpu/test_a.py::test_fails_before_the_cut" in log or "1 failed" in log, log
    assert res.returncode == 1, res.stdout + res.stderr
    assert "bench args --out" in (out / "kernel.log").read_text()  # the benchmark still ran after the cut


@NEEDS_SHELL
def test_a_budget_the_tests_used_up_is_said_not_run_without_a_limit(tmp_path: Path) -> None:
    """``timeout 0`` means no limit: with the tests leaving under a minute of TOTAL_S, the benchmark
    ran unbounded (or, with a negative limit, not at all and without a word)."""
    res, out = _run(tmp_path, "def test_ok():\n    pass\n", TOTAL_S="5")
    assert res.returncode == 1, res.stdout + res.stderr
    log = (out / "kernel.log").read_text()
    assert "of TOTAL_S=5, under the benchmark's 60 s minimum; not run" in log, log
    assert "bench args" not in log


@NEEDS_SHELL
def test_the_benchmarks_kill_grace_comes_out_of_its_share(tmp_path: Path) -> None:
    """``timeout -k`` gives a benchmark stuck in a CUDA call its grace after the limit: taken on top, a stuck
    run ended 30 s past TOTAL_S. With TOTAL_S=75 the grace (20 s) leaves the benchmark under its 60 s minimum
    however fast the tests were, so it is said not run."""
    res, out = _run(tmp_path, "def test_ok():\n    pass\n", TOTAL_S="75")
    assert res.returncode == 1, res.stdout + res.stderr
    log = (out / "kernel.log").read_text()
    assert "of TOTAL_S=75, under the benchmark's 60 s minimum; not run" in log, log
