"""The three graph-transformer architectures on one skeleton:
encoders → layers (see :mod:`gtcompress.models.layers`) → optional readout → MLP head."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from gtcompress.graph import GraphBatch
from gtcompress.models.config import ModelConfig
from gtcompress.models.layers import LAYER_TYPES, GraphContext, GTLayer
from gtcompress.nn.attention_edges import attention_bias, attention_mask, mask_pairs
from gtcompress.nn.blocks import FeatureEncoder, NodeBatchNorm, ScaleSafeLayerNorm, mlp_head, readout
from gtcompress.nn.fused import csr_from_edge_index
from gtcompress.nn.layout import DenseLayout, NeighbourLists
from gtcompress.preprocess.spec import Lowering, choose_lowering


class PEEncoder(nn.Module):
    """Optional BatchNorm on the raw encoding (one that takes a single-node batch, see
    :class:`~gtcompress.nn.blocks.NodeBatchNorm`), then a linear projection."""

    def __init__(self, k: int, out_dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = NodeBatchNorm(k) if norm else nn.Identity()
        self.lin = nn.Linear(k, out_dim)

    def forward(self, pe: Tensor) -> Tensor:
        return self.lin(self.norm(pe))


class GraphModel(nn.Module):
    """Shared skeleton; subclasses only say which context their layers need."""

    needs_dense: bool = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        node_width = c.hidden - c.pe_dim if c.pe_dim else c.hidden
        nf = c.node_features
        self.node_encoder = FeatureEncoder(nf.kind, nf.dim, node_width, nf.cardinalities)
        self.pe_encoders = nn.ModuleDict(
            {kind: PEEncoder(k, c.pe_dim or c.hidden, c.pe_norm) for kind, k in sorted(c.pe.items())}
        )
        ef = c.edge_features
        # Built only where a layer reads the encoding: otherwise its weights would sit unused in every
        # checkpoint and parameter count (edge_attr is still accepted, and ignored).
        self.edge_encoder = (
            FeatureEncoder(ef.kind, ef.dim, c.hidden, ef.cardinalities)
            if ef is not None and self.reads_edge_features(c)
            else None
        )
        layer_cls = LAYER_TYPES[c.arch]
        self.layers = nn.ModuleList(layer_cls(c, spec) for spec in c.layers)
        self.final_norm: nn.Module = ScaleSafeLayerNorm(c.hidden) if c.arch == "graphormer" else nn.Identity()
        self.head = mlp_head(c.hidden, c.out_dim, c.head_layers, c.head_widths)

    @staticmethod
    def reads_edge_features(config: ModelConfig) -> bool:
        """Whether some layer reads the edge encoding: by default the attention's per-head edge bias,
        which exists in the layers that keep a head."""
        return any(s.heads > 0 for s in config.layers)

    def unread_weights(self) -> tuple[str, ...]:
        """State-dict name prefixes of the modules this config leaves out because nothing reads them:
        the edge encoder (:meth:`reads_edge_features`) and a layer's ``unread_modules`` (a pre-LN
        layer's norm before a pruned sublayer). Checkpoints saved before these were left out still hold
        their weights; :func:`without_unread_weights` drops them."""
        prefixes = ["edge_encoder."] if self.config.edge_features is not None and self.edge_encoder is None else []
        for i, layer in enumerate(self.layers):
            prefixes += [f"layers.{i}.{name}." for name in layer.unread_modules()]
        return tuple(prefixes)

    # ---------------------------------------------------------------- forward
    def forward(
        self, g: GraphBatch, layout: dict[str, Tensor] | None = None, lowering: Lowering | str | None = None
    ) -> Tensor:
        return self.compute(g.x, g.edge_index, g.edge_attr, g.batch_vector, g.pe, g.num_graphs, layout, lowering)

    def compute(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None,
        batch: Tensor,
        pe: dict[str, Tensor],
        num_graphs: int,
        layout: dict[str, Tensor] | None = None,
        lowering: Lowering | str | None = None,
    ) -> Tensor:
        """Forward on plain tensors (what an exporter traces).

        ``layout`` optionally supplies the pre-computed attention layout of ``lowering`` (the input
        spec's; see :mod:`gtcompress.preprocess.layouts`); without it the model picks a lowering with
        :meth:`choose_lowering` and builds the layout from ``batch``. Either way the function
        computed is the same."""
        h = self.embed(x, edge_index, edge_attr, batch, pe, num_graphs, layout, lowering)
        if self.config.task_level == "graph":
            h = readout(h, batch, num_graphs, self.config.readout)
        return self.head(h)

    def embed(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None,
        batch: Tensor,
        pe: dict[str, Tensor],
        num_graphs: int,
        layout: dict[str, Tensor] | None = None,
        lowering: Lowering | str | None = None,
    ) -> Tensor:
        """Node embeddings after the last layer (before readout and head)."""
        h = self.encode_nodes(x, pe)
        ctx = self.context(h, edge_index, edge_attr, batch, num_graphs, layout, lowering)
        h = self.add_structure(h, ctx)
        for layer in self.layers:
            h = layer(h, ctx)
        return self.final_norm(h)

    def encode_nodes(self, x: Tensor, pe: dict[str, Tensor]) -> Tensor:
        h = self.node_encoder(x)
        for kind, enc in self.pe_encoders.items():
            if kind not in pe:
                raise ValueError(f"model expects positional encoding {kind!r} (pe keys given: {sorted(pe)})")
            p = enc(pe[kind].to(h.dtype))
            h = torch.cat([h, p], dim=-1) if self.config.pe_dim else h + p
        return h

    def context(
        self,
        h: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None,
        batch: Tensor,
        num_graphs: int,
        layout: dict[str, Tensor] | None = None,
        lowering: Lowering | str | None = None,
    ) -> GraphContext:
        """Everything the layers share: encoded edges, the attention layout, structural biases."""
        edge_emb = None
        if self.edge_encoder is not None:
            if edge_attr is None:
                raise ValueError("model was built with edge features but edge_attr is None")
            edge_emb = self.edge_encoder(edge_attr)
        if lowering is not None:
            self._check_attention_dropout(Lowering(lowering))
        if layout is not None:
            if lowering is None:
                raise ValueError("a supplied layout needs its lowering (the input spec's InputSpec.lowering)")
            ctx = GraphContext(edge_index, batch, num_graphs, Lowering(lowering), edge_emb)
            apply_layout(ctx, layout)
        else:
            low = Lowering(lowering) if lowering is not None else self.choose_lowering(edge_index, batch, num_graphs)
            ctx = GraphContext(edge_index, batch, num_graphs, low, edge_emb)
            build_layout(ctx, h.shape[0], dense=self.needs_dense)
        if self.needs_dense and ctx.layout is None:
            raise ValueError(f"{self.config.arch} needs the dense layout (node_slot, pad_mask)")
        self.prepare(ctx, h.dtype)
        return ctx

    def _check_attention_dropout(self, lowering: Lowering) -> None:
        """Refuse a GT forward that is handed the ``plugin`` lowering while attention dropout is active.

        The fused op has no attention dropout. :meth:`choose_lowering` keeps a training GT off it, but a
        lowering passed in (``model(batch, lowering="plugin")``, or ``compute`` with a CSR layout) skipped
        that rule: the model trained silently without the ``attn_dropout`` its config asks for, while
        every other lowering applies it."""
        if (
            lowering is Lowering.PLUGIN
            and self.config.arch == "gt"
            and self.training
            and self.config.attn_dropout > 0
            and any(s.heads > 0 for s in self.config.layers)
        ):
            raise ValueError(
                f"the plugin lowering (the fused op) has no attention dropout, but attn_dropout="
                f"{self.config.attn_dropout} is active in training; train on the scatter, padded or dense "
                "lowering (or run plugin in eval mode)"
            )

    @property
    def token_pruned(self) -> bool:
        """Whether some attention layer keeps only part of its tokens (then only the dense layout applies)."""
        return any(s.heads > 0 and s.token_keep < 1.0 for s in self.config.layers)

    def choose_lowering(self, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Lowering:
        """The lowering when none is supplied: ``config.attention_layout`` if it names one, else
        :func:`gtcompress.preprocess.spec.choose_lowering` for this device and batch.

        Traced by ``torch.compile``, a GT on CPU takes the rule's ``compiled`` choice instead of reading the
        batch's sizes: a choice made on data cannot be traced with ``fullgraph=True``.

        The fused op has no attention dropout, so while dropout on the attention weights is active
        (training with ``attn_dropout > 0``) a GT on CUDA takes the rule for eager torch instead, and
        a ``"fused"`` layout named for it is refused: it would train without the dropout configured."""
        named = _NAMED_LAYOUTS.get(self.config.attention_layout)
        attn_dropout = self.training and self.config.attn_dropout > 0
        if named is Lowering.PLUGIN and attn_dropout:
            raise ValueError(
                f"attention_layout 'fused' has no attention dropout, but attn_dropout={self.config.attn_dropout} "
                "is active in training; use 'auto', 'sparse' or 'dense' to train (or 'fused' in eval mode)"
            )
        if named is not None:
            return named
        if self.config.arch != "gt" or self.token_pruned or (edge_index.is_cuda and not attn_dropout):
            return choose_lowering(self.config.arch, token_pruned=self.token_pruned, device=edge_index.device.type)
        if torch.compiler.is_compiling():
            return choose_lowering("gt", compiled=True)
        counts = torch.bincount(batch, minlength=num_graphs)
        max_nodes = int(counts.max()) if counts.numel() else 0
        return choose_lowering("gt", sizes=(num_graphs, max_nodes, int(edge_index.shape[1])))

    def prepare(self, ctx: GraphContext, dtype: torch.dtype) -> None:
        """Architecture-specific additions to a context whose layout is set (none by default); float
        biases are built in ``dtype``, the activations'. Each model builds only what its layers read."""

    def add_structure(self, h: Tensor, ctx: GraphContext) -> Tensor:
        """Hook for architecture-specific structural input encodings (identity by default)."""
        return h


def without_unread_weights(model: GraphModel, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` less the tensors of modules that ``model``'s config leaves out because nothing reads
    them (:meth:`GraphModel.unread_weights`); every other tensor stays, to be checked as it is."""
    prefixes = model.unread_weights()
    expected = model.state_dict().keys()
    return {k: v for k, v in state.items() if k in expected or not k.startswith(prefixes)}


#: ``ModelConfig.attention_layout`` values that name a lowering ("auto" asks the rule).
_NAMED_LAYOUTS = {"sparse": Lowering.SCATTER, "dense": Lowering.DENSE, "fused": Lowering.PLUGIN}


def apply_layout(ctx: GraphContext, layout: dict[str, Tensor]) -> None:
    """Install the pre-computed layout tensors of ``ctx.lowering`` (names as in
    :mod:`gtcompress.preprocess.layouts`); models with global attention also get their per-graph
    padded layout, which their input spec always carries."""
    if "pad_mask" in layout:
        ctx.layout = DenseLayout.from_slots(layout["node_slot"], layout["pad_mask"])
    if ctx.lowering is Lowering.PADDED:
        if "nbr_inv" in layout:  # degree buckets: nbr_{node,src,edge,mask}_b and the inverse order
            buckets = []
            while f"nbr_src_{len(buckets)}" in layout:
                b = len(buckets)
                buckets.append(tuple(layout[f"nbr_{what}_{b}"] for what in ("node", "src", "edge", "mask")))
            ctx.nbr = NeighbourLists(buckets, layout["nbr_inv"])
        else:  # one bucket, nodes in order (an input spec with buckets = 0)
            ctx.nbr = NeighbourLists([(None, layout["nbr_src"], layout["nbr_edge"], layout["nbr_mask"])])
    elif ctx.lowering is Lowering.PLUGIN:
        ctx.csr = (layout["rowptr"], layout["col"], layout["perm"])


def build_layout(ctx: GraphContext, num_nodes: int, dense: bool) -> None:
    """Build the layout of ``ctx.lowering`` from the batch (no layout supplied); ``dense``: the model
    needs the per-graph padded layout whatever its lowering (global attention)."""
    if ctx.lowering is Lowering.DENSE or dense:
        ctx.layout = DenseLayout.from_batch(ctx.batch, ctx.num_graphs)
    if ctx.lowering is Lowering.PLUGIN:
        ctx.csr = csr_from_edge_index(ctx.edge_index, num_nodes)
    elif ctx.lowering is Lowering.PADDED:
        raise ValueError(
            "the padded lowering needs its neighbour lists supplied (gtcompress.preprocess.inputs.build_inputs)"
        )


class GraphTransformer(GraphModel):
    """Dwivedi & Bresson (2020) sparse graph transformer: attention over input edges only.

    Its attention can run on four layouts computing the same function: scatter (reference),
    dense per-graph padding, neighbour lists, or the fused op on CSR, and dispatches on the
    context's :class:`~gtcompress.preprocess.spec.Lowering`. Without a supplied layout,
    ``attention_layout="auto"`` asks :func:`~gtcompress.preprocess.spec.choose_lowering`: the fused
    op on a CUDA device (the Triton kernel, which reads each edge's K/V row once and balances work by
    edges) and, on CPU, dense when the padded score matrix is at most
    :data:`~gtcompress.preprocess.spec.TORCH_DENSE_FACTOR` times the edge count: on small dense
    graphs (SBMs, molecules) batched MatMuls beat gather/scatter by an order of magnitude there.
    """

    def prepare(self, ctx: GraphContext, dtype: torch.dtype) -> None:
        # Once per forward, shared by the layers, and only what they read: each edge's pair and, where a layer
        # reads edge features, the first edge of its pair (what the layers' log-sum-exp groups by); a dense layer
        # the whole log-count bias and which rows have edges, a token-pruned one without edge features each
        # edge's log-count, which it writes at its kept pairs (in training it builds the whole bias for itself).
        # Built for no reader, the whole [B, 1, L, L] float32 bias and counts would cost eager torch time and memory.
        if ctx.lowering is not Lowering.DENSE:
            return
        lay = ctx.layout
        assert lay is not None
        attending = [layer for layer in self.layers if isinstance(layer, GTLayer) and layer.attn is not None]
        if not attending:
            return
        n = lay.num_cells
        ctx.pair_index = lay.pair_index(ctx.edge_index, ctx.batch)
        if any(layer.reads_edge_features(ctx) for layer in attending):
            ctx.pair_first = lay.first_of_pair(ctx.pair_index, n)
        if any(layer.tokens is None for layer in attending):
            ctx.edge_dense, ctx.edge_rows = lay.count_bias_and_rows(ctx.edge_index, ctx.batch, ctx.pair_index)
        if any(layer.tokens is not None and not layer.reads_edge_features(ctx) for layer in attending):
            ctx.edge_log_counts = lay.edge_log_counts(ctx.pair_index, n)[0]


class GPS(GraphModel):
    """GraphGPS: local MPNN + global attention per layer."""

    needs_dense = True

    @staticmethod
    def reads_edge_features(config: ModelConfig) -> bool:
        """GPS's attention has no edge bias: only GINE's messages read the edge encoding."""
        return config.local_conv == "gine"

    def prepare(self, ctx: GraphContext, dtype: torch.dtype) -> None:
        if self.config.local_conv == "gin" and ctx.layout is not None:
            # GIN's sum over incoming edges as one batched MatMul with the edge-count matrix: on
            # dense small graphs far cheaper than a ScatterElements over E x hidden (ONNX Runtime).
            ctx.adj_counts = ctx.layout.edge_counts(ctx.edge_index, ctx.batch)
        # The attention inputs are built only where a layer attends: ``gtc prune`` may remove every
        # attention sublayer, and a sparsified GPS's [B, L, L] mask and bias then held 11 B a padded
        # cell in eager torch that no layer read, while the server's memory count (no heads: 0 B a
        # cell) let requests of any size through.
        if all(layer.attn is None for layer in self.layers):
            return
        assert ctx.layout is not None
        if self.config.attention_topk == 0:  # complete-graph attention: only the key padding is masked
            ctx.pad_bias = ctx.layout.key_padding_bias(dtype)
            return
        # TEDDY on attention edges (gtcompress.nn.attention_edges)
        c = self.config
        mask = attention_mask(ctx.edge_index, ctx.batch, ctx.layout, c.attention_topk, c.attention_score,
                              counts=ctx.adj_counts)  # fmt: skip
        if ctx.lowering is Lowering.DENSE:
            # The sparsified graph as a mask on the padded attention GPS has anyway: a few batched
            # MatMuls. Run over its pairs (Gather + ScatterElements), the same function took 5-14x
            # the dense GPS's time on ONNX Runtime CPU and 5x in eager torch (bench/HISTORY.md).
            ctx.attn_bias, ctx.attn_rows = attention_bias(mask, ctx.layout, dtype)
        if ctx.lowering is not Lowering.DENSE or self.token_pruned:
            # the pair path: attention_layout "sparse"/"fused", and token-pruned layers (kept tokens only)
            ctx.attn_edges = mask_pairs(mask, ctx.layout)


class Graphormer(GraphModel):
    """Graphormer-style: full attention per graph, shortest-path bias, degree encoding."""

    needs_dense = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.in_degree = nn.Embedding(config.max_degree + 1, config.hidden)
        self.out_degree = nn.Embedding(config.max_degree + 1, config.hidden)

    def prepare(self, ctx: GraphContext, dtype: torch.dtype) -> None:
        """Shortest-path bins and edge pairs for the attention biases, only when some layer attends.

        A model whose every attention sublayer was pruned away reads neither, but computing them
        costs ``max_spd`` MatMuls of ``[B, L, L]`` and several such buffers: eager torch (the torch
        backend of ``gtc serve``) spent seconds and hundreds of MiB per large graph on them, outside
        the server's dense-attention limit (0 heads: no limit), while the ONNX export drops them."""
        assert ctx.layout is not None
        if all(layer.attn is None for layer in self.layers):
            return
        ctx.pair_index = ctx.layout.pair_index(ctx.edge_index, ctx.batch)
        # key padding as one more bin, whose embedding is the mask (GraphormerBias): set once for the model
        # instead of one Add of the key padding over [B, H, L, L] a layer
        adj = ctx.layout.edge_counts(ctx.edge_index, ctx.batch) > 0
        ctx.spd = shortest_path_bins(adj, self.config.max_spd, ctx.layout.valid)

    def add_structure(self, h: Tensor, ctx: GraphContext) -> Tensor:
        n, cap = h.shape[0], self.config.max_degree
        ones = torch.ones(ctx.edge_index.shape[1], dtype=torch.long, device=h.device)
        indeg = torch.zeros(n, dtype=torch.long, device=h.device).scatter_add(0, ctx.edge_index[1], ones)
        outdeg = torch.zeros(n, dtype=torch.long, device=h.device).scatter_add(0, ctx.edge_index[0], ones)
        return h + self.in_degree(indeg.clamp(max=cap)) + self.out_degree(outdeg.clamp(max=cap))


def shortest_path_bins(adj: Tensor, max_spd: int, key_valid: Tensor | None = None) -> Tensor:
    """Hop distance ``[B,L,L]`` on the undirected graph by repeated boolean matrix products,
    clipped: ``0..max_spd`` for reachable pairs, ``max_spd + 1`` for farther or unreachable ones, and,
    given ``key_valid [B, L]``, ``max_spd + 2`` in the columns of padding (no edge reaches them).
    Needs no pre-processing input and exports as plain MatMuls.

    A pair's clipped distance is the number of hop counts ``0..max_spd`` within which it is not yet
    reached, ``max_spd + 1`` less the sum of its reach indicators: one float32 Add a hop (exact on
    small integers), where setting each hop's bins in an int64 tensor took a Where and a filled
    tensor a hop, the largest part of a large batch's distances on ONNX Runtime CPU. The bins are
    int32 (an embedding's indices either way): they are held through every layer, at half int64's bytes."""
    a = (adj | adj.transpose(1, 2)).float()
    reach = torch.eye(adj.shape[-1], device=adj.device, dtype=torch.float32).expand_as(a)
    if key_valid is not None:  # padding is not even its own neighbour: never reached, one bin further
        reach = reach * key_valid.unsqueeze(1).to(torch.float32)
    reached = reach
    for _ in range(max_spd):
        reach = ((torch.matmul(reach, a) + reach) > 0).float()
        reached = reached + reach
    far = max_spd + 1
    if key_valid is not None:
        far = (far + 1) - key_valid.unsqueeze(1).to(torch.float32)
    return (far - reached).to(torch.int32)


MODEL_TYPES: dict[str, type[GraphModel]] = {"gt": GraphTransformer, "gps": GPS, "graphormer": Graphormer}


def build_model(config: ModelConfig) -> GraphModel:
    """Instantiate the architecture named by ``config.arch``."""
    return MODEL_TYPES[config.arch](config)
