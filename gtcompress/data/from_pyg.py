"""A :class:`~gtcompress.data.base.GraphDataset` from PyTorch Geometric graphs, laid out as a model reads them.

Pruning, fine-tuning and distilling a model need its training data, and a model imported from PyG
(:func:`gtcompress.models.from_pyg.from_pyg`) was trained on PyG ``Data`` objects: its own dataset, an
in-memory list, a ``DataLoader``'s batches, rarely files in the TU or OGB layout the CLI reads. Building the
``DatasetInfo`` by hand asks for facts the model already holds (its feature layout, its outputs) and lets a
wrong one through to an ``IndexError`` inside an embedding, or worse a metric of mismatched outputs (the
logits of a binary classifier scored as a regression's predictions). So :func:`dataset_from_pyg` takes them
from the model and checks every graph against them, naming the split, the graph and the tensor:

* node (and edge, where the model reads them) features: their columns, and for categorical columns every
  value against the model's embedding sizes; integer columns a float model reads are cast (the same
  numbers), float ones a categorical model reads are refused;
* targets: one row a graph (graph-level) or a node (node-level), the model's outputs a row, classes within
  its outputs, binary labels 0, 1 or NaN (missing, left out of the loss and the metric);
* the task, where ``task=`` does not say it, from the targets' dtype and the outputs; float labels that are
  all 0 and 1 could be binary or regression, and are refused rather than guessed;
* splits: no graph object in two of them, and none carrying PyG's ``train_mask``/``val_mask``/``test_mask``
  (one graph's nodes split, transductively): a gtcompress dataset splits by graphs, and either would score the
  model on what it trained on;
* positional encodings the model takes: the graph's own (PyG's ``random_walk_pe``, ``laplacian_eigenvector_pe``,
  or the unnamed ``pe`` of its GPS example for a model of one kind), which the model was trained on, else
  computed as a deployment computes them (:mod:`gtcompress.preprocess.pe`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset, Metric, TaskType
from gtcompress.errors import ConfigError, GraphValidationError
from gtcompress.graph import GraphBatch
from gtcompress.preprocess.batching import PYG_PE_NAMES
from gtcompress.preprocess.pe import laplacian_pe, rwse

__all__ = ["DEFAULT_METRICS", "NODE_MASKS", "dataset_from_pyg"]

#: The metric of each task where ``metric=`` does not say (those the CLI's datasets of that task use).
DEFAULT_METRICS: dict[str, str] = {"multiclass": "accuracy", "binary": "rocauc", "regression": "mae"}
#: The metrics each task may be scored by.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy", "class_avg_acc"),
    "binary": ("rocauc", "ap"),
    "regression": ("mae", "rmse"),
}


def dataset_from_pyg(
    model: Any,
    train: Iterable[Any],
    val: Iterable[Any],
    test: Iterable[Any] | None = None,
    *,
    task: str | None = None,
    metric: str | None = None,
    name: str = "pyg",
) -> GraphDataset:
    """The graphs of each split (PyG ``Data`` objects, or ``Batch`` objects, as a ``DataLoader`` yields
    them) as a :class:`GraphDataset` for ``model`` (a :class:`~gtcompress.models.model.GraphModel`, or its
    ``ModelConfig``): its feature layout, task level and outputs, the targets' ``task`` (inferred where
    ``None``) and ``metric`` (by default :data:`DEFAULT_METRICS`). Every graph is checked against the model
    (module docstring); a mismatch is a :class:`~gtcompress.errors.ConfigError` naming the split, the graph's
    index in it (``train[3]``) and what was expected. The PyG objects are not modified."""
    config = getattr(model, "config", model)
    if task is not None and task not in get_args(TaskType):
        raise ConfigError(f"task {task!r}: expected one of {', '.join(get_args(TaskType))}")
    if metric is not None and metric not in get_args(Metric):
        raise ConfigError(f"metric {metric!r}: expected one of {', '.join(get_args(Metric))}")
    named = {"train": train, "val": val, **({"test": test} if test is not None else {})}
    given = {split: list(_graphs(graphs)) for split, graphs in named.items()}
    _check_disjoint(given)
    splits = {split: [_graph(g, config, split, i) for i, g in enumerate(graphs)] for split, graphs in given.items()}
    for split in ("train", "val"):
        if not splits[split]:
            raise ConfigError(f"{split}: no graphs; training needs graphs in train and val")
    task = task if task is not None else _infer_task(splits, config)
    metric = metric if metric is not None else DEFAULT_METRICS[task]
    if metric not in TASK_METRICS[task]:
        raise ConfigError(
            f"metric {metric!r} does not score a {task} task; expected one of {', '.join(TASK_METRICS[task])}"
        )
    for split, graphs in splits.items():
        for i, g in enumerate(graphs):
            g.y = _targets(g, config, task, f"{split}[{i}]")
    info = DatasetInfo(
        name=name,
        task_level=config.task_level,
        task=task,  # type: ignore[arg-type]
        out_dim=int(config.out_dim),
        metric=metric,  # type: ignore[arg-type]
        node_features=config.node_features,
        edge_features=config.edge_features,
    )
    return GraphDataset(info=info, splits=splits)


def _graphs(graphs: Iterable[Any]) -> Iterable[Any]:
    """Single graphs: a ``Batch`` (a ``DataLoader``'s) is split into its graphs."""
    for g in graphs:
        if getattr(g, "batch", None) is not None and hasattr(g, "to_data_list"):
            yield from g.to_data_list()
        else:
            yield g


#: PyG's node masks of a transductive split (one graph, its nodes split): not a split by graphs.
NODE_MASKS = ("train_mask", "val_mask", "test_mask")


def _check_disjoint(given: dict[str, list[Any]]) -> None:
    """No graph object in two splits: a model validated or tested on graphs it trained on reports a metric
    of nothing (a node-level dataset of one graph, passed as train and val, is the likeliest way)."""
    seen: dict[int, str] = {}
    for split, graphs in given.items():
        for i, g in enumerate(graphs):
            where = f"{split}[{i}]"
            if id(g) in seen:
                raise ConfigError(
                    f"{where} is {seen[id(g)]}, the same graph: each split needs graphs of its own, or its metric "
                    "scores what the model trained on"
                )
            seen[id(g)] = where


def _graph(data: Any, config: Any, split: str, index: int) -> GraphBatch:
    """One PyG graph as the model reads it (its targets as given: :func:`_targets` lays them out)."""
    where = f"{split}[{index}]"
    masks = [m for m in NODE_MASKS if _has(data, m)]
    if masks:
        raise ConfigError(
            f"{where} carries {', '.join(masks)}: a split of one graph's nodes, which a gtcompress dataset (split "
            "by graphs, every node of a graph in its split) does not hold; pass the graphs of each split"
        )
    try:
        g = GraphBatch.from_pyg(data)
    except (GraphValidationError, AttributeError, TypeError, KeyError) as e:
        raise ConfigError(f"{where}: not a PyG graph the model can read ({e})") from None
    if not isinstance(g.edge_index, Tensor):
        raise ConfigError(f"{where}: no edge_index")
    x = _features(g.x, config.node_features, where, "x")
    edge_attr = None
    if config.edge_features is not None:
        if g.edge_attr is None:
            raise ConfigError(
                f"{where}: no edge_attr, and the model reads edge features ({_spec(config.edge_features)})"
            )
        edge_attr = _features(g.edge_attr, config.edge_features, where, "edge_attr")
    if g.y is None:
        raise ConfigError(f"{where}: no targets y")
    out = GraphBatch(
        x=x, edge_index=g.edge_index.long(), edge_attr=edge_attr, y=g.y, pe=_encodings(data, g, config, where)
    )
    try:
        return out.validate(where)
    except GraphValidationError as e:
        raise ConfigError(str(e)) from None


def _has(data: Any, name: str) -> bool:
    try:
        return name in data
    except TypeError:  # not a PyG object: GraphBatch.from_pyg says what it lacks
        return False


def _spec(f: FeatureSpec) -> str:
    return (
        f"categorical, cardinalities {list(f.cardinalities)}" if f.kind == "categorical" else f"float, {f.dim} columns"
    )


def _features(t: Tensor, spec: FeatureSpec, where: str, tensor: str) -> Tensor:
    """``t`` checked against ``spec``: 2-D with its columns, categorical values within its embeddings."""
    t = t.unsqueeze(-1) if t.dim() == 1 else t
    if t.dim() != 2 or t.shape[1] != spec.dim:
        raise ConfigError(f"{where}: {tensor} has shape {list(t.shape)}; the model takes {_spec(spec)}")
    if spec.kind == "float":
        if not (
            t.is_floating_point()
            or t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)
        ):
            raise ConfigError(f"{where}: {tensor} has dtype {t.dtype}; the model takes {_spec(spec)}")
        return t.to(torch.float32)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ConfigError(
            f"{where}: {tensor} has dtype {t.dtype}; the model takes {_spec(spec)} (integer category ids, "
            "each column embedded)"
        )
    t = t.long()
    if t.numel():
        low = t.min(dim=0).values
        high = t.max(dim=0).values
        for col, (lo, hi, card) in enumerate(zip(low.tolist(), high.tolist(), spec.cardinalities, strict=True)):
            if lo < 0 or hi >= card:
                bad = lo if lo < 0 else hi
                raise ConfigError(
                    f"{where}: {tensor} column {col} holds {bad}; the model embeds ids 0 to {card - 1} there "
                    f"({_spec(spec)})"
                )
    return t


def _encodings(data: Any, g: GraphBatch, config: Any, where: str) -> dict[str, Tensor]:
    """The encodings the model takes: the graph's own where it carries them, else computed."""
    kinds: dict[str, int] = dict(config.pe)
    if not kinds:
        return {}
    own = dict(g.pe)  # under PyG's names (PYG_PE_NAMES)
    unnamed = getattr(data, "pe", None) if _has(data, "pe") else None
    if isinstance(unnamed, Tensor) and len(kinds) == 1 and next(iter(kinds)) not in own:
        own[next(iter(kinds))] = unnamed  # PyG's GPS example: its one kind under 'pe'
    ei, ptr = g.edge_index.long().numpy(), np.array([0, g.num_nodes])
    out = {}
    for kind, width in kinds.items():
        pe = own.get(kind)
        if pe is None:
            pe = torch.from_numpy(laplacian_pe(ei, ptr, width) if kind == "lap" else rwse(ei, ptr, width))
        attr = next((n for n, k in PYG_PE_NAMES.items() if k == kind and _has(data, n)), "pe")
        if pe.dim() != 2 or tuple(pe.shape) != (g.num_nodes, width):
            raise ConfigError(
                f"{where}: its {attr} has shape {list(pe.shape)}; the model takes {kind} encodings of width {width}, "
                f"[{g.num_nodes}, {width}] here"
            )
        out[kind] = pe.to(torch.float32)
    return out


def _rows(g: GraphBatch, config: Any) -> int:
    return 1 if config.task_level == "graph" else g.num_nodes


def _infer_task(splits: dict[str, list[GraphBatch]], config: Any) -> str:
    """The task of the targets where ``task=`` does not say (module docstring)."""
    graphs = [g for split in splits.values() for g in split]
    ys = [g.y for g in graphs if g.y is not None]
    out = int(config.out_dim)
    if all(not y.is_floating_point() for y in ys):  # integer (or boolean) labels: classes
        if out == 1:
            return "binary"
        tasks = all(g.y is not None and g.y.numel() == _rows(g, config) * out for g in graphs)
        return "binary" if tasks and _all_binary(ys) else "multiclass"  # one label a task, or one class a row
    if _all_binary(ys):
        raise ConfigError(
            "task: the targets are floats that are all 0, 1 (or missing): a binary classification or a "
            "regression? say which with task='binary' or task='regression'"
        )
    return "regression"


def _all_binary(ys: list[Tensor]) -> bool:
    values = torch.cat([y.reshape(-1).double() for y in ys]) if ys else torch.zeros(0)
    values = values[~torch.isnan(values)]
    return bool(((values == 0) | (values == 1)).all())


def _targets(g: GraphBatch, config: Any, task: str, where: str) -> Tensor:
    """``g.y`` laid out as the loss and the metrics read it, checked against the model's outputs."""
    y = g.y
    assert y is not None
    rows, out = _rows(g, config), int(config.out_dim)
    level = "graph" if config.task_level == "graph" else "node"
    if task == "multiclass":
        if y.numel() != rows:
            raise ConfigError(
                f"{where}: y has shape {list(y.shape)}; a {level}-level multiclass task takes one class id a "
                f"{level} ({rows} here)"
            )
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ConfigError(f"{where}: y holds {float(y[y != y.round()][0])}, not a class id")
        y = y.reshape(-1).long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= out):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ConfigError(f"{where}: y holds class {bad}; the model has {out} outputs (classes 0 to {out - 1})")
        return y
    if y.numel() != rows * out:
        raise ConfigError(
            f"{where}: y has shape {list(y.shape)}; a {level}-level {task} task of {out} output"
            f"{'s' if out > 1 else ''} takes [{rows}, {out}] here"
        )
    y = y.reshape(rows, out).to(torch.float32)
    if task == "binary":
        known = y[~torch.isnan(y)]
        if not bool(((known == 0) | (known == 1)).all()):
            bad = float(known[(known != 0) & (known != 1)][0])
            raise ConfigError(
                f"{where}: y holds {bad:g}; binary labels are 0, 1 or NaN (missing); for numeric targets pass "
                "task='regression'"
            )
    return y
