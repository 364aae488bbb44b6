"""The numpy attention layouts: degree-bucketed neighbour lists (sliced ELL)."""

import numpy as np
import pytest

from gtcompress.preprocess.layouts import bucketed_layout, padded_layout


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
