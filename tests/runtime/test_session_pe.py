"""A graph's own positional encodings reach the model: PyG's attribute names, a dict of kinds or one
array, kept per graph when graphs carrying them share a call with graphs that do not."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from gtcompress.graph import GraphBatch
from gtcompress.preprocess import NumpyGraph
from runtime.errors import ShapeError
from runtime.session import GraphSession


def test_a_pyg_data_gives_its_own_pe_to_the_session_as_to_the_torch_model(exported, node_sess) -> None:
    """A PyG ``Data`` keeps its encoding as ``random_walk_pe`` (PyG's ``AddRandomWalkPE``; PyG's differs from
    ours on duplicate edges). ``GraphBatch.from_pyg`` reads it; the session ignored it and computed its own,
    so the same object got another answer from ``GraphSession.run`` than from the torch model."""
    from torch_geometric.data import Data

    from runtime.graphs import as_numpy_graph

    ex = exported["node"]
    g = ex.graphs(1, seed=5, lo=7, hi=8)[0]
    pe = np.random.default_rng(0).uniform(0.0, 1.0, (g.num_nodes, 4)).astype(np.float32)
    data = Data(
        x=torch.from_numpy(g.x),
        edge_index=torch.from_numpy(g.edge_index),
        edge_attr=torch.from_numpy(g.edge_attr),
        random_walk_pe=torch.from_numpy(pe),
    )
    np.testing.assert_array_equal(as_numpy_graph(data).pe["rwse"], pe)
    with torch.no_grad():
        ref = ex.model.eval()(GraphBatch.from_pyg(data)).numpy()
    np.testing.assert_allclose(node_sess.run(data)[0], ref, atol=1e-5)
    assert np.abs(node_sess.run(g)[0] - ref).max() > 1e-3  # the session's own RWSE: another answer


def test_a_pe_given_as_one_array_is_the_models_one_kind(exported, node_sess) -> None:
    """PyG's GraphGPS example stores its encoding as ``data.pe`` (``AddRandomWalkPE(attr_name="pe")``),
    which ``from_pyg`` reads as the model's PE; the session dropped it and answered with its own."""
    from torch_geometric.data import Data

    ex = exported["node"]
    g = ex.graphs(1, seed=5, lo=7, hi=8)[0]
    pe = np.random.default_rng(0).uniform(0.0, 1.0, (g.num_nodes, 4)).astype(np.float32)
    as_dict = node_sess.run(NumpyGraph(g.x, g.edge_index, g.edge_attr, None, {"rwse": pe}))[0]
    data = Data(
        x=torch.from_numpy(g.x), edge_index=torch.from_numpy(g.edge_index), edge_attr=torch.from_numpy(g.edge_attr)
    )
    data.pe = torch.from_numpy(pe)
    np.testing.assert_array_equal(node_sess.run(data)[0], as_dict)
    mapping = {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr, "pe": pe}
    np.testing.assert_array_equal(node_sess.run(mapping)[0], as_dict)
    assert np.abs(node_sess.run(g)[0] - as_dict).max() > 1e-3  # the session's own RWSE: another answer
    with pytest.raises(ShapeError, match=re.escape("input 'pe_rwse': expected shape [7, 4], got [7, 3]")):
        node_sess.run({**mapping, "pe": pe[:, :3]})


def test_a_pe_given_as_one_array_is_kept_without_validation_too(exported, node_sess) -> None:
    """The one array was named as the model's kind by validate_graph only: ``GraphSession(validate=False)``
    dropped it and answered with its own RWSE (0.11 max abs off the validated session's answer)."""
    ex = exported["node"]
    unchecked = GraphSession(ex.path, validate=False)
    g = ex.graphs(1, seed=5, lo=7, hi=8)[0]
    pe = np.random.default_rng(0).uniform(0.0, 1.0, (g.num_nodes, 4)).astype(np.float32)
    mapping = {"x": g.x, "edge_index": g.edge_index, "edge_attr": g.edge_attr, "pe": pe}
    want = node_sess.run(mapping)[0]
    np.testing.assert_array_equal(
        unchecked.run(NumpyGraph(g.x, g.edge_index, g.edge_attr, None, {"rwse": pe}))[0], want
    )
    np.testing.assert_array_equal(unchecked.run(mapping)[0], want)
    np.testing.assert_array_equal(unchecked.run([mapping, g])[0], want)  # batched with a graph lacking it
    assert np.abs(unchecked.run(g)[0] - want).max() > 1e-3  # the session's own RWSE: another answer


def test_a_pe_array_for_a_model_with_two_kinds_must_name_its_kind() -> None:
    from gtcompress.preprocess.spec import InputSpec
    from runtime.graphs import as_numpy_graph, validate_graph

    spec = InputSpec.from_json(
        {
            "x": {"dtype": "float32", "kind": "float", "dim": 2},
            "output": {"name": "output", "dim": 1, "per": "graph"},
            "pe": {"rwse": 3, "lap": 2},
            "lowering": "scatter",
            "arch": "gps",
            "task_level": "graph",
        }
    )
    g = as_numpy_graph(
        {"x": np.ones((4, 2), np.float32), "edge_index": np.zeros((2, 0), np.int64), "pe": np.ones((4, 3))}
    )
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "the graph's pe is one array and the model takes lap and rwse: "
            "give pe as a dict of kind to array, e.g. pe={'lap': ...}"
        ),
    ):
        validate_graph(g, spec)


def test_a_graphs_own_pe_is_kept_when_it_shares_a_call_with_a_graph_without(exported, node_sess) -> None:
    """The union keeps only the PE kinds every item carries and computes the others for all of it: a
    graph carrying its own RWSE (a PyG ``Data``'s ``random_walk_pe``) got the session's RWSE instead,
    and another answer (0.06 off), as soon as it was run together with a graph carrying none."""
    ex = exported["node"]
    own, plain = ex.graphs(2, seed=9, lo=6, hi=9)
    own.pe = {"rwse": np.random.default_rng(1).uniform(0.0, 1.0, (own.num_nodes, 4)).astype(np.float32)}
    alone = node_sess.run(own)[0]
    np.testing.assert_array_equal(node_sess.run([own, plain])[0], alone)
    np.testing.assert_array_equal(node_sess.run([plain, own])[1], alone)
    np.testing.assert_array_equal(node_sess.run([own, plain])[1], node_sess.run(plain)[0])


def test_fill_partial_pe_computes_per_kind_only_for_the_items_lacking_it(exported) -> None:
    """Two items carrying one kind each keep their own; a kind nobody carries is left to the union."""
    from dataclasses import replace

    from gtcompress.preprocess.pe import laplacian_pe, rwse
    from runtime.graphs import fill_partial_pe

    spec = replace(GraphSession(exported["node"].path).spec, pe={"lap": 2, "rwse": 3})
    a, b = exported["node"].graphs(2, seed=4, lo=5, hi=8)
    lap_a = np.full((a.num_nodes, 2), 7.0, np.float32)
    rwse_b = np.full((b.num_nodes, 3), 9.0, np.float32)
    a.pe, b.pe = {"lap": lap_a}, {"rwse": rwse_b}
    fa, fb = fill_partial_pe([a, b], spec)
    np.testing.assert_array_equal(fa.pe["lap"], lap_a)
    np.testing.assert_array_equal(fb.pe["rwse"], rwse_b)
    ptr_a, ptr_b = np.array([0, a.num_nodes]), np.array([0, b.num_nodes])
    np.testing.assert_array_equal(fa.pe["rwse"], rwse(a.edge_index, ptr_a, 3))
    np.testing.assert_array_equal(fb.pe["lap"], laplacian_pe(b.edge_index, ptr_b, 2))
    a.pe, b.pe = {}, {}
    assert [g.pe for g in fill_partial_pe([a, b], spec)] == [{}, {}]
