import pytest
import torch

from gtcompress.compress.gates import GateSet, HardConcrete, parse_axes
from gtcompress.compress.tokens import TokenSelector, keep_counts, topk_per_graph
from gtcompress.errors import ConfigError
from gtcompress.nn.mha import MultiHeadAttention


def test_hard_concrete_is_differentiable_and_exactly_binary_in_eval() -> None:
    torch.manual_seed(0)
    gate = HardConcrete(64, init_prob=0.6)
    gate.train()
    z = gate()
    assert ((z >= 0) & (z <= 1)).all()
    assert ((z > 0) & (z < 1)).any()  # relaxed values in between …
    assert ((z == 0) | (z == 1)).any()  # … and exact 0/1 with finite probability
    z.sum().backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0
    # P(open) is differentiable too (what the expected cost uses)
    gate.log_alpha.grad = None
    gate.prob_open().sum().backward()
    assert gate.log_alpha.grad.abs().min() > 0
    gate.eval()
    with torch.no_grad():
        gate.log_alpha[:32] = -5.0
        gate.log_alpha[32:] = 5.0
    z = gate()
    assert set(z.unique().tolist()) == {0.0, 1.0}
    assert z[:32].sum() == 0 and z[32:].sum() == 32
    assert torch.equal(z, (gate.prob_open() > 0.5).float())


def test_sampling_frequency_matches_open_probability() -> None:
    torch.manual_seed(0)
    gate = HardConcrete(1, init_prob=0.7).train()
    samples = torch.stack([gate() for _ in range(4000)])
    assert float((samples > 0).float().mean()) == pytest.approx(float(gate.prob_open().detach()), abs=0.03)


def test_axes_are_validated() -> None:
    assert parse_axes("heads, ffn") == ("heads", "ffn")
    with pytest.raises(ConfigError, match="unknown axis 'neurons'"):
        parse_axes("heads,neurons")
    gs = GateSet([4, 0], [8, 8], ("heads", "ffn"))
    assert set(gs.heads) == {"0"} and set(gs.ffn) == {"0", "1"} and not len(gs.attn_layer)


def test_per_graph_topk() -> None:
    valid = torch.tensor([[True] * 5 + [False] * 3, [True] * 8, [True] + [False] * 7])
    assert keep_counts(valid, 0.5).tolist() == [3, 4, 1]  # floor(r·n + 0.5), at least 1
    scores = torch.randn(3, 8)
    sel = topk_per_graph(scores, valid, 0.5)
    assert sel.keep.sum(1).tolist() == [3, 4, 1]
    assert not (sel.keep & ~valid).any()
    for b in range(3):
        n = int(valid[b].sum())
        top = scores[b, :n].topk(int(sel.counts[b])).indices
        assert sel.keep[b, top].all()


def test_per_graph_topk_keeps_a_score_too_large_for_the_int64_key() -> None:
    """The sort key is the score on a 2^-12 grid times 65536: from |score| = 2^35 (3.4e10) it wrapped
    around int64, so a node scoring 4.4e10 (features of about 1e11, a finite answer) ranked last and
    lost its token, in eager torch and in the exported model alike. Huge scores now rank above every
    smaller one (ties among them go by position)."""
    scores = torch.tensor([[-1.0, 4.4e10, 0.5, 2.0, 0.0, 1.0], [3e38, 1e20, -3e38, 1.0, -5e8, 0.0]])
    valid = torch.ones(2, 6, dtype=torch.bool)
    sel = topk_per_graph(scores, valid, 0.5)
    assert sel.keep.tolist() == [[False, True, False, True, False, True], [True, True, False, True, False, False]]
    assert sel.order[1].tolist()[-2:] == [4, 2]  # the most negative scores last


def test_per_graph_topk_keeps_the_same_tokens_alone_and_merged_with_a_larger_graph() -> None:
    """The score clamp was sized for the batch's padded length, so scores of 1e13 and 3e13 were told
    apart in a 3-node graph alone (clamp 1.9e14) and tied, going by position, once a 1000-node graph
    shared its batch (clamp 5.6e11): the server, which merges requests, kept another token for the
    same graph. The clamp no longer depends on the batch."""
    scores = torch.tensor([1e13, 3e13, 2e13])
    alone = topk_per_graph(scores[None], torch.ones(1, 3, dtype=torch.bool), 0.34)
    batch = torch.zeros(2, 1000)
    batch[0, :3] = scores
    valid = torch.zeros(2, 1000, dtype=torch.bool)
    valid[0, :3] = True
    valid[1] = True
    merged = topk_per_graph(batch, valid, 0.34)
    assert alone.keep[0].tolist() == merged.keep[0, :3].tolist()
    assert alone.order[0].tolist() == merged.order[0, :3].tolist()


@pytest.mark.parametrize("length", [65536 + 10, 1 << 20])
def test_per_graph_topk_ranks_by_score_then_position_in_graphs_past_65536_nodes(length: int) -> None:
    """The key's position part was ``65535 - pos``: from position 65536 it went negative and a node
    took the key of a node one grid step (2^-12) below it, so node 65537 scoring 2^-12 ranked below
    node 0 scoring 0 and lost the one token kept; equal-key nodes ranked in TopK's unspecified order."""
    scores = torch.full((1, length), -1.0)
    scores[0, 0] = 0.0
    scores[0, 65537] = 2.0**-12  # one grid step above node 0
    scores[0, 65540] = 0.0  # ties node 0: position decides, lower first
    scores[0, length - 1] = 3e38  # clamped to the grid's limit: still ranked first, no int64 wrap-around
    valid = torch.ones(1, length, dtype=torch.bool)
    valid[0, 5] = False  # padding ranks after every real node
    sel = topk_per_graph(scores, valid, 1.0 / length)
    assert sel.counts.tolist() == [1]
    assert sel.order[0, :4].tolist() == [length - 1, 65537, 0, 65540]
    assert sel.keep[0].nonzero().flatten().tolist() == [length - 1]
    rest = sel.order[0, 4:-1]  # the nodes scoring -1 tie: by position
    assert torch.equal(rest, rest.sort().values) and int(sel.order[0, -1]) == 5


def test_training_path_equals_gathered_inference_path_and_trains_the_scorer() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2, 4)
    sel = TokenSelector(8, 0.6)
    valid = torch.tensor([[True] * 6 + [False] * 2, [True] * 8, [True] * 3 + [False] * 5])
    hd = torch.randn(3, 8, 8) * valid.unsqueeze(-1)
    bias = torch.where(valid, 0.0, float("-inf"))[:, None, None, :]
    sel.eval()
    ref = sel.attend_dense(attn, hd, bias, valid)
    sel.train()  # no Gumbel noise: same hard selection, masked instead of gathered
    out = sel.attend_dense(attn, hd, bias, valid)
    assert torch.allclose(out, ref, atol=1e-6)
    dropped = ~topk_per_graph(sel.score(hd).squeeze(-1), valid, 0.6).keep
    assert (ref[dropped] == 0).all()  # removed tokens get no attention output
    out.pow(2).sum().backward()
    assert sel.score.weight.grad is not None and sel.score.weight.grad.abs().sum() > 0
    sel.gumbel = True  # straight-through Gumbel top-k: stochastic selection, still k per graph
    torch.manual_seed(1)
    s1, _ = sel.select(hd, valid)
    assert s1.keep.sum(1).tolist() == keep_counts(valid, 0.6).tolist()


def test_taylor_importance_orders_gates_within_layers(node_data) -> None:
    from gtcompress.compress.prune import PruneConfig, gate_importance

    from .conftest import tiny_model

    model = tiny_model("gt", node_data.info)
    gates = GateSet.for_model(model, ("heads", "layers", "ffn"))
    before = {k: g.log_alpha.detach().clone() for k, g in gates.heads.items()}
    imp = gate_importance(model, gates, node_data, PruneConfig(target_flops=0.5, batch_size=8), batches=2)
    assert set(imp) == {(kind, i) for kind in ("heads", "attn", "ffn", "ffn_layer") for i in range(2)}
    assert all(bool((v >= 0).all()) and float(v.sum()) > 0 for v in imp.values())
    assert not any(p.grad is not None for p in model.parameters())  # only the probes were differentiated
    gates.init_from_importance(imp)
    for key, gate in gates.heads.items():
        shift = gate.log_alpha.detach() - before[key]
        order = torch.argsort(imp[("heads", int(key))])
        assert torch.all(shift[order][1:] > shift[order][:-1])  # more important → more likely open
