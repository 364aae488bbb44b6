"""Attention input layouts built in numpy, once per request, by training-free code.

An exported model cannot compute data-dependent shapes cheaply (largest graph, largest in-degree),
so the deployed pre-processing computes them and passes them as inputs whose *shapes* carry the
symbolic sizes:

* ``dense``:  ``node_slot [N]`` (row of each node in the flattened ``[B*L]`` padding) and
  ``pad_mask [B, L]`` (True on real nodes) — per-graph padded batch.
* ``padded``: ``nbr_src [N, K]``, ``nbr_edge [N, K]``, ``nbr_mask [N, K]`` — each destination's
  incoming edges (source node and edge id) padded to the largest in-degree ``K`` (ELL format).
* ``csr``:    ``rowptr [N+1]``, ``col [E]``, ``perm [E]`` — edges stably sorted by destination.

All are O(N + E) with one argsort; the torch side builds the same layouts from the same functions.
"""

from __future__ import annotations

import numpy as np


def node_counts(batch: np.ndarray | None, num_nodes: int, num_graphs: int | None = None) -> np.ndarray:
    """Nodes per graph ``[B]`` int64."""
    if batch is None:
        return np.array([num_nodes], dtype=np.int64)
    b = num_graphs if num_graphs is not None else (int(batch[-1]) + 1 if batch.size else 1)
    return np.bincount(batch, minlength=b).astype(np.int64)


def dense_layout(batch: np.ndarray | None, num_nodes: int, num_graphs: int | None = None) -> dict[str, np.ndarray]:
    """``node_slot [N]`` and ``pad_mask [B, L]`` for a sorted ``batch`` vector."""
    counts = node_counts(batch, num_nodes, num_graphs)
    b = np.zeros(num_nodes, dtype=np.int64) if batch is None else batch.astype(np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    pos = np.arange(num_nodes, dtype=np.int64) - ptr[b]
    max_nodes = max(int(counts.max()) if counts.size else 0, 1)
    pad_mask = np.arange(max_nodes)[None, :] < counts[:, None]
    return {"node_slot": b * max_nodes + pos, "pad_mask": pad_mask}


def csr_layout(edge_index: np.ndarray, num_nodes: int) -> dict[str, np.ndarray]:
    """Edges stably sorted by destination: ``rowptr [N+1]``, ``col`` (sources) and ``perm``."""
    dst = edge_index[1]
    perm = np.argsort(dst, kind="stable").astype(np.int64)
    counts = np.bincount(dst, minlength=num_nodes)
    rowptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return {"rowptr": rowptr, "col": edge_index[0][perm].astype(np.int64), "perm": perm}


def padded_layout(edge_index: np.ndarray, num_nodes: int) -> dict[str, np.ndarray]:
    """Incoming edges of every node padded to the largest in-degree ``K`` (at least 1)."""
    csr = csr_layout(edge_index, num_nodes)
    rowptr, perm = csr["rowptr"], csr["perm"]
    deg = np.diff(rowptr)
    k = max(int(deg.max()) if deg.size else 0, 1)
    e = perm.shape[0]
    dst_sorted = np.repeat(np.arange(num_nodes, dtype=np.int64), deg)
    rank = np.arange(e, dtype=np.int64) - rowptr[dst_sorted]
    nbr_edge = np.zeros((num_nodes, k), dtype=np.int64)
    nbr_mask = np.zeros((num_nodes, k), dtype=bool)
    nbr_edge[dst_sorted, rank] = perm
    nbr_mask[dst_sorted, rank] = True
    nbr_src = np.where(nbr_mask, edge_index[0][nbr_edge] if e else 0, 0).astype(np.int64)
    return {"nbr_src": nbr_src, "nbr_edge": nbr_edge, "nbr_mask": nbr_mask}
