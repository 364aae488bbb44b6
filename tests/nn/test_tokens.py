"""Token-pruned attention on node rows (``TokenSelector.attend_nodes``) against the padded path, and
Graphormer's and GT's biases built on kept pairs against the whole bias narrowed."""

import numpy as np
import pytest
import torch

from gtcompress.graph import GraphBatch
from gtcompress.models.config import FeatureSpec, LayerSpec, ModelConfig
from gtcompress.models.layers import EdgeBias, GraphormerBias
from gtcompress.models.model import build_model, shortest_path_bins
from gtcompress.nn.attention import MASK
from gtcompress.nn.layout import DenseLayout
from gtcompress.nn.mha import MultiHeadAttention
from gtcompress.nn.tokens import TokenSelector, _gather_bias
from gtcompress.preprocess.batching import union_graphs
from gtcompress.preprocess.random_graphs import random_graph

#: graphs per batch: a lone node, graphs keeping one token at every ratio, and larger ones of mixed sizes
SIZES = [(1,), (2, 1, 3), (9,), (7, 5, 9, 2), (1, 40, 17, 1, 33)]


def _bias(kind: str, lay: DenseLayout, heads: int, gen: torch.Generator) -> torch.Tensor:
    """The three biases a token-pruned layer gets: GPS's key padding ``[B,1,1,L]``, GT's edge mask
    ``[B,1,L,L]`` (MASK off the edges, rows without an edge included) and Graphormer's ``[B,H,L,L]``."""
    b, length = lay.valid.shape
    pad = torch.where(lay.valid, 0.0, MASK)[:, None, None, :]
    if kind == "key":
        return pad
    if kind == "edges":
        edges = torch.rand(b, 1, length, length, generator=gen) < 0.3
        return torch.where(edges, torch.log1p(torch.rand(b, 1, length, length, generator=gen)), MASK) + pad
    return torch.randn(b, heads, length, length, generator=gen) + pad


@pytest.mark.parametrize("kind", ["key", "edges", "heads"])
@pytest.mark.parametrize("ratio", [0.8, 0.5, 0.1])
def test_attention_on_node_rows_answers_as_the_padded_path_bit_for_bit(kind: str, ratio: float) -> None:
    """The node-row path moves kept tokens to heads and back by Gathers instead of the padded path's
    GatherElements, ScatterElements and Transposes (faster on ONNX Runtime): the same selection and the
    same numbers, dropped nodes exactly 0."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    attn, sel = MultiHeadAttention(16, 4, 4).eval(), TokenSelector(16, ratio).eval()
    for sizes in SIZES:
        batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        lay = DenseLayout.from_batch(batch, len(sizes))
        h = torch.randn(batch.shape[0], 16, generator=gen)
        bias = _bias(kind, lay, 4, gen)
        with torch.no_grad():
            ref = lay.unpad(sel.attend_dense(attn, lay.pad(h), bias, lay.valid))
            out = sel.attend_nodes(attn, h, lay, bias)
            kept = lay.unpad(sel.select(lay.pad(h), lay.valid)[0].keep.unsqueeze(-1)).squeeze(-1)
        if ratio >= 0.5:  # the same matrix products as the padded path: bit for bit
            assert torch.equal(out, ref), sizes
        else:  # the padded path projects a lone kept row of 9 as a matrix-vector product, rounded otherwise
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6, msg=str(sizes))
        assert (out[~kept] == 0).all() and (out[kept] != 0).any(), sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ratio", [0.8, 0.5, 0.1])
def test_lifting_the_masked_scores_of_kept_tokens_keeps_their_answers(dtype: torch.dtype, ratio: float) -> None:
    """GT's token-pruned layers lift masked scores before the softmax (no float32 denormals on ONNX Runtime
    CPU) and zero their weights after it: the same answers bit for bit, on lone nodes, graphs keeping one
    token and rows without any key among the kept tokens (their first node's, masked whole: zero rows)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    attn, sel = MultiHeadAttention(16, 4, 4).eval().to(dtype), TokenSelector(16, ratio).eval().to(dtype)
    for sizes in SIZES:
        batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        lay = DenseLayout.from_batch(batch, len(sizes))
        h = torch.randn(batch.shape[0], 16, generator=gen).to(dtype)
        bias = _bias("edges", lay, 4, gen)
        bias[:, :, 0, :] = MASK  # each graph's first node has no key
        with torch.no_grad():
            plain = sel.attend_nodes(attn, h, lay, bias)
            lifted = sel.attend_nodes(attn, h, lay, bias, lift_masked=True)
        assert torch.equal(lifted, plain), sizes
        assert torch.isfinite(lifted).all() and (lifted != 0).any(), sizes


def test_attention_on_node_rows_trains_as_the_padded_path() -> None:
    """In training the node-row path is the padded one (complete queries, straight-through mask)."""
    torch.manual_seed(0)
    attn, sel = MultiHeadAttention(8, 2, 4), TokenSelector(8, 0.6)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    lay = DenseLayout.from_batch(batch, 2)
    h = torch.randn(8, 8)
    bias = torch.where(lay.valid, 0.0, MASK)[:, None, None, :]
    out = sel.attend_nodes(attn, h, lay, bias)
    assert torch.equal(out, lay.unpad(sel.attend_dense(attn, lay.pad(h), bias, lay.valid)))
    out.pow(2).sum().backward()
    assert sel.score.weight.grad is not None and sel.score.weight.grad.abs().sum() > 0


def _graphormer_bias(sizes: tuple[int, ...], heads: int, edges: bool, gen: torch.Generator) -> GraphormerBias:
    """A Graphormer bias on graphs of ``sizes``: random bins (``far`` included, the padding bin in
    padding's columns), and edges with repeats (a pair with three edges sums in an order float addition
    sees) and self-loops."""
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    lay = DenseLayout.from_batch(batch, len(sizes))
    attn = MultiHeadAttention(8, heads, 4, edge_dim=8 if edges else 0, num_spd=6).eval()
    spd = torch.randint(0, 6, (len(sizes), lay.max_nodes, lay.max_nodes), generator=gen, dtype=torch.int32)
    spd = torch.where(lay.valid.unsqueeze(1), spd, 6)
    start = torch.cumsum(torch.tensor((0, *sizes)), 0)
    pairs = []
    for g, n in enumerate(sizes):
        src = torch.randint(0, n, (3 * n,), generator=gen) + start[g]
        dst = torch.randint(0, n, (3 * n,), generator=gen) + start[g]
        pairs.append(torch.stack([torch.cat([src, src[:2], src[:1]]), torch.cat([dst, dst[:2], dst[:1]])]))
    edge_index = torch.cat(pairs, dim=1)
    emb = torch.randn(edge_index.shape[1], 8, generator=gen) if edges else None
    pair_index = lay.pair_index(edge_index, batch) if edges else None
    return GraphormerBias(attn, lay, spd, edge_index, emb, pair_index)


@pytest.mark.parametrize("edges", [False, True])
def test_graphormer_bias_on_kept_tokens_is_the_whole_bias_narrowed_bit_for_bit(edges: bool) -> None:
    """A token-pruned Graphormer layer builds its bias on the kept pairs only (bins gathered before they
    are embedded, each edge summed into its kept pair) instead of building ``[B, H, L, L]`` and narrowing
    it: the same numbers, for every kept width, tokens in any order, padding and masked columns among
    them."""
    gen = torch.Generator().manual_seed(0)
    for sizes in SIZES:
        bias = _graphormer_bias(sizes, 3, edges, gen)
        with torch.no_grad():
            full = bias.full()
            length = full.shape[-1]
            for lp in sorted({1, max(1, length // 2), length}):
                idx = torch.stack([torch.randperm(length, generator=gen)[:lp] for _ in sizes])
                attended = bias.layout.valid.gather(1, idx) & (torch.rand(idx.shape, generator=gen) < 0.8)
                key_mask = torch.where(attended, 0.0, float("-inf"))[:, None, None, :]
                kept = bias.on_tokens(idx, key_mask)
                assert kept.shape == (len(sizes), 3, lp, lp)
                assert torch.equal(kept, _gather_bias(full, idx) + key_mask), (sizes, lp)
                assert (kept[..., attended[:, None, None, :].expand_as(kept)] > MASK).all()


@pytest.mark.parametrize("edges", [False, True])
def test_token_pruned_graphormer_answers_as_with_its_whole_bias_narrowed(
    monkeypatch: pytest.MonkeyPatch, edges: bool
) -> None:
    """Whole models, eager: the kept-pair bias gives the answers of the whole bias narrowed, bit for bit."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=4, ffn_dim=16, token_keep=keep) for keep in (0.8, 0.5, 0.1)]
    cfg = ModelConfig(
        arch="graphormer",
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2) if edges else None,
        out_dim=2,
        hidden=16,
        heads=4,
        layers=layers,
    )
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    graphs = [random_graph(rng, n, 4 * n, FeatureSpec("float", 3), cfg.edge_features) for n in (1, 30, 7, 64, 2)]
    batch = GraphBatch.from_numpy(union_graphs(graphs))
    with torch.no_grad():
        out = model(batch)
        monkeypatch.setattr(GraphormerBias, "on_tokens", lambda self, idx, mask: _gather_bias(self.full(), idx) + mask)
        ref = model(batch)
    assert torch.equal(out, ref)


def test_graphormer_key_padding_is_a_bin_whose_bias_is_the_mask() -> None:
    """Key padding rides in the bins (one Where for the model) instead of an Add over ``[B, H, L, L]`` a
    layer: the whole bias is the mask on padding's columns (the diagonal included) and the bins'
    embedding elsewhere, as ``embedding + key padding`` was."""
    sizes = (3, 1, 5)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    lay = DenseLayout.from_batch(batch, len(sizes))
    edge_index = torch.tensor([[0, 1, 4, 5], [1, 2, 5, 6]])
    spd = shortest_path_bins(lay.edge_counts(edge_index, batch) > 0, 2, lay.valid)
    assert spd[0].tolist() == [[0, 1, 2, 4, 4], [1, 0, 1, 4, 4], [2, 1, 0, 4, 4], [3, 3, 3, 4, 4], [3, 3, 3, 4, 4]]
    real = lay.valid.unsqueeze(1).expand_as(spd)
    assert torch.equal(spd[real], shortest_path_bins(lay.edge_counts(edge_index, batch) > 0, 2)[real])
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2, 4, num_spd=4).eval()
    with torch.no_grad():
        full = GraphormerBias(attn, lay, spd, edge_index).full()
        ref = attn.spd_bias(spd.clamp(max=3)).permute(0, 3, 1, 2) + lay.key_padding_bias()
    assert torch.equal(full, ref)
    assert (full[~lay.valid[:, None, None, :].expand_as(full)] == MASK).all()


def _edges(sizes: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Random edges within each graph of ``sizes`` with a pair of three edges, one of two, self-loops
    (random ones, and a loop's duplicate), a graph without edges (the second, where there are several)
    and nodes without an incoming edge."""
    start = torch.cumsum(torch.tensor((0, *sizes)), 0)
    pairs = []
    for g, n in enumerate(sizes):
        if g == 1:
            continue
        src = torch.randint(0, n, (2 * n,), generator=gen) + start[g]
        dst = torch.randint(0, max(1, n - 1), (2 * n,), generator=gen) + start[g]  # the last node: no key
        pairs.append(
            torch.stack([torch.cat([src, src[:2], src[:1], dst[:2]]), torch.cat([dst, dst[:2], dst[:1], dst[:2]])])
        )
    return torch.cat(pairs, dim=1) if pairs else torch.zeros((2, 0), dtype=torch.long)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gt_edge_bias_on_kept_tokens_is_the_whole_bias_narrowed_bit_for_bit(dtype: torch.dtype) -> None:
    """A token-pruned GT layer with edge features merges each edge's bias into its kept pair (log-sum-exp,
    the logarithm per edge) instead of building ``[B, H, L, L]`` and narrowing it: the same numbers, the
    mask off the edges, for every kept width, tokens in any order, padding and masked columns among them."""
    gen = torch.Generator().manual_seed(0)
    for sizes in SIZES:
        batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        lay = DenseLayout.from_batch(batch, len(sizes))
        edge_index = _edges(sizes, gen)
        bias = EdgeBias(lay, edge_index, batch, (3 * torch.randn(edge_index.shape[1], 3, generator=gen)).to(dtype))
        full = bias.full()
        length = full.shape[-1]
        for lp in sorted({1, max(1, length // 2), length}):
            idx = torch.stack([torch.randperm(length, generator=gen)[:lp] for _ in sizes])
            attended = lay.valid.gather(1, idx) & (torch.rand(idx.shape, generator=gen) < 0.8)
            key_mask = torch.where(attended, 0.0, float("-inf")).to(dtype)[:, None, None, :]
            kept = bias.on_tokens(idx, key_mask)
            assert kept.shape == (len(sizes), 3, lp, lp) and kept.dtype == dtype
            assert torch.equal(kept, _gather_bias(full, idx) + key_mask), (sizes, lp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gt_count_bias_on_kept_tokens_is_the_whole_bias_narrowed_bit_for_bit(dtype: torch.dtype) -> None:
    """Without edge features a token-pruned GT layer writes each edge's ``log(count)``, taken once per
    forward on the whole graph's pairs, at its kept pair instead of narrowing the whole ``[B, 1, L, L]``
    count bias: the same float32 numbers (the mask off the edges, ``log 3`` and ``log 2`` on duplicate
    pairs), for every kept width, tokens in any order, padding and masked columns among them, and a key
    mask in half precision promoting as it did."""
    gen = torch.Generator().manual_seed(0)
    for sizes in SIZES:
        batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        lay = DenseLayout.from_batch(batch, len(sizes))
        edge_index = _edges(sizes, gen)
        n = len(sizes) * lay.max_nodes**2
        log_counts = lay.edge_log_counts(lay.pair_index(edge_index, batch), n)[0]
        bias = EdgeBias(lay, edge_index, batch, None, log_counts)
        full = bias.full()
        counts = lay.edge_counts(edge_index, batch)
        assert torch.equal(full, lay.log_count_bias(counts)) and (counts.max() >= 3 or len(sizes) == 1)
        length = full.shape[-1]
        for lp in sorted({1, max(1, length // 2), length}):
            idx = torch.stack([torch.randperm(length, generator=gen)[:lp] for _ in sizes])
            attended = lay.valid.gather(1, idx) & (torch.rand(idx.shape, generator=gen) < 0.8)
            key_mask = torch.where(attended, 0.0, float("-inf")).to(dtype)[:, None, None, :]
            kept = bias.on_tokens(idx, key_mask)
            assert kept.shape == (len(sizes), 1, lp, lp) and kept.dtype == torch.float32
            assert torch.equal(kept, _gather_bias(full, idx) + key_mask), (sizes, lp)


def test_gt_edge_bias_on_kept_pairs_has_the_gradient_of_the_whole_bias() -> None:
    """Each pair's value is written by its edges (the logarithm taken per edge) by ``amax``, whose gradient
    the pair's edges share: a pair of three edges passes each edge its gradient once, as the whole bias's
    sum does (a plain scatter would pass it three times, once through each edge's copy)."""
    gen = torch.Generator().manual_seed(0)
    sizes = (4, 1, 5)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    lay = DenseLayout.from_batch(batch, len(sizes))
    edge_index = _edges(sizes, gen)
    per_edge = torch.randn(edge_index.shape[1], 2, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = EdgeBias(lay, edge_index, batch, per_edge)
    idx = torch.arange(lay.max_nodes).expand(len(sizes), -1)  # every token kept: on_tokens is full()
    zero = torch.zeros((len(sizes), 1, 1, lay.max_nodes), dtype=torch.float64)
    weight = torch.randn((len(sizes), 2, lay.max_nodes, lay.max_nodes), generator=gen, dtype=torch.float64)
    (grad_kept,) = torch.autograd.grad((bias.on_tokens(idx, zero).clamp(min=-1e30) * weight).sum(), per_edge)
    (grad_full,) = torch.autograd.grad((bias.full().clamp(min=-1e30) * weight).sum(), per_edge)
    assert torch.allclose(grad_kept, grad_full, rtol=1e-12, atol=1e-12)
    assert grad_full.abs().min() > 0


@pytest.mark.parametrize("level", ["graph", "node"])
@pytest.mark.parametrize("edges", [True, False])
def test_token_pruned_gt_never_builds_the_whole_bias(monkeypatch: pytest.MonkeyPatch, level: str, edges: bool) -> None:
    """Whole models, eager, on lone nodes, graphs without edges, duplicate edges, self-loops, layers keeping
    one token: the kept-pair bias gives the answers of the whole bias narrowed, bit for bit, and a GT whose
    every layer is token-pruned never builds the whole ``[B, H|1, L, L]``: neither its edge-feature bias
    nor the count bias (which nothing would read)."""
    torch.manual_seed(0)
    layers = [LayerSpec(heads=4, ffn_dim=16, token_keep=keep) for keep in (0.8, 0.5, 0.1)]
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2) if edges else None,
        out_dim=2,
        hidden=16,
        heads=4,
        layers=layers,
        task_level=level,
    )
    model = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    sizes = (1, 3, 30, 7, 64, 2)
    edge_index = _edges(sizes, gen)
    batch = GraphBatch(
        x=torch.randn(sum(sizes), 3, generator=gen),
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.shape[1], 2, generator=gen) if edges else None,
        batch=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        num_graphs=len(sizes),
    )

    def whole(*args: object) -> None:
        raise AssertionError("a token-pruned GT built a whole [B, H, L, L] bias")

    with torch.no_grad(), monkeypatch.context() as patch:
        patch.setattr(DenseLayout, "edge_bias", whole)
        patch.setattr(DenseLayout, "count_bias_and_rows", whole)
        out = model(batch)
    with torch.no_grad():
        monkeypatch.setattr(EdgeBias, "on_tokens", lambda self, idx, mask: _gather_bias(self.full(), idx) + mask)
        ref = model(batch)
    assert out.shape == (sum(sizes) if level == "node" else len(sizes), 2)
    assert torch.equal(out, ref)


def test_masked_scores_are_lifted_in_eager_and_export_but_not_under_torch_compile() -> None:
    """Inductor (torch 2.13, CPU) miscompiles the lift of a token-pruned layer's masked scores, so a
    compiled model keeps the plain softmax (``_lift_traced``); exported models, which ONNX Runtime runs,
    need the lift. The whole model compiled by inductor against eager is
    ``tests/exporters/test_torch_export.py``'s slow test; this is the switch it depends on. Torch 2.11's
    dynamo reports ``is_exporting()`` under ``torch.compile`` too, and its inductor compiles the lift
    right: there the lift stays on when compiled."""
    from gtcompress.nn.tokens import _lift_traced

    class Lifted(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1.0 if _lift_traced() else x - 1.0

    class Exporting(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1.0 if torch.compiler.is_exporting() else x - 1.0

    x = torch.zeros(3)
    assert torch.equal(Lifted()(x), x + 1)
    assert torch.equal(torch.export.export(Lifted(), (x,)).module()(x), x + 1)
    torch._dynamo.reset()
    try:
        compiled_reports_exporting = torch.equal(torch.compile(Exporting(), fullgraph=True, backend="eager")(x), x + 1)
        torch._dynamo.reset()
        lifted = torch.compile(Lifted(), fullgraph=True, backend="eager")(x)
        assert torch.equal(lifted, x + 1 if compiled_reports_exporting else x - 1)
    finally:
        torch._dynamo.reset()
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 13):
        assert not compiled_reports_exporting  # where the switch matters, it is off when compiled


def test_padding_copies_the_rows_instead_of_concatenating_a_zero_row() -> None:
    """``DenseLayout.pad`` appends its zero row with a pad, not a Concat: inductor (torch 2.11) handed a
    Concat's buffer to the FFN's MatMul while the rows written into it were still that MatMul's input,
    and a compiled token-pruned GT answered a lone 1-node graph wrong (``bench/HISTORY.md``). The traced
    padding holds no ``cat`` and gives each node's row at its slot, zeros elsewhere."""

    class Pad(torch.nn.Module):
        def forward(self, h: torch.Tensor, slot: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
            return DenseLayout.from_slots(slot, pad_mask).pad(h)

    h = torch.arange(1.0, 7.0).view(3, 2)
    slot, pad_mask = torch.tensor([0, 1, 4]), torch.tensor([[True, True, False], [True, False, False]])
    program = torch.export.export(Pad(), (h, slot, pad_mask))
    targets = {node.target for node in program.graph.nodes if node.op == "call_function"}
    assert torch.ops.aten.cat.default not in targets
    padded = program.module()(h, slot, pad_mask)
    expected = torch.zeros(2, 3, 2)
    expected.view(6, 2)[slot] = h
    assert torch.equal(padded, expected)
