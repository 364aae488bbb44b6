"""Disjoint unions keep their graph count where the batch vector cannot tell it: graphs without
nodes at the end of a union leave no id in ``batch``, and a graph-level model must still answer one
row per graph sent, as ``collate`` (the training side) does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporters.onnx import input_spec
from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch, collate
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess import NumpyGraph, union_graphs
from gtcompress.preprocess.inputs import build_inputs
from gtcompress.preprocess.spec import InputSpec
from gtcompress.preprocess.teddy import teddy_sparsify
from runtime.torch_backend import forward


def _g(n: int, e: int, seed: int = 0) -> NumpyGraph:
    rng = np.random.default_rng(seed)
    ei = rng.integers(0, n, (2, e)) if n else np.zeros((2, 0), dtype=np.int64)
    return NumpyGraph(rng.standard_normal((n, 5)).astype(np.float32), ei)


@pytest.mark.parametrize("sizes", [(4, 3, 0), (4, 0, 3), (4, 3, 0, 0), (0,)])
def test_a_union_counts_graphs_without_nodes(sizes: tuple[int, ...]) -> None:
    graphs = [_g(n, 2 * n, seed=i) for i, n in enumerate(sizes)]
    u = union_graphs(graphs)
    assert u.num_graphs == len(sizes)
    np.testing.assert_array_equal(build_inputs(u, _spec())["node_counts"], sizes)
    as_torch = [GraphBatch.from_numpy(g) for g in graphs]
    assert GraphBatch.from_numpy(u).num_graphs == collate(as_torch).num_graphs == len(sizes)
    assert collate(as_torch).to_numpy().num_graphs == len(sizes)
    assert teddy_sparsify(u, 0.3).num_graphs == len(sizes)
    assert union_graphs([u, _g(2, 2)]).num_graphs == len(sizes) + 1


def test_a_graph_level_model_answers_every_graph_sent() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gt", node_features=FeatureSpec("float", 5), out_dim=3, task_level="graph", hidden=16, heads=2
    )
    model = build_model(cfg).eval()
    graphs = [_g(4, 8, 0), _g(3, 6, 1), _g(0, 0, 2)]
    spec = input_spec(model, "scatter")
    inputs = build_inputs(union_graphs(graphs), spec)
    with torch.no_grad():
        out = forward(model, {k: torch.from_numpy(v) for k, v in inputs.items()}, spec.lowering)
        ref = model(collate([GraphBatch.from_numpy(g) for g in graphs]))
    assert out.shape == (3, 3)
    torch.testing.assert_close(out, ref)


def test_a_count_below_the_batch_vector_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^graphs: 1 graphs, but the batch vector names 2$"):
        NumpyGraph(np.zeros((2, 5), np.float32), np.zeros((2, 0), np.int64), batch=np.array([0, 1]), graphs=1)


def _spec() -> InputSpec:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="gt", node_features=FeatureSpec("float", 5), out_dim=2, hidden=8, heads=2))
    return input_spec(model.eval(), "scatter")
