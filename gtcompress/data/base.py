"""What a dataset is to the rest of gtcompress: graphs per split plus the facts a model needs.

``DatasetInfo`` is the contract between data loaders, model construction (input/output sizes,
categorical vs float features), training (loss, metric) and export (input spec). Every loader,
generated or read from disk, returns a :class:`GraphDataset`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from gtcompress.errors import ConfigError
from gtcompress.graph import GraphBatch, collate
from gtcompress.preprocess.batching import cell_bounded_runs
from gtcompress.preprocess.pe import laplacian_pe, rwse

TaskLevel = Literal["node", "graph"]
TaskType = Literal["multiclass", "binary", "regression"]
Metric = Literal["class_avg_acc", "accuracy", "mae", "rmse", "rocauc", "ap"]


@dataclass
class FeatureSpec:
    """Node or edge input features: ``categorical`` int64 columns (one cardinality per column,
    summed embeddings as OGB's AtomEncoder) or ``float`` columns (linear encoder)."""

    kind: Literal["categorical", "float"]
    dim: int
    cardinalities: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind == "categorical" and len(self.cardinalities) != self.dim:
            raise ValueError(f"categorical FeatureSpec needs {self.dim} cardinalities, got {self.cardinalities}")


@dataclass
class DatasetInfo:
    name: str
    task_level: TaskLevel
    task: TaskType
    out_dim: int  # classes for multiclass, 1 for binary, targets for regression
    metric: Metric
    node_features: FeatureSpec
    edge_features: FeatureSpec | None = None
    class_weighted_loss: bool = False  # SBM benchmarks (GraphGPS): weighted cross-entropy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetInfo:
        d = dict(d)
        d["node_features"] = FeatureSpec(**d["node_features"])
        if d.get("edge_features") is not None:
            d["edge_features"] = FeatureSpec(**d["edge_features"])
        return cls(**d)


@dataclass
class GraphDataset:
    """Graphs per split (``train``/``val``/``test``), each a single-graph :class:`GraphBatch`."""

    info: DatasetInfo
    splits: dict[str, list[GraphBatch]]

    def __getitem__(self, split: str) -> list[GraphBatch]:
        return self.splits[split]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.info.name}
        for name, graphs in self.splits.items():
            n = [g.num_nodes for g in graphs]
            e = [g.num_edges for g in graphs]
            out[name] = {
                "graphs": len(graphs),
                "avg_nodes": float(np.mean(n)) if n else 0.0,
                "avg_edges": float(np.mean(e)) if e else 0.0,
            }
        return out


def check_seed(seed: Any, option: str = "seed") -> int:
    """``seed`` if it is an integer >= 0, else a ConfigError naming ``option``. numpy's seeding
    (``SeedSequence``, ``default_rng``) refuses negative seeds with a bare ValueError traceback, and
    only once a dataset is generated or split: here it is one line, before any work."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"{option} must be an integer >= 0 (it seeds the data generator and split), got {seed!r}")
    return int(seed)


def add_pe(dataset: GraphDataset, lap: int = 0, rwse_steps: int = 0) -> GraphDataset:
    """Attach LapPE (``lap`` eigenvectors) and/or RWSE (``rwse_steps``) to every graph, in place."""
    for graphs in dataset.splits.values():
        for g in graphs:
            ei = g.edge_index.numpy()
            ptr = np.array([0, g.num_nodes])
            if lap:
                g.pe["lap"] = torch.from_numpy(laplacian_pe(ei, ptr, lap))
            if rwse_steps:
                g.pe["rwse"] = torch.from_numpy(rwse(ei, ptr, rwse_steps))
    return dataset


def iterate_batches(
    graphs: list[GraphBatch],
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    max_cells: int | None = None,
) -> Iterator[GraphBatch]:
    """Yield collated batches; shuffling uses ``generator`` so runs are reproducible.

    With ``max_cells`` (:data:`~gtcompress.preprocess.batching.MAX_EVAL_CELLS`), a batch whose graphs
    padded to its largest would exceed that many attention cells is cut into consecutive runs that do
    not (:func:`~gtcompress.preprocess.batching.cell_bounded_runs`): for evaluation only."""
    order = torch.randperm(len(graphs), generator=generator).tolist() if shuffle else range(len(graphs))
    order = list(order)
    for i in range(0, len(order), batch_size):
        group = [graphs[j] for j in order[i : i + batch_size]]
        runs = [(0, len(group))] if max_cells is None else cell_bounded_runs([g.num_nodes for g in group], max_cells)
        for a, b in runs:
            yield collate(group[a:b])
