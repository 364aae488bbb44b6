"""The ``dense`` lowering answers where torch answers: a pair that is no edge cannot overflow a node's answer.

The dense lowering computes ``q . k`` for every pair of a padded row, edges or not. A GT node with one feature
at 1e20 to 1e30 (finite float32) has a query and a key of about that size, so its score against its own key, a
pair that is no edge, is 1e40 to 1e60: ``inf``, or NaN from products of both signs past the range. Every edge's
score stays in range, so torch, the scatter, padded and plugin lowerings and float64 answer finitely, and so
must the dense export (else ``gtc serve dense.onnx`` refuses with a 400 what ``gtc serve CKPT`` answers). The
scores of non-edges are selected out before the softmax reduces over the row
(``gtcompress.nn.attention.dense_attention(lift_masked=True)``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from exporters.onnx import _Traced, export_onnx, to_torch
from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch
from gtcompress.models import ModelConfig
from gtcompress.preprocess import NumpyGraph
from runtime.session import GraphSession
from tests.runtime.conftest import seeded_model

# node 2, the one with the large feature, has in-edges only (from 1 and 3, one of them twice): after the first
# layer only its own row is large, so no edge joins two large nodes in the second layer either, and every
# edge's score stays finite in float32. Node 5 has no incoming edge.
EDGES = np.array([[0, 1, 3, 3, 4, 1, 0, 5], [1, 2, 2, 2, 3, 4, 4, 0]], dtype=np.int64)

#: the answers against torch eager (float32, summed in another order), per node, relative to the node's largest
#: output: the exporter's own parity check allows 1e-5 on ordinary inputs, and the large rows here pass through
#: the same ops (a score of 1e20 or more takes all of its row's weight, so the softmax is exact there)
RTOL = 1e-5


def _model(edges: bool):
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2) if edges else None,
        out_dim=3,
        hidden=16,
        heads=2,
        num_layers=2,
        task_level="node",
    )
    return seeded_model(cfg)


@pytest.fixture(scope="module", params=[False, True], ids=["count-bias", "edge-features"])
def exported(request, tmp_path_factory: pytest.TempPathFactory):
    model = _model(request.param)
    res = export_onnx(model, tmp_path_factory.mktemp("dense-overflow") / "gt.onnx", "dense", verify_batches=1)
    return model, res, request.param


def _graph(value: float, edges: bool) -> NumpyGraph:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    x[2, 1] = value
    attr = rng.standard_normal((EDGES.shape[1], 2)).astype(np.float32) if edges else None
    return NumpyGraph(x, EDGES, attr)


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    assert np.isfinite(ref).all()
    assert np.isfinite(got).all(), got
    scale = np.abs(ref).max(axis=-1, keepdims=True)
    assert (np.abs(got - ref) <= RTOL * scale).all(), np.abs(got - ref) / scale


@pytest.mark.parametrize("value", [1e20, 1e25, 1e30])
def test_dense_export_answers_a_large_feature_as_torch_does(exported, value: float) -> None:
    model, res, edges = exported
    g = _graph(value, edges)
    sess = GraphSession(res.path, ["CPUExecutionProvider"])
    inputs = sess.prepare([g]).inputs
    got = next(iter(sess.run_inputs(inputs).values()))
    with torch.no_grad():
        ref = model(GraphBatch.from_numpy(g), lowering="scatter").numpy()  # the reference attention
        dense = _Traced(model, res.spec)(*to_torch(inputs)).numpy()  # the same lowering in eager torch
        g64 = NumpyGraph(
            g.x.astype(np.float64), g.edge_index, None if g.edge_attr is None else g.edge_attr.astype(np.float64)
        )
        wide = copy.deepcopy(model).double()(GraphBatch.from_numpy(g64), lowering="scatter").numpy()
    assert np.abs(ref[2]).max() > value / 1e3  # the large node's answer is large: it is not a zero row
    _close(got, ref)
    _close(dense, ref)
    _close(ref, wide)  # and float32 is right: float64 agrees


def test_an_edge_that_overflows_still_makes_its_node_nan(exported) -> None:
    """Only non-edges are selected out: an edge whose own score overflows (its two ends both at 1e30, ``q . k``
    near 1e60) still answers NaN for its node, as torch does, and the server refuses it; not a finite answer
    that weighs the edge as 0."""
    model, res, edges = exported
    g = _graph(1e30, edges)
    g.x[1, 1] = 1e30  # node 1 -> 2 joins two large nodes
    sess = GraphSession(res.path, ["CPUExecutionProvider"])
    inputs = sess.prepare([g]).inputs
    got = next(iter(sess.run_inputs(inputs).values()))
    with torch.no_grad():
        ref = model(GraphBatch.from_numpy(g), lowering="scatter").numpy()
    assert np.isnan(ref[2]).all() and np.isnan(got[2]).all()
