r"""The stochastic-block-model node-classification benchmarks PATTERN and CLUSTER.

Re-implements the generators of "Benchmarking Graph Neural Networks" (Dwivedi et al.,
``graphdeeplearning/benchmarking-gnns``, ``data/SBMs/generate_SBM_{PATTERN,CLUSTER}.ipynb``),
vectorised and seeded, so that both benchmarks can be produced on any machine without a download.

**Stochastic block model.** Nodes carry a community :math:`c_i`; each unordered pair
:math:`i < j` is an edge independently with probability

.. math::
    P(A_{ij} = 1) = \begin{cases} p & c_i = c_j \\ q & c_i \neq c_j \end{cases},
    \qquad A_{ji} = A_{ij}, \quad A_{ii} = 0.

One graph is one uniform draw :math:`U \in [0, 1)^{n(n-1)/2}` over the upper triangle compared with
the block-probability matrix gathered at the pairs, ``U < B[c_i, c_j]`` (no Python loop over
pairs). Community sizes are ``randint(5, 35)`` exactly as in the notebooks, i.e. NumPy's
*exclusive* upper bound: every size lies in :math:`\{5, \dots, 34\}`.

**PATTERN** (node-level, 2 classes). :math:`G` is an SBM with 5 communities, :math:`p = 0.5`,
:math:`q = 0.35`, node tokens :math:`u_i \sim \mathcal{U}\{0, 1, 2\}`. A pattern :math:`P` is a
random graph on :math:`k \sim` ``randint(5, 35)`` nodes with edge probability 0.5 and its own fixed
tokens :math:`u^P \sim \mathcal{U}\{0,1,2\}^k`. Each instance is :math:`G \cup P` with every
(pattern node, :math:`G` node) pair an edge with probability 0.5; the label is 1 on pattern nodes
and 0 elsewhere. As in the notebook (its "v4" configuration) there are 100 pattern instances,
drawn once per dataset; graph :math:`i` of a split with :math:`n` graphs uses pattern
:math:`\lfloor 100 i / n \rfloor`, which reproduces the notebook's grouping of 100 train, 20 val and
20 test graphs per pattern for the full 10000/2000/2000 sizes.

**CLUSTER** (node-level, 6 classes). An SBM with 6 communities, :math:`p = 0.55`,
:math:`q = 0.25`. In each community :math:`r` one uniformly chosen node gets token :math:`r + 1`,
all others 0; the label of every node is its community. Full sizes 10000/1000/1000.

Both shuffle the node order with a random permutation per graph (the notebooks' ``schuffle``) so
labels are not positional. Edges are undirected, stored in both directions, sorted by (src, dst).

Note on :math:`q` for PATTERN: the paper and the notebook's final configuration use 0.35; the
notebook's first configuration ("v1") used 0.2. Pass ``q=`` to reproduce the other one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset, check_seed
from gtcompress.errors import GTCompressError
from gtcompress.graph import GraphBatch
from gtcompress.machine import machine_memory

__all__ = [
    "CLUSTER_FULL",
    "GENERATOR_VERSION",
    "PATTERN_FULL",
    "SBM_PRESETS",
    "generate_cluster",
    "generate_pattern",
    "sample_sbm",
]

# Bump when the generated data for a given (sizes, seed) changes, so on-disk caches are rebuilt.
GENERATOR_VERSION = 1

SPLITS = ("train", "val", "test")
PATTERN_FULL = (10000, 2000, 2000)
CLUSTER_FULL = (10000, 1000, 1000)
# "small" generates in about a second per dataset; "full" is the benchmark.
SBM_PRESETS: dict[str, dict[str, tuple[int, int, int]]] = {
    "small": {"pattern": (1000, 200, 200), "cluster": (1000, 200, 200)},
    "full": {"pattern": PATTERN_FULL, "cluster": CLUSTER_FULL},
}

SIZE_RANGE = (5, 35)  # randint(low, high): high is exclusive, sizes in [5, 34]
PATTERN_COMMUNITIES = 5
PATTERN_VOCAB = 3
PATTERN_NUM_PATTERNS = 100
PATTERN_P_INSIDE = 0.5  # edge probability inside the pattern
PATTERN_Q_ATTACH = 0.5  # edge probability between a pattern node and a node of G
CLUSTER_COMMUNITIES = 6

# Distinct entropy per generator, so that the same seed gives unrelated PATTERN and CLUSTER draws.
_TAG_PATTERN = 0x5041
_TAG_CLUSTER = 0x434C


@lru_cache(maxsize=1024)
def _upper_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of ``n`` nodes (cached: graph sizes repeat, read-only arrays)."""
    rows, cols = np.triu_indices(n, k=1)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


def sample_sbm(rng: np.random.Generator, blocks: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected SBM edges ``(i, j)`` with ``i < j``, each kept with ``prob[blocks[i], blocks[j]]``.

    ``blocks`` is the community of every node, ``prob`` the symmetric block-probability matrix.
    """
    rows, cols = _upper_pairs(int(blocks.shape[0]))
    keep = rng.random(rows.shape[0]) < prob[blocks[rows], blocks[cols]]
    return rows[keep], cols[keep]


def _block_prob(num_blocks: int, p: float, q: float) -> np.ndarray:
    prob = np.full((num_blocks, num_blocks), q, dtype=np.float64)
    np.fill_diagonal(prob, p)
    return prob


def _make_graph(src: np.ndarray, dst: np.ndarray, x: np.ndarray, y: np.ndarray, perm: np.ndarray) -> GraphBatch:
    """Relabel node ``perm[k]`` as ``k`` (the notebooks' ``W[idx][:, idx]``) and store both directions."""
    n = int(perm.shape[0])
    new_id = np.empty(n, dtype=np.int64)
    new_id[perm] = np.arange(n, dtype=np.int64)
    s, d = new_id[src], new_id[dst]
    row, col = np.concatenate([s, d]), np.concatenate([d, s])
    order = np.argsort(row * n + col, kind="stable")
    edge_index = np.stack([row[order], col[order]])
    return GraphBatch(
        x=torch.from_numpy(np.ascontiguousarray(x[perm], dtype=np.int64).reshape(n, 1)),
        edge_index=torch.from_numpy(edge_index),
        y=torch.from_numpy(np.ascontiguousarray(y[perm], dtype=np.int64)),
    )


def _check_sizes(sizes: Sequence[int]) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        raise GTCompressError(f"sizes must be three graph counts (train, val, test), got {sizes!r}") from None
    if len(out) != 3 or any(s < 0 for s in out):
        raise GTCompressError(f"sizes must be three non-negative counts (train, val, test), got {sizes!r}")
    return out  # type: ignore[return-value]


#: Graphs drawn to measure what one takes before a dataset is generated (:func:`_check_fits`).
_FIT_SAMPLE = 16


def _check_fits(dataset: str, counts: tuple[int, int, int], draw: Callable[[np.random.Generator], GraphBatch]) -> None:
    """Refuse split sizes whose graphs cannot fit in this machine's memory, before one is generated:
    ``--size 1000000000000,1,1`` generated until the kernel's OOM killer ended it. What a graph takes
    is measured on :data:`_FIT_SAMPLE` drawn graphs, counting their tensors only (not Python's objects
    around them), so the estimate is low and no size that fits is refused."""
    total = sum(counts)
    memory = machine_memory()
    if memory is None or total <= _FIT_SAMPLE:
        return
    rng = np.random.default_rng(0)
    per_graph = sum(_tensor_bytes(draw(rng)) for _ in range(_FIT_SAMPLE)) / _FIT_SAMPLE
    need = per_graph * total
    if need > memory:
        raise GTCompressError(
            f"size {','.join(map(str, counts))}: {dataset} graphs take about {per_graph / 1024:.0f} KiB each, so "
            f"{total:,} graphs need at least {need / 2**30:,.1f} GiB, more than this machine's "
            f"{memory / 2**30:.1f} GiB of memory; choose smaller split sizes"
        )


def _tensor_bytes(g: GraphBatch) -> int:
    tensors = [g.x, g.edge_index, g.edge_attr, g.batch, g.y, *g.pe.values()]
    return sum(t.nelement() * t.element_size() for t in tensors if t is not None)


def _split_rngs(seed: int, tag: int, extra: int = 0) -> list[np.random.Generator]:
    """Independent streams (one per split, plus ``extra``): a split does not depend on other sizes."""
    children = np.random.SeedSequence([check_seed(seed), tag]).spawn(len(SPLITS) + extra)
    return [np.random.default_rng(c) for c in children]


# ---------------------------------------------------------------------------------------- PATTERN
def _draw_pattern(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pattern: (src, dst) of its edges with ``i < j`` and its fixed node tokens."""
    k = int(rng.integers(*SIZE_RANGE))
    src, dst = sample_sbm(rng, np.zeros(k, dtype=np.int64), np.array([[PATTERN_P_INSIDE]]))
    tokens = rng.integers(0, PATTERN_VOCAB, size=k)
    return src, dst, tokens


def _pattern_graph(
    rng: np.random.Generator, pattern: tuple[np.ndarray, np.ndarray, np.ndarray], prob: np.ndarray
) -> GraphBatch:
    p_src, p_dst, p_tokens = pattern
    sizes = rng.integers(*SIZE_RANGE, size=PATTERN_COMMUNITIES)
    n_g, k = int(sizes.sum()), int(p_tokens.shape[0])
    # Community PATTERN_COMMUNITIES is the pattern; its inner block has probability 0 here because
    # the pattern's own edges are fixed (added below), only its attachment to G is random.
    communities = np.repeat(np.arange(PATTERN_COMMUNITIES), sizes)
    blocks = np.concatenate([communities, np.full(k, PATTERN_COMMUNITIES)])
    src, dst = sample_sbm(rng, blocks, prob)
    src = np.concatenate([src, p_src + n_g])
    dst = np.concatenate([dst, p_dst + n_g])
    x = np.concatenate([rng.integers(0, PATTERN_VOCAB, size=n_g), p_tokens])
    y = (blocks == PATTERN_COMMUNITIES).astype(np.int64)
    return _make_graph(src, dst, x, y, rng.permutation(n_g + k))


def generate_pattern(
    sizes: Sequence[int] = PATTERN_FULL,
    seed: int = 0,
    *,
    p: float = 0.5,
    q: float = 0.35,
    num_patterns: int = PATTERN_NUM_PATTERNS,
) -> GraphDataset:
    """SBM-PATTERN with ``sizes = (train, val, test)`` graphs (benchmark: 10000/2000/2000).

    ``num_patterns`` pattern instances are drawn once from ``seed`` and shared by all splits, so a
    model must recognise the same subgraphs in unseen graphs.
    """
    n_train, n_val, n_test = _check_sizes(sizes)
    if num_patterns < 1:
        raise GTCompressError(f"num_patterns must be >= 1, got {num_patterns}")
    *split_rngs, pattern_rng = _split_rngs(seed, _TAG_PATTERN, extra=1)
    patterns = [_draw_pattern(pattern_rng) for _ in range(num_patterns)]
    prob = _block_prob(PATTERN_COMMUNITIES + 1, p, q)
    prob[PATTERN_COMMUNITIES, :] = prob[:, PATTERN_COMMUNITIES] = PATTERN_Q_ATTACH
    prob[PATTERN_COMMUNITIES, PATTERN_COMMUNITIES] = 0.0
    _check_fits("PATTERN", (n_train, n_val, n_test), lambda rng: _pattern_graph(rng, patterns[0], prob))
    splits: dict[str, list[GraphBatch]] = {}
    for name, n, rng in zip(SPLITS, (n_train, n_val, n_test), split_rngs, strict=True):
        splits[name] = [_pattern_graph(rng, patterns[i * num_patterns // n], prob) for i in range(n)]
    info = DatasetInfo(
        name="PATTERN",
        task_level="node",
        task="multiclass",
        out_dim=2,
        metric="class_avg_acc",
        node_features=FeatureSpec("categorical", 1, [PATTERN_VOCAB]),
        edge_features=None,
        class_weighted_loss=True,
    )
    return GraphDataset(info=info, splits=splits)


# ---------------------------------------------------------------------------------------- CLUSTER
def _cluster_graph(rng: np.random.Generator, prob: np.ndarray) -> GraphBatch:
    sizes = rng.integers(*SIZE_RANGE, size=CLUSTER_COMMUNITIES)
    blocks = np.repeat(np.arange(CLUSTER_COMMUNITIES), sizes)
    src, dst = sample_sbm(rng, blocks, prob)
    n = int(blocks.shape[0])
    # Communities are contiguous before the shuffle: community r starts at starts[r].
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    seeds = starts + rng.integers(0, sizes)
    x = np.zeros(n, dtype=np.int64)
    x[seeds] = np.arange(1, CLUSTER_COMMUNITIES + 1)
    return _make_graph(src, dst, x, blocks, rng.permutation(n))


def generate_cluster(
    sizes: Sequence[int] = CLUSTER_FULL, seed: int = 0, *, p: float = 0.55, q: float = 0.25
) -> GraphDataset:
    """SBM-CLUSTER with ``sizes = (train, val, test)`` graphs (benchmark: 10000/1000/1000)."""
    counts = _check_sizes(sizes)
    prob = _block_prob(CLUSTER_COMMUNITIES, p, q)
    _check_fits("CLUSTER", counts, lambda rng: _cluster_graph(rng, prob))
    splits = {
        name: [_cluster_graph(rng, prob) for _ in range(n)]
        for name, n, rng in zip(SPLITS, counts, _split_rngs(seed, _TAG_CLUSTER), strict=True)
    }
    info = DatasetInfo(
        name="CLUSTER",
        task_level="node",
        task="multiclass",
        out_dim=CLUSTER_COMMUNITIES,
        metric="class_avg_acc",
        node_features=FeatureSpec("categorical", 1, [CLUSTER_COMMUNITIES + 1]),
        edge_features=None,
        class_weighted_loss=True,
    )
    return GraphDataset(info=info, splits=splits)
