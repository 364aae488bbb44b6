"""Transformer layers of the three architectures, built from the same sublayers.

Every layer exposes the same handles, which is all compression needs to find its axes:

* ``layer.attn`` — :class:`~gtcompress.nn.mha.MultiHeadAttention` or ``None`` (removed);
* ``layer.ffn`` — :class:`~gtcompress.nn.blocks.FeedForward` or ``None`` (removed);
* ``layer.spec`` — the :class:`~gtcompress.models.config.LayerSpec` it was built from.

A removed sublayer contributes nothing: the residual stream passes through (post-norm layers still
apply their norm, which in eval mode is a cheap affine map). This is also what a closed layer gate
computes, so materialising a gated model reproduces it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gtcompress.models.config import LayerSpec, ModelConfig
from gtcompress.nn.attention import mask_value
from gtcompress.nn.blocks import FeedForward, make_norm
from gtcompress.nn.layout import DenseLayout, NeighbourLists
from gtcompress.nn.mha import MultiHeadAttention
from gtcompress.nn.mpnn import GINEConv, gin_mlp
from gtcompress.nn.tokens import PairBias, TokenSelector
from gtcompress.preprocess.spec import Lowering


@dataclass
class GraphContext:
    """Per-forward quantities shared by all layers (computed once, not per layer)."""

    edge_index: Tensor
    batch: Tensor
    num_graphs: int
    lowering: Lowering  # how GT's edge attention is laid out (the layers dispatch on it)
    edge_emb: Tensor | None = None
    layout: DenseLayout | None = None
    pad_bias: Tensor | None = None  # [B,1,1,L] key padding: GPS's complete-graph attention (only there)
    spd: Tensor | None = None  # [B,L,L] int32 shortest-path bins (graphormer; see shortest_path_bins)
    pair_index: Tensor | None = None  # [E] flattened (b, dst, src) index of each edge (graphormer; GT in dense layout)
    pair_first: Tensor | None = (
        None  # [E] first edge of each edge's pair: GT's per-edge biases (DenseLayout.first_of_pair)
    )
    edge_dense: Tensor | None = None  # [B,1,L,L] log edge multiplicity (MASK: no edge): GT attention in dense layout
    edge_rows: Tensor | None = None  # [B,1,L,1] 1.0 where a node has an incoming edge (rows of edge_dense)
    edge_log_counts: Tensor | None = None  # [E] log of each edge's pair count: token-pruned GT without edge features
    adj_counts: Tensor | None = None  # [B,L,L] edge multiplicity (dst, src): GPS's GIN aggregation as a MatMul
    nbr: NeighbourLists | None = None  # (degree-bucketed) neighbour lists: GT padded layout
    csr: tuple[Tensor, Tensor, Tensor] | None = None  # (rowptr, col, perm): GT plugin layout
    attn_edges: Tensor | None = None  # [2, E'] sparsified global attention graph (gps attention_topk)
    attn_bias: Tensor | None = None  # [B,1,L,L] that graph as a dense bias (MASK off it; DENSE lowering)
    attn_rows: Tensor | None = None  # [B,1,L,1] 1.0 on real nodes: the rows of attn_bias that attend


@dataclass
class GraphormerBias:
    """Graphormer's per-head bias ``[B, H, L, L]`` (shortest-path bins embedded per head and, with edge
    features, each direct edge's per-head bias summed per (dst, src) pair) as a
    :class:`~gtcompress.nn.tokens.PairBias`: a token-pruned layer builds it on its kept pairs only, by
    narrowing the small inputs (the int32 bins, the edges' pairs) before embedding. Key padding is a bin
    of its own (``num_spd``, set by :func:`~gtcompress.models.model.shortest_path_bins`) whose embedding
    is the mask: the padding costs the model one Where on the bins instead of an Add over ``[B, H, L, L]``
    a layer (the same numbers: a bias plus the mask rounds to the mask)."""

    attn: MultiHeadAttention
    layout: DenseLayout
    spd: Tensor  # [B, L, L] int32 bins, the padding bin (num_spd) in padding's columns
    edge_index: Tensor  # [2, E]
    edge_emb: Tensor | None = None  # [E, d]; None: no edge bias
    pair_index: Tensor | None = None  # [E] flattened (b, dst, src) of each edge

    def _table(self) -> Tensor:
        """The bins' embedding with the padding bin's row, the mask, appended."""
        assert self.attn.spd_bias is not None
        w = self.attn.spd_bias.weight
        return torch.cat([w, w.new_full((1, w.shape[1]), mask_value(w.dtype))])

    def _edge_bias(self) -> Tensor | None:
        if self.attn.edge_bias is None or self.edge_emb is None or self.pair_index is None:
            return None
        return self.attn.edge_bias(self.edge_emb)  # [E, H]

    def full(self) -> Tensor:
        """The whole ``[B, H, L, L]``, as a dense layer attends with it."""
        lay = self.layout
        bias = F.embedding(self.spd, self._table()).permute(0, 3, 1, 2)
        eb = self._edge_bias()
        if eb is not None:
            assert self.pair_index is not None
            flat = eb.new_zeros((lay.num_cells, eb.shape[1]))
            flat = flat.scatter_add(0, self.pair_index.unsqueeze(-1).expand_as(eb), eb)
            bias = bias + flat.view(lay.num_rows, lay.max_nodes, lay.max_nodes, -1).permute(0, 3, 1, 2)
        return bias

    def on_tokens(self, idx: Tensor, key_mask: Tensor) -> Tensor:
        """``full()`` on the tokens ``idx [B, L']`` on both axes plus ``key_mask`` (see
        :meth:`~gtcompress.nn.tokens.PairBias.on_tokens`): the bins of the kept pairs are gathered (one
        int32 each) and embedded, and each edge's bias is summed into its kept pair (edges with an end
        outside ``idx`` into a spare row), in the order the whole build sums them; the two are added before
        their one Transpose into heads."""
        assert self.attn.spd_bias is not None
        lay = self.layout
        rows, length, lp = lay.num_rows, lay.max_nodes, idx.shape[1]
        at = (idx * length).unsqueeze(2) + idx.unsqueeze(1)  # [B, L', L'] (dst, src) in a row's L*L bins
        spd = self.spd.reshape(rows, -1).gather(1, at.reshape(rows, -1)).view(rows, lp, lp)
        bias = F.embedding(spd, self._table())  # [B, L', L', H]
        eb = self._edge_bias()
        if eb is not None:
            spare = rows * lp * lp
            pair = lay.kept_pair_index(self.edge_index, idx)  # [E]: spare for an edge with an end not kept
            flat = eb.new_zeros((spare + 1, eb.shape[1])).scatter_add(0, pair.unsqueeze(-1).expand_as(eb), eb)
            bias = bias + flat[:spare].view(rows, lp, lp, -1)
        if bias.shape[-1] == 1:
            # one head (a head-pruned layer): the Transpose's layout checks on [B, L', L', 1] guard on the kept
            # width (an unbacked size under torch.export) and failed the export; the same values, unsqueezed
            return bias.squeeze(-1).unsqueeze(1) + key_mask
        return bias.permute(0, 3, 1, 2) + key_mask


@dataclass
class EdgeBias:
    """GT's graph bias as a :class:`~gtcompress.nn.tokens.PairBias`: each edge's per-head bias ``[E, H]``
    merged per (dst, src) pair by log-sum-exp, the mask off the edges; without edge features (``bias``
    None) the head-shared ``log(count)`` of each pair's edges, the log-sum-exp of zero biases. A
    token-pruned layer builds it on its kept pairs only, ``[B, H|1, L', L']`` from the edges with both ends
    kept, instead of the whole ``[B, H|1, L, L]`` on per-graph padding narrowed by two GatherElements with
    expanded int64 indices (which, with the selection, kept a GT without edge features slower than its
    dense parent on ONNX Runtime CPU; ``bench/HISTORY.md``)."""

    layout: DenseLayout
    edge_index: Tensor  # [2, E]
    batch: Tensor  # [N]
    bias: Tensor | None  # [E, H]; None: no edge features
    log_counts: Tensor | None = None  # [E] float32 log of each edge's pair count (edge_log_counts): bias None
    pair: Tensor | None = None  # [E] DenseLayout.pair_index, taken once per forward (None: taken here)
    first: Tensor | None = None  # [E] DenseLayout.first_of_pair of it: the merge's tables per edge, not per pair

    def full(self) -> Tensor:
        """The whole ``[B, H|1, L, L]``, as a dense layer attends with it."""
        if self.bias is None:
            return self.layout.count_bias_and_rows(self.edge_index, self.batch, self.pair)[0]
        return self.layout.edge_bias(self.edge_index, self.batch, self.bias, self.pair, self.first)

    def on_tokens(self, idx: Tensor, key_mask: Tensor) -> Tensor:
        """``full()`` on the tokens ``idx [B, L']`` on both axes plus ``key_mask`` (see
        :meth:`~gtcompress.nn.tokens.PairBias.on_tokens`): each edge merged into its kept pair (edges with
        an end outside ``idx`` into a spare row), the logarithm taken per edge."""
        rows, lp = self.layout.num_rows, idx.shape[1]
        spare = rows * lp * lp
        pair = self.layout.kept_pair_index(self.edge_index, idx)
        if self.bias is None:
            assert self.log_counts is not None
            return self.layout.count_bias_at(pair, self.log_counts, spare + 1)[:spare].view(rows, 1, lp, lp) + key_mask
        heads = self.bias.shape[1]
        kept = self.layout.edge_bias_at(pair, self.bias, spare + 1, self.first)[:spare]
        # one head: a view, not a permute, whose strides torch.export then cannot decide a layout of
        # (a guard on the kept width L', an unbacked size, refused the export)
        kept = kept.view(rows, 1, lp, lp) if heads == 1 else kept.view(rows, lp, lp, heads).permute(0, 3, 1, 2)
        return kept + key_mask


class _Layer(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: LayerSpec, edge_bias: bool, num_spd: int = 0) -> None:
        super().__init__()
        self.spec = spec
        d = cfg.hidden
        self.attn = (
            MultiHeadAttention(
                d, spec.heads, cfg.head_dim, cfg.attn_dropout, edge_dim=d if edge_bias else 0, num_spd=num_spd
            )
            if spec.heads > 0
            else None
        )
        activation = "gelu" if cfg.arch == "graphormer" else "relu"
        self.ffn = FeedForward(d, spec.ffn_dim, activation, cfg.dropout) if spec.ffn_dim > 0 else None
        self.drop = nn.Dropout(cfg.dropout)
        # Token pruning (gtcompress.nn.tokens): only layers with token_keep < 1 own a scorer,
        # so dense checkpoints are unchanged.
        self.tokens = TokenSelector(d, spec.token_keep) if spec.heads > 0 and spec.token_keep < 1.0 else None

    def unread_modules(self) -> tuple[str, ...]:
        """Names of the modules this layer leaves out because nothing would read them (see
        :meth:`gtcompress.models.model.GraphModel.unread_weights`)."""
        return ()

    def _dense(
        self,
        h: Tensor,
        lay: DenseLayout,
        bias: Tensor | PairBias,
        row_valid: Tensor | None = None,
        graph_mask: bool = False,
        graph_bias: Tensor | None = None,
    ) -> Tensor:
        """Attention of node rows ``h [N, d]`` on the padded layout; with token pruning over the kept
        tokens only (0 elsewhere), which ranks nodes per padded graph. ``graph_mask``: ``bias`` masks
        the pairs off an attention graph (most of them), not only padding, so the softmax lifts masked
        scores (``lift_masked`` of :func:`~gtcompress.nn.attention.dense_attention`; over kept tokens too,
        but not under ``torch.compile``: see :meth:`~gtcompress.nn.tokens.TokenSelector.attend_nodes`);
        ``graph_bias``, the head-shared bias of that graph where ``bias`` is per head (its ``graph_bias``).
        A :class:`~gtcompress.nn.tokens.PairBias` is built whole here, on the kept pairs with token pruning."""
        assert self.attn is not None
        if self.tokens is None:
            full = bias if isinstance(bias, Tensor) else bias.full()
            return self.attn.dense_nodes(h, lay, full, row_valid, lift_masked=graph_mask, graph_bias=graph_bias)
        return self.tokens.attend_nodes(self.attn, h, lay, bias, lift_masked=graph_mask)


class GTLayer(_Layer):
    """Dwivedi & Bresson (2020): attention over the input edges, post-norm (BatchNorm), FFN.

    Edge features enter as a per-head additive score bias ``W e_ji``.
    """

    def __init__(self, cfg: ModelConfig, spec: LayerSpec) -> None:
        super().__init__(cfg, spec, edge_bias=cfg.edge_features is not None)
        self.norm_attn = make_norm(cfg.norm, cfg.hidden)
        self.norm_ffn = make_norm(cfg.norm, cfg.hidden)

    def reads_edge_features(self, ctx: GraphContext) -> bool:
        """Whether this layer's attention biases its scores by the edges' features (else by their counts)."""
        return self.attn is not None and self.attn.edge_bias is not None and ctx.edge_emb is not None

    def forward(self, h: Tensor, ctx: GraphContext) -> Tensor:
        if self.attn is not None:
            bias = None
            if self.reads_edge_features(ctx):
                assert self.attn.edge_bias is not None and ctx.edge_emb is not None
                bias = self.attn.edge_bias(ctx.edge_emb)
            # The same function on the context's lowering (see GraphTransformer); with token pruning,
            # attention among the kept nodes only.
            if ctx.lowering is Lowering.DENSE and self.tokens is not None:
                assert ctx.layout is not None  # the bias on the kept pairs: nothing reads it whole
                edges = EdgeBias(
                    ctx.layout, ctx.edge_index, ctx.batch, bias, ctx.edge_log_counts, ctx.pair_index, ctx.pair_first
                )
                a = self._dense(h, ctx.layout, edges, graph_mask=True)
            elif ctx.lowering is Lowering.DENSE:
                lay = ctx.layout
                assert lay is not None and ctx.edge_dense is not None
                if bias is None:
                    dense_bias = ctx.edge_dense
                else:
                    dense_bias = EdgeBias(
                        lay, ctx.edge_index, ctx.batch, bias, None, ctx.pair_index, ctx.pair_first
                    ).full()
                graph = None if bias is None else ctx.edge_dense  # one zeroing mask a cell, not one a head
                a = self._dense(h, lay, dense_bias, ctx.edge_rows, graph_mask=True, graph_bias=graph)
            elif self.tokens is not None:
                lay = ctx.layout if ctx.layout is not None else DenseLayout.from_batch(ctx.batch, ctx.num_graphs)
                a = self.tokens.attend_sparse(self.attn, h, ctx.edge_index, bias, lay)
            elif ctx.lowering is Lowering.PLUGIN:
                assert ctx.csr is not None
                a = self.attn.fused(h, ctx.csr, bias)
            elif ctx.lowering is Lowering.PADDED:
                assert ctx.nbr is not None
                a = self.attn.padded(h, ctx.nbr, bias)
            else:
                a = self.attn.sparse(h, ctx.edge_index, bias)
            h = h + self.drop(a)
        h = self.norm_attn(h)
        if self.ffn is not None:
            h = h + self.ffn(h)
        return self.norm_ffn(h)


class GPSLayer(_Layer):
    """GraphGPS (Rampášek et al. 2022), laid out like PyG's ``GPSConv``:
    ``norm1(h + MPNN(h)) + norm2(h + Attn(h))``, then ``norm3(out + FFN(out))``.
    Global attention runs over all nodes of the same graph (padded dense layout); sparsified
    (``attention_topk``), over the same layout with the pairs off the attention graph masked, or,
    on the ``scatter``/``plugin`` lowerings and in token-pruned layers, over the graph's pairs."""

    def __init__(self, cfg: ModelConfig, spec: LayerSpec) -> None:
        super().__init__(cfg, spec, edge_bias=False)
        d = cfg.hidden
        self.local = (
            None
            if cfg.local_conv == "none"
            else GINEConv(gin_mlp(d), use_edges=cfg.local_conv == "gine", edge_dim=cfg.gine_edge_dim or None)
        )
        self.norm_local = make_norm(cfg.norm, d) if self.local is not None else None
        self.norm_attn = make_norm(cfg.norm, d)
        self.norm_ffn = make_norm(cfg.norm, d)

    def forward(self, h: Tensor, ctx: GraphContext) -> Tensor:
        out = torch.zeros_like(h)
        if self.local is not None:
            assert self.norm_local is not None
            dense = (ctx.layout, ctx.adj_counts) if ctx.adj_counts is not None and ctx.layout is not None else None
            out = out + self.norm_local(h + self.drop(self.local(h, ctx.edge_index, ctx.edge_emb, dense)))
        a = h
        if self.attn is not None and self.tokens is None and ctx.attn_bias is not None:  # sparsified, dense layout
            assert ctx.layout is not None
            a = h + self.drop(self._dense(h, ctx.layout, ctx.attn_bias, ctx.attn_rows, graph_mask=True))
        elif self.attn is not None and ctx.attn_edges is not None:  # sparsified, over its pairs
            if self.tokens is None:
                att = self.attn.sparse(h, ctx.attn_edges)
            else:
                assert ctx.layout is not None
                att = self.tokens.attend_sparse(self.attn, h, ctx.attn_edges, None, ctx.layout)
            a = h + self.drop(att)
        elif self.attn is not None:
            assert ctx.layout is not None and ctx.pad_bias is not None
            a = h + self.drop(self._dense(h, ctx.layout, ctx.pad_bias))
        out = out + self.norm_attn(a)
        if self.ffn is not None:
            out = out + self.ffn(out)
        return self.norm_ffn(out)


class GraphormerLayer(_Layer):
    """Graphormer-style (Ying et al. 2021): pre-LN, full attention within each graph with a learned
    per-head bias for the shortest-path distance and for direct edges' features."""

    def __init__(self, cfg: ModelConfig, spec: LayerSpec) -> None:
        super().__init__(cfg, spec, edge_bias=cfg.edge_features is not None, num_spd=cfg.max_spd + 2)
        # Pre-LN: each norm feeds its sublayer only, so a pruned sublayer takes its norm with it (a
        # post-norm layer, GT's or GPS's, applies its norms to the residual stream whatever it keeps).
        self.norm_attn = make_norm(cfg.norm, cfg.hidden) if self.attn is not None else None
        self.norm_ffn = make_norm(cfg.norm, cfg.hidden) if self.ffn is not None else None

    def unread_modules(self) -> tuple[str, ...]:
        return tuple(name for name, mod in (("norm_attn", self.attn), ("norm_ffn", self.ffn)) if mod is None)

    def forward(self, h: Tensor, ctx: GraphContext) -> Tensor:
        if self.attn is not None:
            assert ctx.layout is not None and ctx.spd is not None
            assert self.norm_attn is not None
            bias = GraphormerBias(self.attn, ctx.layout, ctx.spd, ctx.edge_index, ctx.edge_emb, ctx.pair_index)
            h = h + self.drop(self._dense(self.norm_attn(h), ctx.layout, bias))
        if self.ffn is not None:
            assert self.norm_ffn is not None
            h = h + self.ffn(self.norm_ffn(h))
        return h


LAYER_TYPES: dict[str, type[_Layer]] = {"gt": GTLayer, "gps": GPSLayer, "graphormer": GraphormerLayer}
