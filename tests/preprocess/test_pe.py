import subprocess
import sys

import numpy as np
import pytest

from gtcompress.preprocess import NumpyGraph, graph_ptr, laplacian_pe, rwse, split_by_graph, union_graphs


def _cycle(n: int) -> np.ndarray:
    a = np.arange(n)
    b = (a + 1) % n
    return np.stack([np.concatenate([a, b]), np.concatenate([b, a])])


def test_lap_pe_are_laplacian_eigenvectors() -> None:
    ei = np.array([[0, 1, 1, 2, 2, 3, 0, 2], [1, 0, 2, 1, 3, 2, 2, 0]])
    pe = laplacian_pe(ei, np.array([0, 4]), k=3)
    a = np.zeros((4, 4))
    a[ei[1], ei[0]] = 1
    d = a.sum(1)
    lap = np.eye(4) - a / np.sqrt(np.outer(d, d))
    vals = np.linalg.eigvalsh(lap)
    for j in range(3):
        v = pe[:, j].astype(np.float64)
        assert np.allclose(lap @ v, vals[j + 1] * v, atol=1e-5)
        assert np.isclose(np.linalg.norm(v), 1.0, atol=1e-5)


def test_lap_pe_pads_small_graphs_and_handles_batches() -> None:
    ei = np.concatenate([_cycle(3), np.array([[3], [4]])], axis=1)  # a triangle, then a 2-node graph
    pe = laplacian_pe(ei, np.array([0, 3, 5, 6]), k=4)
    assert pe.shape == (6, 4)
    assert np.all(pe[:3, 2:] == 0)  # 3 nodes: only 2 non-trivial eigenvectors
    assert np.all(pe[5] == 0)  # single-node graph


def test_rwse_on_a_cycle() -> None:
    # On an n-cycle the t-step return probability is C(t, t/2) / 2^t for even t, 0 for odd t (t < n).
    pe = rwse(_cycle(10), np.array([0, 10]), k=6)
    expected = [0.0, 0.5, 0.0, 6 / 16, 0.0, 20 / 64]
    assert np.allclose(pe, np.tile(expected, (10, 1)), atol=1e-6)


def test_rwse_isolated_node_is_zero() -> None:
    pe = rwse(np.array([[0, 1], [1, 0]]), np.array([0, 3]), k=3)
    assert np.all(pe[2] == 0) and pe[0, 1] == pytest.approx(1.0)


def test_union_and_split_round_trip() -> None:
    gs = [
        NumpyGraph(np.ones((2, 1)), np.array([[0], [1]])),
        NumpyGraph(np.zeros((3, 1)), np.array([[0, 2], [1, 1]])),
    ]
    u = union_graphs(gs)
    assert u.edge_index.tolist() == [[0, 2, 4], [1, 3, 3]]
    assert u.batch.tolist() == [0, 0, 1, 1, 1]
    assert graph_ptr(u.batch, u.num_nodes).tolist() == [0, 2, 5]
    parts = split_by_graph(np.arange(5), [2, 3])
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3, 4]]


def test_preprocess_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import gtcompress.preprocess, gtcompress; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
