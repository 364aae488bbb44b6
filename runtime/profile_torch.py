"""``gtc profile`` rows for checkpoints run with torch (:class:`runtime.torch_backend.TorchBackend`).

:func:`runtime.profile.profile_models` hands every checkpoint directory here and every exported
model to ONNX Runtime/TensorRT, so one report holds torch-on-CUDA rows next to ONNX Runtime CPU
rows. The measured path is the deployed one — :meth:`GraphSession.prepare` (numpy) then
:meth:`GraphSession.run_inputs` (host → device copies, the model, the output back on the host) —
with the same statistics as the ONNX rows, plus the GPU's peak allocated memory.

What differs from the CPU rows, and why:

* **Timing synchronises.** CUDA kernels run asynchronously, so ``torch.cuda.synchronize`` brackets
  every timed call; the backend's blocking output copy already waits, the explicit calls make
  sure no earlier work leaks into a measurement.
* **One pass a round on CUDA.** Intra-op thread counts do not apply to a GPU: CUDA rows are
  measured once a round, with ``threads: null``, and the report's ``settings.notes`` says so. On CPU the
  torch rows follow ``--threads`` through ``torch.set_num_threads`` (restored afterwards).
* **Torch CPU rows are not pinned.** ONNX Runtime rows run in a child process pinned to ``threads``
  cores before its thread pool exists; in this process torch's pool already runs, and pinning the
  calling thread would not move its workers. So these rows set the thread count only (``cpus:
  null``), and ``settings.notes`` says they are not like for like with the pinned rows.
* **In this process, in turn with the others.** The pinned-process isolation of the ONNX rows emulates
  small CPUs; it does not apply to a GPU, and CUDA would have to initialise in every child. Each round's
  pass loads the checkpoint afresh, as each exported pass is a fresh process, and the passes take turns
  with the exported models' (:mod:`runtime.profile_rounds`): a slow spell of the machine falls on torch
  and ONNX Runtime rows alike, and their speed-ups are not the machine's. ``peak_rss_mb`` is then the
  whole profiler's high-water mark (``model_rss_mb`` that mark once the checkpoint is loaded, as in
  the ONNX rows); ``peak_gpu_mb`` is per configuration.
* **At least one warm-up call**, whatever ``warmup`` says: the first call on a new shape compiles
  the Triton kernels and, with CUDA graphs, captures the bucket's graph.
* **With CUDA graphs, past the capture caps, eager.** The backend replays calls of up to its
  ``capture_max_nodes``/``capture_max_edges`` (:mod:`runtime.torch_backend`'s ``CAPTURE_MAX_NODES``/
  ``CAPTURE_MAX_EDGES`` unless set); a row's calls past them run eagerly, so the row has
  ``cuda_graphs_replayed`` false (its call's ``nodes`` and ``edges`` say why, with the caps it was
  held to, ``cuda_graphs_caps``) and :func:`eager_note` names it: its ``cuda_graphs_captured`` 0 alone
  read as a capture that failed, or as replays timed.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from runtime.measure import make_graphs, peak_rss_mb, time_session, usable_cores

CUDA_NOTE = (
    "rows with threads null ran on a CUDA device with torch (backend 'torch'): intra-op thread counts do not "
    "apply there, so each configuration ran once a round, not once a thread count; their timings synchronise the "
    "device"
)
CPU_NOTE = (
    "torch CPU rows (checkpoints) set torch's intra-op threads but are not pinned to that many cores as the "
    "ONNX Runtime rows are: they may use every core, so compare them with the pinned rows with care"
)


def eager_note(models: Sequence[dict[str, Any]]) -> str | None:
    """The note naming the ``--cuda-graphs`` rows whose calls ran eagerly, past the capture caps
    (``cuda_graphs_replayed`` false), ``None`` when none did. Their ``cuda_graphs_captured`` 0 alone read
    as a capture that failed, or as replays timed, where the row timed torch's eager path. The caps quoted
    are the rows' own (``cuda_graphs_caps``, those their backend held them to)."""
    eager = [(m, r) for m in models for r in m["results"] if r.get("cuda_graphs_replayed") is False]
    if not eager:
        return None
    caps = {(r["cuda_graphs_caps"]["nodes"], r["cuda_graphs_caps"]["edges"]) for _, r in eager}
    rows = [
        f"{m['name']} · {r['graph_nodes']}×{r['batch_size']} ({r['nodes']:,} nodes, {r['edges']:,} edges"
        + ("" if len(caps) == 1 else f"; caps {r['cuda_graphs_caps']['nodes']:,}, {r['cuda_graphs_caps']['edges']:,}")
        + ")"
        for m, r in eager
    ]
    (most_nodes, most_edges), *other = caps
    upto = "the caps named with each row" if other else f"{most_nodes:,} nodes and {most_edges:,} edges"
    return (
        f"--cuda-graphs rows that ran eagerly, not replayed: {'; '.join(rows)}. A call is captured and replayed up "
        f"to {upto} (runtime.torch_backend's CAPTURE_MAX_NODES, CAPTURE_MAX_EDGES by default): a larger one "
        "is not bound by kernel launches, and a captured bucket holds its memory while kept, so these rows time "
        "torch's eager path (cuda_graphs_captured 0), not a replay"
    )


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class CheckpointProfiler:
    """Measures checkpoints for :func:`runtime.profile.profile_models` with its settings."""

    def __init__(
        self,
        device: str | None,
        cuda_graphs: bool,
        threads: Sequence[int],
        warmup: int,
        avg_degree: float,
        seed: int,
    ) -> None:
        from runtime.errors import SessionError
        from runtime.torch_backend import resolve_device

        self.device = resolve_device(device)  # a missing GPU fails here, before any measurement
        if cuda_graphs and self.device.type != "cuda":  # as TorchBackend refuses it, but before any ONNX row
            raise SessionError(f"cuda_graphs: CUDA graphs replay on a GPU only; device is {self.device}")
        self.cuda_graphs = bool(cuda_graphs)
        self.threads: list[int | None] = [None] if self.device.type == "cuda" else [int(t) for t in threads]
        self.warmup = max(int(warmup), 1)
        self.avg_degree, self.seed = float(avg_degree), int(seed)

    def check(self, paths: Sequence[str]) -> None:
        """Load every checkpoint once (on the CPU, then dropped), so that a broken one, or one that
        CUDA graphs cannot pad, is a :class:`~runtime.errors.SessionError` before any row is
        measured: found when its turn came, it threw away the minutes of rows measured for the
        models before it."""
        from runtime.errors import SessionError
        from runtime.torch_backend import cuda_graphs_refusal, load_for_serving

        for path in paths:
            _, spec, _ = load_for_serving(path)
            if self.cuda_graphs and (why := cuda_graphs_refusal(spec)):
                raise SessionError(f"{path}: cuda_graphs refused: {why}")  # as TorchBackend words it

    def notes(self, models: Sequence[dict[str, Any]]) -> list[str]:
        """The report's notes on the torch rows of ``models`` (the report's every model)."""
        return [CUDA_NOTE if self.device.type == "cuda" else CPU_NOTE, *filter(None, [eager_note(models)])]

    def machine(self) -> dict[str, Any]:
        """The GPU's name, memory, compute capability and the torch/CUDA versions (report ``machine.gpu``)."""
        if self.device.type != "cuda":
            return {"torch": torch.__version__}
        props = torch.cuda.get_device_properties(self.device)
        gpu = {
            "device": str(self.device),
            "name": props.name,
            "memory_gib": round(props.total_memory / 1024**3, 2),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
        }
        return {"torch": torch.__version__, "gpu": gpu}

    def entry(self, label: str, path: str) -> dict[str, Any]:
        """The report's entry for one checkpoint before any pass: each pass's ``model`` event fills in what
        loading it tells (:meth:`run_pass`)."""
        return {
            "name": label,
            "path": path,
            "bytes": None,
            "format": "checkpoint",
            "backend": "torch",
            "device": str(self.device),
            "cuda_graphs": self.cuda_graphs,
            "providers": None,
            "results": [],
            "ops": None,  # ONNX Runtime's profiler only
        }

    def run_pass(
        self,
        path: str,
        threads: int | None,
        configs: Sequence[tuple[int, int]],
        iterations: int,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        """One round's pass over ``configs`` at ``threads``, as an exported model's pass in its child process:
        the checkpoint is loaded afresh (a ``model`` event with what loading tells), then each size is timed
        ``iterations`` times after the warm-up (a ``result`` event each).

        Loaded afresh each pass, as each exported pass is a new process: one model on the GPU at a time, so
        ``peak_gpu_mb`` is this model's, and each round's ``model_rss_mb`` is measured (the row keeps the
        highest). A size that fails (CUDA out of memory at the largest) ends the pass with
        :class:`~runtime.profile_failures.PassFailed`, its earlier rows kept, as an exported pass ends."""
        from runtime.profile_failures import error_text, pass_failed
        from runtime.session import GraphSession

        try:
            sess = GraphSession(path, device=str(self.device), cuda_graphs=self.cuda_graphs)
        except Exception as e:  # on the GPU (check() loaded it on the CPU): its memory, most likely
            raise pass_failed(path, threads, error_text(e)) from e
        model_rss = peak_rss_mb()
        weights = Path(sess.path) / "model.safetensors"
        emit(
            {
                "kind": "model",
                "path": str(sess.path),
                "bytes": weights.stat().st_size if weights.is_file() else None,
                "arch": sess.spec.arch,
                "task_level": sess.spec.task_level,
                "lowering": str(sess.spec.lowering),
                "pe": dict(sess.spec.pe),
                "teddy": None if sess.model.teddy is None else sess.model.teddy.to_dict(),
                "providers": sess.providers,
            }
        )
        before = torch.get_num_threads()
        try:
            if threads is not None:
                torch.set_num_threads(threads)
            for nodes, batch in configs:
                try:
                    row = self._measure(sess, threads, nodes, batch, iterations)
                except Exception as e:  # not a Ctrl-C: that stops the profile
                    raise pass_failed(path, threads, error_text(e)) from e
                emit({"kind": "result", **row, "model_rss_mb": model_rss})
        finally:
            torch.set_num_threads(before)
            del sess
            if self.device.type == "cuda":  # its weights and captured graphs gone before the next model's pass
                gc.collect()

    def _measure(self, sess: Any, threads: int | None, nodes: int, batch: int, iterations: int) -> dict[str, Any]:
        dev, warmup = self.device, self.warmup
        graphs = make_graphs(sess.spec, nodes, batch, self.avg_degree, self.seed)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        backend = sess.backend
        graphed = bool(backend.cuda_graphs)
        captures = backend.captures if graphed else 0
        row = time_session(sess, graphs, iterations, warmup, sync=lambda: _sync(dev))  # nodes, edges: its call's
        return {
            "threads": threads,
            "graph_nodes": nodes,
            "batch_size": batch,
            **row,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 1024**2 if dev.type == "cuda" else None,
            # captured during this row (its peak memory includes them), and held after it (all rows')
            "cuda_graphs_captured": backend.captures - captures if graphed else None,
            "cuda_graphs_held": len(backend.captured) if graphed else None,
            # past the capture caps a call runs eagerly: its row times torch's eager path (eager_note)
            "cuda_graphs_replayed": backend.replays(row["nodes"], row["edges"]) if graphed else None,
            "cuda_graphs_caps": (
                {"nodes": backend.capture_max_nodes, "edges": backend.capture_max_edges} if graphed else None
            ),
            "cpus": None,
            # not pinned, but torch's pool still has more threads than the cores it may use, as the
            # ONNX rows' flag says (the table marks such rows with '*')
            "oversubscribed": threads is not None and threads > usable_cores(),
        }
