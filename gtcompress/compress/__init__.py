"""Compression: GTSP four-axis mask pruning, TEDDY sparsification, materialisation.

Split the way Torch-Pruning splits it (docs/architecture.md, Conventions):

* what is coupled / how to slice — :mod:`.materialise` (heads out of q/k/v/o and the per-head
  biases, FFN channels through torch-pruning's dependency graph, removed sublayers, smaller config);
* what to remove — :mod:`.gates` (hard-concrete L0 gates), :mod:`.tokens` (node scorer, Gumbel
  top-k), :mod:`.sparsity` (magnitude / ℓ0 projection), :mod:`.teddy` (edge scores);
* how much, when — :mod:`.budget` (measured-and-calibrated cost model, Lagrangian) and
  :mod:`.plan_choice` (ranking scores, the discrete selection that meets the budget by construction);
* the loops — :mod:`.prune` (GTSP), :mod:`.teddy` (TEDDY, with :mod:`.attention_graph` for
  full-attention models), :mod:`.distill` (knowledge distillation), :mod:`.report` (the
  compression report). Cost accounting is :mod:`gtcompress.cost`; the numpy-only TEDDY
  pre-processing step is :mod:`gtcompress.preprocess.teddy`.

Names are re-exported flat and loaded on first access, for import cost only. Any
``gtcompress.compress.<module>`` import runs this file first, and eager re-exports would load every
submodule — torch, the models, the training loop with its metrics (scipy.stats), the data sets:
``python -X importtime -c "import gtcompress.compress"`` measures under 1 ms lazily against about
2 s eagerly, and ``import gtcompress.compress.gates`` (torch alone, about 1.2 s) would grow by
0.8–1.3 s. It dodges no import loop: models and :mod:`gtcompress.nn` import nothing of
compression (the token selector a model runs is :mod:`gtcompress.nn.tokens`), and
``tests/test_import_rules.py`` checks that this table, counted as eager imports, closes no cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TokenSelector": "tokens",
    "topk_per_graph": "tokens",
    "HardConcrete": "gates",
    "GateSet": "gates",
    "AXES": "gates",
    "attach_gates": "masks",
    "GateHandle": "masks",
    "CostModel": "budget",
    "Lagrangian": "budget",
    "select_plan": "plan_choice",
    "fit_budget": "plan_choice",
    "BudgetError": "budget",
    "Plan": "materialise",
    "LayerPlan": "materialise",
    "materialise": "materialise",
    "full_plan": "materialise",
    "with_token_keep": "materialise",
    "kd_loss": "distill",
    "attach_teacher": "distill",
    "distillation_loss": "distill",
    "l0_project_": "sparsity",
    "prunable_weights": "sparsity",
    "projected": "sparsity",
    "PruneConfig": "prune",
    "PruneResult": "prune",
    "prune_model": "prune",
    "random_prune": "prune",
    "SparsifyConfig": "teddy",
    "SparsifyResult": "teddy",
    "TeddyEdges": "teddy",
    "sparsify_dataset": "teddy",
    "sparsify_model": "teddy",
    "compression_report": "report",
    "attention_edges": "attention_graph",
    "calibrate_attention_topk": "attention_graph",
    "with_attention_topk": "attention_graph",
    "parse_axes": "gates",
    "gate_scores": "plan_choice",
    "random_scores": "plan_choice",
    "TEACHER_KEY": "distill",
    "plain_copy": "materialise",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"gtcompress.compress.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gtcompress.compress' has no attribute {name!r}")
