"""Disjoint-union batching of many graphs in numpy, and splitting per-graph outputs back.

This is the deployment-side twin of :func:`gtcompress.graph.collate`: the server merges
concurrent requests with it, so it must be cheap (one concatenate per array, no Python loop over
edges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: PyTorch Geometric attribute names of the positional encodings its transforms write
#: (``AddLaplacianEigenvectorPE``, ``AddRandomWalkPE``) and common aliases, mapped to our PE kinds.
#: One table for both doors a PyG object comes through: :meth:`gtcompress.graph.GraphBatch.from_pyg`
#: (torch side) and :func:`runtime.graphs.as_numpy_graph` (deployment), so both give a model the same
#: encoding for the same object; later names win where an object carries two of one kind.
PYG_PE_NAMES = {"laplacian_eigenvector_pe": "lap", "random_walk_pe": "rwse", "lap_pe": "lap", "rwse": "rwse"}


@dataclass
class NumpyGraph:
    """One graph or a disjoint union of graphs, as plain arrays (see docs/architecture.md, Conventions)."""

    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray | None = None
    batch: np.ndarray | None = None
    pe: dict[str, np.ndarray] = field(default_factory=dict)
    #: How many graphs, where ``batch`` cannot tell: graphs without nodes at the end of a union leave
    #: no trace in it. ``None``: one past the last graph id in ``batch``.
    graphs: int | None = None

    def __post_init__(self) -> None:
        if self.graphs is not None:
            named = int(self.batch[-1]) + 1 if self.batch is not None and self.batch.size else 1
            if self.graphs < named:
                raise ValueError(f"graphs: {self.graphs} graphs, but the batch vector names {named}")

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def num_graphs(self) -> int:
        if self.graphs is not None:
            return self.graphs
        if self.batch is None or self.batch.size == 0:
            return 1
        return int(self.batch[-1]) + 1


def graph_ptr(batch: np.ndarray | None, num_nodes: int, num_graphs: int | None = None) -> np.ndarray:
    """Offsets ``[B+1]`` of each graph's nodes in a sorted ``batch`` vector."""
    if batch is None:
        return np.array([0, num_nodes], dtype=np.int64)
    b = int(num_graphs) if num_graphs is not None else (int(batch[-1]) + 1 if batch.size else 1)
    counts = np.bincount(batch, minlength=b)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def largest_graph(batch: np.ndarray | None, num_nodes: int, num_graphs: int = 1) -> tuple[int, int]:
    """Nodes of the largest graph of a sorted ``batch`` vector, and its index (the first of the largest)."""
    if batch is None or num_graphs <= 1:
        return num_nodes, 0
    counts = np.bincount(batch, minlength=num_graphs)
    at = int(np.argmax(counts))
    return int(counts[at]), at


def union_graphs(graphs: Sequence[NumpyGraph], *, common_pe: bool = False) -> NumpyGraph:
    """Disjoint union: node ids of item ``i`` are offset by the nodes of the items before it, and its
    graph ids (an item may itself be a union with a ``batch`` vector) by their graphs.

    Every item has edge features or none does. Positional encodings: every item must carry the same
    kinds, or with ``common_pe`` only the kinds all items carry are kept (a deployment computes the
    others for the whole union). One concatenate per array."""
    if not graphs:
        raise ValueError("union_graphs needs at least one graph")
    n = np.array([g.num_nodes for g in graphs], dtype=np.int64)
    e = np.array([g.num_edges for g in graphs], dtype=np.int64)
    b = np.array([g.num_graphs for g in graphs], dtype=np.int64)
    node_off = np.concatenate([[0], np.cumsum(n)[:-1]])
    graph_off = np.concatenate([[0], np.cumsum(b)[:-1]])
    edge_index = np.concatenate([g.edge_index.astype(np.int64) for g in graphs], axis=1)
    edge_index = edge_index + np.repeat(node_off, e)[None, :]
    has_attr = [g.edge_attr is not None for g in graphs]
    if any(has_attr) and not all(has_attr):
        raise ValueError("either every graph has edge_attr or none does")
    edge_attr = np.concatenate([g.edge_attr for g in graphs]) if all(has_attr) else None  # type: ignore[misc]
    if common_pe:
        pe_keys = set.intersection(*(set(g.pe) for g in graphs))
    else:
        pe_keys = set(graphs[0].pe)
        for i, g in enumerate(graphs):
            if set(g.pe) != pe_keys:
                raise ValueError(f"graph {i} has positional encodings {sorted(g.pe)}, expected {sorted(pe_keys)}")
    batch = np.concatenate(
        [
            (g.batch.astype(np.int64) if g.batch is not None else np.zeros(g.num_nodes, dtype=np.int64)) + off
            for g, off in zip(graphs, graph_off, strict=True)
        ]
    )
    return NumpyGraph(
        x=np.concatenate([g.x for g in graphs]),
        edge_index=edge_index,
        edge_attr=edge_attr,
        batch=batch,
        pe={k: np.concatenate([g.pe[k] for g in graphs]) for k in sorted(pe_keys)},
        graphs=int(b.sum()),  # a graph without nodes at the end leaves no id in batch
    )


def split_by_graph(values: np.ndarray, sizes: np.ndarray | list[int]) -> list[np.ndarray]:
    """Split a node-level (or graph-level, sizes all 1) output back into one array per graph."""
    bounds = np.cumsum(np.asarray(sizes, dtype=np.int64))[:-1]
    return np.split(values, bounds)


#: padded attention cells (graphs x largest graph's nodes, squared) that one evaluation batch may hold:
#: a model attending densely within each graph (GPS, Graphormer, GT on the dense layout) pads every
#: graph of a batch to the largest, so one 600-node graph among 127 molecules made an eager GPS
#: evaluation batch take 2 GB and Graphormer's 3.5 GB (a 3,000-node one: tens of GB). 2**23 (134 MB
#: of float32 scores a head) keeps every batch of 128 CLUSTER graphs or MOLHIV molecules whole.
MAX_EVAL_CELLS = 2**23


def cell_bounded_runs(sizes: Sequence[int], max_cells: int) -> list[tuple[int, int]]:
    """``[start, end)`` runs of consecutive graphs (node counts ``sizes``) whose count x (largest
    node count)^2 stays within ``max_cells``; a graph above the bound alone is a run of its own.
    For evaluation, where each graph's output is its own: the cut changes memory and time only."""
    runs: list[tuple[int, int]] = []
    start, widest = 0, 0
    for i, n in enumerate(sizes):
        wide = max(widest, int(n))
        if i > start and (i - start + 1) * wide * wide > max_cells:
            runs.append((start, i))
            start, wide = i, int(n)
        widest = wide
    if len(sizes) > start:
        runs.append((start, len(sizes)))
    return runs
