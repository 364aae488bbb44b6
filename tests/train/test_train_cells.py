"""Training batches are cut where their padded attention would exceed ``MAX_TRAIN_CELLS``.

One large graph among small ones made a GPS or Graphormer training batch pad every graph to it (a
5,748-node TU DD graph in a batch of 32: tens of GB kept for the backward pass). A cut step runs as
micro-batches whose gradients add up to the whole batch's, so what training computes is unchanged
except for BatchNorm's batch statistics; these tests hold models in eval mode (running statistics)
to compare the gradients exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec, GraphDataset
from gtcompress.graph import GraphBatch, collate
from gtcompress.models import ModelConfig, build_model
from gtcompress.train.loop import TrainConfig, train
from gtcompress.train.metrics import task_loss
from gtcompress.train.steps import MAX_TRAIN_CELLS, pads_every_graph, split_step

SIZES = [12, 30, 7, 25, 300, 18, 30, 9, 120, 22]
BOUND = 20_000  # cuts SIZES into [0, 4) [4, 5) [5, 8) [8, 9) [9, 10)

INFOS = {
    "node-multiclass-weighted": DatasetInfo(
        "sbm", "node", "multiclass", 3, "class_avg_acc", FeatureSpec("float", 3), class_weighted_loss=True
    ),
    "graph-binary-missing": DatasetInfo("mol", "graph", "binary", 2, "rocauc", FeatureSpec("float", 3)),
    "graph-regression": DatasetInfo("zinc", "graph", "regression", 2, "mae", FeatureSpec("float", 3)),
    "graph-multiclass": DatasetInfo("tu", "graph", "multiclass", 3, "accuracy", FeatureSpec("float", 3)),
}


def _graph(n: int, seed: int, info: DatasetInfo) -> GraphBatch:
    g = torch.Generator().manual_seed(seed)
    s = torch.arange(n)
    rows = n if info.task_level == "node" else 1
    if info.task == "multiclass":
        y = torch.randint(0, info.out_dim, (rows,), generator=g)
    else:
        y = torch.randn(rows, info.out_dim, generator=g)
        if info.task == "binary":
            y = (y > 0).float()
            y[torch.rand(rows, info.out_dim, generator=g) < 0.4] = math.nan  # missing labels, as in OGB
    return GraphBatch(torch.randn(n, 3, generator=g), torch.stack([s, (s + 1) % n]), y=y)


def _group(info: DatasetInfo) -> list[GraphBatch]:
    return [_graph(n, i, info) for i, n in enumerate(SIZES)]


def _model(info: DatasetInfo, arch: str = "gps") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch,
        node_features=info.node_features,
        out_dim=info.out_dim,
        hidden=16,
        heads=2,
        num_layers=2,
        task_level=info.task_level,
    )
    return build_model(cfg).eval()  # running BatchNorm statistics: the cut changes nothing at all


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_a_batch_within_the_bound_is_one_part_of_share_one() -> None:
    info = INFOS["graph-regression"]
    step = split_step(_group(info), info, MAX_TRAIN_CELLS)
    assert [(p.batch.num_graphs, p.label_share, p.row_share) for p in step.parts] == [(10, 1.0, 1.0)]
    assert step.labels is None and step.num_graphs == 10


@pytest.mark.parametrize("kind", sorted(INFOS))
def test_a_cut_step_accumulates_the_whole_batch_gradient(kind: str) -> None:
    info = INFOS[kind]
    group = _group(info)
    model = _model(info)

    whole = collate(group)
    logits = model(whole)
    assert whole.y is not None
    (task_loss(logits, whole.y, info) + logits.pow(2).mean()).backward()  # + a mean over rows, as distillation
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    step = split_step(group, info, BOUND)
    assert [p.batch.num_graphs for p in step.parts] == [4, 1, 3, 1, 1]
    assert sum(p.label_share for p in step.parts) == pytest.approx(1.0)
    assert sum(p.row_share for p in step.parts) == pytest.approx(1.0)
    for part in step.parts:
        out = model(part.batch)
        (step.task_loss(part, out, info) + part.row_share * out.pow(2).mean()).backward()
    for got, want in zip(_grads(model), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_labels_all_missing_give_no_task_share() -> None:
    info = INFOS["graph-binary-missing"]
    group = _group(info)
    for g in group:
        assert g.y is not None
        g.y[:] = math.nan
    step = split_step(group, info, BOUND)
    assert [p.label_share for p in step.parts] == [0.0] * 5
    assert sum(p.row_share for p in step.parts) == pytest.approx(1.0)


def test_which_models_pad_every_graph() -> None:
    info = INFOS["graph-regression"]
    assert pads_every_graph(_model(info, "gps")) and pads_every_graph(_model(info, "graphormer"))
    assert not pads_every_graph(_model(info, "gt"))  # its layout follows the edges where padding would cost
    base = dict(arch="gt", node_features=info.node_features, out_dim=2, hidden=16, heads=2, num_layers=1)
    assert pads_every_graph(build_model(ModelConfig(**base, attention_layout="dense")))
    assert pads_every_graph(torch.nn.Linear(2, 2))  # not ours: cutting is the safe side


@pytest.mark.parametrize("arch", ["gps", "graphormer"])
def test_training_never_runs_a_batch_beyond_the_bound(arch: str, monkeypatch) -> None:
    info = INFOS["graph-multiclass"]
    graphs = _group(info)
    model = _model(info, arch)
    seen: list[tuple[int, int]] = []
    forward = model.forward

    def counted(batch: GraphBatch):  # type: ignore[no-untyped-def]
        if model.training:
            sizes = torch.bincount(batch.batch_vector, minlength=batch.num_graphs)
            seen.append((batch.num_graphs, int(sizes.max())))
        return forward(batch)

    monkeypatch.setattr(model, "forward", counted)
    monkeypatch.setattr("gtcompress.train.loop.MAX_TRAIN_CELLS", BOUND)
    dataset = GraphDataset(info, {"train": graphs, "val": graphs[:3]})
    result = train(model, dataset, TrainConfig(epochs=2, batch_size=10, warmup_epochs=1), show_progress=False)
    assert result.epochs_run == 2 and sum(n for n, _ in seen) == 2 * len(graphs)
    assert len(seen) > 2  # cut: one batch of 10 an epoch otherwise
    assert all(n * widest**2 <= BOUND or n == 1 for n, widest in seen)
