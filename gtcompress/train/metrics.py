"""Losses and metrics per task, as the reference benchmarks define them.

* SBMs (PATTERN/CLUSTER): class-averaged accuracy and a cross-entropy whose class weights are
  recomputed per batch, ``w_c = (V - n_c) / V`` for classes present (GraphGPS
  ``weighted_cross_entropy``), so the majority class does not dominate. The accuracy is averaged over
  the classes of the whole split, as GraphGPS scores it; Benchmarking-GNNs averages it per batch of
  128 graphs instead (0.012 points apart at most on simulated CLUSTER splits of 1,000 graphs).
* Binary (ogbg-mol*): BCE with logits; labels that are NaN (missing) are ignored; ROC-AUC, per
  task and averaged over the tasks with both classes (OGB's evaluator: pooling the tasks would score
  the gap between their base rates).
* Regression: L1 loss and MAE; or, where the benchmark scores RMSE (OGB's regression tasks), MSE
  loss and RMSE per task, averaged over the tasks (OGB's evaluator).
* Average precision (OGB's molpcba, molmuv): per task with both classes, averaged (OGB's evaluator),
  the step-wise area under the precision-recall curve, as scikit-learn's ``average_precision_score``.
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor
from torch.nn import functional as F

from gtcompress.data.base import DatasetInfo, Metric


def class_weights(target: Tensor, classes: int, info: DatasetInfo) -> Tensor | None:
    """The per-class weights of ``info``'s loss for a batch with labels ``target`` (``None``: unweighted)."""
    if info.task != "multiclass" or not info.class_weighted_loss:
        return None
    v = target.numel()
    counts = torch.bincount(target, minlength=classes).float()
    if int((counts > 0).sum()) < 2:
        # one class present: its weight is 0 and the weighted mean 0/0 = NaN, which stopped training
        # as a divergence. A constant weight cancels out of a weighted mean, so the unweighted one
        # is this batch's loss (the limit of the class-balanced mean).
        return None
    return (v - counts) / v * (counts > 0).float()


def task_loss(logits: Tensor, y: Tensor, info: DatasetInfo, weight_labels: Tensor | None = None) -> Tensor:
    """The training loss of ``info``'s task. ``weight_labels``: the labels of the whole batch that
    the class weights come from, where ``y`` is only part of it (a micro-batch, see
    :mod:`gtcompress.train.steps`); default ``y``."""
    if info.task == "multiclass":
        target = y.reshape(-1).long()
        source = target if weight_labels is None else weight_labels.reshape(-1).long()
        weight = class_weights(source, logits.shape[-1], info)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target, weight=weight)
    target = y.reshape(logits.shape).to(logits.dtype)
    keep = ~torch.isnan(target)
    if not keep.any():  # a batch with every label missing teaches nothing (the mean of nothing is NaN)
        return (logits * 0.0).sum()
    if info.task == "binary":
        return F.binary_cross_entropy_with_logits(logits[keep], target[keep])
    if info.metric == "rmse":
        return F.mse_loss(logits[keep], target[keep])
    return F.l1_loss(logits[keep], target[keep])


#: metrics that are errors in the target's units: lower is better, and a difference is not in points
ERROR_METRICS = ("mae", "rmse")


def higher_is_better(metric: str) -> bool:
    return metric not in ERROR_METRICS


def compute_metric(metric: str, logits: Tensor, y: Tensor) -> float:
    """Metric over a whole split (``logits`` and ``y`` concatenated over all batches).

    NaN where any output is NaN: a NaN is no prediction, yet argmax reads it as the largest logit (so
    accuracy counted it as a class, right or wrong), average precision ranked it, and a task of NaN
    scores dropped out of the ROC-AUC mean unseen. OGB's evaluator (scikit-learn) refuses NaN
    predictions; an undefined metric is never picked or served."""
    if metric in get_args(Metric) and bool(torch.isnan(logits).any()):
        return math.nan
    if metric in ("accuracy", "class_avg_acc"):
        pred = logits.argmax(dim=-1).reshape(-1)
        target = y.reshape(-1).long()
        if metric == "accuracy":
            return float((pred == target).float().mean())
        accs = [float((pred[target == c] == c).float().mean()) for c in torch.unique(target).tolist()]
        return float(np.mean(accs))
    if metric == "mae":
        target = y.reshape(logits.shape).to(logits.dtype)
        keep = ~torch.isnan(target)
        return float((logits[keep] - target[keep]).abs().mean())
    if metric == "rmse":
        pred = logits.reshape(logits.shape[0], -1).double().numpy()
        target = y.reshape(pred.shape).double().numpy()
        per_task = []
        for t in range(pred.shape[1]):
            keep = ~np.isnan(target[:, t])
            if keep.any():
                per_task.append(float(np.sqrt(np.mean((pred[keep, t] - target[keep, t]) ** 2))))
        return float(np.mean(per_task)) if per_task else math.nan
    if metric in ("rocauc", "ap"):
        scores = logits.reshape(logits.shape[0], -1).double().numpy()
        labels = y.reshape(scores.shape).double().numpy()
        score = roc_auc if metric == "rocauc" else average_precision
        per_task = [score(scores[:, t], labels[:, t]) for t in range(scores.shape[1])]
        defined = [a for a in per_task if not math.isnan(a)]
        return float(np.mean(defined)) if defined else math.nan
    raise ValueError(f"unknown metric {metric!r}")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC via the Mann–Whitney U statistic (ties averaged); NaN labels ignored.

    Returns NaN when only one class is present, where ROC-AUC is undefined."""
    keep = ~np.isnan(labels)
    scores, labels = scores[keep], labels[keep] > 0.5
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision: the sum over distinct score thresholds, highest first, of precision at the
    threshold times the recall it adds (tied scores enter together). NaN labels are ignored.

    Returns NaN when only one class is present: OGB leaves such a task out of the average."""
    keep = ~np.isnan(labels)
    scores, labels = scores[keep], labels[keep] > 0.5
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # the last index of each distinct score
    tp = np.cumsum(labels)[last]
    precision = tp / (last + 1)
    recall_added = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(precision * recall_added))
