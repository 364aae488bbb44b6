"""Random graphs that match a model's input spec, edge cases included.

Used to verify exports (parity on batches the training data never showed: isolated nodes,
self-loops, duplicate edges, a 1-node graph, a graph without edges — mixed into random batches by
:func:`random_batches`, and each as a whole batch by :func:`edge_case_batches`) and to profile latency
over graph sizes without needing the training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph, union_graphs
from gtcompress.preprocess.spec import FeatureInput

FeatureArg = FeatureInput | Mapping[str, Any]


def _features(rng: np.random.Generator, count: int, spec: FeatureArg) -> np.ndarray:
    fs = FeatureInput.from_json(spec) if isinstance(spec, Mapping) else spec  # JSON form at the boundary
    if fs.kind == "categorical":
        return np.stack([rng.integers(0, c, count) for c in fs.cardinalities], axis=1).astype(np.int64)
    return rng.standard_normal((count, fs.dim)).astype(np.float32)


def random_graph(
    rng: np.random.Generator,
    num_nodes: int,
    num_edges: int,
    node_spec: FeatureArg,
    edge_spec: FeatureArg | None,
    self_loops: int = 0,
    duplicates: int = 0,
) -> NumpyGraph:
    """Uniform random directed edges plus the requested self-loops and duplicated edges."""
    ei = rng.integers(0, max(num_nodes, 1), (2, num_edges)) if num_nodes else np.zeros((2, 0), np.int64)
    if self_loops and num_nodes:
        loops = rng.integers(0, num_nodes, self_loops)
        ei = np.concatenate([ei, np.stack([loops, loops])], axis=1)
    if duplicates and ei.shape[1]:
        ei = np.concatenate([ei, ei[:, rng.integers(0, ei.shape[1], duplicates)]], axis=1)
    ei = ei.astype(np.int64)
    return NumpyGraph(
        x=_features(rng, num_nodes, node_spec),
        edge_index=ei,
        edge_attr=None if edge_spec is None else _features(rng, ei.shape[1], edge_spec),
    )


def random_batches(
    node_spec: FeatureArg, edge_spec: FeatureArg | None, count: int = 10, seed: int = 0
) -> list[NumpyGraph]:
    """``count`` disjoint-union batches of different sizes; together they contain isolated nodes,
    self-loops, duplicate edges, a 1-node graph and a graph with no edges."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        graphs = []
        for _ in range(1 + i % 4):
            n = int(rng.integers(2, 12 + 4 * i))
            e = int(rng.integers(0, 3 * n))
            graphs.append(random_graph(rng, n, e, node_spec, edge_spec, self_loops=i % 3, duplicates=i % 2 * 3))
        if i % 3 == 0:
            graphs.append(random_graph(rng, 1, 0, node_spec, edge_spec))  # 1-node graph
        if i % 3 == 1:
            graphs.append(random_graph(rng, 4, 0, node_spec, edge_spec))  # no edges at all
        out.append(union_graphs(graphs))
    return out


#: Names of the batches :func:`edge_case_batches` returns, in order (export errors quote them).
EDGE_CASES = (
    "a batch of edgeless graphs",
    "a lone edgeless graph",
    "a lone 1-node graph",
    "a 1-node graph with a self-loop",
    "isolated nodes",
    "duplicate edges and self-loops",
)


def edge_case_batches(
    node_spec: FeatureArg, edge_spec: FeatureArg | None, seed: int = 0
) -> list[tuple[str, NumpyGraph]]:
    """The batches on which lowerings have broken, each on its own and named (see :data:`EDGE_CASES`).

    :func:`random_batches` mixes its edge cases with ordinary graphs, so every batch there has edges and
    more than one node; an exported graph can still fail when a *whole request* has ``E = 0`` or
    ``N = 1`` (rank-ambiguous empty tensors in ONNX Runtime, size-1 buffers re-used), which is exactly
    what a server receives for a single small molecule or a point cloud without edges. So each case is
    a batch by itself: several edgeless graphs, one edgeless graph, one 1-node graph, one node with a
    self-loop, isolated nodes beside a connected part, and a graph whose edges are mostly duplicates and
    self-loops (an edge three times, a self-loop twice)."""
    rng = np.random.default_rng(seed)

    def graph(n: int, edges: list[tuple[int, int]]) -> NumpyGraph:
        g = random_graph(rng, n, 0, node_spec, edge_spec)
        ei = np.array(edges, dtype=np.int64).reshape(-1, 2).T
        attr = None if edge_spec is None else _features(rng, ei.shape[1], edge_spec)
        return NumpyGraph(x=g.x, edge_index=ei, edge_attr=attr)

    edgeless = union_graphs([graph(5, []), graph(1, []), graph(3, [])])
    isolated = graph(8, [(0, 1), (1, 2), (2, 0), (3, 1)])  # nodes 4..7 touch no edge, node 3 only sends
    repeats = graph(4, [(0, 1), (0, 1), (0, 1), (2, 2), (2, 2), (1, 1), (3, 2)])
    batches = [edgeless, graph(5, []), graph(1, []), graph(1, [(0, 0)]), isolated, repeats]
    return list(zip(EDGE_CASES, batches, strict=True))
