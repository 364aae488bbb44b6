"""Compile kernel v2 variants in parallel processes before ``bench/kernel.py`` times them.

Triton compiles a variant on its first launch, on one core, for a second or two; the sweep's
~40 variants would spend most of the sweep's time share compiling, one after another, while the
GPU machine's other cores idle. Spawned workers compile them with
:func:`trt_plugins.kernels.warm_up` into Triton's on-disk cache (shared by every process of the
user), and the benchmark's own launches then load them. A worker's failure or a timeout costs
nothing but time: whatever was not compiled is compiled at its launch, as without this step.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

#: A variant to compile: dtype name (``fp16``...), heads, head_dim, ``KernelConfig`` fields,
#: n_nodes, n_edges (Triton specializes on them being 1 or multiples of 16) and index dtype name.
Job = tuple[str, int, int, dict[str, Any], int, int, str]
#: Workers at most; each starts a Python with torch and a CUDA context (about 0.5 GB of GPU memory).
MAX_WORKERS = 15


def jobs_for(variants: Sequence[tuple[str, int, int, Any]], sizes: Sequence[tuple[int, int, str]]) -> list[Job]:
    """One job per variant ``(dtype name, heads, head_dim, config)`` and distinct graph size
    ``(n_nodes, n_edges, index dtype name)``."""
    return [
        (d, h, hd, dataclasses.asdict(cfg), n, e, index)
        for d, h, hd, cfg in variants
        for n, e, index in dict.fromkeys(sizes)
    ]


def warm_job(job: Job) -> str | None:
    """Compile one job's two kernels (in a worker); ``None``, or the error in one line."""
    try:
        import torch

        from bench.kernel_workloads import DTYPES
        from trt_plugins import spec
        from trt_plugins.kernels import warm_up

        dtype_name, heads, head_dim, fields, n, e, index = job
        warm_up(DTYPES[dtype_name], getattr(torch, index), heads, head_dim, n, e, spec.KernelConfig(**fields))
        return None
    except Exception as ex:  # recorded; the benchmark compiles it at its launch instead
        first = str(ex).splitlines()[0][:200] if str(ex) else ""
        return f"{type(ex).__name__}: {first}"


def variant_label(cfg: Any) -> str:
    """A config (a ``KernelConfig``, or its fields as attributes) as the sweep's tables and this
    report name it: ``tile 16 group 4 warps 4 chunk 512 prefetch dot``."""
    prefetch = " prefetch" if cfg.prefetch else ""
    aggregate = "" if cfg.aggregate == "scan" else f" {cfg.aggregate}"
    chunk = cfg.tile_e * cfg.tiles
    return f"tile {cfg.tile_e} group {cfg.head_group} warps {cfg.num_warps} chunk {chunk}{prefetch}{aggregate}"


def job_label(job: Job) -> str:
    """A job as the report's ``errors`` name it: its variant and graph size, so that no two jobs share
    a label."""
    d, h, hd, fields, n, e, _ = job
    return f"{d} {h}x{hd} {variant_label(SimpleNamespace(**fields))} N={n} E={e}"


def precompile(
    jobs: Sequence[Any], timeout_s: float, workers: int | None = None, work: Callable[[Any], str | None] = warm_job
) -> dict[str, Any]:
    """Run ``work`` on every job in spawned worker processes, for at most ``timeout_s`` seconds.

    Returns what a result file records: jobs, workers, seconds, and either ``compiled`` with the
    ``errors`` by job, or ``error`` (a timeout, a pool that failed). Never raises for a job's
    failure. Workers are terminated on return, whatever they were doing."""
    cores = os.cpu_count() or 2
    n_workers = max(1, min(len(jobs), workers or min(MAX_WORKERS, cores - 1)))
    out: dict[str, Any] = {"jobs": len(jobs), "workers": n_workers}
    start = time.monotonic()
    if not jobs:
        return {**out, "compiled": 0, "errors": {}, "seconds": 0.0}
    pool = multiprocessing.get_context("spawn").Pool(n_workers)
    try:
        results = pool.map_async(work, jobs, chunksize=1).get(timeout_s)
        errors = {job_label(job): r for job, r in zip(jobs, results, strict=True) if r}
        out.update(compiled=len(jobs) - len(errors), errors=errors)
    except multiprocessing.TimeoutError:
        out["error"] = f"timed out after {timeout_s:.0f} s; the rest compile at their first launch"
    except Exception as ex:  # a pool that cannot start must not end the benchmark
        out["error"] = f"{type(ex).__name__}: {str(ex).splitlines()[0][:200] if str(ex) else ''}"
    finally:
        pool.terminate()
        pool.join()
    out["seconds"] = round(time.monotonic() - start, 2)
    return out
