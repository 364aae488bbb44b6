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
  unit. With ``per_graph`` this is decided for each graph of a union, so a graph keeps the same
  edges alone or batched with directed graphs. Ties are broken by position (stable sort), so the
  result is deterministic.

The same function runs at training time (dataset transform,
:class:`gtcompress.compress.teddy.TeddyEdges`) and on every incoming graph of a deployed model, so
the model always sees graphs sparsified the way it was fine-tuned.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph

__all__ = [
    "DROP_ALL_THRESHOLD",
    "KEEP_ALL_THRESHOLD",
    "finite_threshold",
    "teddy_edge_scores",
    "teddy_keep_mask",
    "teddy_mask",
    "teddy_node_scores",
    "teddy_sparsify",
    "teddy_threshold_mask",
]

#: Thresholds for "keep every edge" and "remove every non-loop edge". Both are finite: the threshold is
#: recorded as JSON in the checkpoint and the model's metadata, where ``-inf``/``inf`` were written as
#: ``-Infinity``/``Infinity`` (no JSON number) and the runtime refused to load the model. TEDDY scores
#: are products of two node scores in [0, 1] (ḡ_i / d_i <= 1 / d_i), so these two act as -inf and inf.
KEEP_ALL_THRESHOLD = 0.0
DROP_ALL_THRESHOLD = 2.0


def finite_threshold(threshold: float) -> float:
    """A global TEDDY threshold as the finite number of the same meaning (NaN is returned as is).

    gtcompress before the finite constants recorded ``-inf`` (keep every edge) and ``inf`` (drop every
    non-loop edge), written to config.json and the ONNX metadata as ``-Infinity``/``Infinity``. Such a
    checkpoint or model file still says exactly which edges go, so readers take it as the constant it
    now is rather than refuse it (and a re-export writes a JSON number)."""
    if threshold == -float("inf"):
        return KEEP_ALL_THRESHOLD
    if threshold == float("inf"):
        return DROP_ALL_THRESHOLD
    return threshold


def teddy_node_scores(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Per-node TEDDY score ``ḡ_i / d_i`` ``[N]`` float64 (0 where ``d_i = 0``).

    Each node's terms ``d_j^-1/2`` are summed in ascending order, not in edge-list order: float
    addition is not associative, and summed as listed, two nodes with the same neighbour degrees
    (a carbon next to atoms of degrees 2, 2, 3, listed 2-2-3 or 3-2-2) got scores an ulp apart. Then
    "ties go by position" (:func:`teddy_keep_mask`) and "equal scores stay or go together"
    (:func:`teddy_threshold_mask`, :func:`gtcompress.compress.teddy.global_threshold`) did not hold:
    the same graph with its edges in another order lost other edges under a global threshold, and a
    served model answered it differently. In ascending order the sum is a function of the node's
    multiset of neighbour degrees, so such scores are equal bit for bit."""
    ei = np.asarray(edge_index, dtype=np.int64)
    src, dst = ei[0], ei[1]
    deg = np.bincount(src, minlength=num_nodes).astype(np.float64)  # row sums of A[src, dst]
    inv_sqrt = np.zeros(num_nodes)
    np.power(deg, -0.5, out=inv_sqrt, where=deg > 0)
    terms = inv_sqrt[dst]
    # bincount adds in array order: each node's terms ascending, which is its neighbours' degrees from
    # the highest down, a degree of 0 (term 0) first. One integer key, (node, that rank), sorted once:
    # lexsort of (terms, src) sorted twice and took most of this function's time.
    d = deg.astype(np.int64)[dst]
    top = int(d.max()) + 1 if d.size else 1
    order = np.argsort(src * (top + 1) + np.where(d > 0, top - d, 0), kind="stable")
    nb_sum = np.bincount(src[order], weights=terms[order], minlength=num_nodes)  # Σ_j A_ij d_j^{-1/2}
    score = np.zeros(num_nodes)
    np.divide(nb_sum, deg * deg, out=score, where=deg > 0)  # ḡ_i / d_i = nb_sum / d_i²
    return score


def teddy_edge_scores(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """TEDDY score of every edge ``[E]`` float64 (see the module formula). Degrees are taken over
    the whole edge list, which for a disjoint union of graphs equals the per-graph degrees."""
    ei = np.asarray(edge_index, dtype=np.int64)
    node = teddy_node_scores(ei, num_nodes)
    return node[ei[0]] * node[ei[1]]


class _Pairs(NamedTuple):
    """The edges grouped by unordered pair ``{i, j}`` (each edge with its reverse and its duplicates),
    from one stable sort of the pair keys. Keys of different graphs of a union never collide."""

    order: np.ndarray  # [E] edges sorted by pair key, stable
    starts: np.ndarray  # [P] where each pair's run begins in ``order``
    pair_of: np.ndarray  # [E] the pair of every edge
    first: np.ndarray  # [P] each pair's first edge in the list (its TEDDY unit in an undirected graph)


def _pairs(ei: np.ndarray, n: int) -> _Pairs:
    pair = np.minimum(ei[0], ei[1]) * n + np.maximum(ei[0], ei[1])
    order = np.argsort(pair, kind="stable")
    sorted_pairs = pair[order]
    new_pair = np.r_[True, sorted_pairs[1:] != sorted_pairs[:-1]]
    starts = np.flatnonzero(new_pair)
    pair_of = np.empty(ei.shape[1], dtype=np.int64)
    pair_of[order] = np.cumsum(new_pair) - 1
    return _Pairs(order, starts, pair_of, order[starts])


def _symmetric_graphs(
    ei: np.ndarray, n: int, gid: np.ndarray, num_graphs: int, pairs: _Pairs | None = None
) -> np.ndarray:
    """Boolean ``[num_graphs]``: which graphs of a disjoint union have a symmetric edge list.

    Decided per graph, not for the union, so a graph is sparsified the same whether it comes alone
    or batched with directed graphs (the server sparsifies a whole multi-graph request at once,
    training one graph at a time). A graph is symmetric when each of its pairs occurs as often as
    ``i -> j`` as ``j -> i``: the directions summed over a pair's run are 0. ``gid`` is the graph of
    every edge. One sort of the pair keys, shared with the TEDDY units (:func:`teddy_keep_mask`):
    before, two sorts of the directed keys and a search took 3 s of 11 at 10M edges."""
    if ei.shape[1] == 0:
        return np.ones(num_graphs, dtype=bool)
    p = pairs if pairs is not None else _pairs(ei, n)
    direction = np.sign(ei[0] - ei[1])[p.order]  # +1 i > j, -1 i < j, 0 a self-loop
    unmatched = np.add.reduceat(direction, p.starts) != 0
    return np.bincount(gid[p.first[unmatched]], minlength=num_graphs) == 0


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
    detects a symmetric edge list and then removes pairs (both directions) together. With
    ``per_graph`` and a ``batch`` the detection is per graph, so every graph of a union keeps
    exactly the edges it keeps alone; otherwise it is one decision for the whole edge list.
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
    n = max(num_nodes, 1)
    grouped = batch is not None and per_graph
    if grouped:
        b = np.asarray(batch, dtype=np.int64)
        gid = b[ei[0]]  # graph of every edge (a disjoint union: its source's graph)
        num_graphs = int(b.max()) + 1 if b.size else 1
    else:
        gid = np.zeros(e, dtype=np.int64)
        num_graphs = 1
    pairs = _pairs(ei, n)  # each pair's first edge (its unit below) and every edge's pair
    # Whether each edge's graph is undirected: detected per graph (one graph, or each of a union).
    detected = undirected is None
    und_edge = _symmetric_graphs(ei, n, gid, num_graphs, pairs)[gid] if detected else np.full(e, bool(undirected))
    # Units: one per non-loop edge of a directed graph, one per unordered pair (its first
    # occurrence) of an undirected one.
    directed_units = np.flatnonzero(~loop & ~und_edge)
    pair_units = pairs.first[~loop[pairs.first] & und_edge[pairs.first]]
    cand = np.sort(np.concatenate([directed_units, pair_units]))
    # Rank within each graph by score, ties by position (lexsort is stable), and drop the first
    # round(ratio · units) of every graph: one sort for the whole batch, no loop over graphs.
    cg = gid[cand]
    # lexsort((score, graph)) as one integer sort: each unit's rank by score (stable: ties by position),
    # offset by its graph; two sorts instead of lexsort's two merge sorts of pairs
    by_score = np.argsort(score[cand], kind="stable")
    rank = np.empty(cand.shape[0], dtype=np.int64)
    rank[by_score] = np.arange(cand.shape[0])
    ranked = cand[np.argsort(cg * cand.shape[0] + rank)]  # distinct keys: any sort gives this order
    rg = gid[ranked]
    units = np.bincount(cg, minlength=num_graphs)
    n_drop = np.floor(ratio * units + 0.5).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(units)[:-1]])
    rank = np.arange(ranked.shape[0]) - start[rg]
    dropped = ranked[rank < n_drop[rg]]
    if dropped.size == 0:
        return keep
    gone = np.zeros(e, dtype=bool)
    gone[dropped] = True
    und_dropped = dropped[und_edge[dropped]]
    if und_dropped.size:  # an undirected pair goes with all its edges (both directions, duplicates)
        pair_gone = np.zeros(pairs.starts.shape[0], dtype=bool)
        pair_gone[pairs.pair_of[und_dropped]] = True
        gone |= pair_gone[pairs.pair_of] & und_edge
    keep[gone] = False
    return keep


def teddy_threshold_mask(edge_index: np.ndarray, num_nodes: int, threshold: float) -> np.ndarray:
    """Boolean ``[E]`` of TEDDY's global rule: an edge stays when its score is at least ``threshold``
    (fixed on the training split, :func:`gtcompress.compress.teddy.global_threshold`) or it is a
    self-loop. Scores are per graph even over a disjoint union (see :func:`teddy_edge_scores`)."""
    ei = np.asarray(edge_index, dtype=np.int64)
    return (teddy_edge_scores(ei, num_nodes) >= threshold) | (ei[0] == ei[1])


def teddy_mask(
    edge_index: np.ndarray,
    num_nodes: int,
    ratio: float,
    batch: np.ndarray | None = None,
    per_graph: bool = True,
    threshold: float | None = None,
) -> np.ndarray:
    """Boolean ``[E]`` of a TEDDY record (``edges``, ``per_graph``, ``threshold``): the one rule that
    training, :func:`teddy_sparsify` and the runtime apply. A ``threshold`` (the global rule) decides
    alone; else the lowest-scoring ``ratio`` of each graph's (``batch``; none: one graph) edges go."""
    if threshold is not None:
        return teddy_threshold_mask(edge_index, num_nodes, threshold)
    if batch is None:
        batch = np.zeros(num_nodes, dtype=np.int64)
    return teddy_keep_mask(edge_index, num_nodes, ratio, batch, per_graph)


def teddy_sparsify(
    graph: NumpyGraph, ratio: float, per_graph: bool = True, threshold: float | None = None
) -> NumpyGraph:
    """A copy of ``graph`` (one graph or a disjoint union) without its lowest-scoring edges.

    ``ratio``, ``per_graph`` and ``threshold`` are a TEDDY record's ``edges``, ``per_graph`` and
    ``threshold`` (a checkpoint's ``teddy`` section). A ``threshold`` (``gtc sparsify --global``)
    decides alone, as in training and in the runtime: ranking a graph's own edges by ``ratio``
    instead kept other edges than the model was fine-tuned on.

    Node arrays are shared, edge arrays are filtered; positional encodings are *not* recomputed
    (call :mod:`gtcompress.preprocess.pe` afterwards if the model uses them)."""
    keep = teddy_mask(graph.edge_index, graph.num_nodes, ratio, graph.batch, per_graph, threshold)
    return NumpyGraph(
        x=graph.x,
        edge_index=graph.edge_index[:, keep],
        edge_attr=None if graph.edge_attr is None else graph.edge_attr[keep],
        batch=graph.batch,
        pe=dict(graph.pe),
        graphs=graph.graphs,
    )


def recompute_kinds(pe: object) -> tuple[str, ...] | None:
    """The positional-encoding kinds a TEDDY record says to recompute on the sparsified graph, as
    every writer of the record spells them: ``{"lap": true, "rwse": false}`` (``TeddyEdges``) or
    ``["lap"]`` (the runtime's ``TeddyConfig``); ``None`` when the record names none. Anything else
    is a ``ValueError``, which each reader turns into its own error naming the file."""
    if pe is None:
        return None
    if isinstance(pe, dict) and all(isinstance(k, str) for k in pe):
        return tuple(sorted(k for k, v in pe.items() if v))
    if isinstance(pe, list | tuple) and all(isinstance(k, str) for k in pe):
        return tuple(sorted(pe))
    raise ValueError(f"not a list of PE kinds: {pe!r:.80}")
