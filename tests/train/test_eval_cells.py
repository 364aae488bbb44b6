"""Evaluation batches are cut where their padded attention would exceed ``MAX_EVAL_CELLS``.

A model attending densely within each graph pads a batch's graphs to its largest: one 600-node graph
among 127 molecules made an eager GPS evaluation batch take 2 GB (a few thousand nodes, as in TU DD:
tens of GB, an out-of-memory kill in ``gtc eval``). Each graph's output is its own in evaluation, so
the cut must change nothing but memory and time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gtcompress.preprocess.batching as batching
from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset, iterate_batches
from gtcompress.graph import GraphBatch
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess.batching import MAX_EVAL_CELLS, cell_bounded_runs
from gtcompress.train.loop import predict


def _ring(n: int, seed: int) -> GraphBatch:
    g = torch.Generator().manual_seed(seed)
    s = torch.arange(n)
    y = torch.randint(0, 2, (1,), generator=g)
    return GraphBatch(torch.randn(n, 3, generator=g), torch.stack([s, (s + 1) % n]), y=y)


def _mixed() -> list[GraphBatch]:
    """Molecule-sized graphs with a large one among them (as in TU DD or PROTEINS)."""
    sizes = [12, 30, 7, 25, 900, 18, 30, 9, 400, 22]
    return [_ring(n, i) for i, n in enumerate(sizes)]


def test_runs_cover_every_graph_once_in_order_within_the_bound() -> None:
    sizes = [12, 30, 7, 25, 900, 18, 30, 9, 400, 22]
    runs = cell_bounded_runs(sizes, 200_000)
    assert runs == [(0, 4), (4, 5), (5, 8), (8, 9), (9, 10)]
    assert [i for a, b in runs for i in range(a, b)] == list(range(len(sizes)))
    for a, b in runs:
        assert (b - a) * max(sizes[a:b]) ** 2 <= 200_000 or b - a == 1  # a graph above the bound: alone
    assert cell_bounded_runs([], 10) == []
    assert cell_bounded_runs([5, 5, 5], MAX_EVAL_CELLS) == [(0, 3)]  # within the bound: one batch, as before


def test_molecule_and_cluster_batches_stay_whole() -> None:
    """The bound is set so that the datasets the pipeline uses evaluate exactly as before."""
    assert cell_bounded_runs([222] * 128, MAX_EVAL_CELLS) == [(0, 128)]  # MOLHIV's largest molecule
    assert cell_bounded_runs([190] * 128, MAX_EVAL_CELLS) == [(0, 128)]  # CLUSTER's largest graph


def test_iterate_batches_cuts_only_when_asked() -> None:
    graphs = _mixed()
    whole = [b.num_graphs for b in iterate_batches(graphs, 128)]
    cut = [b.num_graphs for b in iterate_batches(graphs, 128, max_cells=200_000)]
    assert (whole, cut) == ([10], [4, 1, 3, 1, 1])


@pytest.mark.parametrize("arch", ["gps", "graphormer"])
def test_predict_answers_as_one_graph_at_a_time(arch: str, monkeypatch) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, node_features=FeatureSpec("float", 3), out_dim=2, hidden=16, heads=2, num_layers=1)
    model = build_model(cfg).eval()
    graphs = _mixed()
    seen: list[int] = []
    forward = model.forward

    def counted(batch: GraphBatch):  # type: ignore[no-untyped-def]
        seen.append(batch.num_graphs)
        return forward(batch)

    monkeypatch.setattr(model, "forward", counted)
    monkeypatch.setattr("gtcompress.train.loop.MAX_EVAL_CELLS", 200_000)
    logits, y = predict(model, graphs, batch_size=128)
    assert seen == [4, 1, 3, 1, 1]
    with torch.no_grad():
        alone = torch.cat([forward(g) for g in graphs])
    torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-5)
    assert torch.equal(y, torch.cat([g.y for g in graphs]))


def test_the_pipeline_evaluates_onnx_files_in_bounded_batches(tmp_path, monkeypatch) -> None:
    """``evaluate_onnx`` (the pipeline's test metric from the exported file) cuts its batches too, and
    its metric is the one of uncut batches."""
    import onnxruntime as ort

    from exporters.onnx import export_onnx
    from gtcompress.pipeline.measure import evaluate_onnx

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gps",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        task_level="graph",
    )
    path = tmp_path / "gps.onnx"
    export_onnx(build_model(cfg).eval(), path, "dense", verify=False)
    info = DatasetInfo("mixed", "graph", "multiclass", 2, "accuracy", FeatureSpec("float", 3))
    ds = GraphDataset(info, {"test": _mixed()})
    pcfg = {"threads": 1, "batch_graphs": 32}
    calls: list[int] = []
    run = ort.InferenceSession.run

    def counted(self, names, inputs, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(int(inputs["x"].shape[0]))
        return run(self, names, inputs, *a, **k)

    monkeypatch.setattr(ort.InferenceSession, "run", counted)
    whole = evaluate_onnx(path, ds, pcfg, None)
    assert calls == [sum(g.num_nodes for g in ds["test"])]
    calls.clear()
    monkeypatch.setattr(batching, "MAX_EVAL_CELLS", 200_000)
    cut = evaluate_onnx(path, ds, pcfg, None)
    assert calls == [74, 900, 57, 400, 22]
    assert cut == whole
    assert np.isfinite(cut["test"])
