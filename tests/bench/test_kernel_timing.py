"""``bench/kernel_timing.py``: what a row's time is made of (on CPU, the dry run's wall clock)."""

from __future__ import annotations

import time

import torch

from bench.kernel_timing import time_cuda

CPU = torch.device("cpu")


def test_the_first_call_is_never_timed() -> None:
    """A first call that compiles for longer than ``slow_ms`` is not the row's one run."""
    calls: list[float] = []

    def fn() -> None:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            time.sleep(0.3)  # a Triton JIT or an inductor compile

    row = time_cuda(fn, reps=10, warmup=3, slow_ms=100.0, device=CPU)
    assert row["runs"] == 10 and "note" not in row and row["ms"] < 100.0
    assert len(calls) == 1 + 1 + (3 - 2) + 10  # untimed, first timed, the rest of the warm-up, the runs


def test_a_slow_call_after_the_first_is_timed_once_and_marked() -> None:
    row = time_cuda(lambda: time.sleep(0.05), reps=10, warmup=3, slow_ms=20.0, device=CPU)
    assert row["runs"] == 1 and row["note"].startswith("one run took") and row["ms"] >= 50.0
