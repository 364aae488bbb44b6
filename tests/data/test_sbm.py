"""PATTERN and CLUSTER follow the Benchmarking-GNNs generators, checked statistically.

Densities are compared with a 6-sigma binomial tolerance on the number of node pairs observed, so
a correct generator never fails by chance while a wrong p or q (e.g. 0.2 vs 0.35) always does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gtcompress.data.base import GraphDataset
from gtcompress.data.sbm import SBM_PRESETS, generate_cluster, generate_pattern, sample_sbm
from gtcompress.errors import GTCompressError
from gtcompress.graph import GraphBatch

N_TRAIN = 300
LOW, HIGH = 5, 34  # the notebooks' np.random.randint(5, 35): exclusive upper bound


def _tol(p: float, pairs: int) -> float:
    return 6.0 * math.sqrt(p * (1.0 - p) / pairs)


def _graphs(ds: GraphDataset) -> list[GraphBatch]:
    return [g for graphs in ds.splits.values() for g in graphs]


def _undirected_pairs(g: GraphBatch) -> tuple[np.ndarray, np.ndarray]:
    """Each undirected edge once, as (i, j) with i < j."""
    s, d = g.edge_index.numpy()
    keep = s < d
    return s[keep], d[keep]


def _check_simple_undirected(g: GraphBatch) -> None:
    g.validate()
    assert g.edge_index.dtype == torch.int64
    n = g.num_nodes
    s, d = g.edge_index.numpy()
    assert not np.any(s == d), "self loop"
    fwd, rev = s * n + d, d * n + s
    assert np.unique(fwd).size == fwd.size, "duplicate edge"
    assert np.array_equal(np.sort(fwd), np.sort(rev)), "edge stored in one direction only"


def _same(a: GraphDataset, b: GraphDataset) -> bool:
    if a.splits.keys() != b.splits.keys():
        return False
    for split in a.splits:
        if len(a[split]) != len(b[split]):
            return False
        for g, h in zip(a[split], b[split], strict=True):
            if not (torch.equal(g.x, h.x) and torch.equal(g.edge_index, h.edge_index) and torch.equal(g.y, h.y)):
                return False
    return True


@pytest.fixture(scope="module")
def cluster() -> GraphDataset:
    return generate_cluster((N_TRAIN, 20, 20), seed=0)


@pytest.fixture(scope="module")
def pattern() -> GraphDataset:
    return generate_pattern((N_TRAIN, 20, 20), seed=0)


# ----------------------------------------------------------------------------------- the SBM core
def test_sample_sbm_densities_match_block_probabilities() -> None:
    rng = np.random.default_rng(123)
    prob = np.full((5, 5), 0.35)
    np.fill_diagonal(prob, 0.5)
    intra_edges = intra_pairs = inter_edges = inter_pairs = 0
    sizes_seen = []
    for _ in range(300):
        sizes = rng.integers(LOW, HIGH + 1, size=5)
        sizes_seen.append(sizes)
        blocks = np.repeat(np.arange(5), sizes)
        src, dst = sample_sbm(rng, blocks, prob)
        assert np.all(src < dst)
        same = blocks[src] == blocks[dst]
        n = blocks.size
        pairs_in = int((sizes * (sizes - 1) // 2).sum())
        intra_edges += int(same.sum())
        inter_edges += int((~same).sum())
        intra_pairs += pairs_in
        inter_pairs += n * (n - 1) // 2 - pairs_in
    assert abs(intra_edges / intra_pairs - 0.5) < _tol(0.5, intra_pairs)
    assert abs(inter_edges / inter_pairs - 0.35) < _tol(0.35, inter_pairs)
    all_sizes = np.concatenate(sizes_seen)
    assert all_sizes.min() == LOW and all_sizes.max() == HIGH


def test_sample_sbm_extreme_probabilities() -> None:
    rng = np.random.default_rng(0)
    blocks = np.array([0, 0, 1, 1, 1])
    src, dst = sample_sbm(rng, blocks, np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert len(src) == 2 * 3  # complete bipartite K_{2,3}
    assert np.all(blocks[src] != blocks[dst])


# ----------------------------------------------------------------------------------------- CLUSTER
def test_cluster_info(cluster: GraphDataset) -> None:
    info = cluster.info
    assert (info.name, info.task_level, info.task, info.out_dim) == ("CLUSTER", "node", "multiclass", 6)
    assert info.metric == "class_avg_acc" and info.class_weighted_loss
    assert info.node_features.kind == "categorical" and info.node_features.cardinalities == [7]
    assert info.edge_features is None
    assert [len(cluster[s]) for s in ("train", "val", "test")] == [N_TRAIN, 20, 20]


def test_cluster_graphs_are_simple_undirected(cluster: GraphDataset) -> None:
    for g in _graphs(cluster):
        _check_simple_undirected(g)
        assert g.x.shape == (g.num_nodes, 1) and g.x.dtype == torch.int64
        assert g.y.shape == (g.num_nodes,) and g.y.dtype == torch.int64


def test_cluster_community_sizes(cluster: GraphDataset) -> None:
    counts = np.stack([np.bincount(g.y.numpy(), minlength=6) for g in _graphs(cluster)])
    assert counts.shape[1] == 6
    assert counts.min() == LOW and counts.max() == HIGH  # both ends of randint(5, 35) are reached


def test_cluster_feature_and_label_rule(cluster: GraphDataset) -> None:
    for g in _graphs(cluster):
        x, y = g.x[:, 0].numpy(), g.y.numpy()
        for r in range(6):
            in_r = x[y == r]
            assert (in_r == r + 1).sum() == 1, "exactly one seed node per community"
            assert (in_r == 0).sum() == in_r.size - 1
        assert set(np.unique(x)) <= set(range(7))


def test_cluster_edge_densities(cluster: GraphDataset) -> None:
    intra_edges = intra_pairs = inter_edges = inter_pairs = 0
    for g in _graphs(cluster):
        s, d = _undirected_pairs(g)
        y = g.y.numpy()
        same = y[s] == y[d]
        sizes = np.bincount(y, minlength=6)
        pairs_in = int((sizes * (sizes - 1) // 2).sum())
        n = g.num_nodes
        intra_edges += int(same.sum())
        inter_edges += int((~same).sum())
        intra_pairs += pairs_in
        inter_pairs += n * (n - 1) // 2 - pairs_in
    assert abs(intra_edges / intra_pairs - 0.55) < _tol(0.55, intra_pairs)
    assert abs(inter_edges / inter_pairs - 0.25) < _tol(0.25, inter_pairs)


def test_cluster_node_order_is_shuffled(cluster: GraphDataset) -> None:
    graphs = _graphs(cluster)
    assert not any(bool((g.y[1:] >= g.y[:-1]).all()) for g in graphs)
    # Seed nodes (x > 0) sit anywhere, not at community starts.
    positions = np.concatenate([np.flatnonzero(g.x[:, 0].numpy()) / g.num_nodes for g in graphs])
    assert 0.4 < positions.mean() < 0.6


# ----------------------------------------------------------------------------------------- PATTERN
def test_pattern_info(pattern: GraphDataset) -> None:
    info = pattern.info
    assert (info.name, info.task_level, info.task, info.out_dim) == ("PATTERN", "node", "multiclass", 2)
    assert info.metric == "class_avg_acc" and info.class_weighted_loss
    assert info.node_features.kind == "categorical" and info.node_features.cardinalities == [3]
    assert info.edge_features is None


def test_pattern_graphs_are_simple_undirected(pattern: GraphDataset) -> None:
    for g in _graphs(pattern):
        _check_simple_undirected(g)
        assert g.x.shape == (g.num_nodes, 1) and g.x.dtype == torch.int64
        assert g.y.shape == (g.num_nodes,) and g.y.dtype == torch.int64
        assert set(np.unique(g.x.numpy())) <= {0, 1, 2}
        assert set(np.unique(g.y.numpy())) <= {0, 1}


def test_pattern_sizes(pattern: GraphDataset) -> None:
    k = np.array([int(g.y.sum()) for g in _graphs(pattern)])
    rest = np.array([g.num_nodes for g in _graphs(pattern)]) - k
    assert k.min() >= LOW and k.max() <= HIGH
    assert rest.min() >= 5 * LOW and rest.max() <= 5 * HIGH


def test_pattern_densities(pattern: GraphDataset) -> None:
    inside_edges = inside_pairs = attach_edges = attach_pairs = g_edges = g_pairs = 0
    for g in _graphs(pattern):
        s, d = _undirected_pairs(g)
        y = g.y.numpy()
        k, n_g = int(y.sum()), int(g.num_nodes - y.sum())
        both = y[s] + y[d]
        inside_edges += int((both == 2).sum())
        attach_edges += int((both == 1).sum())
        g_edges += int((both == 0).sum())
        inside_pairs += k * (k - 1) // 2
        attach_pairs += k * n_g
        g_pairs += n_g * (n_g - 1) // 2
    # Pattern nodes attach to the rest with probability 0.5, independently per graph.
    assert abs(attach_edges / attach_pairs - 0.5) < _tol(0.5, attach_pairs)
    # The 100 patterns (each reused by ~3 graphs here) have internal density 0.5: ~20k distinct pairs.
    assert abs(inside_edges / inside_pairs - 0.5) < 0.03
    # Inside G the density mixes p = 0.5 (same community) and q = 0.35 (different communities).
    assert 0.35 < g_edges / g_pairs < 0.5


def _pattern_part(g: GraphBatch) -> tuple[int, int, list[int], np.ndarray]:
    """(size, edges, sorted tokens, adjacency spectrum) of the pattern subgraph of ``g``."""
    idx = np.flatnonzero(g.y.numpy())
    pos = {int(v): i for i, v in enumerate(idx)}
    s, d = g.edge_index.numpy()
    keep = g.y.numpy()[s].astype(bool) & g.y.numpy()[d].astype(bool)
    adj = np.zeros((idx.size, idx.size))
    for a, b in zip(s[keep], d[keep], strict=True):
        adj[pos[int(a)], pos[int(b)]] = 1.0
    tokens = sorted(g.x[idx, 0].tolist())
    return idx.size, int(keep.sum()), tokens, np.linalg.eigvalsh(adj)


def test_pattern_is_fixed_per_instance_and_shared_across_splits(pattern: GraphDataset) -> None:
    # 100 patterns: train graph i uses pattern i * 100 // 300, val graph j uses j * 100 // 20.
    train, val = pattern["train"], pattern["val"]
    ref = _pattern_part(train[0])
    for other in (train[1], train[2], val[0]):
        size, edges, tokens, spectrum = _pattern_part(other)
        assert (size, edges, tokens) == ref[:3]
        np.testing.assert_allclose(spectrum, ref[3], atol=1e-8)
    assert _pattern_part(train[3])[:3] != ref[:3] or not np.allclose(_pattern_part(train[3])[3], ref[3])


def test_pattern_node_order_is_shuffled(pattern: GraphDataset) -> None:
    # Unshuffled, the pattern would always be the last k nodes.
    assert not any(bool(g.y[-int(g.y.sum()) :].all()) for g in _graphs(pattern))


# ----------------------------------------------------------------------------- seeds and presets
@pytest.mark.parametrize("generate", [generate_cluster, generate_pattern])
def test_seeding(generate) -> None:  # type: ignore[no-untyped-def]
    a = generate((12, 3, 3), seed=1)
    assert _same(a, generate((12, 3, 3), seed=1))
    assert not _same(a, generate((12, 3, 3), seed=2))
    # A split is its own random stream: the train graphs do not depend on the val/test sizes.
    only_train = generate((12, 0, 0), seed=1)
    assert only_train["val"] == [] and only_train["test"] == []
    for g, h in zip(a["train"], only_train["train"], strict=True):
        assert torch.equal(g.edge_index, h.edge_index)


def test_same_seed_pattern_and_cluster_differ() -> None:
    a, b = generate_cluster((1, 0, 0), seed=0), generate_pattern((1, 0, 0), seed=0)
    assert a["train"][0].num_nodes != b["train"][0].num_nodes or not torch.equal(
        a["train"][0].edge_index, b["train"][0].edge_index
    )


def test_presets_and_bad_sizes() -> None:
    assert SBM_PRESETS["full"]["pattern"] == (10000, 2000, 2000)
    assert SBM_PRESETS["full"]["cluster"] == (10000, 1000, 1000)
    assert set(SBM_PRESETS) == {"small", "full"}
    with pytest.raises(GTCompressError):
        generate_cluster((1, 2))
    with pytest.raises(GTCompressError):
        generate_pattern((1, -2, 3))


@pytest.mark.parametrize("generate", [generate_cluster, generate_pattern])
def test_sizes_that_cannot_fit_in_memory_are_refused_before_generating(generate, monkeypatch) -> None:
    """What 16 drawn graphs take, times the count, against the machine's memory: a count typed with
    extra zeros generated until the OOM killer stepped in. Sizes that fit still generate."""
    import gtcompress.data.sbm as sbm

    monkeypatch.setattr(sbm, "machine_memory", lambda: 2**20)  # 1 MiB: a few dozen graphs
    name = "CLUSTER" if generate is generate_cluster else "PATTERN"
    with pytest.raises(GTCompressError, match=rf"size 100,1,1: {name} graphs take about \d+ KiB each, so 102 graphs"):
        generate((100, 1, 1), seed=0)
    assert sum(len(v) for v in generate((2, 1, 1), seed=0).splits.values()) == 4
