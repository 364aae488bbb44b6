"""Measuring exported models as a deployment runs them: accuracy from the ONNX file, latency side by side.

Both run the *exported file* under ONNX Runtime on the test split's graphs as a request brings them:
no stored positional encodings (they are computed per request, like the layouts, by
:func:`~gtcompress.preprocess.inputs.build_inputs`) and TEDDY applied when the model was
fine-tuned with it. So the accuracy reported is the artifact's, not the PyTorch model's, and the
latency includes the pre-processing a server pays per batch, TEDDY's sparsification included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gtcompress.data.base import GraphDataset
    from gtcompress.graph import GraphBatch
    from gtcompress.preprocess.batching import NumpyGraph
    from gtcompress.preprocess.spec import InputSpec

__all__ = ["evaluate_onnx", "read_spec", "time_side_by_side", "union_batches"]


def read_spec(path: Path) -> InputSpec:
    """The input spec an exported ONNX file carries in its metadata (:func:`exporters.onnx.read_spec`,
    imported when called, as this package imports ``exporters``)."""
    from exporters.onnx import read_spec as read

    return read(path)


def union_batches(graphs: list[GraphBatch], size: int, count: int) -> list[NumpyGraph]:
    """The first ``count`` batches of ``size`` graphs, each merged into one disjoint union."""
    from gtcompress.preprocess import union_graphs

    return [
        union_graphs([g.to_numpy() for g in graphs[i : i + size]])
        for i in range(0, size * count, size)
        if graphs[i : i + size]
    ]


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _request_graphs(
    ds: GraphDataset, teddy: Mapping[str, Any] | None, limit: int | None = None, split: str = "test"
) -> list[NumpyGraph]:
    """(The first ``limit``) graphs of ``split`` as a deployment receives them: no stored PE (computed per
    request), TEDDY applied."""
    graphs = [g.to_numpy() for g in ds[split][:limit]]
    for g in graphs:
        g.pe = {}
    if teddy:
        from gtcompress.preprocess.teddy import teddy_sparsify

        graphs = [
            teddy_sparsify(g, teddy["edges"], teddy.get("per_graph", True), teddy.get("threshold")) for g in graphs
        ]
    return graphs


def evaluate_onnx(
    path: Path, ds: GraphDataset, pcfg: Mapping[str, Any], teddy: Mapping[str, Any] | None, split: str = "test"
) -> dict[str, Any]:
    """The metric of the ONNX file on ``split`` under ONNX Runtime (pre-processing as on a deployment),
    under the split's name, in percent for accuracy and ROC-AUC; with ``pcfg``'s ``threads`` and batches
    of ``batch_graphs`` (the pipeline's ``profile`` section)."""
    import torch

    from gtcompress.preprocess import union_graphs
    from gtcompress.preprocess.batching import MAX_EVAL_CELLS, cell_bounded_runs
    from gtcompress.preprocess.inputs import build_inputs
    from gtcompress.train.metrics import compute_metric, higher_is_better

    spec = read_spec(path)
    sess = _ort_session(path, pcfg["threads"])
    graphs = _request_graphs(ds, teddy, split=split)
    size = pcfg["batch_graphs"]
    outs = []
    for i in range(0, len(graphs), size):  # padded attention memory bounded as in eager evaluation
        group = graphs[i : i + size]
        for a, b in cell_bounded_runs([g.num_nodes for g in group], MAX_EVAL_CELLS):
            outs.append(sess.run(None, build_inputs(union_graphs(group[a:b]), spec))[0])
    y = torch.cat([g.y.reshape(-1) if spec.task_level == "node" else g.y.reshape(1, -1) for g in ds[split]])
    metric = compute_metric(ds.info.metric, torch.from_numpy(np.concatenate(outs)), y)
    return {
        "metric": ds.info.metric,
        split: metric * (100 if higher_is_better(ds.info.metric) else 1),
        "file_mb": path.stat().st_size / 1e6,
    }


def time_side_by_side(
    models: list[tuple[Path, GraphDataset, Mapping[str, Any] | None]], pcfg: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Latency of every ONNX file on the same real test batches, round-robin (batch by batch across
    models), so drifting background load on a shared machine hits every model alike and the
    speed-ups are measured side by side. Each entry: (path, dataset, TEDDY settings or None).
    Every model gets ``warmup`` batches, then at least one full pass; further passes (up to
    ``repeat``) while the whole measurement stays under ``max_seconds``."""
    from gtcompress.preprocess import union_graphs

    size = pcfg["batch_graphs"]
    shared: dict[int, list[Any]] = {}  # models on the same data share the batch objects
    runs = []
    for path, ds, teddy in models:
        if id(ds) not in shared:  # the graphs as requests bring them: TEDDY is the model's to pay, timed
            graphs = _request_graphs(ds, None, size * pcfg["batches"])
            shared[id(ds)] = [union_graphs(graphs[i : i + size]) for i in range(0, len(graphs), size)]
        batches = shared[id(ds)]
        sess = _ort_session(path, pcfg["threads"])
        spec = read_spec(path)
        for b in batches[: pcfg["warmup"]]:
            sess.run(None, _prepare(b, spec, teddy))
        runs.append((sess, spec, teddy, batches, [], []))
    start = time.perf_counter()
    for r in range(pcfg["repeat"]):
        if r and time.perf_counter() - start > pcfg["max_seconds"]:
            break
        for i in range(max(len(run[3]) for run in runs)):
            for sess, spec, teddy, batches, lat, prep in runs:
                if i < len(batches):
                    t0 = time.perf_counter()
                    inputs = _prepare(batches[i], spec, teddy)
                    t1 = time.perf_counter()
                    sess.run(None, inputs)
                    prep.append((t1 - t0) * 1e3)
                    lat.append((time.perf_counter() - t0) * 1e3)
    return [
        {
            "latency_ms_p50": float(np.median(lat)),
            "latency_ms_mean": float(np.mean(lat)),
            "latency_ms_p90": float(np.percentile(lat, 90)),
            "prep_ms_p50": float(np.median(prep)),
            "timed_batches": len(lat),
            "graphs_per_batch": size,
            "threads": pcfg["threads"],
        }
        for *_, lat, prep in runs
    ]


def _prepare(batch: NumpyGraph, spec: InputSpec, teddy: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """What a server computes per request before the model runs: TEDDY on the union (per graph, as
    at training; its cost is part of a TEDDY model's latency), then the PE and layout inputs."""
    from gtcompress.preprocess.inputs import build_inputs

    if teddy:
        from gtcompress.preprocess.teddy import teddy_sparsify

        batch = teddy_sparsify(batch, teddy["edges"], teddy.get("per_graph", True), teddy.get("threshold"))
    return build_inputs(batch, spec)
