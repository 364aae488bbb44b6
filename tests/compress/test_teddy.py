import math

import numpy as np
import pytest
import torch

from gtcompress.compress.distill import kd_loss
from gtcompress.compress.sparsity import cubic_sparsity, l0_project_, projected, prunable_weights
from gtcompress.compress.teddy import SparsifyConfig, TeddyEdges, global_threshold, sparsify_dataset, sparsify_model
from gtcompress.data.base import DatasetInfo, FeatureSpec
from gtcompress.errors import ConfigError
from gtcompress.graph import GraphBatch, collate
from gtcompress.preprocess import teddy as teddy_module
from gtcompress.preprocess.batching import NumpyGraph, union_graphs
from gtcompress.preprocess.teddy import (
    teddy_edge_scores,
    teddy_keep_mask,
    teddy_node_scores,
    teddy_sparsify,
    teddy_threshold_mask,
)

from .conftest import random_graphs, tiny_model

# 0-1, 0-2, 0-3, 1-2 undirected (both directions) and a self-loop on 3
EI = np.array([[0, 1, 0, 2, 0, 3, 1, 2, 3], [1, 0, 2, 0, 3, 0, 2, 1, 3]])


def test_scores_match_the_formula_written_out() -> None:
    # d = row sums = [3, 2, 2, 2] (node 3: edge to 0 and its self-loop)
    # ḡ0 = (2^-½ + 2^-½ + 2^-½)/3 = 0.70710678;  ḡ1 = ḡ2 = ḡ3 = (3^-½ + 2^-½)/2 = 0.64222853
    # node scores ḡ/d: f0 = 0.23570226, f1 = f2 = f3 = 0.32111426
    np.testing.assert_allclose(teddy_node_scores(EI, 4), [0.23570226, 0.32111426, 0.32111426, 0.32111426], rtol=1e-7)
    s = teddy_edge_scores(EI, 4)
    f0f1 = 0.23570226 * 0.32111426  # = 0.07568736: every edge at the degree-3 hub
    f1f2 = 0.32111426 * 0.32111426  # = 0.10311437
    np.testing.assert_allclose(s, [f0f1] * 6 + [f1f2] * 3, rtol=1e-6)
    assert s[0] == pytest.approx(0.07568736, abs=1e-8) and s[6] == pytest.approx(0.10311437, abs=1e-8)


def test_lowest_pairs_removed_both_directions_self_loop_kept() -> None:
    keep = teddy_keep_mask(EI, 4, 0.5)
    # 4 undirected pairs → round(0.5·4) = 2 pairs go: the hub pairs (0,1), (0,2) (ties: stable order)
    assert keep.tolist() == [False, False, False, False, True, True, True, True, True]
    assert teddy_keep_mask(EI, 4, 0.99)[-1]  # the self-loop survives any ratio
    directed = teddy_keep_mask(EI, 4, 0.5, undirected=False)  # 8 directed edges → 4 go
    assert (~directed).sum() == 4 and directed[-1]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
def test_per_graph_ratio_is_honoured(ratio: float) -> None:
    graphs = [g.to_numpy() for g in random_graphs(12, 3)]
    for g in graphs:
        g.edge_attr = None
    for g in graphs[::3]:  # add self-loops to some graphs
        loops = np.arange(g.num_nodes)
        g.edge_index = np.concatenate([g.edge_index, np.stack([loops, loops])], axis=1)
    batch = union_graphs(graphs)
    out = teddy_sparsify(batch, ratio)
    keep = teddy_keep_mask(batch.edge_index, batch.num_nodes, ratio, batch.batch)
    assert out.num_edges == int(keep.sum())
    ei, b = batch.edge_index, batch.batch
    for gid in range(len(graphs)):
        mine = b[ei[0]] == gid
        loop = ei[0] == ei[1]
        key = np.minimum(ei[0], ei[1]) * batch.num_nodes + np.maximum(ei[0], ei[1])
        pairs = np.unique(key[mine & ~loop])  # units: undirected pairs (all their instances go together)
        dropped = np.unique(key[mine & ~keep])
        assert len(dropped) == int(np.floor(ratio * len(pairs) + 0.5))  # per graph
        assert not np.isin(key[mine & keep & ~loop], dropped).any()  # both directions go together
        assert keep[mine & loop].all()  # self-loops kept


def test_global_mode_uses_one_threshold_and_transform_recomputes_pe() -> None:
    from gtcompress.data.base import GraphDataset

    info = DatasetInfo("t", "node", "multiclass", 3, "accuracy", FeatureSpec("float", 3))
    graphs = random_graphs(8, 0)
    for g in graphs:
        g.pe = {"rwse": torch.zeros(g.num_nodes, 3)}
    ds = GraphDataset(info, {"train": graphs, "val": graphs[:2]})
    out, tf = sparsify_dataset(ds, 0.3, per_graph=False, pe={"rwse": 3})
    total = sum(g.num_edges for g in graphs)
    kept = sum(g.num_edges for g in out["train"])
    assert tf.threshold is not None and abs((total - kept) / total - 0.3) < 0.1
    assert all(float(g.pe["rwse"].abs().sum()) > 0 for g in out["train"])  # recomputed
    single = TeddyEdges(0.3, per_graph=False, threshold=tf.threshold)(graphs[0])
    assert single.num_edges == out["train"][0].num_edges  # deployment applies the same rule
    with pytest.raises(ConfigError):
        TeddyEdges(1.0)


def test_teddy_sparsify_with_a_global_record_keeps_what_training_kept() -> None:
    """gtc sparsify --global records edges, per_graph=false and the threshold; teddy_sparsify (what its note
    points users to) ignored the threshold and ranked each graph's own edges by the ratio instead."""
    graphs = random_graphs(8, 3)
    tf = TeddyEdges(0.3, per_graph=False, threshold=global_threshold(graphs, 0.3))
    rec = tf.to_dict()
    union = union_graphs([g.to_numpy() for g in graphs])
    got = teddy_sparsify(union, rec["edges"], rec["per_graph"], rec["threshold"])
    want = collate([tf(g) for g in graphs])
    np.testing.assert_array_equal(got.edge_index, want.edge_index.numpy())
    np.testing.assert_array_equal(got.edge_attr, want.edge_attr.numpy())
    alone = teddy_sparsify(graphs[0].to_numpy(), rec["edges"], rec["per_graph"], rec["threshold"])
    np.testing.assert_array_equal(alone.edge_index, tf(graphs[0]).edge_index.numpy())


def test_a_record_with_a_threshold_keeps_the_same_edges_in_eval_and_in_the_runtime() -> None:
    """A ``teddy`` section with a threshold and ``per_graph: true`` passes check_teddy_section and the
    runtime's reader, which applies the threshold (teddy_mask: a threshold decides alone); the
    TeddyEdges ``gtc eval`` builds from it ignored the threshold and kept 166 of 240 edges where the
    served model got 98."""
    import json
    from pathlib import Path

    from gtcompress.checkpoint_data import check_teddy_section, teddy_transform
    from gtcompress.models import ModelConfig
    from runtime.spec import teddy_config

    rng = np.random.default_rng(0)
    ei = rng.integers(0, 30, (2, 120))
    ei = np.concatenate([ei, ei[::-1]], axis=1).astype(np.int64)
    g = GraphBatch(x=torch.zeros(30, 3), edge_index=torch.from_numpy(ei))
    scores = np.sort(teddy_edge_scores(ei, 30))
    section = {"edges": 0.3, "per_graph": True, "threshold": float(scores[int(0.6 * scores.shape[0])])}
    check_teddy_section(section, Path("config.json"))
    tf = teddy_transform({"teddy": section}, ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2))
    served = teddy_config({"teddy": json.dumps(section)})
    assert served is not None
    want = teddy_module.teddy_mask(ei, 30, served.ratio, None, served.per_graph, served.threshold)
    assert int(want.sum()) == 98
    np.testing.assert_array_equal(tf.keep_mask(g), want)
    np.testing.assert_array_equal(tf(g).edge_index.numpy(), ei[:, want])


@pytest.mark.parametrize(("ratio", "kept"), [(0.005, "all"), (0.99, "loops")])
def test_a_global_threshold_that_keeps_or_drops_every_edge_is_a_json_number(ratio: float, kept: str) -> None:
    """With ratio x edges rounding to none (or all) of the training split's edges, the threshold was
    -inf (inf): recorded as -Infinity, no JSON number, and the runtime refused to load the model."""
    import json

    from runtime.spec import teddy_config

    g = collate(random_graphs(3, 4))
    graphs = [g]
    ei = g.edge_index.numpy()
    loops = np.array([[0, 1], [0, 1]])
    g.edge_index = torch.from_numpy(np.concatenate([ei, loops], axis=1))
    g.edge_attr = torch.cat([g.edge_attr, g.edge_attr[:2]])
    tf = TeddyEdges(ratio, per_graph=False, threshold=global_threshold(graphs, ratio))
    cfg = teddy_config({"teddy": json.dumps(tf.to_dict(), allow_nan=False)})
    assert cfg is not None and cfg.threshold == tf.threshold
    out = tf(g).edge_index.numpy()
    want = np.concatenate([ei, loops], axis=1) if kept == "all" else loops
    np.testing.assert_array_equal(out, want)
    got = teddy_sparsify(g.to_numpy(), cfg.ratio, cfg.per_graph, cfg.threshold)
    np.testing.assert_array_equal(got.edge_index, want)


def test_numpy_graph_without_batch() -> None:
    g = NumpyGraph(x=np.zeros((4, 1), np.float32), edge_index=EI)
    assert teddy_sparsify(g, 0.5).num_edges == 5


def _edges(g: NumpyGraph, keep: np.ndarray | None = None) -> list[tuple[int, int]]:
    ei = g.edge_index if keep is None else g.edge_index[:, keep]
    return [tuple(p) for p in ei.T.tolist()]


def test_per_graph_symmetry_is_decided_per_graph_not_for_the_batch() -> None:
    # The audit's case: a symmetric path + triangle batched with one directed edge. Before, the
    # directed graph made the whole union directed: A lost reverse edges (no longer undirected)
    # and kept a different edge set than alone — a server batching requests answered differently.
    und = [(0, 1), (1, 2), (2, 3), (1, 4), (2, 4)]
    a = NumpyGraph(x=np.zeros((5, 1), np.float32), edge_index=np.array([p for i, j in und for p in ((i, j), (j, i))]).T)
    b = NumpyGraph(x=np.zeros((2, 1), np.float32), edge_index=np.array([[0], [1]]))
    alone = teddy_sparsify(a, 0.3)
    assert sorted(_edges(alone)) == [(0, 1), (1, 0), (2, 3), (2, 4), (3, 2), (4, 2)]
    u = teddy_sparsify(union_graphs([a, b]), 0.3)
    in_a = u.batch[u.edge_index[0]] == 0
    assert sorted(_edges(u, in_a)) == sorted(_edges(alone))
    assert _edges(u, ~in_a) == [(5, 6)]  # round(0.3 · 1) = 0 edges go from the directed graph


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.8, 1.0])
def test_every_graph_of_a_mixed_union_keeps_what_it_keeps_alone(ratio: float) -> None:
    rng = np.random.default_rng(7)
    graphs = []
    for k in range(40):
        n = int(rng.integers(1, 9))
        ei = rng.integers(0, n, size=(2, int(rng.integers(0, 14))))
        if k % 2:  # odd graphs undirected (both directions, shuffled), even ones directed
            ei = np.concatenate([ei, ei[::-1]], axis=1)[:, rng.permutation(2 * ei.shape[1])]
        graphs.append(NumpyGraph(x=np.zeros((n, 1), np.float32), edge_index=ei))
    assert any(
        not np.array_equal(
            teddy_keep_mask(g.edge_index, g.num_nodes, 0.5, undirected=False),
            teddy_keep_mask(g.edge_index, g.num_nodes, 0.5),
        )
        for g in graphs[1::2]
    )
    u = union_graphs(graphs)
    keep = teddy_keep_mask(u.edge_index, u.num_nodes, ratio, u.batch)
    start = 0
    for g in graphs:
        alone = teddy_keep_mask(g.edge_index, g.num_nodes, ratio, np.zeros(g.num_nodes, np.int64))
        assert keep[start : start + g.num_edges].tolist() == alone.tolist()
        start += g.num_edges
    # whatever the order of the union, too
    rev = union_graphs(graphs[::-1])
    keep_rev = teddy_keep_mask(rev.edge_index, rev.num_nodes, ratio, rev.batch)
    start = 0
    for g in graphs[::-1]:
        alone = teddy_keep_mask(g.edge_index, g.num_nodes, ratio)
        assert keep_rev[start : start + g.num_edges].tolist() == alone.tolist()
        start += g.num_edges


def _symmetric_by_counting(ei: np.ndarray, gid: np.ndarray, num_graphs: int) -> list[bool]:
    """Which graphs are symmetric, by the definition: every edge (i, j) occurs as often as (j, i)."""
    from collections import Counter

    count = Counter(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
    bad = {int(gid[c]) for c, (i, j) in enumerate(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
           if count[(i, j)] != count[(j, i)]}  # fmt: skip
    return [g not in bad for g in range(num_graphs)]


def test_symmetry_detection_counts_every_pair_both_ways() -> None:
    rng = np.random.default_rng(3)
    for trial in range(30):
        sizes = rng.integers(1, 7, size=int(rng.integers(1, 8)))
        ptr = np.concatenate([[0], np.cumsum(sizes)])
        parts = []
        for g, n in enumerate(sizes):
            ei = rng.integers(0, n, size=(2, int(rng.integers(0, 10)))) + ptr[g]
            if rng.random() < 0.6:  # symmetric, with duplicates; sometimes one instance dropped
                ei = np.concatenate([ei, ei[::-1], ei], axis=1)
                ei = np.concatenate([ei, ei[::-1]], axis=1)
                if ei.shape[1] and rng.random() < 0.3:
                    ei = ei[:, 1:]
            parts.append(ei)
        ei = np.concatenate(parts, axis=1)
        ei = ei[:, rng.permutation(ei.shape[1])]
        n_all = int(ptr[-1])
        gid = np.repeat(np.arange(sizes.size), sizes)[ei[0]]
        got = teddy_module._symmetric_graphs(ei, n_all, gid, sizes.size).tolist()
        assert got == _symmetric_by_counting(ei, gid, sizes.size), trial


def test_l0_projection_keeps_exactly_k() -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(11))]
    before = torch.cat([p.detach().reshape(-1).abs() for p in params])
    l0_project_(params, 20)
    assert sum(int(torch.count_nonzero(p)) for p in params) == 20
    after = torch.cat([p.detach().reshape(-1) for p in params])
    # the 20 largest magnitudes over both tensors together stay, unchanged; every other entry is 0
    # (compared with the magnitudes *before*: after the projection every dropped one is 0, so a
    # check on the projected values alone held for any choice of 20 entries)
    top = torch.zeros_like(before, dtype=torch.bool)
    top[torch.argsort(before, descending=True)[:20]] = True
    assert torch.equal(after != 0, top)
    assert torch.equal(after.abs()[top], before[top])


def test_l0_projection_breaks_ties_by_position() -> None:
    """Equal magnitudes (norm scales at 1.0 with ``include_1d``): the first ones stay, as documented.
    ``topk`` kept positions 6-8 of ten ones for k = 3, and from the middle of larger tensors."""
    for n, k in [(10, 3), (1000, 300)]:
        p = torch.ones(n)
        l0_project_([p], k)
        assert torch.equal(torch.nonzero(p).squeeze(-1), torch.arange(k))
    a, b = torch.tensor([0.5, -2.0, 0.5]), torch.tensor([0.5, 3.0, -0.5, 0.1])
    l0_project_([a, b], 4)  # 3.0 and -2.0, then two of the four 0.5s: the first two by position
    assert a.tolist() == [0.5, -2.0, 0.5] and b.tolist() == [0.0, 3.0, 0.0, 0.0]


def test_projected_descent_stays_on_the_ball() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8)
    params = [p for _, p in prunable_weights(lin)]
    assert len(params) == 1  # the bias is excluded by default
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    with projected(params, lambda step: 10) as state:
        for _ in range(3):
            opt.zero_grad()
            lin(torch.randn(4, 8)).pow(2).sum().backward()
            opt.step()
            assert int(torch.count_nonzero(lin.weight)) == 10
    assert state["steps"] == 3
    assert cubic_sparsity(0, 100, 0.5) == 0.0 and cubic_sparsity(80, 100, 0.5) == pytest.approx(0.5)


def test_kd_loss_is_kl_student_to_teacher() -> None:
    info = DatasetInfo("t", "node", "multiclass", 3, "accuracy", FeatureSpec("float", 1))
    s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    ps, pt = s.softmax(-1), t.softmax(-1)
    assert float(kd_loss(s, t, info)) == pytest.approx(float((ps * (ps.log() - pt.log())).sum()), rel=1e-5)
    assert float(kd_loss(t, t, info)) == pytest.approx(0.0, abs=1e-7)


def test_sparsify_model_end_to_end(node_data) -> None:
    model = tiny_model("gt", node_data.info, attention_layout="sparse")
    cfg = SparsifyConfig(edges=0.3, weights=0.5, epochs=1, batch_size=8, cost_graphs=6)
    res = sparsify_model(model, node_data, cfg, show_progress=False)
    w = res.report["removed"]["weights"]
    assert w["kept"] == round(w["total"] * 0.5)
    c = res.report["cost"]
    assert c["after"]["flops"] < c["before"]["flops"]  # fewer attention edges, counted explicitly
    assert c["after"]["params"] == c["before"]["params"]  # zeros stay inside dense matrices
    assert res.report["metric"]["after"].keys() == {"val", "test"}
    b = collate(node_data["val"][:3])
    assert res.transform(b).num_edges < b.num_edges


def test_sparsify_counts_both_models_on_one_lowering(node_data) -> None:
    """Left to choose per batch, a GT took the dense lowering on the original reference graphs and scatter on
    the sparsified ones (fewer edges per padded cell): 'FLOPs kept 0.378' was the change of lowering, not
    TEDDY (1.000 with both on the dense lowering). Both are counted on the dense model's choice now."""
    model = tiny_model("gt", node_data.info)  # attention_layout auto
    ref = collate(node_data["val"][:6])
    assert str(model.choose_lowering(ref.edge_index, ref.batch_vector, ref.num_graphs)) == "dense"
    cfg = SparsifyConfig(edges=0.9, epochs=0, cost_graphs=6)
    res = sparsify_model(model, node_data, cfg, show_progress=False)
    sparse_ref = collate(res.dataset["val"][:6])
    assert str(model.choose_lowering(sparse_ref.edge_index, sparse_ref.batch_vector, 6)) == "scatter"  # the flip
    c = res.report["cost"]
    assert res.report["cost_lowering"] == "dense"
    assert c["after"]["flops_by_kind"].keys() == c["before"]["flops_by_kind"].keys()
    assert "sparse_attention" not in c["after"]["flops_by_kind"]
    # the dense lowering computes every pair either way: what fewer edges save is their own projections
    assert c["after"]["flops_by_kind"]["bmm"] == c["before"]["flops_by_kind"]["bmm"]
    assert c["after"]["flops"] < c["before"]["flops"]


def test_attention_graph_sparsifies_gps_and_full_k_is_exact(node_data) -> None:
    from gtcompress.compress.attention_graph import attention_edges, calibrate_attention_topk, with_attention_topk
    from gtcompress.cost import count_flops
    from gtcompress.errors import UnsupportedModelError
    from gtcompress.nn.layout import DenseLayout

    model = tiny_model("gps", node_data.info)
    batch = collate(node_data["val"])
    full = with_attention_topk(model, 64).eval()  # k ≥ every graph: the complete graph again
    with torch.no_grad():
        assert (full(batch) - model(batch)).abs().max() <= 1e-5
    lay = DenseLayout.from_batch(batch.batch_vector, batch.num_graphs)
    ae = attention_edges(batch.edge_index, batch.batch_vector, lay, 1)
    pairs = {tuple(p) for p in ae.t().tolist()}
    assert len(pairs) == ae.shape[1]  # unique pairs
    assert {tuple(p) for p in batch.edge_index.t().tolist()} <= pairs  # input edges kept
    assert all((i, i) in pairs for i in range(batch.num_nodes))  # self kept
    # GPS projects node rows [N, H·D]: the calibration captured nothing, every coverage was 0.0 and
    # the largest k was picked whatever the target
    calib = calibrate_attention_topk(model, batch, coverage=0.8)
    largest = int(torch.bincount(batch.batch_vector).max())
    for kind in ("teddy", "degree"):
        rows = [r for r in calib["table"] if r["kind"] == kind]
        cov = [r["coverage"] for r in rows]
        assert cov == sorted(cov) and cov[0] > 0.0  # more keys keep more mass
        assert all(abs(r["coverage"] - 1.0) < 1e-5 for r in rows if r["k"] >= largest)  # complete graph: all of it
    ok = [r for r in calib["table"] if r["coverage"] >= 0.8]
    assert calib["k"] == min(r["k"] for r in ok) < 64 and calib["coverage"] >= 0.8
    # The sparsified attention runs as the padded attention with its graph as a mask: the FLOPs counted
    # are the ones executed, the dense model's less its key-padding column in the score MatMul.
    small = with_attention_topk(model, 1).eval()
    assert 0.95 * count_flops(model, batch)[0] < count_flops(small, batch)[0] <= count_flops(model, batch)[0]
    with pytest.raises(UnsupportedModelError, match="input edges"):
        with_attention_topk(tiny_model("gt", node_data.info), 2)
    res = sparsify_model(
        model, node_data, SparsifyConfig(attention_topk=2, epochs=0, cost_graphs=6), show_progress=False
    )
    assert res.model.config.attention_topk == 2 and 0.95 < res.report["cost"]["flops_ratio"] <= 1.0


def test_a_global_threshold_comes_as_near_the_ratio_as_tied_scores_allow() -> None:
    """Equal scores stay or go together. The threshold was always the ratio-th score, so a tied group
    there was kept whole: on NCI1, 0.3 dropped 0.284 of the edges. Of the two thresholds around the
    group, the one nearer the ratio is taken (on a draw, the one that keeps more)."""
    # a star: its 6 spokes tie (12 directed edges), and a path of 4 nodes: 3 edges, 6 directed
    star = torch.tensor([[0] * 6 + list(range(1, 7)), list(range(1, 7)) + [0] * 6])
    path = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    graphs = [
        GraphBatch(x=torch.zeros(7, 1), edge_index=star),
        GraphBatch(x=torch.zeros(4, 1), edge_index=path),
    ]
    scores = np.sort(np.concatenate([teddy_edge_scores(g.edge_index.numpy(), g.num_nodes) for g in graphs]))
    total = scores.shape[0]

    def dropped(ratio: float) -> int:
        t = global_threshold(graphs, ratio)
        return int((scores < t).sum())

    # the achievable counts are the sizes of the groups of equal scores, summed from the lowest
    cuts = sorted({0, total, *(int(np.searchsorted(scores, v, side="left")) for v in np.unique(scores))})
    for ratio in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        want = math.floor(ratio * total + 0.5)
        best = min(abs(c - want) for c in cuts)
        assert abs(dropped(ratio) - want) == best, (ratio, dropped(ratio), want, cuts)
    assert len(cuts) < total + 1  # the graphs do tie, so the test can tell the rules apart


def test_attention_topk_with_a_bad_kind_or_k_is_refused_before_a_model_is_built(node_data) -> None:
    """The kind was set on the config in place, past its checks: with_attention_topk(gps, 2, "top")
    gave a model that save_checkpoint wrote and load_checkpoint refused."""
    from gtcompress.compress.attention_graph import with_attention_topk

    model = tiny_model("gps", node_data.info)
    with pytest.raises(ConfigError, match=r"^attention_score must be 'teddy' or 'degree', got 'top'$"):
        with_attention_topk(model, 2, "top")
    with pytest.raises(ConfigError, match=r"^attention_topk must be an integer >= 0, got -1$"):
        with_attention_topk(model, -1)
    assert with_attention_topk(model, 2, "degree").config.attention_score == "degree"


def test_an_undirected_pair_goes_with_all_its_edges_and_each_graph_drops_its_share() -> None:
    """Both directions and every duplicate of a dropped pair go; each graph drops round(ratio x units) units
    (a unit: a pair of an undirected graph, an edge of a directed one), on shuffled unions."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        sizes = rng.integers(2, 12, rng.integers(1, 5))
        ptr = np.r_[0, np.cumsum(sizes)]
        batch = np.repeat(np.arange(sizes.size), sizes)
        parts, undirected = [], []
        for k, size in enumerate(sizes):
            s, d = rng.integers(0, size, (2, rng.integers(1, 25))) + ptr[k]
            und = bool(rng.random() < 0.6)
            if und:
                s, d = np.r_[s, d, s[:2], d[:2]], np.r_[d, s, d[:2], s[:2]]  # both directions, two pairs twice
            else:
                s, d = np.minimum(s, d), np.maximum(s, d)  # low to high only: never symmetric by chance
            parts.append(np.stack([s, d]))
            undirected.append(und)
        ei = np.concatenate(parts, 1)
        ei = ei[:, rng.permutation(ei.shape[1])]
        keep = teddy_keep_mask(ei, int(ptr[-1]), 0.4, batch, per_graph=True)
        gid = batch[ei[0]]
        for k, und in enumerate(undirected):
            mine = (gid == k) & (ei[0] != ei[1])
            lo, hi = np.minimum(ei[0], ei[1])[mine], np.maximum(ei[0], ei[1])[mine]
            units = {(a, b): set() for a, b in zip(lo, hi, strict=True)} if und else None
            if und:
                for a, b, kept in zip(lo, hi, keep[mine], strict=True):
                    units[(a, b)].add(bool(kept))
                assert all(len(v) == 1 for v in units.values())  # a pair is wholly kept or wholly gone
                dropped, total = sum(v == {False} for v in units.values()), len(units)
            else:
                dropped, total = int((~keep[mine]).sum()), int(mine.sum())
            assert dropped == int(np.floor(0.4 * total + 0.5))


def _listed(first: list[int]) -> np.ndarray:
    """One graph, node 0's edges listed in the order ``first``: node 0 (degree 3) next to nodes 1, 2
    (degree 2) and 3 (degree 3), with leaves 4, 5 on 1, 2 and 6, 7 on 3 (a carbon's neighbourhood)."""
    pairs = [(0, v) for v in first] + [(1, 4), (2, 5), (3, 6), (3, 7)]
    return np.array([[a for a, _ in pairs] + [b for _, b in pairs], [b for _, b in pairs] + [a for a, _ in pairs]])


def test_equal_scores_are_equal_whatever_the_edge_order() -> None:
    """Node 0's neighbour terms summed 2-2-3 or 3-2-2 came out an ulp apart, so under a global
    threshold equal to the score of its edges to 1 and 2 (a training score) the same graph kept them
    in one edge order and dropped them in the other."""
    g1, g2 = _listed([1, 2, 3]), _listed([3, 1, 2])
    np.testing.assert_array_equal(teddy_node_scores(g1, 8), teddy_node_scores(g2, 8))
    s1 = teddy_edge_scores(g1, 8)
    threshold = float(s1[0])  # the edge 0-1
    kept = [{tuple(sorted(p)) for p in g[:, teddy_threshold_mask(g, 8, threshold)].T.tolist()} for g in (g1, g2)]
    assert kept[0] == kept[1] == {(0, 1), (0, 2), (1, 4), (2, 5), (3, 6), (3, 7)}
