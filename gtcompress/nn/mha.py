"""The multi-head attention module: Q/K/V/O projections around the one attention definition.

It has its own module, above everything it calls, so that :mod:`gtcompress.nn`'s attention stack
is imported in one direction: :mod:`~gtcompress.nn.attention` (the definition and its layouts'
functions) at the bottom, :mod:`~gtcompress.nn.layout` and :mod:`~gtcompress.nn.fused` on top of
it, and this module on top of all three, importing them at module level. When it lived in
``attention.py``, its ``fused`` method imported the fused op inside the method and its type hints
imported the layout under ``TYPE_CHECKING``, to dodge the circle both of those modules closed by
importing ``attention`` (``tests/test_import_rules.py`` now checks there is none).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gtcompress.nn.attention import dense_attention, mask_slots, overflow_rows, sparse_attention
from gtcompress.nn.fused import sparse_graph_attention
from gtcompress.nn.layout import DenseLayout, NeighbourLists

__all__ = ["MultiHeadAttention"]


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
        before ``W_o``'s bias. Folding ``b_v`` into one constant ``W_o b_v`` relies on each row's weights
        summing to 1 per head; attention dropout (training) breaks that, so there each head's
        ``W_o,h b_v,h`` is weighted by its row's surviving weight, as the sparse path's ``alpha' v`` does.
        """
        hh, d, c = self.heads, self.head_dim, h.shape[-1]
        tau = 1.0 / math.sqrt(d)
        wq, wk, wv = (lin.weight.view(hh, d, c) for lin in (self.q, self.k, self.v))
        wo = self.o.weight.view(-1, hh, d)  # [C',H,D]
        m_q = (torch.matmul(wq.transpose(1, 2), wk) * tau).transpose(0, 1).reshape(c, hh * c)  # h -> [H*C]
        m_o = torch.matmul(wv.transpose(1, 2), wo.permute(1, 2, 0)).reshape(hh * c, -1)  # [H*C] -> C'
        b_q = None if self.q.bias is None else (torch.matmul(self.q.bias.view(hh, 1, d), wk) * tau).reshape(hh * c)
        b_o = None if self.v.bias is None else torch.matmul(self.o.weight, self.v.bias)
        drop = self.dropout > 0.0 and self.training
        # per head W_o,h b_v,h [H,C'] (b_o is their sum), for rows whose weights dropout rescaled
        b_oh = None if self.v.bias is None or not drop else (wo * self.v.bias.view(1, hh, d)).sum(-1).transpose(0, 1)
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
            score = mask_slots(score, mask.unsqueeze(1))
            alpha = torch.softmax(score, dim=-1)
            if drop:  # on the weights, as in sparse_attention
                alpha = F.dropout(alpha, p=self.dropout, training=True)
            agg = torch.matmul(alpha, hn).reshape(r, hh * c)  # [R,H*C]
            if b_oh is not None:  # sum_h (sum_k alpha'_hk) W_o,h b_v,h: b_v is dropped with its weights
                o = torch.matmul(agg, m_o) + torch.matmul(alpha.sum(-1), b_oh)
            else:
                o = torch.matmul(agg, m_o) if b_o is None else torch.addmm(b_o, agg, m_o)
            # rows without incoming edge -> 0; a row with an overflowed score -> NaN (heads mixed by W_o)
            outs.append(o * (mask[:, :1].to(o.dtype) + overflow_rows(score, (1, 2)).view(r, 1)))
        out = outs[0] if nbr.inv is None else torch.cat(outs).index_select(0, nbr.inv)
        return out if self.o.bias is None else out + self.o.bias

    def fused(self, h: Tensor, csr: tuple[Tensor, Tensor, Tensor], bias: Tensor | None = None) -> Tensor:
        """Attention through the fused op on CSR ``(rowptr, col, perm)``; ``bias`` in edge order."""
        rowptr, col, perm = csr
        q, k, v = self.project(h)
        b = None if bias is None else bias.index_select(0, perm)
        out = sparse_graph_attention(q, k, v, rowptr, col, b, 1.0 / math.sqrt(self.head_dim))
        return self.o(out.reshape(h.shape[0], -1))

    def dense(self, h: Tensor, attn_bias: Tensor) -> Tensor:
        """Attention on a padded batch ``h [B, L, dim]`` with ``attn_bias [B, 1|H, L, L]``."""
        q, k, v = (t.transpose(1, 2) for t in self.project(h))  # [B,H,L,D]
        out = self._attend(q, k, v, attn_bias)
        return self.o(out.transpose(1, 2).reshape(h.shape[0], h.shape[1], -1))

    def dense_nodes(
        self,
        h: Tensor,
        layout: DenseLayout,
        attn_bias: Tensor,
        row_valid: Tensor | None = None,
        lift_masked: bool = False,
        graph_bias: Tensor | None = None,
    ) -> Tensor:
        """:meth:`dense` on node rows ``h [N, dim]`` -> ``[N, dim]``: Q, K, V are projected per node and
        then padded (straight into the head-major layout), and O after unpadding, so no projection runs
        on padding rows (same result: padded keys are masked, padded queries dropped). ``row_valid``,
        ``lift_masked``, ``graph_bias``: see :func:`dense_attention`."""
        q, k, v = (layout.pad_heads(f(h), self.heads) for f in (self.q, self.k, self.v))
        out = self._attend(q, k, v, attn_bias, row_valid, lift_masked, graph_bias)
        return self.o(layout.unpad_heads(out))

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        attn_bias: Tensor,
        row_valid: Tensor | None = None,
        lift_masked: bool = False,
        graph_bias: Tensor | None = None,
    ) -> Tensor:
        """:func:`dense_attention` with this module's dropout, in its training mode."""
        return dense_attention(
            q,
            k,
            v,
            attn_bias,
            dropout=self.dropout,
            training=self.training,
            row_valid=row_valid,
            lift_masked=lift_masked,
            graph_bias=graph_bias,
        )
