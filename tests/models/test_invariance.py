"""A graph's outputs do not depend on how it is written: nodes relabelled, edges reordered, or
batched with other graphs give the same per-graph answers, for every architecture and every
lowering's layout (the torch code each ONNX lowering is traced from), built per request by
``gtcompress.preprocess.inputs.build_inputs`` exactly as a deployment does.

LapPE needs its canonical signs (:func:`gtcompress.preprocess.pe.canonical_signs`) for this; the
test graphs are drawn so that their first eigenvalues are distinct and every eigenvector's sign is
fixed by an order-free statistic (what the rule promises; see that module's docstring).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporters.onnx import input_spec
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig, build_model
from gtcompress.models.model import GraphModel
from gtcompress.preprocess.batching import NumpyGraph, split_by_graph, union_graphs
from gtcompress.preprocess.inputs import build_inputs
from gtcompress.preprocess.pe import order_free_signs
from runtime.torch_backend import forward
from tests.preprocess.test_pe import _laplacian

CASES = [
    ("gt", "scatter"),
    ("gt", "padded"),
    ("gt", "dense"),
    ("gt", "plugin"),
    ("gps", "dense"),
    ("graphormer", "dense"),
]
K = 4  # LapPE size
TOL = 1e-4


def _model(arch: str, task_level: str) -> GraphModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("float", 5),
        edge_features=FeatureSpec("float", 3),
        out_dim=3,
        task_level=task_level,
        hidden=16,
        heads=2,
        num_layers=2,
        pe={"lap": K},
    )
    model = build_model(cfg)
    with torch.no_grad():  # BatchNorm statistics far from (0, 1), as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _signs_fixed(ei: np.ndarray, n: int) -> bool:
    """Distinct first K+2 Laplacian eigenvalues (the K-th must not share the next one's eigenspace)
    and every eigenvector's sign fixed order-free."""
    lap, a = _laplacian(ei, n)
    vals, vecs = np.linalg.eigh(lap)
    return bool(np.min(np.diff(vals[: K + 2])) > 1e-3 and np.all(order_free_signs(vecs[:, 1 : K + 1], a) != 0))


def _graphs(count: int, seed: int) -> list[NumpyGraph]:
    """Random graphs with a duplicate edge and a self-loop each, for which the LapPE sign is fixed."""
    rng = np.random.default_rng(seed)
    out: list[NumpyGraph] = []
    while len(out) < count:
        n = int(rng.integers(6, 14))
        ei = rng.integers(0, n, (2, int(rng.integers(n, 3 * n))))
        ei = np.concatenate([ei, ei[:, :1], [[0], [0]]], axis=1)  # a duplicate edge and a self-loop
        if not _signs_fixed(ei, n):
            continue
        x = rng.standard_normal((n, 5)).astype(np.float32)
        ea = rng.standard_normal((ei.shape[1], 3)).astype(np.float32)
        out.append(NumpyGraph(x=x, edge_index=ei.astype(np.int64), edge_attr=ea))
    return out


def _relabel(g: NumpyGraph, new: np.ndarray) -> NumpyGraph:
    """Node i becomes node new[i]."""
    x = np.empty_like(g.x)
    x[new] = g.x
    return NumpyGraph(x=x, edge_index=new[g.edge_index], edge_attr=g.edge_attr)


def _reorder_edges(g: NumpyGraph, order: np.ndarray) -> NumpyGraph:
    assert g.edge_attr is not None
    return NumpyGraph(x=g.x, edge_index=g.edge_index[:, order], edge_attr=g.edge_attr[order])


def _run(model: GraphModel, spec: dict, graphs: list[NumpyGraph]) -> list[np.ndarray]:
    """Per-graph outputs of one batched call, as a deployment computes them."""
    inputs = build_inputs(union_graphs(graphs), spec)
    with torch.no_grad():
        out = forward(model, {k: torch.from_numpy(v) for k, v in inputs.items()}, spec.lowering).numpy()
    if spec.task_level == "graph":
        return list(out)
    return split_by_graph(out, [g.num_nodes for g in graphs])


@pytest.mark.parametrize("task_level", ["graph", "node"])
@pytest.mark.parametrize(("arch", "lowering"), CASES)
def test_same_graph_same_answer(arch: str, lowering: str, task_level: str) -> None:
    model = _model(arch, task_level)
    spec = input_spec(model, lowering)
    graphs = _graphs(3, seed=len(arch) + len(lowering))
    alone = [_run(model, spec, [g])[0] for g in graphs]
    rng = np.random.default_rng(1)

    together = _run(model, spec, graphs)  # batched with other graphs
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(b, a, atol=TOL, rtol=TOL)
    for g, a in zip(graphs, alone, strict=True):
        new = rng.permutation(g.num_nodes)
        relabelled = _run(model, spec, [_relabel(g, new)])[0]
        np.testing.assert_allclose(relabelled[new] if task_level == "node" else relabelled, a, atol=TOL, rtol=TOL)
        reordered = _run(model, spec, [_reorder_edges(g, rng.permutation(g.num_edges))])[0]
        np.testing.assert_allclose(reordered, a, atol=TOL, rtol=TOL)
    assert float(np.std(np.concatenate([np.ravel(a) for a in alone]))) > 1e-3  # not a constant model
