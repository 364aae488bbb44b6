r"""GTSP (Liu et al. 2023): four-axis differentiable-mask pruning under one budget, materialised.

:func:`prune_model` runs the whole recipe on a trained model; each step is one call below:

1. **Set up** (:meth:`.prune_run.PruneRun.start`) — measure the dense model on a fixed reference
   batch (:mod:`gtcompress.cost`) and evaluate it; if the tokens axis is on, every attention layer
   gets a node scorer that keeps a ratio ``r`` of each graph's nodes (:mod:`.tokens`; straight-through
   Gumbel top-k while training); calibrate the cost model on the same batch
   (:class:`.budget.CostModel`) and refuse a target the axes cannot reach.
2. **Mask training** (:func:`.gate_training.mask_training`) — hard-concrete gates on heads,
   attention/FFN sublayers and FFN hidden units (:mod:`.gates`, attached by hooks, :mod:`.masks`),
   started in order of first-order (Taylor) importance, are trained jointly with the weights on
   ``task loss + λ_kd · KL(student ‖ teacher) + λ1 (c − t) + λ2 (c − t)²`` where ``c`` is the
   expected FLOP ratio and the target ``t`` warms up from 1; the multipliers ascend. The progress
   bar shows loss, the validation metric of the discrete (budget-meeting) model and ``c``.
3. **Discrete choice + materialise** (:meth:`~.prune_run.PruneRun.select`) — the plan that meets
   the target, *measured* (:func:`.plan_choice.fit_budget`), sliced into a plain smaller model
   (:func:`.materialise.materialise`); its eval output equals the gated model's (checked, recorded
   as ``max_abs_diff``).
4. **Fine-tune and report** (:meth:`~.prune_run.PruneRun.finish`) — the small model with
   distillation from the dense one (:func:`gtcompress.train.loop.train` with ``extra_loss``); with
   the ``weights`` axis, gradual magnitude pruning to the requested unstructured sparsity (reported
   as sparsity, not FLOPs).

:func:`random_prune` (:mod:`.random_baseline`) is the baseline: same budget, same measured
selection, random ranking, the same total training (epochs, or seconds under time budgets). The settings are
:class:`PruneConfig` (:mod:`.prune_config`); this module re-exports the public names of all four.
"""

from __future__ import annotations

import time

from gtcompress.compress.gate_training import gate_importance, mask_training, train_gates
from gtcompress.compress.plan_choice import gate_scores
from gtcompress.compress.prune_config import PruneConfig, default_allocation, default_axes, resolve_auto
from gtcompress.compress.prune_run import PruneResult, PruneRun, check_prunable
from gtcompress.compress.random_baseline import random_prune
from gtcompress.data.base import GraphDataset
from gtcompress.models.model import GraphModel

__all__ = [
    "PruneConfig",
    "PruneResult",
    "PruneRun",
    "check_prunable",
    "default_allocation",
    "default_axes",
    "gate_importance",
    "mask_training",
    "prune_model",
    "random_prune",
    "resolve_auto",
    "train_gates",
]


def prune_model(
    model: GraphModel,
    dataset: GraphDataset,
    cfg: PruneConfig,
    show_progress: bool = True,
    dense_metrics: dict[str, float] | None = None,
) -> PruneResult:
    """GTSP on ``model`` (not modified) — see the module docstring for the steps.

    ``dataset`` may already carry the teacher's logits (:func:`~gtcompress.compress.distill.attach_teacher`
    with ``model``) and ``dense_metrics`` the dense model's ``{"val", "test"}`` metric, to save
    recomputing them when several runs start from the same model."""
    run = PruneRun.start("gtsp", model, dataset, cfg, dense_metrics=dense_metrics, show_progress=show_progress)
    gates, history = mask_training(run)
    t0 = time.perf_counter()
    sel = run.select(gate_scores(gates))
    run.timings["select_materialise"] = time.perf_counter() - t0
    diff = run.exactness(gates, sel)  # the gated model vs the materialised one
    res = run.finish(
        sel,
        diff,
        finetune_epochs=run.cfg.finetune_epochs,
        finetune_time_s=run.cfg.finetune_time_budget_s,
        history=history,
    )
    res.gates = gates
    return res
