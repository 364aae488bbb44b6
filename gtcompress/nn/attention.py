r"""The one definition of graph attention, and the multi-head module built on it.

For queries :math:`q_i`, keys :math:`k_j`, values :math:`v_j` (per head) and an attention graph
given as edges :math:`j \to i`, the output at node :math:`i` is

.. math::
    o_i = \sum_{e = (j \to i)} \alpha_e v_j, \qquad
    \alpha_e = \frac{\exp(s_e)}{\sum_{e' = (j' \to i)} \exp(s_{e'})}, \qquad
    s_e = \tau\, q_i^\top k_j + b_e

with :math:`\tau = 1/\sqrt{d_h}` and an optional per-edge, per-head bias :math:`b_e`.
Semantics every lowering must reproduce exactly:

* every *edge instance* counts: a duplicated edge contributes twice to both sums;
* a self-loop is an ordinary edge (nothing is added or removed implicitly);
* a node with no incoming edge gets :math:`o_i = 0`.

:func:`sparse_attention` is the reference (Gather + scatter). :func:`dense_attention` is the same
function on a padded per-graph layout, where the multiplicity of each (dst, src) pair enters as
an additive :math:`\log(\text{count})` bias (``-inf`` where there is no edge), so duplicates stay
exact. Models use whichever layout is cheaper; tests check both against each other.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gtcompress.nn.scatter import scatter_max, scatter_sum

if TYPE_CHECKING:
    from gtcompress.nn.layout import DenseLayout


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edge_index: Tensor,
    bias: Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Reference sparse attention. ``q,k,v [N,H,D]``, ``edge_index [2,E]`` (src, dst), ``bias [E,H]``."""
    n, _, d = q.shape
    src, dst = edge_index[0], edge_index[1]
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    # Reduce over dim 2, not -1: with E = 0 ONNX Runtime (1.31 CPU) ignores a negative ReduceSum axis on an
    # empty tensor and returns [0,H,D] unreduced, which then breaks the bias Add and the ScatterElements.
    score = (q.index_select(0, dst) * k.index_select(0, src)).sum(dim=2) * tau  # [E,H]
    if bias is not None:
        score = score + bias
    smax = scatter_max(score.detach(), dst, n)
    ex = torch.exp(score - smax.index_select(0, dst))
    denom = scatter_sum(ex, dst, n)
    alpha = ex / denom.index_select(0, dst)
    if dropout > 0.0 and training:
        alpha = F.dropout(alpha, p=dropout, training=True)
    msg = alpha.unsqueeze(-1) * v.index_select(0, src)  # [E,H,D]
    return scatter_sum(msg, dst, n)


#: Finite stand-in for ``-inf`` in dense score biases ("no edge", padding). ``exp(MASK - m) == 0``
#: exactly in float32 for any real row maximum ``m``, and a row made only of MASK stays finite (no NaN
#: in the softmax or its gradient); such rows are zeroed through ``row_valid``.
MASK = -1e30


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_bias: Tensor,
    scale: float | None = None,
    dropout: float = 0.0,
    training: bool = False,
    row_valid: Tensor | None = None,
) -> Tensor:
    """Padded attention: ``q,k,v [B,H,L,D]``, ``attn_bias [B,1|H,L,L]`` (``-inf`` or :data:`MASK` = no edge).

    Rows without any key (padding, or nodes with no incoming edge) give zeros. ``row_valid``
    (``[B,1|H,L|1,1]``, 1.0 / 0.0 in the dtype of ``q``) says which rows have one; callers that
    pass it promise a bias whose masked entries are :data:`MASK` (finite), so the per-call mask
    scan and clamp are skipped. The softmax is one ``Softmax`` node in ONNX (a single fused pass
    in ONNX Runtime, several times cheaper than max/sub/exp/sum/div as separate nodes); rows are
    zeroed by a multiplication (cheaper than a broadcast ``Where`` there, and never ``0 * inf``:
    the clamped scores are finite).
    """
    d = q.shape[-1]
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    if row_valid is None:
        row_valid = (attn_bias.amax(dim=-1, keepdim=True) > MASK).to(q.dtype)
        attn_bias = attn_bias.clamp(min=MASK)
    if attn_bias.shape[-2] == 1:
        # A per-key bias (key padding: GPS) rides in the score MatMul as one more dimension,
        # [tau q, 1] . [k, b] = tau q.k + b, instead of a broadcast Add over the whole score matrix.
        key_bias = attn_bias.transpose(-1, -2).expand(*k.shape[:-1], 1).to(q.dtype)
        q = torch.cat([q * tau, torch.ones_like(q[..., :1])], dim=-1)
        score = torch.matmul(q, torch.cat([k, key_bias], dim=-1).transpose(-1, -2))
    else:
        score = torch.matmul(q, k.transpose(-1, -2)) * tau + attn_bias
    alpha = torch.softmax(score, dim=-1)
    if dropout > 0.0 and training:
        alpha = F.dropout(alpha, p=dropout, training=True)
    return torch.matmul(alpha, v) * row_valid


def padded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    nbr_src: Tensor,
    nbr_mask: Tensor,
    bias: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Neighbour-list (ELL) layout: ``nbr_src [N,K]`` incoming sources per node, left-aligned
    (slot 0 is valid iff the node has an incoming edge), ``nbr_mask [N,K]``, ``bias [N,K,H]`` per slot.

    Laid out for ONNX Runtime: keys and values are gathered per (node, head) row straight into
    ``[N,H,K,D]`` (row ``src * H + h`` of ``[N*H, D]``), so both contractions are batched MatMuls with
    no Transpose of a gathered tensor (``kn @ q`` and ``alpha @ vn``), instead of broadcast Mul +
    ReduceSum over ``[N,K,H,D]``. Padding enters as the finite additive :data:`MASK` and the
    softmax is one ``Softmax`` node; nodes without incoming edges are zeroed by a multiplication.
    """
    n, h, d = q.shape
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    heads = torch.arange(h, dtype=nbr_src.dtype, device=nbr_src.device).view(1, h, 1)
    rows = (nbr_src.unsqueeze(1) * h + heads).reshape(-1)  # [N*H*K] rows of [N*H, D]
    kn = k.reshape(-1, d).index_select(0, rows).view(n, h, -1, d)  # [N,H,K,D]
    vn = v.reshape(-1, d).index_select(0, rows).view(n, h, -1, d)
    score = torch.matmul(kn, (q * tau).unsqueeze(-1)).squeeze(-1)  # [N,H,K]
    pad = torch.where(nbr_mask, 0.0, MASK).to(score.dtype).unsqueeze(1)  # [N,1,K]
    if bias is not None:
        score = score + bias.transpose(1, 2)
    alpha = torch.softmax(score + pad, dim=-1)
    row_valid = nbr_mask[:, :1].to(score.dtype).unsqueeze(-1)  # [N,1,1]
    out = torch.matmul(alpha.unsqueeze(2), vn).squeeze(2)  # [N,H,D]
    return out * row_valid


class NeighbourLists(NamedTuple):
    """The ``padded`` lowering's layout (see :func:`gtcompress.preprocess.layouts.bucketed_layout`).

    ``buckets``: per degree bucket ``(node [R_b] | None, src [R_b,K_b], edge [R_b,K_b], mask [R_b,K_b])``
    (``node`` is None for a single bucket holding every node in order); ``inv [N]``: row of each node
    in the concatenated bucket outputs (None for a single unpermuted bucket).
    """

    buckets: list[tuple[Tensor | None, Tensor, Tensor, Tensor]]
    inv: Tensor | None = None


class MultiHeadAttention(nn.Module):
    """Q/K/V/O projections around the reference attention.

    Heads are explicit (separate ``q``, ``k``, ``v`` linears of width ``heads * head_dim``) so that
    compression can slice a head out of all four projections; ``heads`` may differ per layer after
    materialisation while ``head_dim`` stays fixed. ``heads == 0`` is a removed sublayer.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        dropout: float = 0.0,
        edge_dim: int = 0,
        num_spd: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim, self.dropout = dim, heads, head_dim, dropout
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner, bias=bias)
        self.k = nn.Linear(dim, inner, bias=bias)
        self.v = nn.Linear(dim, inner, bias=bias)
        self.o = nn.Linear(inner, dim, bias=bias)
        # Per-head score biases live here too, so that slicing a head touches one module only.
        self.edge_bias = nn.Linear(edge_dim, heads) if edge_dim else None
        self.spd_bias = nn.Embedding(num_spd, heads) if num_spd else None

    def project(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shape = (*h.shape[:-1], self.heads, self.head_dim)
        return self.q(h).view(shape), self.k(h).view(shape), self.v(h).view(shape)

    def sparse(self, h: Tensor, edge_index: Tensor, bias: Tensor | None = None) -> Tensor:
        """Attention over the edges of ``edge_index``; ``h [N, dim]``."""
        q, k, v = self.project(h)
        out = sparse_attention(q, k, v, edge_index, bias, dropout=self.dropout, training=self.training)
        return self.o(out.reshape(h.shape[0], -1))

    def padded(self, h: Tensor, nbr: NeighbourLists, bias: Tensor | None = None) -> Tensor:
        """Attention over (degree-bucketed) neighbour lists; ``bias [E,H]`` in edge order.

        The key and value projections are folded out of the per-slot work: with ``q_h = W_q,h h + b_q,h``,
        ``tau q_h . k_j = (tau W_k,h^T q_h) . h_j + const`` (the constant ``tau q_h . b_k,h`` is the same
        for every key of a row and cancels in the softmax) and ``W_o sum_h W_v,h sum_j alpha_hj h_j + ..``,
        so each slot gathers one row of ``h`` (shared by keys and values, ``[N,C]``) instead of a key
        and a value row per head: one Gather per bucket and layer, two batched MatMuls over ``[H,C]``
        per row, and two Gemms (``h -> tau W_k^T q`` per head and ``aggregate -> W_o W_v``) whose folded
        weights ONNX Runtime computes once (constant folding). Each bucket works on its own rows; the
        outputs return to node order by one Gather with ``nbr.inv``. Same function as :meth:`sparse`
        (up to float rounding): every slot of a row without incoming edge is padding, the row is zeroed
        before ``W_o``'s bias.
        """
        hh, d, c = self.heads, self.head_dim, h.shape[-1]
        tau = 1.0 / math.sqrt(d)
        wq, wk, wv = (lin.weight.view(hh, d, c) for lin in (self.q, self.k, self.v))
        wo = self.o.weight.view(-1, hh, d)  # [C',H,D]
        m_q = (torch.matmul(wq.transpose(1, 2), wk) * tau).transpose(0, 1).reshape(c, hh * c)  # h -> [H*C]
        m_o = torch.matmul(wv.transpose(1, 2), wo.permute(1, 2, 0)).reshape(hh * c, -1)  # [H*C] -> C'
        b_q = None if self.q.bias is None else (torch.matmul(self.q.bias.view(hh, 1, d), wk) * tau).reshape(hh * c)
        b_o = None if self.v.bias is None else torch.matmul(self.o.weight, self.v.bias)
        if bias is not None:
            # Padding slots hold edge id 0, which does not exist when E = 0: gather from the biases plus one
            # zero row (padding is masked, so real slots read exactly the rows they read before).
            bias = torch.cat([bias, bias.new_zeros((1, bias.shape[1]))])
        outs = []
        for node, src, edge, mask in nbr.buckets:
            r, kk = src.shape
            hq = h if node is None else h.index_select(0, node)
            qf = torch.matmul(hq, m_q) if b_q is None else torch.addmm(b_q, hq, m_q)
            hn = h.index_select(0, src.reshape(-1)).view(r, kk, c)  # [R,K,C]: keys and values in one
            score = torch.matmul(qf.view(r, hh, c), hn.transpose(1, 2))  # [R,H,K]
            if bias is not None:
                score = score + bias.index_select(0, edge.reshape(-1)).view(r, kk, hh).transpose(1, 2)
            pad = torch.where(mask, 0.0, MASK).to(score.dtype).unsqueeze(1)  # [R,1,K]
            alpha = torch.softmax(score + pad, dim=-1)
            if self.dropout > 0.0 and self.training:  # on the weights, as in sparse_attention
                alpha = F.dropout(alpha, p=self.dropout, training=True)
            agg = torch.matmul(alpha, hn).reshape(r, hh * c)  # [R,H*C]
            o = torch.matmul(agg, m_o) if b_o is None else torch.addmm(b_o, agg, m_o)
            outs.append(o * mask[:, :1].to(o.dtype))  # rows without incoming edge -> 0
        out = outs[0] if nbr.inv is None else torch.cat(outs).index_select(0, nbr.inv)
        return out if self.o.bias is None else out + self.o.bias

    def fused(self, h: Tensor, csr: tuple[Tensor, Tensor, Tensor], bias: Tensor | None = None) -> Tensor:
        """Attention through the fused op on CSR ``(rowptr, col, perm)``; ``bias`` in edge order."""
        from gtcompress.nn.fused import sparse_graph_attention

        rowptr, col, perm = csr
        q, k, v = self.project(h)
        b = None if bias is None else bias.index_select(0, perm)
        out = sparse_graph_attention(q, k, v, rowptr, col, b, 1.0 / math.sqrt(self.head_dim))
        return self.o(out.reshape(h.shape[0], -1))

    def dense(self, h: Tensor, attn_bias: Tensor, row_valid: Tensor | None = None) -> Tensor:
        """Attention on a padded batch ``h [B, L, dim]`` with ``attn_bias [B, 1|H, L, L]`` (see
        :func:`dense_attention` for ``row_valid``)."""
        q, k, v = (t.transpose(1, 2) for t in self.project(h))  # [B,H,L,D]
        out = dense_attention(q, k, v, attn_bias, dropout=self.dropout, training=self.training, row_valid=row_valid)
        return self.o(out.transpose(1, 2).reshape(h.shape[0], h.shape[1], -1))

    def dense_nodes(self, h: Tensor, layout: DenseLayout, attn_bias: Tensor, row_valid: Tensor | None = None) -> Tensor:
        """:meth:`dense` on node rows ``h [N, dim]`` -> ``[N, dim]``: Q, K, V are projected per node and
        then padded (straight into the head-major layout), and O after unpadding, so no projection runs
        on padding rows (same result: padded keys are masked, padded queries dropped)."""
        q, k, v = (layout.pad_heads(f(h), self.heads) for f in (self.q, self.k, self.v))
        out = dense_attention(q, k, v, attn_bias, dropout=self.dropout, training=self.training, row_valid=row_valid)
        return self.o(layout.unpad_heads(out))
