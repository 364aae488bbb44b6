"""How one configuration is measured, for ``gtc profile`` (:mod:`runtime.profile`) and its torch
rows (:mod:`runtime.profile_torch`): the machine, CPU pinning, peak memory, sample statistics,
random graphs that match a model's input spec, and the timed loop over a session.

Its own module so that both profilers import it and neither imports the other: the torch rows are
optional (torch is imported only for checkpoints), the ONNX profile is not.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph
from gtcompress.preprocess.random_graphs import random_graph
from gtcompress.preprocess.spec import InputSpec


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python and ONNX Runtime (version and providers)."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024**2
                break
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        mem = mem or psutil.virtual_memory().total / 1024**3
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable_cores(),
        "memory_gib": None if mem is None else round(mem, 2),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "affinity": hasattr(os, "sched_setaffinity"),
    }


def _allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return []


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one, else all)."""
    return len(_allowed_cpus()) or os.cpu_count() or 1


def _threads() -> list[int]:
    """Ids of this process's threads (Linux ``/proc/self/task``); ``[0]`` (the calling thread) elsewhere."""
    with contextlib.suppress(OSError):
        return [int(t) for t in os.listdir("/proc/self/task")]
    return [0]


def _set_affinity(tid: int, cpus: Sequence[int] | set[int]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
        os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[tuple[list[int] | None, bool]]:
    """Pin this process to ``threads`` CPUs (restored afterwards); yields (cpus, oversubscribed).

    Every thread of the process is pinned, not only the calling one: Linux's affinity is per thread,
    and the BLAS workers numpy started at import kept every core, so a ``--threads 1`` row's
    pre-processing (LapPE's ``eigh``, RWSE's matrix powers) ran on all of them and read faster than
    the one-core device it stands for. Threads started inside inherit the mask."""
    allowed = _allowed_cpus()
    if not allowed or not hasattr(os, "sched_setaffinity"):
        yield None, threads > (os.cpu_count() or 1)
        return
    cpus = allowed[: max(1, threads)]
    before: dict[int, set[int]] = {}
    for tid in _threads():
        with contextlib.suppress(ProcessLookupError):
            before[tid] = os.sched_getaffinity(tid)
        _set_affinity(tid, cpus)
    try:
        yield cpus, threads > len(allowed)
    finally:
        for tid in _threads():
            _set_affinity(tid, before.get(tid, allowed))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB): Linux's ``VmHWM``, else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: it survives ``fork``/``execve``, so a measurement child started by
    a profiler that had imported torch (checkpoint rows) or held large batches reported the
    *parent's* high-water mark as its own — every ONNX row's ``peak_rss_mb`` the same ~300 MB,
    whatever the model. ``VmHWM`` belongs to the address space the process runs in now."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024**2 if sys.platform == "darwin" else r / 1024


# ---------------------------------------------------------------------------------- statistics
def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
    }


def graph_edges(nodes: int, avg_degree: float) -> int:
    """Edges of each of :func:`make_graphs`' graphs, which the profile's cost checks count before any is made."""
    return max(1, round(avg_degree * nodes))


def make_graphs(spec: InputSpec, nodes: int, count: int, avg_degree: float, seed: int) -> list[NumpyGraph]:
    """``count`` random graphs of ``nodes`` nodes and ``avg_degree * nodes`` edges matching ``spec``."""
    rng = np.random.default_rng(seed)
    edges = graph_edges(nodes, avg_degree)
    return [random_graph(rng, nodes, edges, spec.x, spec.edge_attr) for _ in range(count)]


# ---------------------------------------------------------------------------------- per-op profile
def time_session(
    sess: Any, graphs: list[NumpyGraph], iterations: int, warmup: int, sync: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Pre-processing and model time of ``sess`` on ``graphs``, ``iterations`` times after ``warmup``;
    ``sync`` (a device synchronisation) is called around the model call so that its time is real."""
    prep_ms, model_ms = [], []
    for i in range(warmup + iterations):
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        prepared = sess.prepare(graphs)
        t1 = time.perf_counter()
        sess.run_inputs(prepared.inputs)
        if sync is not None:
            sync()
        t2 = time.perf_counter()
        if i >= warmup:
            prep_ms.append((t1 - t0) * 1e3)
            model_ms.append((t2 - t1) * 1e3)
    return {
        "nodes": int(prepared.num_nodes),
        "edges": int(prepared.inputs["edge_index"].shape[1]),
        "iterations": iterations,
        "warmup": warmup,  # the calls made before timing: a torch row makes at least one, whatever was asked
        **timings(prep_ms, model_ms, len(graphs)),
        "peak_rss_mb": peak_rss_mb(),
    }


def timings(prep_ms: Sequence[float], model_ms: Sequence[float], graphs: int) -> dict[str, Any]:
    """A row's statistics from its samples: one timed loop's, or several rounds' together
    (:func:`runtime.profile_rounds.merge_rounds`), which is why the samples of both halves are kept."""
    total = [a + b for a, b in zip(prep_ms, model_ms, strict=True)]
    lat = summarize(total)
    return {
        "latency_ms": lat,
        "preprocess_ms": summarize(prep_ms),
        "model_ms": summarize(model_ms),
        "preprocess_share": float(sum(prep_ms) / sum(total)) if sum(total) else 0.0,
        "graphs_per_s": graphs / (lat["mean"] / 1e3) if lat["mean"] > 0 else math.inf,
        "samples_ms": [round(v, 4) for v in total],
        "preprocess_samples_ms": [round(v, 4) for v in prep_ms],
        "model_samples_ms": [round(v, 4) for v in model_ms],
    }
