"""The numpy attention layouts: degree-bucketed neighbour lists (sliced ELL), packed dense rows."""

import itertools

import numpy as np
import pytest
import torch

from gtcompress.nn.attention import dense_attention, sparse_attention
from gtcompress.nn.layout import DenseLayout
from gtcompress.preprocess.layouts import (
    bucketed_layout,
    degree_histogram,
    dense_layout,
    merge_histograms,
    pack_rows,
    padded_layout,
    padded_slots,
)


def _check(ei: np.ndarray, n: int, buckets: int) -> dict[str, np.ndarray]:
    lay = bucketed_layout(ei, n, buckets)
    rows = np.concatenate([lay[f"nbr_node_{b}"] for b in range(buckets)])
    assert lay["nbr_inv"].shape == (n,) and np.array_equal(rows[lay["nbr_inv"]], np.arange(n))
    seen = []
    for b in range(buckets):
        src, edge, mask = (lay[f"nbr_{w}_{b}"] for w in ("src", "edge", "mask"))
        node = lay[f"nbr_node_{b}"]
        assert src.shape == edge.shape == mask.shape and src.shape[0] == node.shape[0] >= 1 and src.shape[1] >= 1
        assert src.dtype == edge.dtype == node.dtype == np.int64 and mask.dtype == bool
        # left-aligned: slot j valid iff j < in-degree
        assert np.array_equal(mask, np.sort(mask, axis=1)[:, ::-1])
        for r in range(src.shape[0]):
            for j in np.nonzero(mask[r])[0]:
                e = edge[r, j]
                assert ei[1, e] == node[r] and ei[0, e] == src[r, j]
                seen.append(e)
    assert sorted(seen) == list(range(ei.shape[1]))  # every edge instance exactly once
    return lay


@pytest.mark.parametrize("buckets", [1, 2, 3, 4, 8])
def test_bucketed_layout_covers_every_edge_once(buckets: int) -> None:
    rng = np.random.default_rng(0)
    for n, e in [(1, 0), (1, 3), (5, 0), (40, 120), (200, 50)]:
        ei = rng.integers(0, n, (2, e))
        if e:
            ei = np.concatenate([ei, ei[:, :2], [[0], [0]]], axis=1)  # duplicates + a self-loop
        _check(ei, n, buckets)


def test_buckets_cut_padding_on_poisson_degrees() -> None:
    rng = np.random.default_rng(1)
    n = 10_000
    ei = rng.integers(0, n, (2, 10 * n))
    single = padded_layout(ei, n)["nbr_src"].size
    _check(rng.integers(0, 600, (2, 3000)), 600, 4)
    lay = bucketed_layout(ei, n, 4)
    slots = sum(lay[f"nbr_src_{b}"].size for b in range(4))
    assert slots < 1.25 * ei.shape[1] < 0.6 * single
    degrees = [lay[f"nbr_src_{b}"].shape[1] for b in range(4)]
    assert degrees == sorted(degrees)


def test_stable_argsort_matches_numpy() -> None:
    from gtcompress.preprocess.layouts import stable_argsort

    rng = np.random.default_rng(2)
    for top in (1, 7, 70_000, 2**33):
        keys = rng.integers(0, top, 5000)
        assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))
    assert stable_argsort(np.zeros(0, dtype=np.int64)).shape == (0,)


def test_pack_rows_fills_rows_without_overlap() -> None:
    counts = np.array([7, 5, 9, 2, 1, 4, 9, 3])
    row, offset = pack_rows(counts, 9)
    assert row.max() + 1 == 5  # 9 | 9 | 7+1 | 5+2 | 4+3  (largest first, topped up with the smallest)
    for r in range(row.max() + 1):
        spans = sorted((offset[i], offset[i] + counts[i]) for i in np.flatnonzero(row == r))
        assert spans[0][0] == 0 and spans[-1][1] <= 9
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous, disjoint


def test_packed_dense_layout_is_the_same_attention() -> None:
    """Graphs sharing a row never see each other (edges stay inside graphs): dense attention on the packed
    layout equals the sparse reference, duplicates, self-loops and an edgeless graph included."""
    rng = np.random.default_rng(0)
    counts = np.array([6, 2, 9, 1, 3, 5])
    batch = np.repeat(np.arange(counts.size), counts)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    edges = [ptr[g] + rng.integers(0, c, (2, 2 * c)) for g, c in enumerate(counts) if c > 1]
    ei = np.concatenate([*edges, [[ptr[0]], [ptr[0]]], [[ptr[0]], [ptr[0] + 1]]], axis=1)  # self-loop, duplicate
    lay_np = dense_layout(batch, int(counts.sum()), counts.size, pack=True)
    assert lay_np["pad_mask"].shape == (3, 9) and lay_np["pad_mask"].sum() == counts.sum()
    assert np.unique(lay_np["node_slot"]).size == counts.sum()
    lay = DenseLayout.from_slots(torch.from_numpy(lay_np["node_slot"]), torch.from_numpy(lay_np["pad_mask"]))
    eit = torch.from_numpy(ei)
    n, h, d = int(counts.sum()), 2, 4
    q, k, v = (torch.randn(n, h * d, dtype=torch.float64) for _ in range(3))
    bias, rows = lay.count_bias_and_rows(eit, torch.from_numpy(batch))
    out = lay.unpad_heads(dense_attention(*(lay.pad_heads(t, h) for t in (q, k, v)), bias, row_valid=rows))
    ref = sparse_attention(*(t.view(n, h, d) for t in (q, k, v)), eit).reshape(n, -1)
    assert torch.allclose(out, ref, atol=1e-12)


def _heavy_tailed(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """In-degree of node i about ``scale / (i + 1)``: hundreds of distinct degrees (the bucket rule's
    quantile cut) and a long tail that padding to the largest in-degree blows up."""
    dst = np.repeat(np.arange(n), np.floor(scale / (np.arange(n) + 1)).astype(np.int64))
    return np.stack([rng.integers(0, n, dst.size), rng.permutation(dst)])


@pytest.mark.parametrize("buckets", [0, 1, 2, 4, 7])
def test_padded_slots_count_the_layout_without_building_it(buckets: int) -> None:
    """The server refuses a request by this count before pre-processing: it must be exactly the
    built layout's slots, for the single list (0) and any bucket count, sparse and heavy-tailed."""
    rng = np.random.default_rng(buckets)
    graphs = [np.zeros((2, 0), dtype=np.int64)]  # no edge: every bucket one masked slot
    for n in (1, 5, 40, 300):
        graphs.append(rng.integers(0, n, (2, int(rng.integers(0, 4 * n)))))
    graphs.append(_heavy_tailed(rng, 3000, 2000.0))  # > 256 distinct degrees
    for ei in graphs:
        n = max(int(ei.max()) + 1 if ei.size else 3, 1)
        if buckets:
            lay = bucketed_layout(ei, n, buckets)
            built = sum(lay[f"nbr_src_{b}"].size for b in range(buckets))
        else:
            built = padded_layout(ei, n)["nbr_src"].size
        assert padded_slots(*degree_histogram(ei[1], n), buckets) == built


def test_merged_histograms_count_the_union() -> None:
    """The batcher counts a merged call's slots from its requests' histograms: the union's layout."""
    rng = np.random.default_rng(3)
    a, b = _heavy_tailed(rng, 500, 300.0), rng.integers(0, 40, (2, 90))
    union = np.concatenate([a, b + 500], axis=1)
    merged = merge_histograms(degree_histogram(a[1], 500), degree_histogram(b[1], 40))
    assert [m.tolist() for m in merged] == [h.tolist() for h in degree_histogram(union[1], 540)]
    lay = bucketed_layout(union, 540, 4)
    assert padded_slots(*merged, 4) == sum(lay[f"nbr_src_{b}"].size for b in range(4))


def test_only_ascii_digits_number_a_bucketed_layout_input() -> None:
    """``str.isdigit()`` takes '²', which no bucket index is: such a name is an input of its own."""
    from gtcompress.preprocess.inputs import layout_input_base

    assert layout_input_base("nbr_src_2") == "nbr_src"
    assert layout_input_base("nbr_src_²") == "nbr_src_²"
