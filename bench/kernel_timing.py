"""How ``bench/kernel.py`` times a row: CUDA events around each call (a wall clock in the CPU dry
run), the median of ``reps`` runs after warm-up, the first call never timed (it compiles); the
split of an op's time between its kernels (``torch.profiler``); the device's copy bandwidth that
every row's bandwidth fraction is read against; and CUDA-graph capture for the replay rows.

One concept apart from the runner, so that the runner stays one module under 500 lines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


class _WallEvent:
    """``torch.cuda.Event`` stand-in for ``--cpu-dry-run`` (wall clock; checks the script, times nothing)."""

    def __init__(self, enable_timing: bool = True) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: _WallEvent) -> float:
        return (end.t - self.t) * 1e3


def _event(device: torch.device) -> Any:
    return torch.cuda.Event(enable_timing=True) if device.type == "cuda" else _WallEvent()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_cuda(fn: Callable[[], Any], reps: int, warmup: int, slow_ms: float, device: torch.device) -> dict[str, Any]:
    """Median/min/max milliseconds of ``fn`` over ``reps`` runs (CUDA events), after ``warmup`` runs.

    The first call is never timed: it compiles (a Triton kernel's JIT, inductor), and a compile that
    outlasted ``slow_ms`` would otherwise be recorded as the row's one run. A call slower than
    ``slow_ms`` after that is timed once and marked."""
    fn()
    _sync(device)
    start, end = _event(device), _event(device)
    start.record()
    fn()
    end.record()
    _sync(device)
    first = start.elapsed_time(end)
    if first > slow_ms:
        return {"ms": first, "min_ms": first, "max_ms": first, "runs": 1, "note": f"one run took {first:.0f} ms"}
    for _ in range(max(0, warmup - 2)):  # the untimed call and the first timed run warmed up too
        fn()
    events = [(_event(device), _event(device)) for _ in range(reps)]
    for a, b in events:
        a.record()
        fn()
        b.record()
    _sync(device)
    times = [a.elapsed_time(b) for a, b in events]
    return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": reps}


def kernel_split(fn: Callable[[], Any], device: torch.device, reps: int = 5) -> dict[str, Any]:
    """Milliseconds per call of each kernel ``fn`` runs, from ``torch.profiler``: where v2's time goes
    (``sga_partials`` against ``sga_combine``), which CUDA events around the whole op cannot say.
    On CPU (the dry run) the same code reads CPU op times, so the path is exercised before a GPU runs
    it. A profiler failure is returned, not raised: it must not cost the row."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    try:
        fn()
        _sync(device)
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                fn()
            _sync(device)
        out: dict[str, float] = {}
        for evt in prof.key_averages():
            us = getattr(evt, "self_device_time_total" if cuda else "self_cpu_time_total", 0) or 0
            if us > 0:
                out[evt.key] = out.get(evt.key, 0.0) + us / 1e3 / reps
    except Exception as e:  # CUPTI missing or busy: keep the row, say why the split is absent
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    if not out:
        return {"error": "the profiler recorded no time"}
    top = sorted(out.items(), key=lambda kv: -kv[1])[:6]
    return {"source": "torch.profiler, CUDA" if cuda else "torch.profiler, CPU ops", "ms_per_call": dict(top)}


def copy_bandwidth(device: torch.device, gib: float = 2.0) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written over the time)."""
    n = int(gib * 2**30) // 4
    a = torch.empty(n, dtype=torch.float32, device=device).normal_()
    b = torch.empty_like(a)
    t = time_cuda(lambda: b.copy_(a), reps=20, warmup=3, slow_ms=1e9, device=device)
    return 2 * n * 4 / (t["ms"] * 1e-3) / 1e9


def cuda_graph(fn: Callable[[], Any]) -> tuple[Callable[[], Any] | None, str]:
    """Capture ``fn`` in a CUDA graph (after warm-up on a side stream); the replay, or the error."""
    caller = torch.cuda.current_stream()
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay, "captured"
    except Exception as e:
        # torch.cuda.graph's exit leaves its capture stream current when capture_end raises
        torch.cuda.set_stream(caller)
        return None, f"capture failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
