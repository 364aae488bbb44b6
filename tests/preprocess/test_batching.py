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


WHOLE = "categorical features must be whole numbers (ids of int64 embeddings), got"


def _categorical_spec() -> InputSpec:
    from gtcompress.preprocess.spec import FeatureInput, OutputSpec

    cat = FeatureInput("categorical", 1, (5,))
    return InputSpec(
        "gt", "graph", "scatter", cat, OutputSpec("y", 1, "graph"), edge_attr=FeatureInput("categorical", 1, (3,))
    )


@pytest.mark.parametrize(
    ("x", "edge_attr", "message"),
    [
        (
            [[1.7], [2.0]],
            [0.0, 2.0],
            f"x: {WHOLE} 1.7 at row 0, column 0",
        ),
        (
            [1, 2],
            [0.0, 2.5],
            f"edge_attr: {WHOLE} 2.5 at row 1, column 0",
        ),
        (
            [1, 2],
            [0.0, np.nan],
            f"edge_attr: {WHOLE} nan at row 1, column 0",
        ),
        (
            [[1.0], [np.inf]],
            [0, 2],
            f"x: {WHOLE} inf at row 1, column 0",
        ),
    ],
)
def test_categorical_features_given_as_fractions_are_refused(x: list, edge_attr: list, message: str) -> None:
    """The cast to int64 truncated them: 1.7 became id 1 and the model answered for another input."""
    g = NumpyGraph(np.array(x), np.array([[0, 1], [1, 0]]), edge_attr=np.array(edge_attr))
    with pytest.raises(ValueError) as err:
        build_inputs(g, _categorical_spec())
    assert str(err.value) == message


def test_categorical_features_as_whole_floats_or_integers_are_ids() -> None:
    for x, ea in (([1.0, 4.0], [0.0, 2.0]), (np.array([[1], [4]]), np.array([0, 2], dtype=np.int32))):
        out = build_inputs(
            NumpyGraph(np.asarray(x), np.array([[0, 1], [1, 0]]), edge_attr=np.asarray(ea)), _categorical_spec()
        )
        assert out["x"].dtype == out["edge_attr"].dtype == np.int64
        np.testing.assert_array_equal(out["x"], [[1], [4]])
        np.testing.assert_array_equal(out["edge_attr"], [[0], [2]])
