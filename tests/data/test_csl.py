"""CSL: 10 classes of 4-regular circulant graphs, randomly relabelled, split stratified 60/20/20."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gtcompress.data.base import GraphDataset
from gtcompress.data.csl import CSL_NODES, CSL_SKIPS, csl_graph, generate_csl
from gtcompress.errors import GTCompressError
from gtcompress.graph import GraphBatch


@pytest.fixture(scope="module")
def csl() -> GraphDataset:
    return generate_csl(seed=0)


def _all(ds: GraphDataset) -> list[GraphBatch]:
    return [g for graphs in ds.splits.values() for g in graphs]


def _spectrum(edge_index: torch.Tensor | np.ndarray, n: int = CSL_NODES) -> np.ndarray:
    ei = np.asarray(edge_index)
    adj = np.zeros((n, n))
    adj[ei[0], ei[1]] = 1.0
    return np.linalg.eigvalsh(adj)


def test_info(csl: GraphDataset) -> None:
    info = csl.info
    assert (info.name, info.task_level, info.task, info.out_dim, info.metric) == (
        "CSL",
        "graph",
        "multiclass",
        10,
        "accuracy",
    )
    assert info.node_features.kind == "categorical" and info.node_features.cardinalities == [1]
    assert info.edge_features is None


def test_split_is_stratified_60_20_20(csl: GraphDataset) -> None:
    assert [len(csl[s]) for s in ("train", "val", "test")] == [90, 30, 30]
    for split, per_class in (("train", 9), ("val", 3), ("test", 3)):
        labels = torch.cat([g.y for g in csl[split]])
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10


def test_every_graph_is_a_4_regular_simple_undirected_41_cycle(csl: GraphDataset) -> None:
    for g in _all(csl):
        g.validate()
        assert g.num_nodes == CSL_NODES and g.num_edges == 4 * CSL_NODES
        assert g.x.shape == (CSL_NODES, 1) and g.x.dtype == torch.int64 and not g.x.any()
        assert g.y.shape == (1,) and g.y.dtype == torch.int64
        s, d = g.edge_index.numpy()
        assert not np.any(s == d)
        fwd, rev = s * CSL_NODES + d, d * CSL_NODES + s
        assert np.unique(fwd).size == fwd.size
        assert np.array_equal(np.sort(fwd), np.sort(rev))
        assert np.all(np.bincount(s, minlength=CSL_NODES) == 4)
        assert np.all(np.bincount(d, minlength=CSL_NODES) == 4)


def test_canonical_graph_has_cycle_and_skip_links() -> None:
    for skip in CSL_SKIPS:
        ei = csl_graph(skip)
        edges = set(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
        for i in range(CSL_NODES):
            expected = {(i + step) % CSL_NODES for step in (1, -1, skip, -skip)}
            assert {j for (a, j) in edges if a == i} == expected


def test_same_class_isomorphic_different_classes_not(csl: GraphDataset) -> None:
    by_class: dict[int, list[GraphBatch]] = {}
    for g in _all(csl):
        by_class.setdefault(int(g.y), []).append(g)
    reference = [_spectrum(csl_graph(skip)) for skip in CSL_SKIPS]
    for label, graphs in by_class.items():
        assert len(graphs) == 15
        for g in graphs:
            np.testing.assert_allclose(_spectrum(g.edge_index), reference[label], atol=1e-8)
        # The node ids really are permuted: the copies are not all the same edge list.
        assert len({tuple(g.edge_index.flatten().tolist()) for g in graphs}) > 1
    for a in range(10):
        for b in range(a + 1, 10):
            assert np.abs(reference[a] - reference[b]).max() > 1e-3, (CSL_SKIPS[a], CSL_SKIPS[b])


def test_seeding_and_permutation_count() -> None:
    a, b, c = generate_csl(seed=3), generate_csl(seed=3), generate_csl(seed=4)
    edges = lambda ds: [g.edge_index for s in ("train", "val", "test") for g in ds[s]]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(edges(a), edges(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(edges(a), edges(c), strict=True))
    small = generate_csl(seed=0, permutations=5)
    assert [len(small[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    with pytest.raises(GTCompressError):
        generate_csl(permutations=0)
