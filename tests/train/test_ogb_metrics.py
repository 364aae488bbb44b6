"""OGB's own metrics: average precision (molpcba, molmuv) and RMSE (its regression tasks), each per
task and averaged over the tasks, as OGB's evaluator does, so that a run reports the number OGB's
leaderboards compare (ROC-AUC and MAE were reported instead)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gtcompress.data.base import DatasetInfo, FeatureSpec
from gtcompress.train.metrics import average_precision, compute_metric, higher_is_better, task_loss


def _ap_by_thresholds(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP from its definition: for each distinct threshold t, highest first, the precision of
    ``score >= t`` times the recall that threshold adds."""
    total, ap, prev_recall = labels.sum(), 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        picked = scores >= t
        recall = labels[picked].sum() / total
        ap += labels[picked].mean() * (recall - prev_recall)
        prev_recall = recall
    return float(ap)


def test_average_precision_of_a_known_case() -> None:
    # the worked example of scikit-learn's average_precision_score documentation: 0.83333
    got = average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.0, 0.0, 1.0, 1.0]))
    assert got == pytest.approx(5 / 6)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_its_definition_with_ties_and_missing_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    labels = (rng.random(40) < 0.4).astype(float)
    labels[rng.random(40) < 0.2] = math.nan
    keep = ~np.isnan(labels)
    assert average_precision(scores, labels) == pytest.approx(_ap_by_thresholds(scores[keep], labels[keep]))


def test_average_precision_is_undefined_with_one_class() -> None:
    assert math.isnan(average_precision(np.array([0.2, 0.9]), np.array([1.0, 1.0])))
    assert math.isnan(average_precision(np.array([0.2, 0.9]), np.array([0.0, math.nan])))


def test_ap_averages_the_tasks_with_both_classes() -> None:
    logits = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])  # task 2 has no negative: left out, as OGB does
    want = average_precision(logits[:, 0].double().numpy(), y[:, 0].double().numpy())
    assert compute_metric("ap", logits, y) == pytest.approx(want) and want == pytest.approx(1.0)


def test_rmse_is_per_task_then_averaged_and_ignores_missing_labels() -> None:
    logits = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, math.nan], [0.0, 1.0]])
    task1 = math.sqrt((1 + 4 + 0) / 3)
    task2 = math.sqrt((0 + 16) / 2)
    assert compute_metric("rmse", logits, y) == pytest.approx((task1 + task2) / 2)


def test_error_metrics_are_lower_is_better() -> None:
    assert [higher_is_better(m) for m in ("mae", "rmse", "rocauc", "ap", "accuracy")] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_an_rmse_task_trains_on_squared_error() -> None:
    info = DatasetInfo("esol", "graph", "regression", 1, "rmse", FeatureSpec("float", 1))
    logits, y = torch.tensor([[1.0], [4.0]]), torch.tensor([[0.0], [math.nan]])
    assert float(task_loss(logits, y, info)) == pytest.approx(1.0)
    logits = torch.tensor([[3.0], [4.0]])
    assert float(task_loss(logits, y, info)) == pytest.approx(9.0)  # L1 would give 3
