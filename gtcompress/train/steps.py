"""One optimiser step's graphs, cut into micro-batches whose padded attention memory is bounded.

A model that attends densely within each graph (GPS, Graphormer, a token-pruned GT or one on the
dense layout) pads every graph of a batch to the largest. One 5,748-node TU DD graph among 31 others
made a training batch of 32 hold 32 x 5748^2 score cells per head and layer, kept for the backward
pass: far beyond any machine's memory, where the graphs themselves need a fraction of it.

A step whose batch would exceed :data:`MAX_TRAIN_CELLS` runs as consecutive micro-batches
(:func:`~gtcompress.preprocess.batching.cell_bounded_runs`). Each is backpropagated as soon as it has
run, so only one micro-batch's activations are alive at a time, and its loss is weighted by its share
of the batch's loss: the accumulated gradient is the whole batch's task-loss gradient (the same mean,
class weights computed over the whole batch). What differs is BatchNorm, which sees each
micro-batch's statistics; that is the price of fitting at all. A batch within the bound is one
micro-batch with share 1, so training on it is unchanged bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gtcompress.data.base import DatasetInfo
from gtcompress.graph import GraphBatch, collate
from gtcompress.preprocess.batching import MAX_EVAL_CELLS, cell_bounded_runs
from gtcompress.train.metrics import class_weights, task_loss

#: padded attention cells one training micro-batch may hold. Training keeps every layer's scores and
#: softmax for the backward pass (several times what one evaluation layer holds at a time), but the
#: bound is kept equal to evaluation's so that the batches the shipped configurations train on
#: (CLUSTER, molecules: far below it) are never cut.
MAX_TRAIN_CELLS = MAX_EVAL_CELLS


def pads_every_graph(model: nn.Module) -> bool:
    """Whether ``model``'s attention pads each graph of a batch to the largest (see the module
    docstring): a model that needs the dense layout (GPS, Graphormer), a token-pruned one, or one told
    to take it. A GT left to choose takes the dense layout only where it is cheap. A module that is not
    one of ours is assumed to pad: cutting costs it nothing but BatchNorm's batch statistics, while not
    cutting can cost all memory."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "needs_dense"):
        return True
    return bool(model.needs_dense or getattr(model, "token_pruned", False) or config.attention_layout == "dense")


@dataclass
class MicroBatch:
    """Part of a step's batch and its shares of the step's loss."""

    batch: GraphBatch
    #: its labels' share of the batch's task loss (the task loss is a mean over labels, weighted by
    #: class for a class-weighted loss)
    label_share: float
    #: its output rows' share of the batch's (graphs for a graph-level task, nodes for a node-level
    #: one): the weight of terms that average over rows, such as distillation
    row_share: float


@dataclass
class Step:
    """The micro-batches of one optimiser step (one of them unless the batch was cut)."""

    parts: list[MicroBatch]
    num_graphs: int
    #: every label of a cut step of a class-weighted task: the class weights are the whole batch's
    labels: Tensor | None

    def task_loss(self, part: MicroBatch, logits: Tensor, info: DatasetInfo) -> Tensor:
        """``part``'s term of the step's task loss (the loss itself when the step is one part)."""
        assert part.batch.y is not None
        loss = task_loss(logits, part.batch.y, info, weight_labels=self.labels)
        return loss if part.label_share == 1.0 else loss * part.label_share


def _label_units(y: Tensor, info: DatasetInfo, weight: Tensor | None) -> float:
    """How much ``y`` weighs in its task's mean loss: labels present, each by its class weight."""
    if info.task == "multiclass":
        target = y.reshape(-1).long()
        return float(target.numel()) if weight is None else float(weight[target].sum())
    return float((~torch.isnan(y.float())).sum())


def _shares(units: list[float]) -> list[float]:
    total = sum(units)
    return [u / total for u in units] if total > 0 else [0.0] * len(units)


def split_step(group: list[GraphBatch], info: DatasetInfo, max_cells: int | None) -> Step:
    """The step of the graphs ``group``: one micro-batch, or consecutive runs within ``max_cells``."""
    runs = [(0, len(group))] if max_cells is None else cell_bounded_runs([g.num_nodes for g in group], max_cells)
    batches = [collate(group[a:b]) for a, b in runs]
    num_graphs = sum(b.num_graphs for b in batches)
    if len(batches) == 1:
        return Step([MicroBatch(batches[0], 1.0, 1.0)], num_graphs, None)
    ys = [b.y for b in batches]
    if any(y is None for y in ys):
        raise ValueError("a training batch without labels (y)")
    labels, weight = None, None
    if info.task == "multiclass" and info.class_weighted_loss:
        labels = torch.cat([y.reshape(-1) for y in ys]).long()  # type: ignore[union-attr]
        weight = class_weights(labels, info.out_dim, info)
    rows = [float(b.num_graphs if info.task_level == "graph" else b.num_nodes) for b in batches]
    label_shares = _shares([_label_units(y, info, weight) for y in ys])  # type: ignore[arg-type]
    row_shares = _shares(rows)
    parts = [MicroBatch(b, ls, rs) for b, ls, rs in zip(batches, label_shares, row_shares, strict=True)]
    return Step(parts, num_graphs, labels)


def training_steps(
    graphs: list[GraphBatch],
    batch_size: int,
    info: DatasetInfo,
    generator: torch.Generator,
    max_cells: int | None,
) -> Iterator[Step]:
    """The shuffled steps of one epoch. The shuffle draws from ``generator`` when iteration starts,
    as :func:`~gtcompress.data.base.iterate_batches` does, so runs stay reproducible."""
    order = torch.randperm(len(graphs), generator=generator).tolist()
    for i in range(0, len(order), batch_size):
        yield split_step([graphs[j] for j in order[i : i + batch_size]], info, max_cells)
