"""The work partition of kernel v2 as a plain function (:mod:`trt_plugins.partition`)."""

from __future__ import annotations

import numpy as np
import pytest

from trt_plugins.partition import partition, work_balance


def power_law_rowptr(n: int, e: int, seed: int, exponent: float = 1.1) -> np.ndarray:
    """Destinations drawn from a Zipf law over ``n`` nodes: a few hubs hold much of the in-degree."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    dst = rng.choice(n, size=e, p=weights / weights.sum())
    return np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=n))])


@pytest.mark.parametrize("chunk", [1, 7, 512])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_edge_in_exactly_one_chunk_and_no_chunk_over_size(chunk: int, seed: int) -> None:
    rowptr = power_law_rowptr(3000, 20_000, seed)
    p = partition(rowptr, chunk)
    covered = np.concatenate([np.arange(a, b) for a, b in p.edge_ranges])
    assert np.array_equal(covered, np.arange(20_000))  # in order, once each
    assert p.partials_work().max() <= chunk


def test_power_law_graph_is_balanced_where_row_blocks_are_not() -> None:
    n, e = 100_000, 1_000_000
    rowptr = power_law_rowptr(n, e, seed=3)
    deg = np.diff(rowptr)
    assert deg.max() > 50_000  # a real hub: more than 5 % of all edges
    p = partition(rowptr, 512)
    assert work_balance(p) <= 1.5
    # v1's partition (16 destinations per program) on the same graph, for contrast:
    blocks = np.add.reduceat(deg, np.arange(0, n, 16))
    assert blocks.max() / blocks.mean() > 1000


def test_cut_rows_and_their_records() -> None:
    # rows: 0 has 3 edges, 1 none, 2 has 9, 3 has 2, 4-5 none, 6 has 14, 7 has 1 (29 edges)
    rowptr = np.cumsum([0, 3, 0, 9, 2, 0, 0, 14, 1])
    p = partition(rowptr, 4)
    assert p.n_chunks == 8
    cuts = {c.row: (c.first_chunk, c.last_chunk) for c in p.cut_rows}
    assert cuts == {2: (0, 2), 6: (3, 6)}  # row 3 (edges 12, 13) lies inside chunk 3
    row2 = next(c for c in p.cut_rows if c.row == 2)
    assert row2.records == [1, 2, 4]  # began inside chunk 0 (record 2*0+1), then chunks 1, 2 (record 2c)
    assert p.written_records() == {1, 2, 4, 7, 8, 10, 12}
    assert list(p.combine_records()) == [0, 0, 3, 0, 0, 0, 4, 0]  # merged by each row's last chunk


def test_empty_and_bad_inputs() -> None:
    p = partition(np.zeros(6, dtype=np.int64), 8)  # 5 nodes, no edges: one empty program
    assert p.n_chunks == 1 and p.partials_work().tolist() == [0] and p.cut_rows == []
    assert work_balance(p) == 1.0
    with pytest.raises(ValueError, match="non-decreasing"):
        partition(np.array([0, 3, 2]), 4)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        partition(np.array([0, 3]), 0)
