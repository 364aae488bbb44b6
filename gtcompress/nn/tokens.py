r"""Token (node) pruning for attention: a per-layer scorer and per-graph top-k.

It lives in :mod:`gtcompress.nn`, not in :mod:`gtcompress.compress`, because a token-pruned model
runs it at inference (every layer with ``token_keep < 1`` owns a :class:`TokenSelector`), and
models and their building blocks never import compression: the dependency order is
``nn → models → compress``. Compression only drives it — :mod:`gtcompress.compress.masks` turns
on ``gumbel`` during mask training, :mod:`gtcompress.compress.materialise` sets ``keep_ratio`` — and
:mod:`gtcompress.compress.tokens` re-exports these names for its older importers.

A layer built with ``LayerSpec.token_keep = r < 1`` owns a :class:`TokenSelector`. Each graph of
the batch keeps its :math:`k_b = \max(1, \lfloor r\, n_b + 1/2 \rfloor)` highest-scoring nodes
(score :math:`s_i = w^\top h_i + b`) for that layer's attention; the other nodes are *removed* from
it — they are neither queries nor keys, their attention output is 0, so they keep their residual
stream (and, for node-level tasks, still get a prediction from the later sublayers).

**Inference (deterministic, export-friendly).** Scores are laid out as the padded ``[B, L]``
tensor, sorted per row (TopK), and the first ``L' = max_b k_b`` columns of the sort order hold
the kept tokens of a smaller padded batch ``[B, L', ·]``; attention runs there (so its cost
falls with :math:`r^2`), and each node reads its output back by its rank. A model's layers do it
on node rows (:meth:`TokenSelector.attend_nodes`: one Gather from node rows into heads and one
back); :meth:`TokenSelector.attend_dense` does it on a padded batch. The sparse (edge-list) layout
keeps the sub-graph induced by the kept nodes instead.

**Training.** Queries stay complete, keys are masked by the hard top-k (so the forward equals the
gathered one), and the attention output of node :math:`i` is multiplied by the straight-through
mask :math:`m_i = \mathrm{hard}_i + \sigma_i - \mathrm{sg}(\sigma_i)`, with
:math:`\sigma_i = \mathrm{sigmoid}((\tilde s_i - t_b)/\tau)` and :math:`t_b` half-way between the
:math:`k_b`-th and :math:`(k_b+1)`-th score of graph :math:`b`. With ``gumbel`` on (set by
:mod:`gtcompress.compress.masks` during mask training) the scores are perturbed by Gumbel noise,
:math:`\tilde s = s + G`: straight-through Gumbel top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.nn import functional as F

from gtcompress.nn.attention import dense_attention
from gtcompress.nn.layout import DenseLayout
from gtcompress.nn.mha import MultiHeadAttention

__all__ = ["PairBias", "Selection", "TokenSelector", "keep_counts", "sort_keys", "topk_per_graph"]


def keep_counts(valid: Tensor, ratio: float) -> Tensor:
    """``k_b = clamp(round_half_up(ratio · n_b), 1, n_b)`` per graph (``[B]`` int64), in integer
    arithmetic: in floating point, float32 (ONNX) and float64 (PyTorch) disagree on cases such as
    5 · 0.7 + 0.5, which would keep a different number of tokens after export."""
    n = valid.sum(dim=1)
    k = torch.div(n * _per_10k(ratio) + 5000, 10000, rounding_mode="floor").clamp(min=1)
    return torch.minimum(k, n)


def _per_10k(ratio: float) -> int:
    return round(ratio * 10000)


#: Bound on ``|quantised score| * padded length`` in a sort key: real keys stay within +-(2^61 + L),
#: above padding's -2^62 and far from int64's ends.
_KEY_RANGE = 2**61
#: The padded length the score clamp is sized for: scores are clamped to +-2^61 / 2^20 grid steps
#: (5.4e8 score units) whatever the batch's padded length up to 2^20 nodes, so that a graph keeps the
#: same tokens alone and merged with a larger one (a server merges requests). A clamp sized for the
#: batch's own length tied huge scores at a bound that moved with the largest graph of the batch.
#: Scores past it tie and go by position, as equal scores do; past 2^20 nodes the clamp tightens.
_CLAMP_LENGTH = 2**20


def _size_max(a: int, b: int) -> int:
    """``max`` of sizes that may be symbolic, without a guard; plain ``max`` for integers (a size
    ``torch.compile`` specialised), as torch 2.11's ``torch.compile`` cannot trace ``torch.sym_max``
    on two integers ("torch.* op returned non-Tensor")."""
    return max(a, b) if isinstance(a, int) and isinstance(b, int) else torch.sym_max(a, b)


def _size_min(a: int, b: int) -> int:
    """:func:`_size_max`'s ``min``."""
    return min(a, b) if isinstance(a, int) and isinstance(b, int) else torch.sym_min(a, b)


def _quantise(scores: Tensor) -> Tensor:
    """Scores on the 2^-12 grid, in float32 whatever the scores' dtype: in float16, scores * 4096
    overflows to inf from |score| >= 16 and inf's int64 cast is garbage, so the top-k kept the lowest
    scores instead."""
    return torch.round((scores if scores.dtype == torch.float32 else scores.float()) * 4096.0)


def sort_keys(quantised: Tensor, valid: Tensor) -> Tensor:
    """Distinct int64 keys ``[B, L]`` that order nodes by quantised score, then by position (lower
    first); padding below every node.

    Identical nodes can get scores an ulp apart in two GEMM implementations (PyTorch vs ONNX Runtime)
    and TopK's tie order is not specified everywhere; distinct keys on a grid make the discrete choice
    identical in eager mode, ONNX Runtime and TensorRT (TopK on INT64, K < 3840) for such ties. A grid
    has boundaries, though: a score within an ulp of one (a step's half) can round to neighbouring steps
    in two implementations, and where that decides which of two nodes is kept the answers differ (a
    2-node graph, constructed: 0.22 on outputs of 0.42; 0 of 4,000 random graphs). The position part is
    as wide as the padded length ``L`` (``q * L + L - 1 - pos``), so keys are distinct for any ``L``: a
    fixed-width part overflows into the score part once ``L`` exceeds it, and a node then takes the key
    of one a grid step below it. The score is clamped to ``+-2^61 // max(L, 2^20)`` steps so that the
    key stays within int64 (a key that wraps around ranks the highest-scoring node last) and, for
    ``L <= 2^20``, at a bound that does not depend on the batch (:data:`_CLAMP_LENGTH`).
    """
    length = quantised.shape[1]
    key = _keys(quantised, torch.arange(length, device=quantised.device).unsqueeze(0), length)
    return key.masked_fill(~valid, _PAD_KEY)


#: Padding's sort key, below every node's.
_PAD_KEY = -(2**62)


def _keys(quantised: Tensor, pos: Tensor, length: int) -> Tensor:
    """:func:`sort_keys` of nodes at positions ``pos`` of a padded length ``length``."""
    limit = _KEY_RANGE // _size_max(length, _CLAMP_LENGTH)
    # clamped in float32 (a bound rounded up by float32 is still far inside the margin), cast exactly
    q = quantised.clamp(-limit, limit).to(torch.long)
    return q * length + (length - 1 - pos)


@dataclass
class Selection:
    order: Tensor  # [B, L] positions sorted by decreasing score
    counts: Tensor  # [B] tokens kept per graph
    ranked_valid: Tensor  # [B, L] bool: column j of `order` is kept
    keep: Tensor  # [B, L] bool in original positions
    sorted_scores: Tensor  # [B, L] scores in `order` (padding at -inf)


def topk_per_graph(scores: Tensor, valid: Tensor, ratio: float) -> Selection:
    """Per-graph top-``k_b`` of padded ``scores [B, L]`` (``valid`` marks real nodes)."""
    length = scores.shape[1]
    quantised = _quantise(scores)
    order = torch.topk(sort_keys(quantised, valid), k=length, dim=1, largest=True, sorted=True).indices
    masked = (quantised / 4096.0).to(scores.dtype).masked_fill(~valid, float("-inf"))
    sorted_scores = masked.gather(1, order)
    counts = keep_counts(valid, ratio)
    ranked_valid = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0) < counts.unsqueeze(1)
    keep = torch.zeros_like(valid).scatter(1, order, ranked_valid)
    return Selection(order, counts, ranked_valid, keep, sorted_scores)


def _kept_width(length: int, ratio: float) -> int:
    """``L' = min(max(round_half_up(ratio · L), 1), L)``: the columns of the sort order that hold every
    graph's kept tokens, a function of the padded length ``L`` alone.

    Under ``torch.export`` it is an unbacked size bounded by ``1 <= L' <= L``: as an expression in ``L``
    it is 1 for small ``L`` (``L <= 2`` at ratio 0.5), and ``L`` itself at ``L = 1``, and PyTorch's shape
    functions branch on sizes being 1 or equal (contiguity, views, MatMul's batch folding). Traced as an
    expression, those branches make the export refuse every range of ``max_nodes``, or, with deferred
    runtime asserts (as ``torch.onnx.export`` runs it), give a program that raises on a batch whose
    largest graph keeps one token; an unbacked size is reasoned about without specialising on 0 or 1.
    Eager torch and ``torch.compile`` get the plain integer: ``.item()`` would break a compiled graph,
    where guards on the expression only cost a recompilation."""
    lp = _size_min(_size_max((length * _per_10k(ratio) + 5000) // 10000, 1), length)
    if not torch.compiler.is_exporting():
        return lp
    width = torch.full((), lp, dtype=torch.long).item()  # the same value, as a size export does not specialise
    torch._check(width >= 1)
    torch._check(width <= length)
    return width


def _lift_traced() -> bool:
    """Whether a token-pruned layer may lift masked scores here: in eager torch and under ``torch.export``
    (which ``torch.onnx.export(dynamo=True)`` runs: both flags are set there), not under ``torch.compile``.

    Without the lift, the kept tokens' Softmax on ONNX Runtime CPU runs mostly masked rows through float32
    denormals (``bench/HISTORY.md``). Inductor (torch 2.13, CPU) miscompiles the lift here: a computed
    value feeds a MatMul whose contraction size, the kept width, guards make 1, and its outer-product
    ``bmm`` decomposition reads past the row (``bench/HISTORY.md``, "torch.compile / inductor"). A compiled
    model needs no lift (it does not run on ONNX Runtime), so it keeps the plain softmax, the same weights
    up to the lifted terms' 1.8e-35. Dynamo of torch 2.11 reports ``is_exporting()`` under
    ``torch.compile`` too, so there the lift is compiled; 2.11's inductor has no such decomposition and
    answers as eager with it (the same section)."""
    return not torch.compiler.is_compiling() or torch.compiler.is_exporting()


class PairBias(Protocol):
    """An additive attention bias ``[B, Hb, L, L]`` handed over by what it is built from, so that a
    token-pruned layer builds it on its kept pairs only. Built whole and then narrowed, a per-head bias
    (Graphormer's) cost a layer its whole ``[B, H, L, L]`` build plus two GatherElements with expanded
    int64 indices, more than attention over the kept tokens saved on ONNX Runtime CPU."""

    def full(self) -> Tensor:
        """The whole bias ``[B, Hb, L, L]``."""
        ...

    def on_tokens(self, idx: Tensor, key_mask: Tensor) -> Tensor:
        """``full()`` on the tokens ``idx [B, L']`` (positions) on both axes plus ``key_mask [B, 1, 1, L']``
        (0 on the columns attended, ``-inf`` on the others, padding among them), ``[B, Hb, L', L']``: the
        numbers of narrowing ``full()`` and adding the mask, up to a zero's sign (the same softmax, bit for
        bit). The mask is handed in so that its Add can come where the build is cheapest."""
        ...


def _gather_bias(bias: Tensor, idx: Tensor) -> Tensor:
    """``bias [B, Hb, Lq|1, L]`` restricted to the tokens ``idx [B, L']`` on both axes."""
    b, hb, lq, _lk = bias.shape
    lp = idx.shape[1]
    out = bias.gather(3, idx[:, None, None, :].expand(b, hb, lq, lp))
    # lq is L, or a literal 1 for a per-key bias; L may be an unbacked size (a compiled model that builds
    # its layout from the batch), on which `lq > 1` cannot be decided, and the gather is right for L = 1 too
    if not statically_known_true(lq == 1):
        out = out.gather(2, idx[:, None, :, None].expand(b, hb, lp, lp))
    return out


def _head_rows(x: Tensor, heads: int) -> Tensor:
    """``[N, H*W] -> [N*H + 1, W]``: one row per (node, head), then a zero row for padding to gather."""
    w = x.shape[1] // heads
    return torch.cat([x.reshape(-1, w), x.new_zeros((1, w))])


def _project_qkv(attn: MultiHeadAttention, h: Tensor) -> Tensor:
    """``[N, H*3D]``: each head's Q, K and V side by side, by one Gemm whose weights (``attn.q``, ``k``
    and ``v`` interleaved by head) ONNX Runtime concatenates once, when it folds constants."""
    heads, d, c = attn.heads, attn.head_dim, h.shape[-1]
    lins = (attn.q, attn.k, attn.v)
    w = torch.cat([lin.weight.view(heads, d, c) for lin in lins], dim=1).view(3 * heads * d, c)
    b = None if attn.q.bias is None else torch.cat([lin.bias.view(heads, d) for lin in lins], dim=1).view(-1)
    return F.linear(h, w, b)


class TokenSelector(nn.Module):
    """Node scorer ``Linear(dim, 1)`` plus the keep ratio of its layer (see the module docstring)."""

    def __init__(self, dim: int, keep_ratio: float) -> None:
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"token keep ratio must lie in (0, 1], got {keep_ratio}")
        self.score = nn.Linear(dim, 1)
        self.keep_ratio = float(keep_ratio)
        self.gumbel = False  # stochastic Gumbel top-k while training (mask training only)
        self.tau = 1.0

    def extra_repr(self) -> str:
        return f"keep_ratio={self.keep_ratio}"

    # ------------------------------------------------------------------ selection
    def select(self, hd: Tensor, valid: Tensor) -> tuple[Selection, Tensor | None]:
        """Top-k on the padded input ``hd [B, L, d]``; in training also the straight-through
        multiplier ``[B, L]`` (``None`` at inference)."""
        scores = self.score(hd).squeeze(-1)
        if self.training and self.gumbel:
            # Noise drawn in float32: in float16 the clamp's 1e-9 is 0 and rand_like gives u = 0 once in
            # ~4096 draws, so that node's noise was -inf (and its int64 sort key garbage that ranked it first).
            u = torch.rand_like(scores, dtype=torch.float32).clamp(1e-9, 1.0 - 1e-9)
            scores = scores - torch.log(-torch.log(u)).to(scores.dtype)
        sel = topk_per_graph(scores, valid, self.keep_ratio)
        if not self.training:
            return sel, None
        srt = sel.sorted_scores.detach()
        last = (sel.counts - 1).clamp(min=0).unsqueeze(1)
        nxt = sel.counts.clamp(max=hd.shape[1] - 1).unsqueeze(1)
        kth, k1 = srt.gather(1, last), srt.gather(1, nxt)
        gap = torch.where(
            (sel.counts.unsqueeze(1) < valid.sum(1, keepdim=True)) & torch.isfinite(k1), kth - k1, torch.ones_like(kth)
        )
        thr = kth - 0.5 * gap
        soft = torch.sigmoid((scores - thr) / self.tau)
        mult = sel.keep.to(hd.dtype) + (soft - soft.detach())
        return sel, mult * valid.to(hd.dtype)

    # ------------------------------------------------------------------ attention
    def attend_dense(self, attn: MultiHeadAttention, hd: Tensor, bias: Tensor, valid: Tensor) -> Tensor:
        """``attn.dense`` over the kept tokens of ``hd [B, L, d]``; dropped tokens get 0.

        Without the masked-score lift of :func:`~gtcompress.nn.attention.dense_attention`: this form runs
        in training (complete queries, keys masked by the selection) and in tests; what models run at
        inference and export is :meth:`attend_nodes`, which lifts."""
        sel, mult = self.select(hd, valid)
        if mult is not None:  # training: complete queries, keys masked by the hard selection
            key_mask = torch.zeros_like(hd[..., 0]).masked_fill(~sel.keep, float("-inf"))
            out = attn.dense(hd, bias + key_mask[:, None, None, :])
            return out * mult.unsqueeze(-1)
        # max_b k_b = k of the largest graph, i.e. a function of the padded length alone: computed
        # from the shape rather than read from data, so an export keeps it symbolic (reading
        # counts.max() made two layers with different ratios share one data-dependent size).
        length = hd.shape[1]
        lp = _kept_width(length, self.keep_ratio)
        idx = sel.order[:, :lp]
        valid_k = sel.ranked_valid[:, :lp]
        hk = hd.gather(1, idx.unsqueeze(-1).expand(-1, -1, hd.shape[-1]))
        key_pad = torch.zeros_like(hk[..., 0]).masked_fill(~valid_k, float("-inf"))
        out_k = attn.dense(hk, _gather_bias(bias, idx) + key_pad[:, None, None, :])
        out_k = out_k * valid_k.unsqueeze(-1).to(out_k.dtype)
        out = out_k.new_zeros((hd.shape[0], hd.shape[1], out_k.shape[-1]))
        return out.scatter(1, idx.unsqueeze(-1).expand(-1, -1, out_k.shape[-1]), out_k)

    def attend_nodes(
        self,
        attn: MultiHeadAttention,
        h: Tensor,
        layout: DenseLayout,
        bias: Tensor | PairBias,
        lift_masked: bool = False,
    ) -> Tensor:
        """:meth:`attend_dense` on node rows ``h [N, d]`` of ``layout`` -> ``[N, d]``, the same answers.

        At inference the kept tokens go from node rows to heads and back by one Gather each, as
        :meth:`MultiHeadAttention.dense_nodes` pads: Q, K and V are projected per node (one Gemm) and
        gathered straight into ``[B, H, L', 3D]`` by the node each kept column holds, and each node reads
        its output row back by its rank (a zero row if it was dropped). Through the padded ``[B, L, d]``
        the same selection costs a pad, a GatherElements and a ScatterElements with ``[B, L', d]`` int64
        indices and four Transposes a layer, which make a token-pruned model slower than its dense parent
        on ONNX Runtime CPU (``bench/HISTORY.md``). A :class:`PairBias` is built on the kept pairs only.
        Training keeps :meth:`attend_dense` (complete queries).

        ``lift_masked`` (a bias that masks most pairs: GT's edges) lifts the masked scores of the kept
        tokens as :func:`~gtcompress.nn.attention.dense_attention` does, except under ``torch.compile``
        (:func:`_lift_traced`)."""
        if self.training:
            full = bias if isinstance(bias, Tensor) else bias.full()
            return layout.unpad(self.attend_dense(attn, layout.pad(h), full, layout.valid))
        n, heads, d, rows, length = h.shape[0], attn.heads, attn.head_dim, layout.num_rows, layout.max_nodes
        lp = _kept_width(length, self.keep_ratio)
        # the sort keys of topk_per_graph, made on node rows and padded with padding's key
        key = _keys(_quantise(self.score(h).squeeze(-1)), layout.pos, length)
        key = torch.cat([key, key.new_full((1,), _PAD_KEY)]).index_select(0, layout.node_at_slot(n))
        idx = torch.topk(key.view(rows, length), k=lp, dim=1, largest=True, sorted=True).indices  # [B, L']
        col = torch.arange(lp, device=h.device)
        valid_k = col.unsqueeze(0) < keep_counts(layout.valid, self.keep_ratio).unsqueeze(1)
        node_k = layout.node_at_slot(n).view(rows, length).gather(1, idx)  # [B, L'], N on padding
        hs = torch.arange(heads, dtype=torch.long, device=h.device)
        # row node * H + head of [N*H, 3D] (N*H: the zero row), for every (graph, head, kept column)
        into = (node_k.unsqueeze(1) * heads + hs.view(1, heads, 1)).clamp(max=n * heads).reshape(-1)
        qkv = _head_rows(_project_qkv(attn, h), heads).index_select(0, into).view(rows, heads, lp, 3 * d)
        q, k, v = qkv.split(d, dim=-1)
        key_pad = torch.zeros_like(valid_k, dtype=q.dtype).masked_fill(~valid_k, float("-inf"))
        key_pad = key_pad[:, None, None, :]
        kept_bias = _gather_bias(bias, idx) + key_pad if isinstance(bias, Tensor) else bias.on_tokens(idx, key_pad)
        lift = lift_masked and _lift_traced()
        out = dense_attention(q, k, v, kept_bias, dropout=attn.dropout, lift_masked=lift)  # [B, H, L', D]
        # each node's row (graph, 0, column) of the output padded with a zero column L' (dropped nodes read it)
        per_graph = heads * (lp + 1)
        base = torch.arange(rows, device=h.device).unsqueeze(1) * per_graph
        at = (base + lp).expand(rows, length).scatter(1, idx, base + torch.where(valid_k, col, lp))
        node_at = at.view(-1).gather(0, layout.slot)  # [N]
        back = (node_at.unsqueeze(1) + hs.unsqueeze(0) * (lp + 1)).reshape(-1)
        a = F.pad(out, (0, 0, 0, 1)).reshape(-1, d).index_select(0, back).view(n, heads * d)
        kept = (at < base + lp).view(-1).gather(0, layout.slot).to(a.dtype).unsqueeze(1)
        return attn.o(a) * kept  # a dropped node's attention is 0, not o's bias

    def attend_sparse(
        self, attn: MultiHeadAttention, h: Tensor, edge_index: Tensor, bias: Tensor | None, layout: DenseLayout
    ) -> Tensor:
        """``attn.sparse`` on the sub-graph induced by the kept nodes; ``layout`` is the
        :class:`~gtcompress.nn.layout.DenseLayout` of the batch (used to rank per graph)."""
        sel, mult = self.select(layout.pad(h), layout.valid)
        node_keep = layout.unpad(sel.keep.unsqueeze(-1)).squeeze(-1)
        src, dst = edge_index[0], edge_index[1]
        if mult is not None:
            emask = node_keep.index_select(0, src)
            out = attn.sparse(h, edge_index[:, emask], None if bias is None else bias[emask])
            m = layout.unpad(mult.unsqueeze(-1))
            return out * m
        kept = torch.nonzero(node_keep).squeeze(-1)
        remap = torch.cumsum(node_keep.to(torch.long), 0) - 1
        emask = node_keep.index_select(0, src) & node_keep.index_select(0, dst)
        ei_k = remap.index_select(0, edge_index[:, emask].reshape(-1)).view(2, -1)
        out_k = attn.sparse(h.index_select(0, kept), ei_k, None if bias is None else bias[emask])
        out = out_k.new_zeros((h.shape[0], out_k.shape[-1]))
        return out.scatter(0, kept.unsqueeze(-1).expand(-1, out_k.shape[-1]), out_k)
