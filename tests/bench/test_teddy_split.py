"""bench/teddy_split.py: the random-edge control removes as many edges as TEDDY, other ones, and leaves
TEDDY as it was."""

import numpy as np
import pytest

import gtcompress.preprocess.teddy as teddy
from bench.teddy_split import main, random_edge_scores


def _ring_with_chords(n: int) -> np.ndarray:
    """An undirected graph (both directions stored) whose degrees differ, so TEDDY's scores differ."""
    pairs = [(i, (i + 1) % n) for i in range(n)] + [(0, i) for i in range(2, n - 1, 2)]
    ei = np.array(pairs).T
    return np.concatenate([ei, ei[::-1]], axis=1)


def test_random_control_removes_teddys_count_of_whole_pairs_and_other_ones() -> None:
    ei = _ring_with_chords(40)
    n = 40
    teddy_keep = teddy.teddy_keep_mask(ei, n, 0.3)
    with random_edge_scores(0):
        random_keep = teddy.teddy_keep_mask(ei, n, 0.3)
    assert random_keep.sum() == teddy_keep.sum()
    kept = {tuple(e) for e in ei[:, random_keep].T}
    assert all((j, i) in kept for i, j in kept), "a pair goes with both its directions"
    assert not np.array_equal(random_keep, teddy_keep)
    assert teddy.teddy_edge_scores.__module__ == "gtcompress.preprocess.teddy"  # restored on exit
    assert np.array_equal(teddy.teddy_keep_mask(ei, n, 0.3), teddy_keep)


def test_an_unknown_variant_is_an_error_line_before_any_work(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--variants", "edges", "weigths"])
    assert e.value.code == 2
    assert "--variants: 'weigths' not among dense-ft, edges, weights, both, random-edges" in capsys.readouterr().err
