r"""The sparsified attention graph of full-attention GPS (``ModelConfig.attention_topk = k``).

Its global attention runs over the set

.. math::
    \mathcal A = E \cup \{(i \to i)\} \cup \{(j \to i) : j \in \mathrm{top}_k(s, \mathrm{graph}(i))\}

of unique (key → query) pairs, a subgraph of the complete per-graph graph the dense attention used:
on the padded layout as the dense attention with :func:`attention_bias` masking the other pairs (a
few batched MatMuls), elsewhere through the reference sparse attention over :func:`attention_edges`.
The key score is TEDDY's degree-based node score :math:`s_j = \bar g_j / d_j` (``"teddy"``) or the
out-degree (``"degree"``); ties go to the node that comes first in its graph. How ``k`` and the
score are chosen, and why, is compression's business (:mod:`gtcompress.compress.attention_graph`);
this module only builds the graph, inside the model's forward, from ``edge_index`` and the padded
per-graph layout the model has anyway (GPS needs it).

Everything here exports to ONNX with symbolic sizes and is exact (no float tie-breaking):

* the top ``k`` per graph come from each node's *rank* in its graph, counted by pairwise comparisons
  on the padded ``[B, L, L]`` layout — the position a stable descending sort would give it — instead
  of ``torch.sort(stable=True)``, which has no ONNX conversion, or ``topk``, whose tie order is not
  specified in torch;
* the pairs are a boolean ``[B, L, L]`` mask (edge counts, the diagonal and the top-k columns), so
  each pair appears once without ``unique``, and ``nonzero`` over it in (graph, key, query) order
  lists them sorted by (src, dst), as a sort of ``src * N + dst`` would.

Both are ``O(B L^2)`` boolean work once per forward, independent of heads, layers and width: the
order of the ``[B, L, L]`` edge-count matrix GPS's GIN layer already builds (and passes in), and far
below the attention itself (``O(B H L^2 D)`` per layer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gtcompress.nn.attention import mask_value
from gtcompress.nn.layout import DenseLayout
from gtcompress.nn.scatter import scatter_sum

__all__ = ["attention_bias", "attention_edges", "attention_mask", "mask_pairs", "node_scores", "top_node_mask"]


#: TEDDY's neighbour terms ``d^-1/2`` are rounded to multiples of ``1 / SCORE_GRID`` before they are
#: summed (:func:`node_scores`): sums of such terms are exact in float64 up to ``2^53 / SCORE_GRID``
#: (8M) terms, so they do not depend on the order the edges are added in.
SCORE_GRID = 2.0**30


def node_scores(edge_index: Tensor, num_nodes: int, kind: str = "teddy") -> Tensor:
    """TEDDY node score ``ḡ/d`` (see :mod:`gtcompress.preprocess.teddy`) or the degree, ``[N]`` float64,
    such that scores equal in exact arithmetic compare equal and tie-break by position.

    Float64 alone did not give that: ``ḡ`` sums ``d_j^-1/2`` over a node's edges in edge-list order,
    and two nodes with the same neighbour degrees listed in other orders got sums an ulp apart, so the
    top ``k`` went to whichever rounding came out larger (the same graph with its edges in another order
    got another GPS answer; on CUDA, where ``scatter_add`` adds in no fixed order, it could change from
    call to call). The terms are therefore put on a grid (:data:`SCORE_GRID`, far finer than the gaps
    between distinct degrees' terms) where float64 adds them exactly, in any order."""
    src, dst = edge_index[0], edge_index[1]
    ones = torch.ones(src.shape[0], dtype=torch.float64, device=src.device)
    deg = scatter_sum(ones, src, num_nodes)
    if kind == "degree":
        return deg
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    inv_sqrt = torch.round(inv_sqrt * SCORE_GRID) / SCORE_GRID
    nb = scatter_sum(inv_sqrt.index_select(0, dst), src, num_nodes)
    return torch.where(deg > 0, nb / (deg * deg).clamp_min(1e-12), torch.zeros_like(deg))


def top_node_mask(edge_index: Tensor, layout: DenseLayout, k: int, kind: str = "teddy") -> Tensor:
    """``[B, L]`` bool: the slot holds one of its graph's ``k`` best-scoring nodes (all of them when the
    graph has at most ``k``); among equal scores the node first in its graph wins, exactly as the first
    ``k`` of a stable descending sort.

    A node's rank is the number of nodes of its graph that a stable descending sort puts before it:
    those with a higher score, and those with the same score at a lower position. Padding scores
    ``-inf`` and ranks after every real node; it is masked out anyway."""
    n = layout.slot.shape[0]
    s = layout.pad(node_scores(edge_index, n, kind).unsqueeze(-1)).squeeze(-1)  # [B, L]
    s = s.masked_fill(~layout.valid, float("-inf"))
    pos = torch.arange(layout.max_nodes, device=s.device)
    mine, other = s.unsqueeze(2), s.unsqueeze(1)  # [B, L (node), 1], [B, 1, L (other node)]
    ahead = (other > mine) | ((other == mine) & (pos.view(1, 1, -1) < pos.view(1, -1, 1)))
    # Counted in float32 (exact below 2^24 nodes a graph): ONNX Runtime CPU sums int64 (what a bool sum
    # exports as) 4x slower, 0.8 ms a call of 16 graphs of 128 nodes, a tenth of the whole GPS call.
    # A positive axis: ONNX Runtime mishandles negative ones on empty tensors.
    rank = ahead.to(torch.float32).sum(dim=2)
    return (rank < k) & layout.valid


def attention_mask(
    edge_index: Tensor,
    batch: Tensor,
    layout: DenseLayout,
    k: int,
    kind: str = "teddy",
    counts: Tensor | None = None,
) -> Tensor:
    """``[B, L, L]`` bool (query, key): the pairs of the sparsified attention graph — input edges,
    every real node's self-loop, and from each graph's top-``k`` nodes to every real node of it.

    ``counts``: the layout's :meth:`~gtcompress.nn.layout.DenseLayout.edge_counts`, where the caller has
    them already (GPS's GIN layer): a second ``[B, L, L]`` float32 matrix is 4 bytes a padded cell
    more of a served call's memory, and eager torch does not share the two."""
    valid = layout.valid
    length = layout.max_nodes
    if counts is None:
        counts = layout.edge_counts(edge_index, batch)
    edges = counts > 0  # [B, L (dst), L (src)]
    eye = torch.eye(length, dtype=torch.bool, device=valid.device).unsqueeze(0)
    top = top_node_mask(edge_index, layout, k, kind)
    return edges | ((eye | top.unsqueeze(1)) & valid.unsqueeze(2))


def attention_edges(edge_index: Tensor, batch: Tensor, layout: DenseLayout, k: int, kind: str = "teddy") -> Tensor:
    """The sparsified attention graph ``[2, E']`` (src, dst): unique pairs, sorted by (src, dst).

    The mask is read in (graph, key position, query position) order; node ids grow with the graph and
    with the position inside it (``batch`` is sorted), so that order is the (src, dst) order."""
    return mask_pairs(attention_mask(edge_index, batch, layout, k, kind), layout)


def mask_pairs(mask: Tensor, layout: DenseLayout) -> Tensor:
    """The pairs of an :func:`attention_mask` as node ids ``[2, E']`` (src, dst), sorted by (src, dst)."""
    n = layout.slot.shape[0]
    length = layout.max_nodes
    pairs = mask.transpose(1, 2).nonzero()  # [E', 3] (b, key, query)
    row = pairs[:, 0] * length
    node = layout.node_at_slot(n)
    return torch.stack([node.index_select(0, row + pairs[:, 1]), node.index_select(0, row + pairs[:, 2])])


def attention_bias(mask: Tensor, layout: DenseLayout, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """An :func:`attention_mask` as the dense attention's inputs: the additive bias ``[B, 1, L, L]``
    (0 on the graph's pairs, :func:`~gtcompress.nn.attention.mask_value` elsewhere) and the rows that
    attend ``[B, 1, L, 1]`` (1.0 on real nodes, 0.0 on padding).

    Through :func:`~gtcompress.nn.attention.dense_attention` this is the same function as
    :func:`~gtcompress.nn.attention.sparse_attention` over :func:`attention_edges`: the graph's pairs
    are unique (no ``log(count)`` term), a masked score's ``exp`` is exactly 0, and every real query
    has its self-loop, so no real row is all masked; padding rows are zeroed and never unpadded."""
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    masked = torch.full((), mask_value(dtype), dtype=dtype, device=mask.device)
    bias = torch.where(mask, zero, masked).unsqueeze(1)
    return bias, layout.valid.to(dtype)[:, None, :, None]
