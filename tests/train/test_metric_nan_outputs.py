"""A model output that is NaN is no prediction: every metric of a split holding one is undefined (NaN).

Before, argmax read a NaN as the largest logit, so accuracy and class-averaged accuracy counted it as a
class (right or wrong: all-NaN outputs scored 0.5 on a balanced split), average precision ranked it
(all-NaN scores gave 0.5), and a task whose scores held a NaN left the multi-task ROC-AUC mean without
a word. An exported model that overflows on a few graphs was then scored, compared and could be
served. OGB's evaluator (scikit-learn) refuses NaN predictions."""

from __future__ import annotations

import math

import pytest
import torch

from gtcompress.train.metrics import compute_metric

NAN = math.nan


@pytest.mark.parametrize("metric", ["accuracy", "class_avg_acc"])
def test_a_nan_output_is_not_counted_as_a_class(metric: str) -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert compute_metric(metric, logits, y) == 1.0
    assert math.isnan(compute_metric(metric, torch.tensor([[NAN, 0.0], *logits[1:].tolist()]), y))  # was 1.0
    assert math.isnan(compute_metric(metric, torch.full((4, 2), NAN), y))  # was 0.5


def test_all_nan_scores_have_no_average_precision() -> None:
    y = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    assert math.isnan(compute_metric("ap", torch.full((4, 1), NAN), y))  # was 0.5
    assert compute_metric("ap", torch.tensor([[0.1], [0.9], [0.2], [0.8]]), y) == 1.0


def test_a_task_of_nan_scores_does_not_leave_the_roc_auc_mean() -> None:
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    logits = torch.tensor([[0.1, NAN], [0.9, 0.3], [0.2, 0.1], [0.8, 0.2]])
    assert math.isnan(compute_metric("rocauc", logits, y))  # was 1.0, task 1 alone
    assert compute_metric("rocauc", torch.nan_to_num(logits, nan=0.4), y) == 0.625  # (1.0 + 0.25) / 2


def test_an_infinite_output_is_still_a_prediction() -> None:
    logits = torch.tensor([[math.inf, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, math.inf]])
    assert compute_metric("accuracy", logits, torch.tensor([0, 0, 1, 1])) == 1.0
    scores = torch.tensor([[-math.inf], [math.inf], [0.0], [1.0]])
    assert compute_metric("rocauc", scores, torch.tensor([[0.0], [1.0], [0.0], [1.0]])) == 1.0


@pytest.mark.parametrize("metric", ["mae", "rmse"])
def test_error_metrics_of_a_nan_output_stay_undefined(metric: str) -> None:
    y = torch.tensor([[0.0], [1.0]])
    assert compute_metric(metric, torch.tensor([[0.5], [1.5]]), y) == 0.5
    assert math.isnan(compute_metric(metric, torch.tensor([[NAN], [1.0]]), y))


@pytest.mark.parametrize(
    ("metric", "loss", "why"),
    [
        (
            "accuracy",
            math.nan,
            ": the model's val outputs are not finite (NaN or infinite: its weights or activations overflow)",
        ),
        (
            "rocauc",
            math.inf,
            ": the model's val outputs are not finite (NaN or infinite: its weights or activations overflow)",
        ),
        ("rocauc", 0.7, ": ROC-AUC needs both classes among a task's val labels"),
        ("rocauc", None, ": ROC-AUC needs both classes among a task's val labels"),
        ("mae", 0.7, ""),
    ],
)
def test_an_undefined_val_metric_says_which_cause(metric: str, loss: float | None, why: str) -> None:
    """With NaN outputs a metric is undefined, and the training loop stops: its message blamed a val
    split of one class, which the outputs' NaN has nothing to do with."""
    from gtcompress.data.base import DatasetInfo, FeatureSpec
    from gtcompress.errors import ConfigError
    from gtcompress.train.loop import check_defined_metric

    info = DatasetInfo("d", "graph", "binary", 1, metric, FeatureSpec("float", 3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        check_defined_metric(math.nan, info, 3, loss)
    assert (
        str(e.value)
        == f"dataset 'd': the val {metric} is undefined (NaN) at epoch 3, so no best epoch can be chosen{why}"
    )
    check_defined_metric(0.5, info, 3, math.nan)  # a defined metric passes, whatever the loss
