import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

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


def test_lap_pe_of_a_graph_float32_eigh_fails_on_is_computed_in_float64() -> None:
    """LAPACK's float32 ?syevx raised "1 eigenvectors failed to converge" on this 30-node graph
    (4 isolated nodes, 3 components, eigenvalues 0.55 and 0.57 around the 9th) at k = 8: a served
    request got a 500, a dataset's pre-processing a traceback."""
    src = np.array(
        [16, 20, 9, 18, 15, 4, 12, 10, 25, 6, 23, 7, 4, 22, 26, 27, 19, 11, 3, 2, 1, 9, 2, 2, 29, 10, 18, 15, 10, 11]
    )
    dst = np.array(
        [1, 16, 1, 17, 15, 10, 12, 29, 3, 20, 4, 1, 29, 19, 12, 16, 3, 14, 22, 4, 14, 25, 22, 22, 13, 21, 17, 26, 29, 8]
    )
    ei = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])])
    pe = laplacian_pe(ei, np.array([0, 30]), k=8)
    a = np.zeros((30, 30))
    a[ei[1], ei[0]] = 1
    np.fill_diagonal(a, 0)
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0.0)
    lap = np.eye(30) - inv[:, None] * a * inv[None, :]
    vals = np.linalg.eigvalsh(lap)
    for j in range(8):
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


@pytest.mark.parametrize("cap", [1, 30_000, 120_000])
def test_rwse_of_a_large_graph_is_exact_when_its_powers_would_fill_in(monkeypatch, cap: int) -> None:
    """Past _RWSE_MAX_NNZ the powers are not formed (a 20k-node graph's took 9 GB at t = 6): the
    remaining steps go by blocks of columns and give the same return probabilities; the largest
    sparse matrix formed stays under the cap."""
    from gtcompress.preprocess import pe

    rng = np.random.default_rng(0)
    n = pe._DENSE_EIG_MAX + 300  # the sparse path
    ei = rng.integers(0, n, (2, 6 * n))
    ei = np.concatenate([ei, ei[::-1]], axis=1)
    ptr = np.array([0, n])
    want = rwse(ei, ptr, k=7)
    formed: list[int] = []
    matmul = sp.csr_matrix.__matmul__

    def tracked(a, b):
        r = matmul(a, b)
        if sp.issparse(r):
            formed.append(r.nnz)
        return r

    monkeypatch.setattr(pe, "_RWSE_MAX_NNZ", cap)
    monkeypatch.setattr(pe, "_RWSE_BLOCK_BYTES", 8 * n * 97)  # blocks of 97 columns, the last one short
    monkeypatch.setattr(sp.csr_matrix, "__matmul__", tracked)
    got = rwse(ei, ptr, k=7)
    np.testing.assert_array_equal(got, want)
    assert max(formed, default=0) <= max(cap, 2 * ei.shape[1])  # P itself is formed once (D^-1 A)
    assert want[:, 1].min() > 0  # walks of two steps return: the check covers non-zero values


def test_rwse_of_a_graph_with_dense_edges_takes_the_dense_path(monkeypatch) -> None:
    """Past _DENSE_EIG_MAX nodes a graph with dense edges went to the sparse path, whose column blocks
    cost edges x nodes a step at sparse speed: 86 s for 2,100 nodes and 4M edges, 4.7 s dense at 2,000.
    Shrunk here: the sparse path must not run, and the values are the dense path's."""
    from gtcompress.preprocess import pe

    rng = np.random.default_rng(2)
    n = 60
    ei = rng.integers(0, n, (2, 300))
    ei = np.concatenate([ei, ei[::-1]], axis=1)  # 600 edges >= 60^2 / 20
    ptr = np.array([0, n])
    want = rwse(ei, ptr, k=6)  # the dense path: 60 nodes <= _RWSE_DENSE_MIN

    def no_sparse(*args: object) -> None:
        raise AssertionError("the sparse path ran for a graph with dense edges")

    monkeypatch.setattr(pe, "_RWSE_DENSE_MIN", 50)
    monkeypatch.setattr(pe, "_RWSE_MAX_NNZ", 1)  # the sparse path would go by columns at once
    monkeypatch.setattr(pe, "_rwse_by_columns", no_sparse)
    np.testing.assert_array_equal(rwse(ei, ptr, k=6), want)
    sparse_edges = ei[:, :40]  # 40 edges < 60^2 / 20: still the sparse path
    with pytest.raises(AssertionError, match="the sparse path ran"):
        rwse(sparse_edges, ptr, k=6)


def test_rwse_between_a_32nd_and_a_20th_of_dense_edges_takes_the_sparse_path(monkeypatch) -> None:
    """Edges of n^2 / 32 sent a graph to the dense path, where the sparse one was faster up to about
    n^2 / 20 (5,300 nodes, k = 2: 7.5 s and 900 MB dense, 4.5 s and 230 MB sparse). Shrunk: 60 nodes,
    150 edges (60^2 / 24) take the sparse path with the dense path's values; 180 (60^2 / 20) the dense."""
    from gtcompress.preprocess import pe

    rng = np.random.default_rng(4)
    n = 60
    half = rng.integers(0, n, (2, 90))
    ptr = np.array([0, n])
    between = np.concatenate([half[:, :75], half[::-1, :75]], axis=1)  # 150 edges
    dense = np.concatenate([half, half[::-1]], axis=1)  # 180 edges
    want = {e.shape[1]: rwse(e, ptr, k=6) for e in (between, dense)}  # dense path: 60 <= _RWSE_DENSE_MIN
    columns: list[int] = []

    def by_columns(*args: object) -> None:
        columns.append(1)
        real(*args)

    real = pe._rwse_by_columns
    monkeypatch.setattr(pe, "_RWSE_DENSE_MIN", 50)
    monkeypatch.setattr(pe, "_RWSE_MAX_NNZ", 1)  # the sparse path goes by columns at once
    monkeypatch.setattr(pe, "_rwse_by_columns", by_columns)
    np.testing.assert_allclose(rwse(between, ptr, k=6), want[150], atol=1e-7)
    assert columns == [1]
    np.testing.assert_array_equal(rwse(dense, ptr, k=6), want[180])
    assert columns == [1]  # the dense path


def test_rwse_of_a_mid_sized_graph_with_sparse_edges_takes_the_sparse_path(monkeypatch) -> None:
    """A 2,000-node path took 4.5 s on the dense path ((k-1) products of n x n matrices) and 0.3 s on the
    sparse one, with the same values: past _RWSE_DENSE_MIN nodes sparse edges take the sparse path."""
    from gtcompress.preprocess import pe

    n = pe._RWSE_DENSE_MIN + 1
    s = np.arange(n - 1)
    ei = np.stack([np.concatenate([s, s + 1]), np.concatenate([s + 1, s])])
    ptr = np.array([0, n])
    bound = pe._product_nnz_bound
    sparse_steps: list[int] = []  # only the sparse path bounds its products

    def counted(a: sp.csr_matrix, b: sp.csr_matrix) -> int:
        sparse_steps.append(1)
        return bound(a, b)

    monkeypatch.setattr(pe, "_product_nnz_bound", counted)
    got = rwse(ei, ptr, k=5)
    assert len(sparse_steps) == 4  # k - 1 sparse products, no dense one
    monkeypatch.setattr(pe, "_RWSE_DENSE_MIN", n)  # the dense path, for reference
    np.testing.assert_array_equal(got, rwse(ei, ptr, k=5))
    assert len(sparse_steps) == 4


def test_the_product_nnz_bound_is_an_upper_bound() -> None:
    from gtcompress.preprocess.pe import _product_nnz_bound

    rng = np.random.default_rng(1)
    for _ in range(5):
        a = sp.random(300, 300, density=0.02, random_state=rng, format="csr")
        b = sp.random(300, 300, density=0.03, random_state=rng, format="csr")
        assert _product_nnz_bound(a, b) >= (a @ b).nnz


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


def _relabelled(ei: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same graph with node i renamed new[i]; returns (edges, new)."""
    new = rng.permutation(n)
    return new[ei], new


def _laplacian(ei: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((n, n))
    a[ei[1], ei[0]] = 1.0
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0.0)
    deg = a.sum(axis=1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    return np.eye(n) - inv[:, None] * a * inv[None, :], a


def test_lap_pe_does_not_depend_on_the_node_order() -> None:
    """Relabelling a graph whose first k+1 eigenvalues are distinct gives the same LapPE, rows
    permuted, wherever an order-free statistic fixes the sign (before: 124 of the 125 such graphs changed)."""
    from gtcompress.preprocess.pe import order_free_signs

    rng = np.random.default_rng(0)
    k, checked = 8, 0
    for _ in range(150):
        n = int(rng.integers(6, 60))
        ei = rng.integers(0, n, (2, int(rng.integers(n, 4 * n))))
        lap, a = _laplacian(ei, n)
        vals, vecs = np.linalg.eigh(lap)
        if np.min(np.diff(vals[: k + 2])) < 1e-3:
            continue  # a repeated eigenvalue: its eigenspace basis is arbitrary, not only its signs
        if np.any(order_free_signs(vecs[:, 1 : k + 1], a) == 0):
            continue  # an automorphism maps an eigenvector to its negative: no order-free sign exists
        ptr = np.array([0, n])
        pe = laplacian_pe(ei, ptr, k)
        ei2, new = _relabelled(ei, n, rng)
        pe2 = laplacian_pe(ei2, ptr, k)
        np.testing.assert_allclose(pe2[new], pe, atol=1e-4)  # float32 eigensolver noise: ~2e-5
        checked += 1
    assert checked >= 100  # the rule covers most random graphs; the test is not vacuous


def test_graph_symmetry_leaves_the_sign_open_and_says_so() -> None:
    """A star's leaves are interchangeable: an eigenvector antisymmetric on two leaves has no
    order-free sign (order_free_signs gives 0), and canonical_signs leaves it as the solver gave it."""
    from gtcompress.preprocess.pe import canonical_signs, order_free_signs

    v = np.array([[0.0, 0.5, -0.5, 0.0]]).T
    a = np.zeros((4, 4))
    a[0, 1:] = a[1:, 0] = 1.0
    assert order_free_signs(v, a).tolist() == [0.0]
    np.testing.assert_array_equal(canonical_signs(v, a), v)
    w = np.array([[0.1, 0.6, -0.2, 0.3]]).T
    assert order_free_signs(w, a).tolist() == [1.0]
    np.testing.assert_array_equal(canonical_signs(-w, a), w)


def test_an_unknown_pe_kind_is_refused_at_every_door() -> None:
    """A model with pe {"laplacian": 4} exported and was served RWSE under that name (everything that
    was not "lap" was computed as RWSE); the export's parity check could not see it, both sides got
    the same wrong input."""
    from gtcompress.data.base import FeatureSpec
    from gtcompress.errors import ConfigError
    from gtcompress.models import ModelConfig
    from gtcompress.preprocess.pe import pe_function
    from gtcompress.preprocess.spec import FeatureInput, InputSpec, OutputSpec

    assert pe_function("lap") is laplacian_pe and pe_function("rwse") is rwse
    with pytest.raises(ValueError) as info:
        pe_function("laplacian")
    assert str(info.value) == "unknown PE kind 'laplacian'; expected lap or rwse"
    with pytest.raises(ConfigError) as info:
        ModelConfig(arch="gt", node_features=FeatureSpec("float", 5), out_dim=2, pe={"laplacian": 4})
    assert str(info.value) == "pe kind 'laplacian': expected lap or rwse"
    with pytest.raises(ValueError) as info:
        InputSpec("gt", "graph", "scatter", FeatureInput("float", 5), OutputSpec("output", 2, "graph"), pe={"lpe": 4})
    assert str(info.value) == "input spec: unknown PE kind 'lpe'; expected lap or rwse"
    for width in (-1, 0, 2.5, "4", True):  # a hand-written spec: every request failed in numpy instead
        with pytest.raises(ValueError) as info:
            InputSpec(
                "gt", "graph", "scatter", FeatureInput("float", 5), OutputSpec("output", 2, "graph"), pe={"lap": width}
            )
        assert str(info.value) == f"input spec: PE 'lap' width must be a positive integer, got {width!r}"


def test_one_blas_thread_nested_across_threads_restores_the_process_count() -> None:
    """BLAS's thread count is process-wide: with two threads inside an encoding, the one that leaves
    first must not give the other the full pool, and the last one out must restore the process's count
    (a save/restore per call left the process on one BLAS thread for good: A in, B in, A out, B out).
    Then a third thread's encoding must still get its one thread (threadpoolctl 3.8 ignores a thread's
    limit while another still claims the right to set it)."""
    import threading

    from threadpoolctl import ThreadpoolController, threadpool_info

    from gtcompress.preprocess import pe

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    def set_blas(count: int) -> None:  # in a thread that ends, so that it leaves no claim behind
        t = threading.Thread(target=lambda: ThreadpoolController().limit(limits=count, user_api="blas"))
        t.start()
        t.join()

    a_in, b_in, a_out, b_out, done = (threading.Event() for _ in range(5))
    seen: dict[str, set[int]] = {}

    @pe._one_blas_thread
    def a() -> np.ndarray:
        a_in.set()
        assert b_in.wait(10)
        return np.zeros(0)

    @pe._one_blas_thread
    def b() -> np.ndarray:
        b_in.set()
        assert a_out.wait(10)
        seen["b after a left"] = blas_threads()
        return np.zeros(0)

    @pe._one_blas_thread
    def c() -> np.ndarray:
        seen["c"] = blas_threads()
        return np.zeros(0)

    # the threads live on after their encodings: a thread that ended holds no claim to BLAS's count
    ta = threading.Thread(target=lambda: (a(), a_out.set(), done.wait(10)))
    tb = threading.Thread(target=lambda: (b(), b_out.set(), done.wait(10)))
    before = min(blas_threads())
    set_blas(2)  # a known count above 1, whatever this machine's cores
    try:
        assert blas_threads() == {2}
        ta.start()
        assert a_in.wait(10)
        tb.start()
        assert b_out.wait(10)
        assert seen["b after a left"] == {1}
        assert blas_threads() == {2}
        tc = threading.Thread(target=c)
        tc.start()
        tc.join(10)
        assert seen["c"] == {1}
        assert blas_threads() == {2}
    finally:
        done.set()
        for t in (ta, tb):
            if t.is_alive():
                t.join(10)
        set_blas(before)


def test_one_blas_thread_leaves_another_threads_limit_to_that_thread() -> None:
    """With threadpoolctl 3.8 a thread inside its own ``threadpool_limits`` block owns BLAS's count and
    an encoding's limit is ignored meanwhile; the encoding must then not restore, once that block has
    ended, the count that block had set (it would undo the block's own restore)."""
    import threading

    import threadpoolctl
    from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

    from gtcompress.preprocess import pe

    if tuple(int(p) for p in threadpoolctl.__version__.split(".")[:2]) < (3, 8):
        pytest.skip("threadpoolctl < 3.8 has no per-thread claim on OpenBLAS's count")

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    def set_blas(count: int) -> None:  # in a thread that ends, so that it leaves no claim behind
        t = threading.Thread(target=lambda: ThreadpoolController().limit(limits=count, user_api="blas"))
        t.start()
        t.join()

    held, pe_in, user_out, done = (threading.Event() for _ in range(4))

    def user() -> None:
        with threadpool_limits(limits=3, user_api="blas"):
            held.set()
            assert pe_in.wait(10)
        user_out.set()
        done.wait(10)

    @pe._one_blas_thread
    def encoding() -> np.ndarray:
        pe_in.set()
        assert user_out.wait(10)
        return np.zeros(0)

    tu = threading.Thread(target=user)
    te = threading.Thread(target=encoding)
    before = min(blas_threads())
    set_blas(2)
    try:
        tu.start()
        assert held.wait(10)
        te.start()
        te.join(10)
        assert blas_threads() == {2}
    finally:
        done.set()
        tu.join(10)
        set_blas(before)


def test_rwse_dense_path_holds_three_walk_matrices_and_gives_the_same_values() -> None:
    """The dense path held five n x n arrays at once (an int64 count, its float copy, the scaled copy,
    the power and the product): 1.3 GB at its 5,792-node bound. It now holds three, with the same
    values as the plain formula."""
    import tracemalloc

    rng = np.random.default_rng(3)
    n, k = 400, 5
    ei = rng.integers(0, n, (2, 6000))
    a = np.zeros((n, n))
    np.add.at(a, (ei[0], ei[1]), 1.0)
    deg = a.sum(axis=1)
    p = np.divide(a, deg[:, None], out=np.zeros_like(a), where=deg[:, None] > 0)
    want, pk = np.zeros((n, k), np.float32), p.copy()
    for t in range(k):
        want[:, t] = np.diagonal(pk)
        pk = pk @ p
    tracemalloc.start()
    try:
        got = rwse(ei, np.array([0, n]), k)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, want)
    assert peak < 3.5 * n * n * 8, f"{peak / (n * n * 8):.2f} walk matrices at once"


def test_lap_pe_of_a_large_disconnected_graph_is_the_same_on_every_call() -> None:
    """Past _DENSE_EIG_MAX nodes LapPE uses ARPACK, which started from a random vector: for a graph of two
    components (eigenvalue 0 twice) the returned basis followed it, so one graph got a different encoding
    on each call (0.01-0.04 apart here, 0.044 on DD's largest protein) and a server answered one request
    two ways."""
    from gtcompress.preprocess import pe

    def path(n: int, first: int) -> np.ndarray:
        a = np.arange(first, first + n - 1)
        return np.stack([np.concatenate([a, a + 1]), np.concatenate([a + 1, a])])

    n1 = pe._DENSE_EIG_MAX // 2 + 50
    n2 = pe._DENSE_EIG_MAX - n1 + 100  # together past _DENSE_EIG_MAX: the sparse solver
    ei = np.concatenate([path(n1, 0), path(n2, n1)], axis=1)
    ptr = np.array([0, n1 + n2])
    first = laplacian_pe(ei, ptr, 3)
    for _ in range(4):
        np.testing.assert_array_equal(laplacian_pe(ei, ptr, 3), first)


def test_lap_pe_of_a_large_graph_of_many_components_takes_each_components_null_vector() -> None:
    """Eigenvalue 0 repeats once per component, and ARPACK finds one vector per distinct eigenvalue:
    on 65 paths (2,405 nodes, the sparse solver) it took 10 s and returned a mix of them, and on a
    TEDDY-sparsified DD protein of 259 components it raised ArpackNoConvergence out of gtc sparsify.
    The null space is known exactly (D^1/2 1 on each component), so the columns are those vectors, in
    the order of each component's first node, the trivial (first) one dropped."""
    from gtcompress.preprocess import pe

    sizes = list(range(5, 70))
    src, dst, first = [], [], [0]
    for s in sizes:
        a = np.arange(first[-1], first[-1] + s - 1)
        src += [a, a + 1]
        dst += [a + 1, a]
        first.append(first[-1] + s)
    n = first[-1]
    assert n > pe._DENSE_EIG_MAX
    ei = np.stack([np.concatenate(src), np.concatenate(dst)])
    got = laplacian_pe(ei, np.array([0, n]), 3)
    deg = np.bincount(ei[1], minlength=n).astype(np.float64)
    for j in range(3):
        want = np.zeros(n)
        lo, hi = first[j + 1], first[j + 2]
        want[lo:hi] = np.sqrt(deg[lo:hi]) / np.linalg.norm(np.sqrt(deg[lo:hi]))
        np.testing.assert_allclose(got[:, j], want, atol=1e-6)


def test_lap_pe_of_a_batch_does_not_depend_on_the_order_of_its_edges() -> None:
    """A union's edges come graph by graph, which LapPE slices without sorting; edges in any other
    order are sorted by graph first: the same encodings, bit for bit."""
    from gtcompress.preprocess.pe import _graph_slices

    rng = np.random.default_rng(3)
    sizes = [7, 1, 12, 0, 30, 5]
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    ei = np.concatenate([p + rng.integers(0, n, (2, 3 * n)) for p, n in zip(ptr[:-1], sizes, strict=True) if n], axis=1)
    pe = laplacian_pe(ei, ptr, 4)
    shuffled = ei[:, rng.permutation(ei.shape[1])]
    np.testing.assert_array_equal(laplacian_pe(shuffled, ptr, 4), pe)
    pairs = zip(_graph_slices(ei, ptr), _graph_slices(shuffled, ptr), ptr[:-1], ptr[1:], strict=True)
    for ordered, mixed, lo, hi in pairs:
        assert ordered.shape == mixed.shape and np.all((ordered >= lo) & (ordered < hi))
        assert np.shares_memory(ordered, ei) == (ordered.size > 0) and not np.shares_memory(mixed, shuffled)


def test_order_free_signs_read_an_adjacency_of_any_dtype() -> None:
    """The neighbours' degree sums are taken in the adjacency's floating dtype: a boolean adjacency gives
    the signs its float one does. Here only that statistic decides: ``v`` is +1 on a leaf of a hub (its
    neighbour has degree 3) and -1 on a leaf of a path (degree 2), so sum(v), sum(v^3) and their
    degree-weighted sums all vanish; a boolean product (an OR of ANDs) counted neighbours instead."""
    from gtcompress.preprocess.pe import order_free_signs

    a = np.zeros((7, 7))
    for i, j in [(0, 1), (1, 2), (1, 3), (4, 5), (5, 6)]:  # a star on 1, a path 4-5-6
        a[i, j] = a[j, i] = 1.0
    v = np.zeros((7, 1))
    v[0], v[4] = 1.0, -1.0
    for dtype in (np.float64, np.float32, np.int64, bool):
        assert order_free_signs(v, a.astype(dtype)).tolist() == [1.0]
        assert order_free_signs(-v, a.astype(dtype)).tolist() == [-1.0]
