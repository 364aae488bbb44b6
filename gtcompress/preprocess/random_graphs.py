"""Random graphs that match a model's input spec, edge cases included.

Used to verify exports (parity on batches the training data never showed: isolated nodes,
self-loops, duplicate edges, a 1-node graph, a graph without edges) and to profile latency over
graph sizes without needing the training data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph, union_graphs


def _features(rng: np.random.Generator, count: int, spec: dict[str, Any]) -> np.ndarray:
    if spec["kind"] == "categorical":
        cards = spec["cardinalities"]
        return np.stack([rng.integers(0, c, count) for c in cards], axis=1).astype(np.int64)
    return rng.standard_normal((count, spec["dim"])).astype(np.float32)


def random_graph(
    rng: np.random.Generator,
    num_nodes: int,
    num_edges: int,
    node_spec: dict[str, Any],
    edge_spec: dict[str, Any] | None,
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
    node_spec: dict[str, Any], edge_spec: dict[str, Any] | None, count: int = 10, seed: int = 0
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
