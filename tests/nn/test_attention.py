import math

import pytest
import torch

from gtcompress.nn.attention import MASK, dense_attention, sparse_attention
from gtcompress.nn.layout import DenseLayout


def brute_force(q, k, v, edge_index, bias=None):
    """Loop-per-destination restatement of the documented semantics."""
    n, _, d = q.shape
    out = torch.zeros_like(q)
    for i in range(n):
        idx = (edge_index[1] == i).nonzero().flatten()
        if idx.numel() == 0:
            continue
        src = edge_index[0, idx]
        s = (q[i].unsqueeze(0) * k[src]).sum(-1) / math.sqrt(d)  # [deg, H]
        if bias is not None:
            s = s + bias[idx]
        a = torch.softmax(s, dim=0)
        out[i] = (a.unsqueeze(-1) * v[src]).sum(0)
    return out


def _case(n: int, e: int, h: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(n, h, d, generator=g, dtype=torch.float64) for _ in range(3))
    ei = torch.randint(0, n, (2, e), generator=g)
    if e:
        ei = torch.cat([ei, ei[:, :2], torch.tensor([[0], [0]])], dim=1)  # duplicates + a self-loop
    bias = torch.randn(ei.shape[1], h, generator=g, dtype=torch.float64)
    return q, k, v, ei, bias


@pytest.mark.parametrize(("n", "e", "h", "d"), [(1, 0, 1, 4), (1, 1, 2, 8), (7, 12, 2, 4), (30, 90, 4, 16)])
def test_sparse_matches_brute_force(n: int, e: int, h: int, d: int) -> None:
    q, k, v, ei, bias = _case(n, e, h, d, seed=n + e)
    ref = brute_force(q, k, v, ei, bias)
    out = sparse_attention(q, k, v, ei, bias)
    assert torch.allclose(out, ref, atol=1e-10)


def test_isolated_node_gets_zero_and_duplicates_count_twice() -> None:
    q = torch.zeros(3, 1, 2)
    k = torch.zeros(3, 1, 2)
    v = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[5.0, 5.0]]])
    ei = torch.tensor([[0, 1, 1], [2, 2, 2]])  # node 2 <- 0 once, <- 1 twice; nodes 0,1 isolated
    out = sparse_attention(q, k, v, ei)
    assert torch.allclose(out[2, 0], torch.tensor([1 / 3, 2 / 3]))
    assert torch.equal(out[:2], torch.zeros(2, 1, 2))


def test_dense_layout_matches_sparse_with_duplicates() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = [5, 1, 9, 3]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    ptr = [0, 5, 6, 15, 18]
    edges = []
    for b in range(4):
        n = sizes[b]
        ei = torch.randint(0, n, (2, 3 * n), generator=g) + ptr[b]
        edges.append(torch.cat([ei, ei[:, :1]], dim=1))
    ei = torch.cat(edges, dim=1)
    n, h, d = 18, 2, 8
    q, k, v = (torch.randn(n, h, d, generator=g, dtype=torch.float64) for _ in range(3))
    ref = sparse_attention(q, k, v, ei)
    lay = DenseLayout.from_batch(batch, 4)
    bias = torch.log(lay.edge_counts(ei, batch)).to(torch.float64)[:, None]

    def pad(t):
        return lay.pad(t.reshape(n, -1)).view(4, lay.max_nodes, h, d).transpose(1, 2)

    out = dense_attention(pad(q), pad(k), pad(v), bias)
    out = lay.unpad(out.transpose(1, 2).reshape(4, lay.max_nodes, -1)).view(n, h, d)
    assert torch.allclose(out, ref, atol=1e-10)


def test_dense_per_edge_bias_is_the_log_sum_exp_of_each_pairs_edges_with_their_gradient() -> None:
    """``edge_bias`` with per-edge biases: each pair's edges merged by log-sum-exp (a pair of three edges,
    of two, self-loops, a lone node, an edgeless graph), the mask where no edge, and the gradient of each
    edge its own once (each pair is written by all its edges: a plain scatter would pass it once per
    edge); dense attention with it is sparse attention over the edge instances, values and gradients."""
    g = torch.Generator().manual_seed(0)
    sizes = [5, 1, 4, 3]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    ei = torch.tensor([[0, 0, 0, 1, 1, 2, 3, 6, 7, 8, 6], [1, 1, 1, 1, 2, 0, 3, 7, 6, 8, 7]])  # graph 3: edgeless
    n, h, d = 13, 2, 4
    q, k, v = (torch.randn(n, h, d, generator=g, dtype=torch.float64) for _ in range(3))
    per_edge = (3 * torch.randn(ei.shape[1], h, generator=g, dtype=torch.float64)).requires_grad_(True)
    lay = DenseLayout.from_batch(batch, 4)
    bias = lay.edge_bias(ei, batch, per_edge)
    ref = torch.full_like(bias, MASK)
    pos = lay.pos
    for b, dst, src in {(int(batch[j]), int(j), int(i)) for i, j in ei.t()}:
        at = ((ei[1] == dst) & (ei[0] == src)).nonzero().flatten()
        ref[b, :, pos[dst], pos[src]] = torch.logsumexp(per_edge[at], dim=0)
    assert torch.allclose(bias, ref, rtol=1e-14, atol=0) and torch.equal(bias == MASK, ref == MASK)
    weight = torch.randn(bias.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((bias * weight).sum(), per_edge, retain_graph=True)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), per_edge, retain_graph=True)
    assert torch.allclose(grad, grad_ref, rtol=1e-12, atol=1e-14) and grad.abs().min() > 0

    def pad(t):
        return lay.pad(t.reshape(n, -1)).view(4, lay.max_nodes, h, d).transpose(1, 2)

    out = dense_attention(pad(q), pad(k), pad(v), bias)
    out = lay.unpad(out.transpose(1, 2).reshape(4, lay.max_nodes, -1)).view(n, h, d)
    sparse = sparse_attention(q, k, v, ei, per_edge)
    has_edge = torch.zeros(n, dtype=torch.bool).index_fill(0, ei[1], True)  # dense gives edgeless rows their mean
    assert torch.allclose(out[has_edge], sparse[has_edge], atol=1e-12)
    (grad,) = torch.autograd.grad((out[has_edge] * v[has_edge]).sum(), per_edge)
    (grad_ref,) = torch.autograd.grad((sparse[has_edge] * v[has_edge]).sum(), per_edge)
    assert torch.allclose(grad, grad_ref, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_merging_by_each_pairs_first_edge_writes_what_tables_over_every_pair_write(dtype: torch.dtype) -> None:
    """``first_of_pair`` names each pair's first edge; ``edge_bias_at`` with it (its log-sum-exp tables per edge,
    not per pair) writes the same bits, NaN, infinities and the mask included, with the same gradient; with a
    coarser index too (a token-pruned layer's spare row for the edges with an end dropped)."""
    pair = torch.tensor([5, 2, 5, 5, 0, 2, 7, 3, 3])
    first = DenseLayout.first_of_pair(pair, 9)
    assert first.tolist() == [0, 1, 0, 0, 4, 1, 6, 7, 7]
    coarse = torch.where(pair >= 5, 9, pair)  # pairs 5 and 7 dropped to the spare row 9
    g = torch.Generator().manual_seed(0)
    for variant in ("plain", "nan", "+inf", "-inf", "all -inf in a pair", "huge"):
        bias = 30 * torch.randn(9, 3, generator=g, dtype=torch.float64)
        if variant == "nan":
            bias[0, 0] = math.nan
        elif variant == "+inf":
            bias[2, 1] = math.inf
        elif variant == "-inf":
            bias[1, 2] = -math.inf
        elif variant == "all -inf in a pair":
            bias[7:] = -math.inf
        elif variant == "huge":
            bias[:, 0] = -1e30
        bias = bias.to(dtype).requires_grad_(dtype in (torch.float64, torch.float32))
        for index, n, rows in ((pair, 9, 9), (coarse, 10, 9)):
            per_pair = DenseLayout.edge_bias_at(index, bias, n)[:rows]
            per_edge = DenseLayout.edge_bias_at(index, bias, n, first)[:rows]
            assert per_edge.dtype == dtype and torch.equal(per_edge.isnan(), per_pair.isnan()), variant
            assert torch.equal(per_edge.nan_to_num(7.0), per_pair.nan_to_num(7.0)), variant
            if bias.requires_grad:
                weight = torch.randn(per_pair.shape, generator=g, dtype=dtype)
                (grad_pair,) = torch.autograd.grad((per_pair.clamp(min=-1e4) * weight).sum(), bias)
                (grad_edge,) = torch.autograd.grad((per_edge.clamp(min=-1e4) * weight).sum(), bias)
                assert torch.equal(grad_edge.nan_to_num(7.0), grad_pair.nan_to_num(7.0)), variant


@pytest.mark.parametrize("heads", [1, 3])
def test_dense_per_edge_bias_is_written_head_major(heads: int) -> None:
    """``edge_bias`` writes the ``[B, H, L, L]`` the attention adds, contiguous (each edge at its cell of each
    head), not ``[B, L, L, H]`` transposed, which cost a Transpose over every cell a layer in ONNX Runtime; the
    values are ``edge_bias_at``'s, the mask where no edge, with or without the pairs and first edges given."""
    g = torch.Generator().manual_seed(2)
    sizes = [5, 1, 4, 3]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    ei = torch.tensor([[0, 0, 0, 1, 1, 2, 3, 6, 7, 8, 6], [1, 1, 1, 1, 2, 0, 3, 7, 6, 8, 7]])
    per_edge = 3 * torch.randn(ei.shape[1], heads, generator=g)
    lay = DenseLayout.from_batch(batch, 4)
    pair = lay.pair_index(ei, batch)
    n = 4 * lay.max_nodes**2
    ref = DenseLayout.edge_bias_at(pair, per_edge, n).view(4, lay.max_nodes, lay.max_nodes, heads).permute(0, 3, 1, 2)
    for bias in (
        lay.edge_bias(ei, batch, per_edge),
        lay.edge_bias(ei, batch, per_edge, pair, lay.first_of_pair(pair, n)),
    ):
        assert bias.shape == (4, heads, lay.max_nodes, lay.max_nodes) and bias.is_contiguous()
        assert torch.equal(bias, ref) and int((bias > MASK).sum()) == 8 * heads  # 8 pairs of 11 edges


def test_gradients_flow_through_sparse_attention() -> None:
    q, k, v, ei, bias = _case(6, 10, 2, 4, seed=3)
    q.requires_grad_(True)
    sparse_attention(q, k, v, ei, bias).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def _padded_case(dtype=torch.float64):
    """Four graphs (sizes 5, 1, 9, 3) with duplicates, self-loops, isolated nodes and an edgeless graph."""
    g = torch.Generator().manual_seed(1)
    sizes = [5, 1, 9, 3]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    edges = torch.tensor([[0, 0, 1, 1, 2, 3], [1, 1, 1, 2, 0, 3]])  # 0->1 twice, self-loops 1->1, 3->3
    edges = torch.cat([edges, torch.randint(0, 9, (2, 12), generator=g) + 6, torch.tensor([[6], [6]])], dim=1)
    n, h, d = 18, 2, 8
    q, k, v = (torch.randn(n, h, d, generator=g, dtype=dtype) for _ in range(3))
    lay = DenseLayout.from_batch(batch, 4)

    def pad(t):
        return lay.pad(t.reshape(n, -1)).view(4, lay.max_nodes, h, d).transpose(1, 2)

    def unpad(t):
        return lay.unpad(t.transpose(1, 2).reshape(4, lay.max_nodes, -1)).view(n, h, d)

    return q, k, v, edges, batch, lay, pad, unpad


def test_dense_fast_path_with_row_mask_matches_sparse() -> None:
    """The exported GT path: finite MASK bias built once, rows without edges zeroed by ``row_valid``."""
    q, k, v, ei, batch, lay, pad, unpad = _padded_case()
    counts = lay.edge_counts(ei, batch)
    bias, rows = lay.log_count_bias(counts), lay.rows_with_edges(counts)
    assert torch.isfinite(bias).all()
    bias_e, rows_e = lay.count_bias_and_rows(ei, batch)  # the per-edge-log variant the model uses
    assert torch.equal(bias_e, bias) and torch.equal(rows_e, rows)
    out = unpad(dense_attention(pad(q), pad(k), pad(v), bias, row_valid=rows))
    ref = sparse_attention(q, k, v, ei)
    assert torch.allclose(out, ref, atol=1e-10)
    isolated = torch.ones(18, dtype=torch.bool)
    isolated[ei[1]] = False
    assert isolated.any() and torch.equal(out[isolated], torch.zeros_like(out[isolated]))


def test_head_major_padding_is_pad_then_transpose_and_inverts() -> None:
    """``pad_heads`` gathers straight into ``[B,H,L,D]`` (zeros on padding); ``unpad_heads`` undoes it."""
    q, _, _, _, _, lay, pad, _ = _padded_case()
    n, h, d = q.shape
    x = q.reshape(n, h * d)
    got = lay.pad_heads(x, h)
    assert torch.equal(got, pad(q))
    assert torch.equal(got.transpose(1, 2)[~lay.valid], torch.zeros((int((~lay.valid).sum()), h, d), dtype=q.dtype))
    assert torch.equal(lay.unpad_heads(got), x)
    assert torch.equal(lay.pad_heads(x[:, :d], 1), lay.pad(q[:, 0]).unsqueeze(1))  # one head: its own indices


def test_dense_key_padding_bias_is_complete_graph_attention() -> None:
    """GPS's per-key bias (folded into the score MatMul) equals sparse attention over all pairs of a graph."""
    q, k, v, _, batch, lay, pad, unpad = _padded_case()
    pairs = torch.cat(
        [torch.cartesian_prod(idx, idx).T for b in range(4) for idx in [(batch == b).nonzero().flatten()]], dim=1
    )
    out = unpad(dense_attention(pad(q), pad(k), pad(v), lay.key_padding_bias(torch.float64)))
    assert torch.allclose(out, sparse_attention(q, k, v, pairs), atol=1e-10)


@pytest.mark.parametrize("key_bias", [False, True])
def test_dense_gradients_are_finite_with_padding_and_isolated_nodes(key_bias: bool) -> None:
    q, k, v, ei, batch, lay, pad, unpad = _padded_case(torch.float32)
    for t in (q, k, v):
        t.requires_grad_(True)
    bias = lay.key_padding_bias() if key_bias else lay.edge_bias(ei, batch)
    out = unpad(dense_attention(pad(q), pad(k), pad(v), bias))
    out.square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def _neighbour_lists(ei: torch.Tensor, n: int, buckets: int | None):
    from gtcompress.nn.layout import NeighbourLists
    from gtcompress.preprocess.layouts import bucketed_layout, padded_layout

    if buckets is None:  # the single-bucket layout of models exported before degree buckets
        lay = {k: torch.from_numpy(v) for k, v in padded_layout(ei.numpy(), n).items()}
        return NeighbourLists([(None, lay["nbr_src"], lay["nbr_edge"], lay["nbr_mask"])])
    lay = {k: torch.from_numpy(v) for k, v in bucketed_layout(ei.numpy(), n, buckets).items()}
    parts = [tuple(lay[f"nbr_{w}_{b}"] for w in ("node", "src", "edge", "mask")) for b in range(buckets)]
    return NeighbourLists(parts, lay["nbr_inv"])


def _padded(q, k, v, nbr, bias=None):
    from gtcompress.nn.attention import padded_attention

    outs = []
    for node, src, edge, mask in nbr.buckets:
        qb = q if node is None else q[node]
        outs.append(padded_attention(qb, k, v, src, mask, None if bias is None else bias[edge]))
    return outs[0] if nbr.inv is None else torch.cat(outs)[nbr.inv]


@pytest.mark.parametrize("buckets", [None, 1, 2, 3, 4, 8])
@pytest.mark.parametrize(
    ("n", "e", "h", "d"), [(1, 0, 1, 4), (1, 1, 2, 8), (2, 0, 2, 4), (7, 12, 2, 4), (30, 90, 4, 16), (60, 40, 3, 4)]
)
def test_padded_matches_sparse(buckets, n: int, e: int, h: int, d: int) -> None:
    """Degree-bucketed neighbour lists vs the reference: duplicates, self-loops, isolated nodes (zero
    rows), one node, no edges, more buckets than distinct degrees (dummy rows)."""
    q, k, v, ei, bias = _case(n, e, h, d, seed=n + e)
    nbr = _neighbour_lists(ei, n, buckets)
    for b in (None, bias) if e else (None,):
        ref = sparse_attention(q, k, v, ei, b)
        assert torch.allclose(_padded(q, k, v, nbr, b), ref, atol=1e-10)
    if e:
        assert torch.allclose(_padded(q, k, v, nbr, bias), brute_force(q, k, v, ei, bias), atol=1e-10)


def test_padded_skewed_degrees_float32() -> None:
    """A hub with in-degree 200 among degree-1..3 nodes, float32: within 1e-5 of the reference."""
    g = torch.Generator().manual_seed(5)
    n, h, d = 300, 4, 16
    hub = torch.stack([torch.randint(0, n, (200,), generator=g), torch.zeros(200, dtype=torch.long)])
    rest = torch.stack([torch.randint(0, n, (400,), generator=g), torch.randint(1, 150, (400,), generator=g)])
    ei = torch.cat([hub, rest, rest[:, :20]], dim=1)
    q, k, v = (torch.randn(n, h, d, generator=g) for _ in range(3))
    bias = torch.randn(ei.shape[1], h, generator=g)
    ref = sparse_attention(q, k, v, ei, bias)
    for buckets in (1, 2, 4):
        out = _padded(q, k, v, _neighbour_lists(ei, n, buckets), bias)
        assert (out - ref).abs().max() <= 1e-5
        assert torch.equal(out[150:], torch.zeros_like(out[150:]))  # no incoming edge -> zeros


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("buckets", [None, 1, 3, 4])
def test_multihead_padded_matches_sparse(buckets, with_bias: bool) -> None:
    """The module's folded padded path (keys/values through one gathered ``h``) equals its sparse path:
    edge bias, duplicates, self-loops, isolated nodes, linears with and without bias terms."""
    from gtcompress.nn.mha import MultiHeadAttention

    torch.manual_seed(0)
    for n, e, heads in [(1, 0, 2), (1, 2, 1), (2, 0, 3), (40, 90, 4), (80, 50, 3)]:
        m = MultiHeadAttention(24, heads, 8, edge_dim=3, bias=with_bias).double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.normal_()
        h = torch.randn(n, 24, dtype=torch.float64)
        _, _, _, ei, _ = _case(n, e, 1, 1, seed=n)
        bias = torch.randn(ei.shape[1], heads, dtype=torch.float64) if ei.shape[1] else None
        ref = m.sparse(h, ei, bias)
        out = m.padded(h, _neighbour_lists(ei, n, buckets), bias)
        assert torch.allclose(out, ref, atol=1e-9), (n, e, (out - ref).abs().max())


def test_multihead_padded_applies_attention_dropout_in_training() -> None:
    """The folded padded path drops attention weights in training (as the sparse path does), and
    only there."""
    from gtcompress.nn.mha import MultiHeadAttention

    torch.manual_seed(0)
    n, e = 40, 160
    m = MultiHeadAttention(16, 2, 8, dropout=0.5).double()
    h = torch.randn(n, 16, dtype=torch.float64)
    _, _, _, ei, _ = _case(n, e, 1, 1, seed=3)
    nbr = _neighbour_lists(ei, n, 2)
    m.eval()
    ref = m.sparse(h, ei)
    assert torch.allclose(m.padded(h, nbr), ref, atol=1e-9)
    m.train()
    assert not torch.allclose(m.padded(h, nbr), ref, atol=1e-3)


@pytest.mark.parametrize("buckets", [None, 2])
def test_multihead_padded_drops_the_value_bias_with_its_weights(buckets, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folded padded path added ``W_o b_v`` whole to every row with edges, as if the weights still
    summed to 1 after attention dropout: with ``attn_dropout=1`` it returned ``o.bias + W_o b_v`` where
    the sparse path (``sum alpha' (W_v h + b_v)``) returns ``o.bias``, and at 0.5 its outputs varied
    about a third as much. Under the same dropped weights both paths now compute the same function."""
    from gtcompress.nn.mha import MultiHeadAttention

    torch.manual_seed(0)
    n, e = 40, 160
    m = MultiHeadAttention(16, 2, 8, dropout=1.0).double().train()
    with torch.no_grad():
        m.v.bias.normal_()
    h = torch.randn(n, 16, dtype=torch.float64)
    _, _, _, ei, _ = _case(n, e, 1, 1, seed=3)
    nbr = _neighbour_lists(ei, n, buckets)
    everything_dropped = m.o.bias.expand(n, -1)
    assert torch.allclose(m.sparse(h, ei), everything_dropped, atol=1e-12)
    assert torch.allclose(m.padded(h, nbr), everything_dropped, atol=1e-12)

    # a deterministic stand-in for dropout, the same in both layouts: head 0 dropped, head 1 doubled
    # (heads are dim 1 of the sparse [E,H] and of the padded [R,H,K] weights)
    def per_head(x: torch.Tensor, p: float = 0.5, training: bool = False, inplace: bool = False) -> torch.Tensor:
        return x * torch.tensor([0.0, 2.0], dtype=x.dtype).view(1, 2, *[1] * (x.dim() - 2))

    monkeypatch.setattr(torch.nn.functional, "dropout", per_head)
    m.dropout = 0.5
    assert torch.allclose(m.padded(h, nbr), m.sparse(h, ei), atol=1e-9)
    m.eval()  # no dropout: the folded constant, unchanged
    assert torch.allclose(m.padded(h, nbr), m.sparse(h, ei), atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_reference_softmax_over_a_hub_of_70000_edges(dtype: torch.dtype) -> None:
    """The reference (the scatter lowering's attention) summed a node's exp terms in float16: past
    65,504 incoming edges the sum overflowed and the hub's output was exactly 0. Equal scores, v = 1: 1."""
    e = 70_000
    n = e + 1
    ei = torch.stack([torch.arange(1, n), torch.zeros(e, dtype=torch.long)])  # every node -> node 0
    q = torch.zeros(n, 1, 4, dtype=dtype)
    v = torch.ones(n, 1, 4, dtype=dtype)
    out = sparse_attention(q, q, v, ei)
    assert out.dtype == dtype
    torch.testing.assert_close(out[0].float(), torch.ones(1, 4), atol=4e-3, rtol=0)
    assert torch.equal(out[1:], torch.zeros_like(out[1:]))


@pytest.mark.parametrize("buckets", [None, 1])
def test_masks_hold_for_scores_beyond_1e30(buckets) -> None:
    """float32 scores past -1e30 (features of 1e16 give q·k near 1e32 before any norm): the dense
    and neighbour-list layouts still weigh only real edges. Their mask was -1e30 added to the score, so
    a non-edge scoring +1e32 kept 9.9e31 and took all the weight from edges scoring -1e32: a finite
    answer that no check of the output could catch, different from the scatter and plugin lowerings."""
    ei = torch.tensor([[1, 2, 0, 1, 2], [0, 0, 1, 1, 1]])  # node 0 <- 1, 2; node 1 <- 0, 1, 2; node 2: none
    q = torch.tensor([1e16, 1.0, 1.0]).view(3, 1, 1)
    k = torch.tensor([1e16, -1e16, -2e16]).view(3, 1, 1)  # node 0's edges score -1e32, -2e32; 0 -> 0 is +1e32
    v = torch.tensor([100.0, 1.0, 2.0]).view(3, 1, 1)
    ref = sparse_attention(q, k, v, ei, scale=1.0)
    assert ref[0].item() == 1.0  # all of node 0's weight on its higher-scoring edge, from node 1
    batch = torch.zeros(3, dtype=torch.long)
    lay = DenseLayout.from_batch(batch, 1)
    counts = lay.edge_counts(ei, batch)

    def pad(t):
        return lay.pad(t.reshape(3, -1)).view(1, lay.max_nodes, 1, 1).transpose(1, 2)

    def unpad(t):
        return lay.unpad(t.transpose(1, 2).reshape(1, lay.max_nodes, -1)).view(3, 1, 1)

    bias, rows = lay.count_bias_and_rows(ei, batch)
    dense = unpad(dense_attention(pad(q), pad(k), pad(v), bias, scale=1.0, row_valid=rows))
    assert torch.equal(dense, ref)
    # lifted masked scores: the floor keeps its gap at 1e32, where 80 below the row maximum would round back to it
    dense = unpad(dense_attention(pad(q), pad(k), pad(v), bias, scale=1.0, row_valid=rows, lift_masked=True))
    assert torch.equal(dense, ref)
    dense = unpad(dense_attention(pad(q), pad(k), pad(v), lay.log_count_bias(counts), scale=1.0))
    assert torch.equal(dense, ref)
    from gtcompress.nn.attention import padded_attention

    nbr = _neighbour_lists(ei, 3, buckets)  # node 0's row has a padding slot (source 0, scoring +1e32)
    outs = [padded_attention(q if node is None else q[node], k, v, src, mask, scale=1.0)
            for node, src, _, mask in nbr.buckets]  # fmt: skip
    padded = outs[0] if nbr.inv is None else torch.cat(outs)[nbr.inv]
    assert torch.equal(padded, ref)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lifting_masked_scores_keeps_the_weights(per_head: bool, dtype: torch.dtype) -> None:
    """``lift_masked`` (GT's edges, GPS's sparsified graph on the dense lowering) lifts masked scores to
    80 below their row's largest before the softmax, so that ONNX Runtime's exp computes no denormals:
    same answer as the plain softmax, bit for bit here, rows without keys 0, gradients finite and equal."""
    g = torch.Generator().manual_seed(3)
    b, h, length, d = 3, 4, 24, 8
    q, k, v = (torch.randn(b, h, length, d, generator=g).to(dtype).requires_grad_(True) for _ in range(3))
    shape = (b, h if per_head else 1, length, length)
    keep = torch.rand(shape, generator=g) < 0.15  # an attention graph: most pairs masked
    keep[:, :, -4:] = False  # rows without keys (padding, nodes without incoming edge)
    keep[0, :, :-4, 0] = True  # some rows with one key only
    bias = torch.where(keep, torch.randn(shape, generator=g), torch.tensor(float("-inf")))
    outs, grads = [], []
    for lift in (False, True):
        out = dense_attention(q, k, v, bias, lift_masked=lift)
        out.float().square().sum().backward()
        outs.append(out)
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    assert outs[1].dtype == dtype and torch.isfinite(outs[1]).all()
    assert torch.equal(outs[1], outs[0])
    assert torch.equal(outs[1][:, :, -4:], torch.zeros_like(outs[1][:, :, -4:]))
    for got, ref in zip(grads[1], grads[0], strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref, rtol=0, atol=0 if dtype is torch.float32 else 1e-3)


def _overflow_case():
    """float32: node 0 <- 0 scores q·k = -1e40, past the range (-inf), beside a finite edge 1 -> 0; nodes 1
    and 2 score finitely; node 3 has no incoming edge."""
    ei = torch.tensor([[0, 1, 0, 2, 1, 2], [0, 0, 1, 1, 2, 2]])
    q = torch.tensor([1e20, 1.0, -1.0, 0.5]).view(4, 1, 1)
    k = torch.tensor([-1e20, 2.0, 3.0, 0.0]).view(4, 1, 1)
    v = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1)
    return ei, q, k, v


def _layout_outputs(ei, q, k, v):
    """The attention of every layout, keyed by name: scatter, dense (three bias forms), neighbour lists."""
    from gtcompress.nn.attention import padded_attention

    n = q.shape[0]
    batch = torch.zeros(n, dtype=torch.long)
    lay = DenseLayout.from_batch(batch, 1)

    def pad(t):
        return lay.pad(t.reshape(n, -1)).view(1, lay.max_nodes, 1, 1).transpose(1, 2)

    def unpad(t):
        return lay.unpad(t.transpose(1, 2).reshape(1, lay.max_nodes, -1)).view(n, 1, 1)

    bias, rows = lay.count_bias_and_rows(ei, batch)
    outs = {"scatter": sparse_attention(q, k, v, ei, scale=1.0)}
    outs["dense"] = unpad(dense_attention(pad(q), pad(k), pad(v), bias, scale=1.0, row_valid=rows))
    outs["dense lifted"] = unpad(
        dense_attention(pad(q), pad(k), pad(v), bias, scale=1.0, row_valid=rows, lift_masked=True)
    )
    log_bias = lay.log_count_bias(lay.edge_counts(ei, batch))
    outs["dense log-count"] = unpad(dense_attention(pad(q), pad(k), pad(v), log_bias, scale=1.0))
    for buckets in (None, 2):
        parts = [padded_attention(q if node is None else q[node], k, v, src, mask, scale=1.0)
                 for node, src, _, mask in _neighbour_lists(ei, n, buckets).buckets]  # fmt: skip
        inv = _neighbour_lists(ei, n, buckets).inv
        outs[f"padded {buckets}"] = parts[0] if inv is None else torch.cat(parts)[inv]
    return outs


def test_an_overflowed_score_makes_its_node_nan_in_every_layout() -> None:
    """A score past float32's range is lost (a sum that overflowed to -inf may stand for any value), so
    its node answers NaN, which the runtime refuses, in every layout. The softmax weighed -inf as 0: node
    0 took all of its weight from node 1, a finite answer no check of the output could catch (a model on
    the padded lowering answered features of 1e25 and 1e30 31-71 % off its float64 value). Other nodes
    keep their answers, and a node without incoming edges its 0."""
    ei, q, k, v = _overflow_case()
    for name, out in _layout_outputs(ei, q, k, v).items():
        assert torch.isnan(out[0]).all(), name
        assert torch.isfinite(out[1:]).all(), name
        assert out[3].item() == 0.0, name
        # node 1 <- 0 (-1e20) and 2 (-3.0): all of its weight on node 2; node 2 <- 1 (1.0), 2 (0.0)
        assert out[1].item() == 3.0, name
        expected = (2.0 * math.exp(1.0) + 3.0) / (math.exp(1.0) + 1.0)
        assert out[2].item() == pytest.approx(expected, rel=1e-6), name


@pytest.mark.parametrize("first", [False, True])
def test_a_duplicated_edge_whose_bias_overflowed_makes_its_node_nan_on_the_dense_layout(first: bool) -> None:
    """Node 1 takes edge 0 -> 1 twice; one copy's per-edge bias overflowed to -inf (an edge feature past what
    the edge encoder computes in float32). The reference answers NaN there; the dense layout merged the copies
    by log-sum-exp, where the -inf copy weighed 0 beside the finite one, and answered finitely (the node's
    value without that edge instance: a 200 no check of the output could catch). Other nodes keep their
    answers, in both merges (per pair and per first edge)."""
    ei = torch.tensor([[0, 0, 2, 1, 3], [1, 1, 1, 2, 0]])
    n, heads = 4, 2
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, heads, 3, generator=g) for _ in range(3))
    bias = torch.randn(ei.shape[1], heads, generator=g)
    bias[1, 0] = float("-inf")
    ref = sparse_attention(q, k, v, ei, bias)
    assert torch.isnan(ref[1, 0]).all() and torch.isfinite(ref[[0, 2, 3]]).all()
    batch = torch.zeros(n, dtype=torch.long)
    lay = DenseLayout.from_batch(batch, 1)
    pair = lay.pair_index(ei, batch)
    dense_bias = lay.edge_bias(ei, batch, bias, pair, lay.first_of_pair(pair, lay.num_cells) if first else None)
    at = DenseLayout.edge_bias_at(pair, bias, lay.num_cells, lay.first_of_pair(pair, lay.num_cells) if first else None)
    assert torch.isnan(at[pair[0], 0]) and torch.isfinite(at[pair[2]]).all()

    def pad(t):
        return lay.pad(t.reshape(n, -1)).view(1, lay.max_nodes, heads, 3).transpose(1, 2)

    rows = DenseLayout.rows_with_edges(lay.edge_counts(ei, batch))
    out = dense_attention(pad(q), pad(k), pad(v), dense_bias, row_valid=rows, lift_masked=True)
    out = lay.unpad(out.transpose(1, 2).reshape(1, lay.max_nodes, -1)).view(n, heads, 3)
    assert torch.isnan(out[1, 0]).all()
    assert torch.allclose(out[[0, 2, 3]], ref[[0, 2, 3]], atol=1e-6)


def test_a_padding_slot_leaves_other_rows_alone_when_its_gathered_score_overflows() -> None:
    """Padding slots gather source 0's key. Its score was added to the mask, so a key of node 0 that
    overflowed every query's score made each padded row of the call NaN (``inf`` + mask), and one scoring
    past half the range (+3e38) outranked the real slots: a request merged with another could be refused
    or answered wrongly for the other's features. Padding is now set to the lowest finite value instead."""
    from gtcompress.nn.attention import padded_attention

    ei = torch.tensor([[1, 2, 3, 1, 0], [1, 1, 1, 2, 0]])  # node 1: 3 in-edges; node 2: 1 (2 padding slots)
    n = 4
    for k0 in (float("inf"), 3e38):
        q = torch.tensor([1.0, 1.0, 1.0, 1.0]).view(n, 1, 1)
        k = torch.tensor([k0, 0.5, -0.5, 1.0]).view(n, 1, 1)
        v = torch.tensor([7.0, 1.0, 2.0, 3.0]).view(n, 1, 1)
        ref = sparse_attention(q, k, v, ei, scale=1.0)
        for buckets in (None, 2):
            nbr = _neighbour_lists(ei, n, buckets)
            parts = [padded_attention(q if node is None else q[node], k, v, src, mask, scale=1.0)
                     for node, src, _, mask in nbr.buckets]  # fmt: skip
            out = parts[0] if nbr.inv is None else torch.cat(parts)[nbr.inv]
            assert torch.equal(out[1:], ref[1:]), (k0, buckets, out[1:].flatten(), ref[1:].flatten())
            assert out[2].item() == 1.0  # node 2's one real slot takes the weight


def test_the_folded_padded_path_makes_an_overflowed_node_nan() -> None:
    """The module's folded neighbour-list path (keys and values from one gathered ``h``) computes the
    scores as ``h_i W h_j``: node 0's self-loop at -1e40 is NaN there too, as in its scatter path."""
    from gtcompress.nn.mha import MultiHeadAttention

    m = MultiHeadAttention(1, 1, 1, bias=False).eval()
    with torch.no_grad():
        m.q.weight.fill_(1.0)
        m.k.weight.fill_(-1.0)
        m.v.weight.fill_(1.0)
        m.o.weight.fill_(1.0)
    ei, _, _, _ = _overflow_case()
    h = torch.tensor([[1e20], [1.0], [-1.0], [0.5]])
    with torch.no_grad():
        ref = m.sparse(h, ei)
        for buckets in (None, 2):
            out = m.padded(h, _neighbour_lists(ei, 4, buckets))
            assert torch.isnan(out[0]).all() and torch.isnan(ref[0]).all(), buckets
            assert torch.allclose(out[1:], ref[1:]), buckets


def test_dense_refuses_a_row_whose_scores_may_pass_its_mask() -> None:
    """Finite scores near float32's end: node 0's non-edge 0 -> 0 scores +2e38 and its one edge, from node 1,
    -1e38. Added to the mask (-1.7e38) the non-edge still outranked the edge, and the lift then zeroed
    it: node 0 answered 0, finite and wrong. The dense layout now refuses (NaN) every row whose scores'
    bound passes a quarter of the mask; the scatter layout, with no mask, answers it right."""
    ei = torch.tensor([[1, 0], [0, 1]])  # node 0 <- 1; node 1 <- 0
    q = torch.tensor([2e19, 1.0]).view(2, 1, 1)
    k = torch.tensor([1e19, -0.5e19]).view(2, 1, 1)
    v = torch.tensor([5.0, 7.0]).view(2, 1, 1)
    outs = _layout_outputs(ei, q, k, v)
    assert outs["scatter"][0].item() == 7.0 and outs["scatter"][1].item() == 5.0
    for name in ("dense", "dense lifted", "dense log-count"):
        assert torch.isnan(outs[name][0]).all(), name
        assert outs[name][1].item() == 5.0, name  # node 1's bound (q = 1) stays far below
