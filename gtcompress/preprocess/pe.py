r"""Positional / structural encodings, computed per graph in numpy.

* **LapPE** (Dwivedi & Bresson 2020): the ``k`` eigenvectors of the symmetric normalised
  Laplacian :math:`L = I - D^{-1/2} A D^{-1/2}` with the smallest non-trivial eigenvalues. Graphs
  with fewer than ``k + 1`` nodes are zero-padded. An eigenvector's sign is arbitrary: the solver
  may return ``v`` for one node order and ``-v`` for another, and a model then answers differently
  for the same molecule with its atoms relabelled (up to 0.22 on CLUSTER models). So the sign is
  made canonical (:func:`canonical_signs`) from sums over nodes that do not depend on the node
  order (``sum(v^3)``, ``sum(v)``, degree-weighted sums). What stays arbitrary: an eigenvector that
  a graph automorphism maps to its negative (its nodes are interchangeable; a graph-level readout
  does not see the difference), and the basis of a *repeated* eigenvalue's eigenspace, which no
  sign rule can fix (this includes the ``k``-th eigenvalue equal to the next one). Relabelling a
  graph whose first ``k + 2`` eigenvalues are distinct and that has no such automorphism gives the
  same encoding, rows permuted. Training still flips signs at random
  (:func:`gtcompress.graph.random_sign_flip`), so models do not lean on the canonical choice.
* **RWSE** (Dwivedi et al. 2022): random-walk return probabilities
  :math:`[(D^{-1}A)^t]_{ii}` for :math:`t = 1..k`. Isolated nodes get zeros.

Both take a *batched* edge list plus ``ptr`` (graph offsets) and loop over graphs, because the
encodings are per-graph quantities; inputs are treated as undirected for LapPE.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla

_DENSE_EIG_MAX = 2000  # above this many nodes use sparse eigsh instead of dense eigh
#: Seed of the sparse eigensolver's start vector (:func:`_sparse_smallest`): fixed, so that LapPE is
#: deterministic where an eigenvalue is repeated.
_EIGSH_SEED = 0

F = TypeVar("F", bound=Callable[..., np.ndarray])


@functools.cache
def _blas_controller() -> object:
    """The process's BLAS libraries, found once: finding them reads ``/proc/self/maps`` (1.3 ms, more
    than the RWSE of a molecule), so a per-call ``threadpool_limits`` cost servers 60 % of their
    per-request time. numpy's and scipy's BLAS are loaded by this module's imports, so none is missed.
    Only the BLAS ones: the limit is set and restored on them alone."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


class _OneBlasThread:
    """One BLAS thread while any thread of the process computes an encoding, the caller's count after.

    BLAS's thread count is process-wide, and ``threadpoolctl``'s ``limit`` saves the current count on
    entry and restores it on exit: two threads nesting that way (A enters, B enters and saves A's 1,
    A leaves and restores the original, B leaves and restores 1) left the whole process on one BLAS
    thread for good, and gave B the full pool halfway through. So the limit is taken by the first
    thread in and given back by the last one out, under a lock. While it holds, the process's other
    BLAS calls also run on one thread: that is what a process-wide setting means.

    threadpoolctl 3.8 lets one thread at a time set OpenBLAS's count: the first to set it, until a
    ``with`` block of that thread's ends, and it ignores the others. The first and last threads here
    may differ, so each ends its claim right after setting (:meth:`_release`): else the last one's
    restore, or the next first one's limit, would be ignored while the first one lives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter: Any = None  # threadpoolctl's limiter: the counts it found, to restore

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                blas: Any = _blas_controller()
                self._limiter = blas.limit(limits=1)
                self._release()
                if any(lib["num_threads"] != 1 for lib in blas.info()):
                    self._limiter = None  # another thread holds its own limit (threadpoolctl 3.8): it restores
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                limiter, self._limiter = self._limiter, None
                limiter.restore_original_limits()
                self._release()

    @staticmethod
    def _release() -> None:
        """End this thread's claim on setting BLAS's count (threadpoolctl >= 3.8; a no-op before):
        a ``with`` block that sets nothing, whose end clears the claim."""
        with _blas_controller().limit(limits=None):  # type: ignore[attr-defined]
            pass


_ONE_BLAS_THREAD = _OneBlasThread()


def _one_blas_thread(fn: F) -> F:
    """Run with one BLAS thread: these are many small matrices, where OpenBLAS's thread pool only
    adds contention (measured here: 234 ms vs 2.1 ms per 128-node graph on a busy 2-core CPU).
    Safe to call from several threads at once (:class:`_OneBlasThread`)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> np.ndarray:
        with _ONE_BLAS_THREAD:
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _adjacency(edge_index: np.ndarray, n: int, offset: int = 0) -> sp.csr_matrix:
    src = edge_index[0] - offset
    dst = edge_index[1] - offset
    a = sp.coo_matrix((np.ones(src.shape[0], dtype=np.float64), (dst, src)), shape=(n, n)).tocsr()
    a.sum_duplicates()
    return a


def _graph_slices(edge_index: np.ndarray, ptr: np.ndarray) -> list[np.ndarray]:
    """Edge columns of each graph (edges are assigned by their source node)."""
    if edge_index.shape[1] == 0:
        return [edge_index[:, :0] for _ in range(len(ptr) - 1)]
    gid = np.searchsorted(ptr, edge_index[0], side="right") - 1
    if np.all(gid[1:] >= gid[:-1]):  # a union's edges come graph by graph: slices, no sort and no copy
        bounds = np.searchsorted(gid, np.arange(len(ptr)))
        return [edge_index[:, bounds[g] : bounds[g + 1]] for g in range(len(ptr) - 1)]
    order = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[order], np.arange(len(ptr)))
    return [edge_index[:, order[bounds[g] : bounds[g + 1]]] for g in range(len(ptr) - 1)]


#: A statistic decides a sign only if it is this far from zero relative to its scale (float32 vectors).
SIGN_TOLERANCE = 1e-3


def order_free_signs(vecs: np.ndarray, adjacency: np.ndarray | sp.spmatrix | None = None) -> np.ndarray:
    """Per column of ``vecs``: +1 or -1 where a node-order-free statistic decides the sign, 0 where
    none does (see :func:`canonical_signs`).

    Each statistic is ``v`` or ``v^3`` summed against a per-node weight (1, the degree, the neighbours'
    degree sum), so all of them, and their scales (the sums of absolute values: the weights are >= 0),
    are two small products with a weight matrix, and the first statistic that decides is found for every
    column at once: this runs per graph on every request, where a call per statistic and column cost
    more than the products (a 30-node graph's eigensolver takes some 50 us)."""
    v = vecs.astype(np.float64)
    n, k = v.shape
    if adjacency is None:
        weights = np.ones((n, 1))
        picks = [0, k]  # columns of (v^3, v) @ weights, k wide each: sum(v^3), sum(v)
    else:
        deg = np.asarray(adjacency.sum(axis=1)).ravel()
        # in the adjacency's own floating dtype: integer sums, exact in float32 below 2^24 (a float64 vector
        # made numpy copy a dense float32 adjacency to float64 first)
        nbr = np.asarray(adjacency @ deg.astype(np.result_type(adjacency.dtype, np.float32))).ravel()
        weights = np.column_stack([np.ones(n), deg, nbr]).astype(np.float64)
        # sum(v^3), sum(v), sum(v * deg), sum(v^3 * deg), sum(v * A deg): the order that decides a sign
        picks = [0, 3 * k, 3 * k + 1, 1, 3 * k + 2]
    both = np.concatenate([v * v * v, v], axis=1)  # np.power(v, 3) is some 40x slower at these sizes
    columns = np.arange(k)[:, None] * weights.shape[1] + np.array(picks)  # [k, statistics] into the products
    total = (both.T @ weights).ravel()[columns]
    scale = (np.abs(both).T @ weights).ravel()[columns]
    decides = np.abs(total) > SIGN_TOLERANCE * np.maximum(scale, 1e-30)
    first = decides.argmax(axis=1)
    return np.where(decides.any(axis=1), np.sign(total[np.arange(k), first]), 0.0)


def canonical_signs(vecs: np.ndarray, adjacency: np.ndarray | sp.spmatrix | None = None) -> np.ndarray:
    """Each column ``v`` of ``vecs`` multiplied by +1 or -1 so that the first of these sums that is
    not zero (within :data:`SIGN_TOLERANCE` of its scale) is positive: ``sum(v^3)``, ``sum(v)`` and,
    given the (symmetric) adjacency, ``sum(v * deg)``, ``sum(v^3 * deg)``, ``sum(v * A deg)``. Each is
    a sum over nodes of ``v`` times a quantity the node order does not change, so neither is the
    choice. Columns where all vanish keep their sign: then ``v`` and ``-v`` agree on every such
    statistic, which is what an automorphism mapping ``v`` to ``-v`` implies (two symmetric pendant
    atoms, say); their nodes are structurally equivalent, and a graph-level readout is unaffected."""
    sign = order_free_signs(vecs, adjacency)
    return vecs * np.where(sign == 0, 1.0, sign).astype(vecs.dtype)[None, :]


def _lap_single(ei: np.ndarray, n: int, offset: int, k: int) -> np.ndarray:
    out = np.zeros((n, k), dtype=np.float32)
    if n <= 1 or k == 0:
        return out
    m = min(k + 1, n)
    if n <= _DENSE_EIG_MAX:
        # Dense numpy Laplacian and a partial eigensolver (LAPACK ?syevx, only the m smallest pairs):
        # this runs on every request. float32 is ample for a positional encoding (<2e-5 off float64) and
        # together 4x faster than scipy.sparse + a full float64 eigh (measured: 18 vs 60 ms for 32 CLUSTER graphs).
        a = np.zeros((n, n), dtype=np.float32)
        a[ei[1] - offset, ei[0] - offset] = 1.0
        a = np.maximum(a, a.T)
        np.fill_diagonal(a, 0.0)
        deg = a.sum(axis=1)
        inv_sqrt = np.zeros_like(deg)
        inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
        lap = -(inv_sqrt[:, None] * a * inv_sqrt[None, :])
        lap[np.diag_indices(n)] += 1.0
        try:
            vals, vecs = sla.eigh(lap, subset_by_index=[0, m - 1], driver="evx", check_finite=False)
        except np.linalg.LinAlgError:
            # float32 inverse iteration can fail on clustered eigenvalues: a 30-node graph with 4 isolated
            # nodes and 3 components (k = 8) raised "1 eigenvectors failed to converge", a 500 from the
            # server for a valid request. float64 converges there; only such graphs pay for it.
            vals, vecs = sla.eigh(lap.astype(np.float64), subset_by_index=[0, m - 1], driver="evx", check_finite=False)
        adjacency: np.ndarray | sp.spmatrix = a
    else:
        a = _adjacency(ei, n, offset)
        a = ((a + a.T) > 0).astype(np.float64)
        a.setdiag(0)
        a.eliminate_zeros()
        deg = np.asarray(a.sum(axis=1)).ravel()
        inv_sqrt = np.zeros_like(deg)
        inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
        d = sp.diags(inv_sqrt)
        lap = sp.eye(n) - d @ a @ d
        vals, vecs = _sparse_smallest(lap.tocsc(), a, deg, m)
        adjacency = a
    order = np.argsort(vals, kind="stable")[:m]
    vecs = canonical_signs(vecs[:, order[1:]], adjacency)  # drop the trivial eigenvector; order-free signs
    out[:, : vecs.shape[1]] = vecs.astype(np.float32)
    return out


def _sparse_smallest(lap: sp.csc_matrix, a: sp.csr_matrix, deg: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` smallest eigenpairs of a large graph's normalised Laplacian ``lap`` (adjacency ``a``,
    degrees ``deg``), by ARPACK in shift-invert mode, with the null space taken out first.

    Eigenvalue 0 has one eigenvector per connected component with edges, ``D^{1/2} 1_C`` (normalised):
    known exactly, so it is not left to ARPACK. ARPACK finds one vector per distinct eigenvalue from a
    start vector, and a 0 repeated once per component stalled it: a DD protein TEDDY-sparsified to 259
    components ran 41,521 iterations and raised ``ArpackNoConvergence`` out of ``gtc sparsify`` (with a
    random start it took 30 s on one call, 0.1 s on the next, and its basis changed every call). The
    null vectors are returned in the order of each component's first node, and the rest of the ``m``
    are found in their orthogonal complement (an invariant subspace of ``lap``), from a fixed start
    vector (:data:`_EIGSH_SEED`), so the encoding is a function of the graph."""
    n = lap.shape[0]
    _, label = csgraph.connected_components(a, directed=False)
    linked = deg > 0  # isolated nodes are rows of the identity in lap: eigenvalue 1, not 0
    comps, col = np.unique(label[linked], return_inverse=True)  # components with edges, by first node
    rows = np.flatnonzero(linked)
    z = np.sqrt(deg[rows])
    z /= np.sqrt(np.bincount(col, weights=z * z))[col]
    null = sp.csc_matrix((z, (rows, col)), shape=(n, comps.size))  # orthonormal: disjoint supports
    zero = min(comps.size, m)
    vals = np.zeros(m)
    vecs = np.zeros((n, m))
    vecs[:, :zero] = null[:, :zero].toarray()
    rest = m - zero
    if rest == 0:
        return vals, vecs

    def project(v: np.ndarray) -> np.ndarray:
        return v - null @ (null.T @ v)

    sigma = -1e-3  # lap - sigma I is positive definite: lap's eigenvalues are >= 0
    lu = spla.splu((lap - sigma * sp.eye(n)).tocsc())
    op = spla.LinearOperator((n, n), matvec=lambda v: project(lu.solve(project(np.asarray(v, dtype=np.float64)))))
    v0 = project(np.random.default_rng(_EIGSH_SEED).standard_normal(n))
    mu, u = spla.eigsh(op, k=rest, which="LM", v0=v0)  # mu = 1 / (lambda - sigma), largest first
    vals[zero:] = 1.0 / mu + sigma
    vecs[:, zero:] = u
    return vals, vecs


@_one_blas_thread
def laplacian_pe(edge_index: np.ndarray, ptr: np.ndarray, k: int) -> np.ndarray:
    """LapPE ``[N, k]`` float32 for a batch of graphs given by ``edge_index [2, E]`` and ``ptr [B+1]``."""
    edge_index = np.asarray(edge_index, dtype=np.int64)
    ptr = np.asarray(ptr, dtype=np.int64)
    parts = [
        _lap_single(ei, int(ptr[g + 1] - ptr[g]), int(ptr[g]), k) for g, ei in enumerate(_graph_slices(edge_index, ptr))
    ]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, k), np.float32)


#: RWSE's dense path takes every graph of up to this many nodes: below it the sparse powers' per-call
#: overhead and fill-in cost more than ``n^3`` BLAS steps (measured with k = 16: 512 nodes, 2k edges,
#: 84 ms dense, 133 ms sparse; 1,000 nodes, 10k edges: 600 ms dense, 83 ms sparse).
_RWSE_DENSE_MIN = 512
#: ... and a graph of up to this many nodes (its walk matrix, float64: 256 MiB; three such arrays at
#: once, 768 MiB) when its edges are dense (:func:`_rwse_dense`).
_RWSE_DENSE_MAX = 5792
#: ... dense meaning at least ``n^2`` over this many edges: where the two paths cost the same.
_RWSE_DENSE_SHARE = 20


def _rwse_dense(n: int, e: int) -> bool:
    """Whether RWSE of a graph of ``n`` nodes and ``e`` edges takes the dense path: up to
    :data:`_RWSE_DENSE_MIN` nodes always, up to :data:`_RWSE_DENSE_MAX` when
    ``e >= n^2 /`` :data:`_RWSE_DENSE_SHARE`.

    A dense product is ``n^3`` at BLAS speed whatever the edges; the sparse path's column blocks
    cost at most ``e * n`` a step at sparse speed, some 20 times slower, which wins only on sparse
    edges. Chosen by LapPE's 2,000-node threshold, a 2,000-node path took 4.5 s dense (0.3 s
    sparse, the same values), and a 2,100-node graph of 4M edges 86 s sparse (6 s dense). At
    ``n^2 / 32`` edges the dense path was still the slower one (3,000 nodes, k = 4: 3.7 s dense,
    2.2 s sparse; 5,300 nodes, k = 2: 7.5 s and 900 MB dense when it held five ``n x n`` arrays,
    4.5 s and 230 MB sparse); at ``n^2 / 20`` they take the same time (3.5 s, 3.4 s), at
    ``n^2 / 14`` dense wins (3.5 s, 4.7 s)."""
    return n <= _RWSE_DENSE_MIN or (n <= _RWSE_DENSE_MAX and _RWSE_DENSE_SHARE * e >= n * n)


def _rwse_single(ei: np.ndarray, n: int, offset: int, k: int) -> np.ndarray:
    out = np.zeros((n, k), dtype=np.float32)
    if n == 0 or k == 0:
        return out
    if _rwse_dense(n, ei.shape[1]):
        # Dense from the start: duplicate edges counted by bincount, the same float64 values scipy's
        # sum_duplicates gives, without its per-call overhead (0.45 of 0.6 ms for a molecule).
        # At most three n x n float64 arrays live at once (P, its power, the next power): counted
        # in float64 directly (weights) and scaled in place, where an int64 count, its float copy and
        # the scaled copy made five (1.3 GB at _RWSE_DENSE_MAX nodes); the products reuse two buffers.
        src, dst = ei[0] - offset, ei[1] - offset
        p = np.bincount(src * n + dst, weights=np.ones(src.shape[0]), minlength=n * n).reshape(n, n)  # a[src, dst]
        deg = p.sum(axis=1)
        inv = np.zeros_like(deg)
        inv[deg > 0] = 1.0 / deg[deg > 0]
        p *= inv[:, None]  # P[i, j] = prob of stepping i -> j
        out[:, 0] = np.diagonal(p)
        if k > 1:
            pk, nxt = p.copy(), np.empty_like(p)
            for t in range(1, k):
                np.matmul(pk, p, out=nxt)
                pk, nxt = nxt, pk
                out[:, t] = np.diagonal(pk)
    else:
        a = _adjacency(ei, n, offset).T.tocsr()  # row = source
        deg = np.asarray(a.sum(axis=1)).ravel()
        inv = np.zeros_like(deg)
        inv[deg > 0] = 1.0 / deg[deg > 0]
        pk = p = (sp.diags(inv) @ a).tocsr()
        for t in range(k):
            out[:, t] = pk.diagonal()
            if t + 1 == k:
                break
            if _product_nnz_bound(pk, p) > _RWSE_MAX_NNZ:
                _rwse_by_columns(p, pk, t, k, out)
                break
            pk = (pk @ p).tocsr()
    return out


#: Powers of a large graph's walk matrix fill in (20k nodes, 200k edges: 2 GB at t = 4, 9 GB at 6),
#: so a server computing RWSE per request could be made to take all its memory by one valid graph.
#: Past this many nonzeros the remaining steps are computed by columns (:func:`_rwse_by_columns`).
_RWSE_MAX_NNZ = 4_000_000
#: Bytes of one block of dense columns there.
_RWSE_BLOCK_BYTES = 64 * 2**20


def _product_nnz_bound(a: sp.csr_matrix, b: sp.csr_matrix) -> int:
    """An upper bound on the nonzeros of ``a @ b``: each stored ``a[i, j]`` adds at most row ``j`` of ``b``."""
    row_nnz = np.diff(b.indptr)
    return int(row_nnz[a.indices].sum())


def _rwse_by_columns(p: sp.csr_matrix, pk: sp.csr_matrix, t: int, k: int, out: np.ndarray) -> None:
    """Columns ``t+1..k-1`` of ``out`` (``pk`` is ``P^(t+1)``, column ``t`` done) in blocks of dense
    columns: ``P^(s+1)[:, B] = P @ P^s[:, B]``, whose rows ``B`` hold the diagonal. Exact, and its
    memory is one block, where the next sparse power would have exceeded :data:`_RWSE_MAX_NNZ`."""
    n = p.shape[0]
    width = max(1, _RWSE_BLOCK_BYTES // (8 * n))
    pk = pk.tocsc()
    for lo in range(0, n, width):
        cols = np.arange(lo, min(n, lo + width))
        x = pk[:, cols].toarray()
        for s in range(t + 1, k):
            x = p @ x
            out[cols, s] = x[cols, np.arange(cols.size)]


@_one_blas_thread
def rwse(edge_index: np.ndarray, ptr: np.ndarray, k: int) -> np.ndarray:
    """RWSE ``[N, k]`` float32: return probabilities of 1..k-step random walks, per graph."""
    edge_index = np.asarray(edge_index, dtype=np.int64)
    ptr = np.asarray(ptr, dtype=np.int64)
    parts = [
        _rwse_single(ei, int(ptr[g + 1] - ptr[g]), int(ptr[g]), k)
        for g, ei in enumerate(_graph_slices(edge_index, ptr))
    ]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, k), np.float32)


#: :func:`pe_work`'s fixed cost of one graph of at least two nodes, in ``n^3`` steps: the Python and
#: LAPACK-call overhead of one graph's encoding (measured 150 us for a 10-node graph's LapPE, 34 us for
#: its RWSE, at about 30 G steps a second), which outweighs the cube on small graphs: 100,000 graphs
#: of 10 nodes took 15 s of LapPE while their cubes sum to 1e8 steps (3 ms).
PE_GRAPH_WORK = {"lap": 4.5e6, "rwse": 1e6}
#: :func:`pe_work` counts LapPE of a graph past :data:`_DENSE_EIG_MAX` nodes (the sparse solver) at this
#: many times its cube: measured 8 G steps a second on random graphs (4,200 nodes: 10-12 s, 5,300: 18 s)
#: against LAPACK's 17-30 G (2,000 nodes: 0.26 s, 5,300: 8.5 s).
LAP_SPARSE_FACTOR = 4.0


def pe_work(kind: str, counts: np.ndarray, k: int) -> float:
    """The work of computing ``kind`` with ``k`` columns for graphs of ``counts`` nodes, in units of
    one ``n^3`` step (about 30 G a second on one core), so that a server can refuse a request before
    spending it: LapPE is a partial eigendecomposition, ``n^3`` per graph; RWSE ``k - 1`` products of
    ``n x n`` walk matrices, ``(k - 1) n^3``. That is what the dense paths (up to
    :data:`_DENSE_EIG_MAX` nodes) cost; larger graphs are counted the same, as no smaller bound holds
    for the sparse ones (shift-invert LU fills in on random graphs and ARPACK converges slowly on
    long paths, so LapPE there counts :data:`LAP_SPARSE_FACTOR` times; walk powers fill in around a
    hub): 60 s for an 8,000-node random graph's LapPE, minutes for a 100,000-node path's, 44 s for
    a 20,000-node star's RWSE. Each graph of two nodes or more also costs :data:`PE_GRAPH_WORK`
    (many tiny graphs); graphs of one node cost 0."""
    if kind not in ("lap", "rwse"):
        pe_function(kind)  # the same ValueError for an unknown kind
    n = np.asarray(counts, dtype=np.float64)
    if k <= 0 or n.size == 0:
        return 0.0
    big = n[n > 1]
    cubes = float((big**3).sum())
    if kind == "lap":  # the sparse eigensolver's steps are slower than LAPACK's
        cubes += (LAP_SPARSE_FACTOR - 1) * float((big[big > _DENSE_EIG_MAX] ** 3).sum())
        return cubes + PE_GRAPH_WORK[kind] * big.size
    return max(k - 1, 1) * cubes + PE_GRAPH_WORK[kind] * big.size


def pe_function(kind: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """The encoding of ``kind`` (``lap`` or ``rwse``, :data:`~gtcompress.preprocess.spec.PE_KINDS`),
    ``(edge_index, ptr, k) -> [N, k]``; a ``ValueError`` for any other name, never a silent default."""
    try:
        return {"lap": laplacian_pe, "rwse": rwse}[kind]
    except KeyError:
        raise ValueError(f"unknown PE kind {kind!r}; expected lap or rwse") from None


#: :func:`pe_bytes`' peak working memory of one graph's encoding, in bytes per ``n^2`` (``n`` its nodes),
#: measured as peak RSS over RSS before the call in a fresh process (random graphs, one BLAS thread):
#: RWSE's dense path holds three ``n x n`` float64 arrays (24 B) and the count's temporaries, measured
#: 27.2-31.8 B (5,300 nodes and 1.5M edges k = 2: 728 MiB; 3,000 / 450k k = 4: 237 MiB; 2,000 / 400k
#: k = 16: 120 MiB; 512 / 2k k = 16: 7.9 MiB) ...
RWSE_DENSE_CELL_BYTES = 32
#: ... its sparse path, per stored value of a walk power (at most ``min(n^2,`` :data:`_RWSE_MAX_NNZ` ``)``,
#: two powers and scipy's product temporaries: 1,000 nodes / 10k edges k = 16, 41.6 B per ``n^2``
#: with every power about full) plus, for ``k >= 2``, three :data:`_RWSE_BLOCK_BYTES` column blocks
#: (:func:`_rwse_by_columns`: 5,300 / 877k k = 2 and 8: 243 / 239 MiB; 20,000 / 200k k = 8: 243 MiB) ...
RWSE_SPARSE_VALUE_BYTES = 36
RWSE_SPARSE_BLOCKS = 3
#: ... LapPE's dense ``eigh`` (float32 adjacency, Laplacian and LAPACK's work arrays), measured
#: 20.3-21.2 B (1,000 and 2,000 nodes: 20 / 78 MiB) ...
LAP_DENSE_CELL_BYTES = 24
#: ... and its sparse solver past :data:`_DENSE_EIG_MAX` nodes, the shift-invert LU, whose fill-in on a
#: random graph approaches ``n^2``: measured 12.2-17.6 B (2,500 nodes / 560k edges: 105 MiB; 3,300 /
#: 50k: 132 MiB; 5,000: 292 MiB). A bound, not a prediction: a path fills in nothing, but no cheaper
#: count of the fill-in exists before the factorisation.
LAP_SPARSE_CELL_BYTES = 20
#: Per edge of the request: the int64 copies :func:`_graph_slices` sorts the edges by graph with and
#: the per-graph slices (about 40 B), the sparse adjacency's values and indices.
PE_EDGE_BYTES = 48
#: Per node and column of the output: each graph's float32 block and their concatenation (8 B): what
#: many small graphs weigh (20,000 graphs of 30 nodes, 1.2M edges, RWSE k = 16: 80 MiB).
PE_VALUE_BYTES = 8


def pe_bytes(kind: str, counts: np.ndarray, edges: np.ndarray, k: int, *, fewer_edges: bool = False) -> int:
    """An upper bound on the memory that computing ``kind`` with ``k`` columns takes for graphs of
    ``counts`` nodes and ``edges`` edges (per graph), counted before any is computed, so that a server
    can charge it against its memory budget: :func:`pe_work` bounds the time, and within it one
    5,300-node graph's RWSE took 703 MiB for a 22 MiB request.

    The graphs are encoded one after another, so the working memory is the largest graph's (the
    ``*_BYTES`` constants above, per ``n^2`` on the path :func:`_rwse_dense` and
    :data:`_DENSE_EIG_MAX` choose), plus what lives throughout: :data:`PE_EDGE_BYTES` an edge and
    :data:`PE_VALUE_BYTES` a node and column. ``fewer_edges``: the edges may still drop before the
    encoding runs (TEDDY), so RWSE counts the larger of its two paths wherever either may be taken.
    Measured peaks stay within 1.0-2.0x under this bound (tests/runtime/test_pe_memory.py)."""
    if kind not in ("lap", "rwse"):
        pe_function(kind)  # the same ValueError for an unknown kind
    n = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if k <= 0 or n.size == 0:
        return 0
    cells = n * n
    if kind == "lap":
        per = np.where(n > _DENSE_EIG_MAX, LAP_SPARSE_CELL_BYTES, LAP_DENSE_CELL_BYTES) * cells
        per[n <= 1] = 0.0
    else:
        dense = RWSE_DENSE_CELL_BYTES * cells
        sparse = np.zeros_like(cells)
        if k >= 2:
            blocks = RWSE_SPARSE_BLOCKS * np.minimum(float(_RWSE_BLOCK_BYTES), 8.0 * cells)
            sparse = RWSE_SPARSE_VALUE_BYTES * np.minimum(cells, float(_RWSE_MAX_NNZ)) + blocks
        always = n <= _RWSE_DENSE_MIN
        may_dense = n <= _RWSE_DENSE_MAX
        takes_dense = always | (may_dense & (_RWSE_DENSE_SHARE * e >= cells))
        per = np.where(takes_dense, dense, sparse)
        if fewer_edges:
            per = np.where(may_dense & ~always, np.maximum(dense, sparse), per)
    return int(float(per.max()) + PE_EDGE_BYTES * float(e.sum()) + PE_VALUE_BYTES * k * float(n.sum()))
