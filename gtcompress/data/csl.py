r"""Circular Skip Link graphs (CSL): a graph-classification test of expressive power.

From Murphy et al., "Relational Pooling for Graph Representations" (2019), as packaged in
"Benchmarking GNNs" (``data/CSL``). A CSL graph :math:`G_{n,R}` is the cycle on :math:`n = 41`
nodes plus skip links of length :math:`R`:

.. math::
    i \sim j \iff j \equiv i \pm 1 \pmod{n} \ \text{ or } \ j \equiv i \pm R \pmod{n}.

For :math:`R \in \{2, 3, 4, 5, 6, 9, 11, 12, 13, 16\}` (10 classes) the four neighbours are
distinct (:math:`n` is odd and :math:`1 < R < n / 2`), so every graph is 4-regular with
:math:`2n` undirected edges. All classes look identical to 1-WL (every node has the same colour),
so a message-passing network without positional encodings is at chance (10%); LapPE/RWSE solve it.

Each class holds ``permutations`` (15 in the benchmark) copies of :math:`G_{41,R}` with node ids
randomly permuted; the label is the class index (position of :math:`R` in the list above).
Node features are all 0 (one categorical token).

**Split.** The benchmark uses 5 stratified folds (3:1:1). We provide one deterministic, seeded,
stratified split: within each class the graphs are shuffled and
:math:`\operatorname{round}(0.2k)` go to test, :math:`\operatorname{round}(0.2k)` to val and the
rest to train (:math:`k = 15`: 9/3/3 per class, 90/30/30 graphs).
"""

from __future__ import annotations

import numpy as np
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset, check_seed
from gtcompress.errors import GTCompressError
from gtcompress.graph import GraphBatch

__all__ = ["CSL_NODES", "CSL_SKIPS", "GENERATOR_VERSION", "csl_graph", "generate_csl"]

GENERATOR_VERSION = 1
CSL_NODES = 41
CSL_SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)
_TAG_CSL = 0x4353


def csl_graph(skip: int, perm: np.ndarray | None = None, num_nodes: int = CSL_NODES) -> np.ndarray:
    """``edge_index [2, 4n]`` of :math:`G_{n,R}`, node ``perm[k]`` relabelled ``k``, sorted by (src, dst)."""
    n = num_nodes
    i = np.arange(n, dtype=np.int64)
    src = np.tile(i, 4)
    dst = np.concatenate([(i + 1) % n, (i - 1) % n, (i + skip) % n, (i - skip) % n])
    if perm is not None:
        new_id = np.empty(n, dtype=np.int64)
        new_id[perm] = i
        src, dst = new_id[src], new_id[dst]
    order = np.argsort(src * n + dst, kind="stable")
    return np.stack([src[order], dst[order]])


def generate_csl(seed: int = 0, permutations: int = 15) -> GraphDataset:
    """CSL: ``10 * permutations`` graphs, split per class into train/val/test (see module doc)."""
    if permutations < 1:
        raise GTCompressError(f"permutations must be >= 1, got {permutations}")
    streams = np.random.SeedSequence([check_seed(seed), _TAG_CSL]).spawn(2)
    perm_rng, split_rng = (np.random.default_rng(s) for s in streams)
    n_hold = round(0.2 * permutations)
    splits: dict[str, list[GraphBatch]] = {"train": [], "val": [], "test": []}
    for label, skip in enumerate(CSL_SKIPS):
        graphs = [
            GraphBatch(
                x=torch.zeros(CSL_NODES, 1, dtype=torch.long),
                edge_index=torch.from_numpy(csl_graph(skip, perm_rng.permutation(CSL_NODES))),
                y=torch.tensor([label], dtype=torch.long),
            )
            for _ in range(permutations)
        ]
        order = split_rng.permutation(permutations).tolist()
        splits["test"] += [graphs[j] for j in order[:n_hold]]
        splits["val"] += [graphs[j] for j in order[n_hold : 2 * n_hold]]
        splits["train"] += [graphs[j] for j in order[2 * n_hold :]]
    info = DatasetInfo(
        name="CSL",
        task_level="graph",
        task="multiclass",
        out_dim=len(CSL_SKIPS),
        metric="accuracy",
        node_features=FeatureSpec("categorical", 1, [1]),
        edge_features=None,
    )
    return GraphDataset(info=info, splits=splits)
