"""The dense-ft control: the dense model trained on with the compressed models' recipe.

A compressed model is fine-tuned after pruning (or sparsification) for some epochs with
distillation from the dense model. Part of whatever it gains or loses against the dense model is
that extra training, not the compression: a dense model that was not trained to convergence gains
points from it too. The control gives the dense model the same extra epochs with the same loss
(task loss + KL to its own starting point, :mod:`gtcompress.compress.distill`), so "compressed vs
dense-ft" isolates what the compression cost. ``gtc pipeline`` and ``bench/compression.py``
report their deltas against it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from gtcompress.compress.distill import attach_teacher, distillation_loss, has_teacher
from gtcompress.compress.report import finetune_record
from gtcompress.models.model import GraphModel
from gtcompress.train.loop import TrainConfig, TrainResult, evaluate, train

__all__ = ["DenseFinetune", "finetune_dense"]


@dataclass
class DenseFinetune:
    model: GraphModel
    result: TrainResult
    report: dict[str, Any]


def finetune_dense(
    model: GraphModel,
    dataset: Any,
    epochs: int,
    *,
    lr: float = 5e-4,
    batch_size: int = 32,
    seed: int = 1,
    time_budget_s: float = 0.0,
    show_progress: bool = False,
) -> DenseFinetune:
    """A copy of ``model`` trained ``epochs`` more (or for ``time_budget_s``) with task loss + KL to
    ``model`` itself; ``model`` is left untouched. The report holds the test/val metric before and
    after, the epochs run and the seconds taken."""
    t0 = time.perf_counter()
    student = copy.deepcopy(model)
    data = dataset if has_teacher(dataset) else attach_teacher(dataset, copy.deepcopy(model).eval())
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_epochs=min(1, epochs),
        seed=seed,
        time_budget_s=time_budget_s,
    )
    # keep_start: the control must not come back worse than the dense model it starts from (a run of
    # one or two epochs can), or the compressed models' deltas against it would flatter them
    result = train(
        student, data, cfg, extra_loss=distillation_loss(dataset.info), show_progress=show_progress, keep_start=True
    )
    info = dataset.info
    record = finetune_record(result, info.metric)
    report = {
        "method": "dense-ft",
        **{k: v for k, v in record.items() if k != "train_time_s"},
        "seconds": time.perf_counter() - t0,
        "metric": info.metric,
        "test": evaluate(student, dataset["test"], info)[info.metric] if dataset.splits.get("test") else None,
        "val": evaluate(student, dataset["val"], info)[info.metric],
    }
    return DenseFinetune(student.eval() if not model.training else student, result, report)
