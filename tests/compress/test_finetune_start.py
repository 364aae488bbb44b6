"""Fine-tuning after compression never hands back a model worse on validation than the one it
started from, where that start is already a valid result: dense-ft, the fine-tuning of a
materialised model (without a gradual sparsity schedule) and TEDDY. A lr of 10 makes every epoch
worse than the trained start here."""

from __future__ import annotations

import copy

import pytest
import torch

from gtcompress.compress import prune_run
from gtcompress.compress.finetune import finetune_dense
from gtcompress.compress.prune import PruneConfig
from gtcompress.compress.report import kept_start_notes
from gtcompress.compress.sparsity import l0_project_, nonzero, prunable_weights
from gtcompress.compress.teddy import SparsifyConfig, sparsify_model
from gtcompress.train.loop import TrainConfig, evaluate, train

from .conftest import tiny_dataset, tiny_model


@pytest.fixture(scope="module")
def trained():
    """A tiny GT trained on the node toy task: val accuracy 0.836, against 0.623 untrained."""
    data = tiny_dataset("node")
    model = tiny_model("gt", data.info).train()
    train(model, data, TrainConfig(epochs=10, batch_size=8, lr=3e-3, warmup_epochs=1), show_progress=False)
    return model.eval(), data


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _val(model: torch.nn.Module, data) -> float:
    return evaluate(model, data["val"], data.info)["accuracy"]


def test_finetuning_a_materialised_model_that_gets_worse_keeps_it(trained) -> None:
    model, data = trained
    small, before = copy.deepcopy(model), _state(model)
    cfg = PruneConfig(target_flops=None, keep={"heads": 0.5}, batch_size=8, kd_weight=0.0, lr=10.0)
    ft = prune_run.finetune_pruned(small, data, cfg, 2, 0.0, False, "ft")
    assert _same(_state(small), before)  # bit for bit
    assert ft["kept_start"] and ft["start_val"] == _val(model, data)
    assert ft["best_epoch"] in (0, 1) and ft["best_epoch_val"] < ft["start_val"]


def test_finetuning_a_materialised_model_that_improves_returns_the_best_epoch(node_data) -> None:
    model = tiny_model("gt", node_data.info).train()  # untrained: val 0.623; 0.721 after 3 epochs at lr 1e-2
    start_val = _val(model, node_data)
    cfg = PruneConfig(target_flops=None, keep={"heads": 0.5}, batch_size=8, kd_weight=0.0, lr=1e-2)
    ft = prune_run.finetune_pruned(model, node_data, cfg, 3, 0.0, False, "ft")
    assert not ft["kept_start"] and ft["start_val"] == start_val
    assert ft["best_epoch_val"] > start_val
    assert _val(model, node_data) == pytest.approx(ft["best_epoch_val"])


def test_gradual_weight_pruning_never_returns_its_denser_start(trained, monkeypatch) -> None:
    """Its start is denser than the sparsity asked for: not a valid result, whatever its val."""
    model, data = trained
    small = copy.deepcopy(model)
    runs = []

    def recording(*args, **kwargs):
        runs.append(train(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(prune_run, "train", recording)
    cfg = PruneConfig(target_flops=None, axes="weights", weight_sparsity=0.9, batch_size=8, kd_weight=0.0, lr=10.0)
    ft = prune_run.finetune_pruned(small, data, cfg, 6, 0.0, False, "ft")
    (res,) = runs
    assert res.start_val is None and not res.kept_start and "kept_start" not in ft
    assert ft["best_epoch"] == res.best_epoch >= 2  # an epoch trained at the final sparsity (step 9 of 18)
    weights = [p for _, p in prunable_weights(small)]
    assert 1 - nonzero(weights) / sum(p.numel() for p in weights) == pytest.approx(0.9, abs=1e-3)
    assert _val(small, data) == pytest.approx(res.history[res.best_epoch]["val_accuracy"])  # the epoch validated


def test_teddy_whose_finetuning_gets_worse_keeps_its_projected_start(trained) -> None:
    """The start is the ℓ0-projected model on the sparsified graphs: what the one-shot metric measures."""
    model, data = trained
    cfg = SparsifyConfig(edges=0.3, weights=0.5, epochs=2, batch_size=8, cost_graphs=6, lr=10.0, kd_weight=0.0)
    res = sparsify_model(model, data, cfg, show_progress=False)
    start = copy.deepcopy(model)
    params = [p for _, p in prunable_weights(start)]
    l0_project_(params, round(sum(p.numel() for p in params) * 0.5))
    assert _same(_state(res.model), _state(start))
    ft, metric = res.report["finetune"], res.report["metric"]
    assert ft["kept_start"] and ft["start_val"] == res.report["metric_one_shot"]["val"] == metric["after"]["val"]
    assert ft["best_epoch_val"] < ft["start_val"]
    assert res.report["removed"]["weights"]["kept"] == round(res.report["removed"]["weights"]["total"] * 0.5)
    (note,) = kept_start_notes(res.report)
    assert note == (
        f"fine-tuning did not beat its start on val accuracy (its best epoch ({ft['best_epoch'] + 1} of 2) reached "
        f"{ft['best_epoch_val']:.4f}, the start {ft['start_val']:.4f}): the starting weights were kept"
    )


def test_dense_ft_that_gets_worse_returns_the_dense_model(trained) -> None:
    model, data = trained
    before = _state(model)
    res = finetune_dense(model, data, 2, lr=10.0, batch_size=8)
    assert _same(_state(res.model), before) and _same(_state(model), before)
    assert res.report["kept_start"] and res.report["val"] == res.report["start_val"] == _val(model, data)
    assert res.report["best_epoch_val"] < res.report["start_val"]


def test_a_report_says_nothing_when_finetuning_beat_its_start() -> None:
    report = {"metric": {"name": "accuracy"}, "finetune": {"epochs_run": 2, "best_epoch": 1, "kept_start": False}}
    assert kept_start_notes(report) == []
    report["finetune"] = {"epochs_run": 3}  # no fine-tuning start evaluated (a gradual schedule, older reports)
    assert kept_start_notes(report) == []
