"""``gtc profile``: latency and memory of exported models on edge-class CPUs, side by side.

Checkpoint directories are profiled with torch on ``device`` (a GPU without TensorRT, optionally
with CUDA-graph replay) by :mod:`runtime.profile_torch`, next to the ONNX rows (then ONNX Runtime
CPU unless ``providers`` says otherwise); every entry carries ``backend`` and ``device``.

For every model (dense vs compressed, ONNX vs engine…), every intra-op thread count and every
(graph size, batch size): warm-up, then N timed iterations of the whole deployed path —
pre-processing (:meth:`GraphSession.prepare`: validation, TEDDY, union, PE, layout) and the model
call (:meth:`GraphSession.run_inputs`) timed separately — reported as mean, std, p50/p90/p99,
graphs/s, the pre-processing share and peak RSS.

Small edge CPUs are emulated by running each thread count in a fresh process pinned with
``os.sched_setaffinity`` to that many cores (where the OS has it), so one measurement cannot
disturb the next; numpy's BLAS pool (used by PE pre-processing) gets the same thread count.
``isolate=False`` measures in the calling process (affinity restored afterwards, BLAS pool as it
is). ``peak_rss_mb`` is that process's high-water mark after the configuration
(interpreter + numpy + ONNX Runtime + this one model + the largest batch so far); ``model_rss_mb``
is the mark right after loading the model. Random graphs matching the model's input spec
come from :mod:`gtcompress.preprocess.random_graphs` (``avg_degree`` edges per node).

Per-op breakdown: ONNX Runtime's profiler (``enable_profiling``) on one configuration per model,
kernel time summed by op type. *Attention share* heuristic: a node counts as attention when its
exporter scope (the ``namespace`` node metadata that ``torch.onnx`` writes) lies in an ``attn``/
``attention`` module, or it sits directly in a transformer layer's scope (not in its FFN/norm
children) and its op is one attention is made of (MatMul, Softmax, Exp, ReduceMax, ReduceSum,
Where, Div, Gather, GatherElements, ScatterElements), or its name says attention (plugin op
functions). Without the ``onnx`` package the fallback counts Softmax, ScatterElements,
GatherElements and non-Gemm MatMul ops; the report says which method was used.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph
from gtcompress.preprocess.random_graphs import random_graph
from gtcompress.preprocess.spec import InputSpec
from runtime.profile_ops import op_breakdown

SCHEMA = "gtcompress.profile/1"
Progress = Callable[[int, int, str], None]


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
        "usable_cores": len(_allowed_cpus()) if _allowed_cpus() else os.cpu_count(),
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


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[tuple[list[int] | None, bool]]:
    """Pin this process to ``threads`` CPUs (restored afterwards); yields (cpus, oversubscribed)."""
    allowed = _allowed_cpus()
    if not allowed or not hasattr(os, "sched_setaffinity"):
        yield None, threads > (os.cpu_count() or 1)
        return
    cpus = allowed[: max(1, threads)]
    os.sched_setaffinity(0, cpus)
    try:
        yield cpus, threads > len(allowed)
    finally:
        os.sched_setaffinity(0, allowed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
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


def make_graphs(spec: InputSpec, nodes: int, count: int, avg_degree: float, seed: int) -> list[NumpyGraph]:
    """``count`` random graphs of ``nodes`` nodes and ``avg_degree * nodes`` edges matching ``spec``."""
    rng = np.random.default_rng(seed)
    return [random_graph(rng, nodes, max(1, round(avg_degree * nodes)), spec.x, spec.edge_attr) for _ in range(count)]


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
    total = [a + b for a, b in zip(prep_ms, model_ms, strict=True)]
    lat = summarize(total)
    return {
        "nodes": int(prepared.num_nodes),
        "edges": int(prepared.inputs["edge_index"].shape[1]),
        "iterations": iterations,
        "latency_ms": lat,
        "preprocess_ms": summarize(prep_ms),
        "model_ms": summarize(model_ms),
        "preprocess_share": float(sum(prep_ms) / sum(total)) if sum(total) else 0.0,
        "graphs_per_s": len(graphs) / (lat["mean"] / 1e3) if lat["mean"] > 0 else math.inf,
        "peak_rss_mb": peak_rss_mb(),
        "samples_ms": [round(v, 4) for v in total],
    }


def measure_model(
    path: str,
    threads: int,
    configs: Sequence[tuple[int, int]],
    iterations: int,
    warmup: int,
    avg_degree: float,
    seed: int,
    providers: list[str] | None,
    op_config: tuple[int, int] | None,
    op_iterations: int,
    emit: Callable[[dict[str, Any]], None],
) -> None:
    """Measure one model at one thread count (in this process, pinned); ``emit`` gets each result."""
    from runtime.session import GraphSession

    with pinned(threads) as (cpus, oversubscribed):
        sess = GraphSession(path, providers, threads=threads, inter_op_threads=1)
        base_rss = peak_rss_mb()
        for nodes, batch in configs:
            graphs = make_graphs(sess.spec, nodes, batch, avg_degree, seed)
            row = time_session(sess, graphs, iterations, warmup)
            emit(
                {
                    "kind": "result",
                    "threads": threads,
                    "graph_nodes": nodes,
                    "batch_size": batch,
                    **row,
                    "model_rss_mb": base_rss,
                    "cpus": cpus,
                    "oversubscribed": oversubscribed,
                    "providers": sess.providers,
                }
            )
        if op_config is not None:
            ops = _op_profile(path, threads, providers, sess.spec, op_config, op_iterations, avg_degree, seed)
            emit({"kind": "ops", **ops})


def _op_profile(
    path: str,
    threads: int,
    providers: list[str] | None,
    spec: InputSpec,
    config: tuple[int, int],
    iterations: int,
    avg_degree: float,
    seed: int,
) -> dict[str, Any]:
    from runtime.session import GraphSession

    with tempfile.TemporaryDirectory(prefix="gtc-ortprof-") as tmp:
        sess = GraphSession(path, providers, threads=threads, inter_op_threads=1, profile_prefix=str(Path(tmp) / "ort"))
        if "onnxruntime" not in sess.platform:
            return {"threads": threads, "graph_nodes": config[0], "batch_size": config[1], "available": False}
        prepared = sess.prepare(make_graphs(spec, config[0], config[1], avg_degree, seed))
        for _ in range(iterations + 1):
            sess.run_inputs(prepared.inputs)
        prof = sess.end_profiling()
        res = op_breakdown(prof, path) if prof else {}
    return {"threads": threads, "graph_nodes": config[0], "batch_size": config[1], "available": bool(res), **res}


def _child_main() -> None:
    """Entry of an isolated measurement process: kwargs as JSON on stdin, events as JSON lines."""
    kwargs = json.loads(sys.stdin.read())
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the event stream

    def emit(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    try:
        measure_model(**kwargs, emit=emit)
    except BaseException as e:  # report to the parent instead of dying silently
        emit({"kind": "error", "error": f"{type(e).__name__}: {e}"})
    emit({"kind": "done"})


def _run_isolated(kwargs: dict[str, Any], on_event: Callable[[dict[str, Any]], None]) -> None:
    """Run :func:`measure_model` in a fresh interpreter (works from scripts, notebooks and stdin)."""
    import subprocess

    from runtime.errors import SessionError

    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # numpy's BLAS (PE) too
        env[var] = str(kwargs["threads"])
    cmd = [sys.executable, "-c", "from runtime.profile import _child_main; _child_main()"]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(kwargs))
        proc.stdin.close()
        finished = False
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["kind"] == "done":
                finished = True
                break
            if msg["kind"] == "error":
                raise SessionError(f"profiling {kwargs['path']} with {kwargs['threads']} threads: {msg['error']}")
            on_event(msg)
        proc.wait(60)
    if not finished:
        raise SessionError(f"profiling process for {kwargs['path']} died (exit code {proc.returncode})")


def profile_models(
    paths: Sequence[str | Path],
    graph_sizes: Sequence[int] = (32, 128, 512),
    batch_sizes: Sequence[int] = (1, 16),
    threads: Sequence[int] = (1, 2, 4),
    iterations: int = 50,
    warmup: int = 5,
    *,
    avg_degree: float = 4.0,
    seed: int = 0,
    providers: list[str] | None = None,
    op_profile: bool = True,
    op_iterations: int = 10,
    isolate: bool = True,
    names: Sequence[str] | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    cuda_graphs: bool = False,
) -> dict[str, Any]:
    """Profile every model over threads × graph sizes × batch sizes; returns the report dict.

    ``isolate`` runs each (model, thread count) in its own pinned process (accurate RSS, no
    interference); ``isolate=False`` measures in this process and restores the CPU affinity."""
    from runtime.errors import SessionError
    from runtime.session import is_checkpoint, resolve_model_path

    if iterations < 2 or warmup < 0:
        raise SessionError("profile: need at least 2 iterations and a non-negative warm-up")
    if not paths:
        raise SessionError("profile: no model given")
    if not graph_sizes or not batch_sizes or not threads or min(*graph_sizes, *batch_sizes, *threads) < 1:
        raise SessionError("profile: graph sizes, batch sizes and thread counts must be positive")
    resolved = [str(resolve_model_path(p)) for p in paths]
    labels = list(names) if names else _labels(resolved)
    configs = [(int(n), int(b)) for n in graph_sizes for b in batch_sizes]
    op_config = (int(sorted(graph_sizes)[len(graph_sizes) // 2]), int(max(batch_sizes)))
    ckpts, tp = {p for p in resolved if is_checkpoint(p)}, None
    if (device is not None or cuda_graphs) and not ckpts:
        raise SessionError("profile: device/cuda_graphs apply to checkpoint directories (torch); none was given")
    providers = ["CPUExecutionProvider"] if ckpts and providers is None else providers  # torch rows vs ORT CPU
    if ckpts:  # torch rows (runtime.profile_torch imports torch)
        from runtime.profile_torch import CheckpointProfiler

        tp = CheckpointProfiler(device, cuda_graphs, threads, configs, iterations, warmup, avg_degree, seed)
    per_model = len(threads) * len(configs) + (1 if op_profile else 0)
    total = sum(tp.steps if tp is not None and p in ckpts else per_model for p in resolved)
    done = 0
    models = []

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, what)

    for label, path in zip(labels, resolved, strict=True):
        if tp is not None and path in ckpts:
            models.append(tp.profile(label, path, tick))
            continue
        entry = _model_entry(label, path)
        for t in threads:
            kwargs = {
                "path": path,
                "threads": int(t),
                "configs": configs,
                "iterations": int(iterations),
                "warmup": int(warmup),
                "avg_degree": float(avg_degree),
                "seed": int(seed),
                "providers": providers,
                "op_config": op_config if op_profile and t == min(threads) else None,
                "op_iterations": int(op_iterations),
            }

            def on_event(msg: dict[str, Any], entry: dict[str, Any] = entry, t: int = int(t)) -> None:
                kind = msg.pop("kind")
                if kind == "result":
                    entry["results"].append(msg)
                    entry["providers"] = msg.pop("providers")
                    entry["device"] = "cpu" if entry["providers"] == ["CPUExecutionProvider"] else "gpu"
                elif kind == "ops":
                    entry["ops"] = msg
                tick(f"{entry['name']} · {t} thread{'s' if t > 1 else ''}")

            if isolate:
                _run_isolated(kwargs, on_event)
            else:
                measure_model(**kwargs, emit=on_event)
        if op_profile and "ops" not in entry:
            entry["ops"] = None
        models.append(entry)
    if progress is not None:
        progress(total, total, "done")
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine_info(), **(tp.machine() if tp is not None else {})},
        "settings": {
            "graph_sizes": [int(n) for n in graph_sizes],
            "batch_sizes": [int(b) for b in batch_sizes],
            "threads": [int(t) for t in threads],
            "iterations": int(iterations),
            "warmup": int(warmup),
            "avg_degree": float(avg_degree),
            "seed": int(seed),
            "providers": providers,
            "isolated_processes": bool(isolate),
            "op_profile_config": {"graph_nodes": op_config[0], "batch_size": op_config[1]} if op_profile else None,
            "device": device,
            "cuda_graphs": bool(cuda_graphs),
            "notes": tp.notes if tp is not None else [],
        },
        "models": models,
    }


def _labels(paths: Sequence[str]) -> list[str]:
    def stem(p: Path) -> str:
        return p.parent.parent.name if p.name in ("model.onnx", "model.plan") else p.stem

    stems = [stem(Path(p)) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{s}#{i}" for i, s in enumerate(stems)]


def _model_entry(label: str, path: str) -> dict[str, Any]:
    from runtime.session import PLAN_SUFFIXES
    from runtime.spec import model_spec, onnx_metadata, plan_metadata

    p = Path(path)
    meta = plan_metadata(p) if p.suffix in PLAN_SUFFIXES else onnx_metadata(p)
    m = model_spec(meta, path)
    return {
        "name": label,
        "path": path,
        "bytes": p.stat().st_size,
        "format": "tensorrt" if p.suffix in PLAN_SUFFIXES else "onnx",
        "backend": "tensorrt" if p.suffix in PLAN_SUFFIXES else "onnxruntime",
        "arch": m.spec.arch,
        "task_level": m.spec.task_level,
        "lowering": str(m.spec.lowering),
        "pe": dict(m.spec.pe),
        "teddy": None if m.teddy is None else m.teddy.to_dict(),
        "providers": None,
        "results": [],
    }


# ---------------------------------------------------------------------------------- reporting


def __getattr__(name: str) -> Any:
    """``write_report``, ``report_tables`` and ``validate_report`` live in :mod:`runtime.profile_report`;
    loaded on first use (they import matplotlib and rich, which measuring does not need)."""
    if name in ("write_report", "report_tables", "validate_report"):
        from runtime import profile_report

        return getattr(profile_report, name)
    raise AttributeError(f"module 'runtime.profile' has no attribute {name!r}")
