"""Half precision (float16, bfloat16) on every attention layout: finite, and close to float32.

The dense and neighbour-list layouts mask with a large negative constant, half of the dtype's range;
a lower one rounds to -inf in float16 (a masked row's softmax is then NaN), and biases built in float32
must not promote half-precision scores (the next Linear refuses a float32 input)."""

import copy

import pytest
import torch

from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch, collate
from gtcompress.models import LayerSpec, ModelConfig, build_model
from gtcompress.nn.attention import MASK, mask_value, sparse_attention
from gtcompress.nn.mha import MultiHeadAttention

NODE = FeatureSpec("categorical", 1, [4])
EDGE = FeatureSpec("categorical", 1, [3])
HALF = [torch.float16, torch.bfloat16]


def _batch() -> GraphBatch:
    """A one-node graph, a two-node one and a 15-node one with isolated nodes: padding of every size."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (1, 2, 15, 3):
        ei = torch.randint(0, n, (2, 2 * n), generator=g) % min(n, 10)
        x = torch.randint(0, 4, (n, 1), generator=g)
        ea = torch.randint(0, 3, (ei.shape[1], 1), generator=g)
        out.append(GraphBatch(x=x, edge_index=ei, edge_attr=ea, pe={"rwse": torch.rand(n, 4, generator=g)}))
    return collate(out)


CASES = [
    ("gt", {"attention_layout": "dense"}),
    ("gt", {"layers": [LayerSpec(2, 32, 0.5), LayerSpec(2, 32, 1.0)]}),
    ("gps", {}),
    ("gps", {"local_conv": "none"}),
    ("gps", {"layers": [LayerSpec(2, 32, 0.5), LayerSpec(2, 32, 1.0)]}),
    ("graphormer", {}),
]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(("arch", "extra"), CASES)
def test_half_model_matches_float32(arch: str, extra: dict, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    kw = {"hidden": 16, "num_layers": 2, "heads": 2, "pe": {"rwse": 4}, "norm": "layer", **extra}
    model = build_model(ModelConfig(arch=arch, node_features=NODE, edge_features=EDGE, out_dim=3, **kw)).eval()
    batch = _batch()
    with torch.no_grad():
        ref = model(batch)
        half = copy.deepcopy(model).to(dtype)
        batch.pe = {k: v.to(dtype) for k, v in batch.pe.items()}
        out = half(batch)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    assert (out.float() - ref).abs().max() <= tol


def test_mask_value_is_finite_in_every_float_dtype() -> None:
    assert mask_value(torch.float32) == MASK == torch.finfo(torch.float32).min / 2
    assert mask_value(torch.bfloat16) == torch.finfo(torch.bfloat16).min / 2
    assert mask_value(torch.float64) == MASK
    assert mask_value(torch.float16) == -32752.0
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        assert torch.isfinite(torch.tensor(mask_value(dt), dtype=dt))


@pytest.mark.parametrize("dtype", HALF)
def test_padded_layout_in_half_precision_zeroes_nodes_without_edges(dtype: torch.dtype) -> None:
    """The neighbour-list layout (module and function) on float16/bfloat16: nodes 3 and 4 have no
    incoming edge and get exactly zero (the module: its output bias), not NaN."""
    from tests.nn.test_attention import _neighbour_lists, _padded

    torch.manual_seed(0)
    ei = torch.tensor([[0, 1, 2, 1, 0], [1, 2, 0, 0, 0]])
    n = 5
    m = MultiHeadAttention(8, 2, 4).eval()
    h = torch.randn(n, 8)
    with torch.no_grad():
        for buckets in (None, 2):
            nbr = _neighbour_lists(ei, n, buckets)
            ref = m.sparse(h, ei)
            out = copy.deepcopy(m).to(dtype).padded(h.to(dtype), nbr)
            assert torch.isfinite(out).all()
            assert torch.equal(out[3:], m.o.bias.to(dtype).expand(2, -1))
            assert (out.float() - ref).abs().max() <= 3e-2
            q, k, v = (torch.randn(n, 2, 4) for _ in range(3))
            fn = _padded(q.to(dtype), k.to(dtype), v.to(dtype), nbr)
            assert torch.equal(fn[3:], torch.zeros(2, 2, 4, dtype=dtype))
            assert (fn.float() - sparse_attention(q, k, v, ei)).abs().max() <= 3e-2


@pytest.mark.parametrize("dtype", HALF)
def test_token_topk_in_half_precision_keeps_the_highest_scores(dtype: torch.dtype) -> None:
    """float16 scores of 16 or more used to overflow the 2^-12 grid to inf (int64 garbage): the
    top-k then kept the lowest-scoring nodes."""
    from gtcompress.nn.tokens import topk_per_graph

    scores = torch.tensor([[20.0, 30.0, 1.0, 25.0], [-20.0, 300.0, 2.5, 0.0]])
    valid = torch.ones(2, 4, dtype=torch.bool)
    ref = topk_per_graph(scores, valid, 0.5)
    sel = topk_per_graph(scores.to(dtype), valid, 0.5)
    assert sel.keep.tolist() == ref.keep.tolist() == [[False, True, False, True], [False, True, True, False]]
    assert torch.equal(sel.order, ref.order)
    assert sel.sorted_scores.dtype == dtype
    assert torch.equal(sel.sorted_scores, ref.sorted_scores.to(dtype))


@pytest.mark.parametrize("arch", ["gt", "gps", "graphormer"])
def test_float_features_meet_the_model_in_its_precision(arch: str) -> None:
    """model.half() fed the float32 dataset, and a float32 model fed float16 features, both run (they
    failed in the input encoder's Linear: 'mat1 and mat2 must have the same dtype')."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("float", 3),
        edge_features=FeatureSpec("float", 2),
        out_dim=2,
        hidden=8,
        heads=2,
        num_layers=1,
        norm="layer",
    )
    model = build_model(cfg).eval()
    g = GraphBatch(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), edge_attr=torch.randn(3, 2))
    half_in = GraphBatch(x=g.x.half(), edge_index=g.edge_index, edge_attr=g.edge_attr.half())
    rounded = GraphBatch(x=g.x.half().float(), edge_index=g.edge_index, edge_attr=g.edge_attr.half().float())
    with torch.no_grad():
        ref = model(g)
        assert torch.equal(model(half_in), model(rounded))
        for dtype in HALF:
            out = copy.deepcopy(model).to(dtype)(g)
            assert out.dtype == dtype
            assert (out.float() - ref).abs().max() <= 3e-2


def test_gumbel_noise_in_float16_stays_finite(monkeypatch: pytest.MonkeyPatch) -> None:
    """A uniform draw of 0 (float16's rand_like gives one in ~4096) is clamped to 1e-9, which float16
    rounds to 0: the node's noise was -inf and its sort key wrapped around, so it was kept first."""
    from gtcompress.nn.tokens import TokenSelector

    sel_mod = TokenSelector(4, 0.25).half().train()
    sel_mod.gumbel = True
    with torch.no_grad():
        sel_mod.score.weight.zero_()
        sel_mod.score.bias.fill_(-5.0)

    def draws(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        u = torch.full_like(t, 0.5, dtype=dtype or t.dtype)
        u[:, 0] = 0.0
        return u

    monkeypatch.setattr(torch, "rand_like", draws)
    sel, mult = sel_mod.select(torch.zeros(1, 4, 4, dtype=torch.float16), torch.ones(1, 4, dtype=torch.bool))
    assert torch.isfinite(sel.sorted_scores).all()
    assert sel.keep.tolist() == [[False, True, False, False]]
    assert mult is not None and torch.isfinite(mult).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("top", [-3e4, 3e2, 4e4, 1e5, 1e30])
def test_lifted_masked_scores_keep_the_weights_of_large_scores(dtype: torch.dtype, top: float) -> None:
    """``dense_attention(lift_masked=True)`` lifts masked scores below their row's largest: the gap must
    survive rounding at that score in the scores' dtype. In bfloat16 (8 significant bits) a row maximum
    of 1e5 minus 80 rounded back to the maximum, every masked key then weighed as much as the two real
    ones and the answer dropped from 0.5 to 1/6 (the plain softmax: 0.5)."""
    from gtcompress.nn.attention import dense_attention

    if abs(top) > torch.finfo(dtype).max / 2:
        pytest.skip("a score beyond the dtype's range")
    length = 6
    q = torch.ones(1, 1, length, 1, dtype=dtype)
    k = torch.ones(1, 1, length, 1, dtype=dtype)
    k[..., :2, 0] = top  # two real keys with the row's largest score, four masked ones below it
    v = torch.tensor([1.0, 0.0, 5.0, 5.0, 5.0, 5.0], dtype=dtype).reshape(1, 1, length, 1)
    keep = torch.zeros(1, 1, length, length, dtype=torch.bool)
    keep[..., :2] = True
    bias = torch.where(keep, 0.0, float("-inf"))
    plain = dense_attention(q, k, v, bias, scale=1.0)
    lifted = dense_attention(q, k, v, bias, scale=1.0, lift_masked=True)
    assert torch.equal(plain, torch.full_like(plain, 0.5))
    assert torch.equal(lifted, plain)
