r"""TEDDY edge sparsification (Seo et al., ICLR 2024), numpy only.

TEDDY scores every edge by the degrees around it and removes the lowest-scoring fraction in one
shot. With :math:`A` the adjacency *as given* (``A[src, dst]`` counts edge instances, so
duplicates add up and self-loops count when present), :math:`d_i = \sum_j A_{ij}` its row sums and

.. math::
    \bar g_i = \frac{1}{d_i} \sum_{j} A_{ij}\, d_j^{-1/2}, \qquad
    \mathrm{score}(i, j) = \frac{\bar g_i}{d_i} \cdot \frac{\bar g_j}{d_j},

edges between high-degree nodes score low and go first (the paper's code: node score
``ḡ / d``, edge score the product of its end points' node scores). A node with :math:`d = 0`
(possible only in a directed graph, as the target of an edge) gets node score 0.

Removal rules:

* self-loops are always kept and never counted in the ratio;
* ``per_graph=True`` (default) removes ``round(ratio · E_g)`` of each graph's non-loop edges —
  TEDDY was designed for one large graph, and a global threshold over a dataset of many graphs
  would strip small dense graphs bare; ``per_graph=False`` ranks all edges of the batch together;
* on a symmetric edge list (every ``(i, j)`` has its ``(j, i)``, the usual undirected storage) the
  unit is the unordered pair: both directions (and any duplicates) stay or go together, so the
  result stays undirected, and the ratio counts distinct pairs; otherwise every edge instance is a
  unit. Ties are broken by position (stable sort), so the result is deterministic.

The same function runs at training time (dataset transform,
:class:`gtcompress.compress.teddy.TeddyEdges`) and on every incoming graph of a deployed model, so
the model always sees graphs sparsified the way it was fine-tuned.
"""

from __future__ import annotations

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph

__all__ = ["teddy_edge_scores", "teddy_keep_mask", "teddy_node_scores", "teddy_sparsify"]


def teddy_node_scores(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Per-node TEDDY score ``ḡ_i / d_i`` ``[N]`` float64 (0 where ``d_i = 0``)."""
    ei = np.asarray(edge_index, dtype=np.int64)
    src, dst = ei[0], ei[1]
    deg = np.bincount(src, minlength=num_nodes).astype(np.float64)  # row sums of A[src, dst]
    inv_sqrt = np.zeros(num_nodes)
    np.power(deg, -0.5, out=inv_sqrt, where=deg > 0)
    nb_sum = np.bincount(src, weights=inv_sqrt[dst], minlength=num_nodes)  # Σ_j A_ij d_j^{-1/2}
    score = np.zeros(num_nodes)
    np.divide(nb_sum, deg * deg, out=score, where=deg > 0)  # ḡ_i / d_i = nb_sum / d_i²
    return score


def teddy_edge_scores(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """TEDDY score of every edge ``[E]`` float64 (see the module formula). Degrees are taken over
    the whole edge list, which for a disjoint union of graphs equals the per-graph degrees."""
    ei = np.asarray(edge_index, dtype=np.int64)
    node = teddy_node_scores(ei, num_nodes)
    return node[ei[0]] * node[ei[1]]


def _is_symmetric(ei: np.ndarray, n: int) -> tuple[bool, np.ndarray]:
    """Whether every edge has its reverse (with the same multiplicity), and for each edge the
    canonical key of its unordered pair."""
    src, dst = ei[0], ei[1]
    fwd = src * n + dst
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    pair = lo * n + hi
    rev = dst * n + src
    a, ca = np.unique(fwd, return_counts=True)
    b, cb = np.unique(rev, return_counts=True)
    sym = a.shape == b.shape and bool(np.array_equal(a, b) and np.array_equal(ca, cb))
    return sym, pair


def teddy_keep_mask(
    edge_index: np.ndarray,
    num_nodes: int,
    ratio: float,
    batch: np.ndarray | None = None,
    per_graph: bool = True,
    undirected: bool | None = None,
) -> np.ndarray:
    """Boolean ``[E]``: which edges survive removing the lowest-scoring ``ratio`` of non-loop edges.

    ``batch`` (sorted graph id per node) defines the graphs for ``per_graph``; ``undirected=None``
    detects a symmetric edge list and then removes pairs (both directions) together.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"edge removal ratio must lie in [0, 1], got {ratio}")
    ei = np.asarray(edge_index, dtype=np.int64)
    e = ei.shape[1]
    keep = np.ones(e, dtype=bool)
    if e == 0 or ratio == 0.0:
        return keep
    score = teddy_edge_scores(ei, num_nodes)
    loop = ei[0] == ei[1]
    sym, pair = _is_symmetric(ei, max(num_nodes, 1))
    if undirected is None:
        undirected = sym
    # Units: one per non-loop edge, or one per unordered pair (first occurrence) when undirected.
    cand = np.flatnonzero(~loop)
    if undirected:
        _, first = np.unique(pair[cand], return_index=True)
        cand = cand[np.sort(first)]
    if batch is None or not per_graph:
        groups = [cand]
    else:
        b = np.asarray(batch, dtype=np.int64)
        gid = b[ei[0, cand]]
        order = np.argsort(gid, kind="stable")
        num_graphs = int(b.max()) + 1 if b.size else 1
        bounds = np.searchsorted(gid[order], np.arange(num_graphs + 1))
        groups = [cand[order[bounds[g] : bounds[g + 1]]] for g in range(num_graphs)]
    drop_units = []
    for units in groups:
        n_drop = int(np.floor(ratio * units.shape[0] + 0.5))
        if n_drop:
            ranked = units[np.argsort(score[units], kind="stable")]
            drop_units.append(ranked[:n_drop])
    if not drop_units:
        return keep
    dropped = np.concatenate(drop_units)
    if undirected:
        gone = np.isin(pair, pair[dropped]) & ~loop
    else:
        gone = np.zeros(e, dtype=bool)
        gone[dropped] = True
    keep[gone] = False
    return keep


def teddy_sparsify(graph: NumpyGraph, ratio: float, per_graph: bool = True) -> NumpyGraph:
    """A copy of ``graph`` (one graph or a disjoint union) without its lowest-scoring edges.

    Node arrays are shared, edge arrays are filtered; positional encodings are *not* recomputed
    (call :mod:`gtcompress.preprocess.pe` afterwards if the model uses them)."""
    batch = graph.batch if graph.batch is not None else np.zeros(graph.num_nodes, dtype=np.int64)
    keep = teddy_keep_mask(graph.edge_index, graph.num_nodes, ratio, batch, per_graph)
    return NumpyGraph(
        x=graph.x,
        edge_index=graph.edge_index[:, keep],
        edge_attr=None if graph.edge_attr is None else graph.edge_attr[keep],
        batch=graph.batch,
        pe=dict(graph.pe),
    )
