"""The random-pruning baseline: what GTSP's learned ranking is worth.

:func:`random_prune` runs GTSP's recipe with the one learned part replaced: units are ranked at
random (and the token scorer, if any, starts from a fresh random seed) instead of by trained gates.
The selection is the same measured one, so the model meets the same budget, and it gets the same
total training — the GTSP run's mask-training plus fine-tuning epochs (or time), all spent
fine-tuning with distillation. Any accuracy GTSP keeps beyond this is its ranking's doing.

When only one of the two phases is timed (``--time-budget`` or ``--finetune-time-budget``), epochs
and seconds cannot be added up: one merged run of ``epochs + finetune_epochs`` epochs under the one
budget stopped where the timed phase alone would (``--epochs 3 --finetune-epochs 3
--finetune-time-budget 1e-3``: GTSP trained 3 + 1 epochs, the baseline 1). The baseline then
trains in the same two phases as GTSP: ``epochs`` (or ``time_budget_s``) of distillation, then
fine-tuning for ``finetune_epochs`` (or ``finetune_time_budget_s``), the weights axis in the second.
"""

from __future__ import annotations

from gtcompress.compress.gates import GateSet
from gtcompress.compress.plan_choice import random_scores
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
    KD fine-tuning for ``epochs`` (default: the GTSP run's mask training + fine-tuning epochs, or
    time, so both get the same training; see the module docstring for one phase timed)."""
    run = PruneRun.start("random", model, dataset, cfg, dense_metrics=dense_metrics, show_progress=show_progress)
    cfg = run.cfg
    sel = run.select(random_scores(run.cost_model, cfg.seed))
    diff = run.exactness(GateSet.for_model(run.student, run.axes), sel)
    if epochs is None and bool(cfg.time_budget_s) != bool(cfg.finetune_time_budget_s):  # see the module docstring
        return run.finish(
            sel,
            diff,
            finetune_epochs=cfg.finetune_epochs,
            finetune_time_s=cfg.finetune_time_budget_s,
            history=[],
            lead_in=(cfg.epochs, cfg.time_budget_s),
        )
    n_epochs = cfg.epochs + cfg.finetune_epochs if epochs is None else epochs
    budget_s = cfg.time_budget_s + cfg.finetune_time_budget_s
    return run.finish(sel, diff, finetune_epochs=n_epochs, finetune_time_s=budget_s, history=[])
