"""The random-pruning baseline: what GTSP's learned ranking is worth.

:func:`random_prune` runs GTSP's recipe with the one learned part replaced: units are ranked at
random (and the token scorer, if any, starts from a fresh random seed) instead of by trained gates.
The selection is the same measured one, so the model meets the same budget, and it gets the same
total training — the GTSP run's mask-training plus fine-tuning epochs (or time), all spent
fine-tuning with distillation. Any accuracy GTSP keeps beyond this is its ranking's doing.
"""

from __future__ import annotations

from gtcompress.compress.budget import random_scores
from gtcompress.compress.gates import GateSet
from gtcompress.compress.prune_config import PruneConfig
from gtcompress.compress.prune_run import PruneResult, PruneRun
from gtcompress.data.base import GraphDataset
from gtcompress.models.model import GraphModel

__all__ = ["random_prune"]


def random_prune(
    model: GraphModel,
    dataset: GraphDataset,
    cfg: PruneConfig,
    show_progress: bool = True,
    epochs: int | None = None,
    dense_metrics: dict[str, float] | None = None,
) -> PruneResult:
    """Random pruning at ``cfg``'s budget: random unit ranking, the same measured selection, then
    KD fine-tuning for ``epochs`` (default: the GTSP run's mask training + fine-tuning epochs, so
    both get the same training)."""
    run = PruneRun.start("random", model, dataset, cfg, dense_metrics=dense_metrics, show_progress=show_progress)
    cfg = run.cfg
    sel = run.select(random_scores(run.cost_model, cfg.seed))
    diff = run.exactness(GateSet.for_model(run.student, run.axes), sel)
    n_epochs = cfg.epochs + cfg.finetune_epochs if epochs is None else epochs
    timed = cfg.time_budget_s or cfg.finetune_time_budget_s
    budget_s = cfg.time_budget_s + cfg.finetune_time_budget_s if timed else 0.0
    return run.finish(sel, diff, finetune_epochs=n_epochs, finetune_time_s=budget_s, history=[])
