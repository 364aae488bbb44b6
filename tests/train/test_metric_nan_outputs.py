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
