"""Settings that used to run to completion with a wrong result are refused before any work:
distillation that makes the loss NaN, time budgets that cut training to one epoch, a FLOP
target for axes that remove no FLOPs; and a loss that still goes NaN stops the run."""

from __future__ import annotations

import math

import pytest

import gtcompress.compress.gate_training as gate_training
from gtcompress.compress.budget import BudgetError
from gtcompress.compress.prune import PruneConfig, prune_model
from gtcompress.compress.prune_run import check_feasible
from gtcompress.compress.teddy import SparsifyConfig
from gtcompress.errors import ConfigError
from gtcompress.train.loop import TrainingDivergedError

from .conftest import tiny_model

KD_WEIGHT = "--kd-weight must be a finite number >= 0 (0 = no distillation), got {!r}"
KD_TEMPERATURE = "{} must be a finite number > 0 (1 = plain softmax), got {!r}"
BUDGET = "{} must be a finite number of seconds >= 0 (0 = no limit), got {!r}"
WEIGHTS_ONLY = (
    "--target-flops 0.5 cannot be met with --axes weights: the weights axis does not reduce FLOPs "
    "(it zeroes weights; every matmul still runs): --target-flops needs heads, ffn, layers or tokens in --axes"
)


def _sparsify(**kw: float) -> SparsifyConfig:
    return SparsifyConfig(edges=0.3, **kw)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # gtc sparsify --kd-temperature 0 wrote a checkpoint whose every parameter was NaN, exit 0
        (lambda: _sparsify(kd_temperature=0.0), KD_TEMPERATURE.format("--kd-temperature", 0.0)),
        (lambda: _sparsify(kd_temperature=-1.0), KD_TEMPERATURE.format("--kd-temperature", -1.0)),
        (lambda: _sparsify(kd_temperature=math.inf), KD_TEMPERATURE.format("--kd-temperature", math.inf)),
        (lambda: _sparsify(kd_weight=math.nan), KD_WEIGHT.format(math.nan)),
        (lambda: _sparsify(kd_weight=-0.5), KD_WEIGHT.format(-0.5)),
        (lambda: _sparsify(time_budget_s=-1.0), BUDGET.format("--time-budget", -1.0)),
        (lambda: _sparsify(time_budget_s=math.nan), BUDGET.format("--time-budget", math.nan)),
        (lambda: PruneConfig(kd_temperature=0.0), KD_TEMPERATURE.format("kd_temperature", 0.0)),
        (lambda: PruneConfig(kd_temperature=math.nan), KD_TEMPERATURE.format("kd_temperature", math.nan)),
        (lambda: PruneConfig(kd_weight=math.nan), KD_WEIGHT.format(math.nan)),
        (lambda: PruneConfig(kd_weight=-1.0), KD_WEIGHT.format(-1.0)),
        (lambda: PruneConfig(time_budget_s=-5.0), BUDGET.format("--time-budget", -5.0)),
        (lambda: PruneConfig(time_budget_s=math.inf), BUDGET.format("--time-budget", math.inf)),
        (lambda: PruneConfig(finetune_time_budget_s=math.nan), BUDGET.format("--finetune-time-budget", math.nan)),
        (lambda: PruneConfig(finetune_time_budget_s=-1.0), BUDGET.format("--finetune-time-budget", -1.0)),
        (lambda: PruneConfig(target_flops=0.5, axes="weights"), WEIGHTS_ONLY),
    ],
)
def test_bad_settings_are_refused_on_construction(build, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build()
    assert str(err.value) == message


def test_good_edge_values_stay_accepted() -> None:
    assert SparsifyConfig(edges=0.3, kd_weight=0.0, kd_temperature=0.5, time_budget_s=0.0).kd_weight == 0.0
    assert PruneConfig(kd_weight=0.0, kd_temperature=4.0, time_budget_s=30.0).time_budget_s == 30.0
    assert PruneConfig(target_flops=None, axes="weights").axes == ("weights",)  # sparsity is its budget
    assert PruneConfig(target_flops=0.5, axes="auto,weights").target_flops == 0.5


def test_weights_axis_target_names_the_axes_not_tokens() -> None:
    """``gtc prune --target-flops 0.5 --axes weights`` blamed --token-keep, which was never asked for."""
    cfg = PruneConfig(target_flops=None, axes="weights")
    with pytest.raises(BudgetError) as err:
        check_feasible(None, cfg, 0.5)  # type: ignore[arg-type]  # refused before the cost model is read
    assert str(err.value) == WEIGHTS_ONLY


def test_a_nan_loss_in_mask_training_stops_the_run(node_data, monkeypatch) -> None:
    """GTSP's own loop: NaN gates and weights were masked, fine-tuned and saved."""

    def nan_kd(info, weight, temperature):
        return lambda model, batch, logits: logits.sum() * math.nan

    monkeypatch.setattr(gate_training, "distillation_loss", nan_kd)
    model = tiny_model("gt", node_data.info, attention_layout="sparse")
    cfg = PruneConfig(target_flops=0.6, epochs=1, finetune_epochs=0, batch_size=8, importance_batches=0)
    with pytest.raises(TrainingDivergedError) as err:
        prune_model(model, node_data, cfg, show_progress=False)
    assert str(err.value) == (
        "GTSP masks: the loss became nan at epoch 1, step 1 of 3; training diverged, so no weights were "
        "written: lower the learning rate (--lr, now 0.0005)"
    )


@pytest.mark.parametrize(
    ("rates", "named"),
    [({"lr": 1e38}, "1e+38; --gate-lr, now 0.05"), ({"gate_lr": 1e38}, "0.0005; --gate-lr, now 1e+38")],
)
def test_a_learning_rate_that_overflows_float32_in_mask_training_is_a_divergence(node_data, rates, named) -> None:
    """``gtc prune --lr 1e38`` / ``--gate-lr 1e38`` was torch's "value cannot be converted to type
    float without overflow" traceback from the optimiser's first step."""
    model = tiny_model("gt", node_data.info, attention_layout="sparse")
    cfg = PruneConfig(target_flops=0.6, epochs=1, finetune_epochs=0, batch_size=8, importance_batches=0, **rates)
    with pytest.raises(TrainingDivergedError) as err:
        prune_model(model, node_data, cfg, show_progress=False)
    assert str(err.value) == (
        "GTSP masks: the optimiser step overflowed float32 at epoch 1, step 1 of 3; training diverged, so no "
        f"weights were written: lower the learning rate (--lr, now {named})"
    )


def test_an_undefined_validation_metric_in_mask_training_is_an_error_not_the_untrained_gates() -> None:
    """NaN is never better than -inf: with every val label of one class (ROC-AUC undefined) no mask
    epoch was "best", so GTSP restored the gates and weights it started from, threw the mask training
    away and, with no fine-tuning epochs, wrote that model and exited 0."""
    import dataclasses

    import torch

    from gtcompress.data.base import DatasetInfo, GraphDataset

    from .conftest import EDGE, NODE, random_graphs

    def labelled(split: str, count: int, seed: int) -> list:
        graphs = random_graphs(count, seed, "graph")
        return [
            dataclasses.replace(g, y=torch.tensor([[float(i % 2) * (split != "val")]])) for i, g in enumerate(graphs)
        ]

    info = DatasetInfo("one-class-val", "graph", "binary", 1, "rocauc", NODE, EDGE)
    data = GraphDataset(
        info, {"train": labelled("train", 24, 0), "val": labelled("val", 10, 1), "test": labelled("test", 10, 2)}
    )
    model = tiny_model("gt", info, attention_layout="sparse")
    cfg = PruneConfig(target_flops=None, keep={"heads": 0.5}, epochs=2, finetune_epochs=0, batch_size=8)
    with pytest.raises(ConfigError) as err:
        prune_model(model, data, cfg, show_progress=False)
    assert str(err.value) == (
        "dataset 'one-class-val': the val rocauc is undefined (NaN) at epoch 0, so no best epoch can be chosen: "
        "ROC-AUC needs both classes among a task's val labels"
    )
