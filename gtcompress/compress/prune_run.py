"""One pruning run's state, :class:`PruneRun`: what GTSP and the random baseline share.

Both methods take the same steps around their one difference, how units are ranked:

* :meth:`PruneRun.start` — resolve the config for the model (``auto`` axes and allocation, plus
  ``layers`` where the target needs it), measure the dense model on the reference batch, attach the
  teacher, make the student (the copy that is ranked and sliced) and calibrate its cost model, and
  refuse a budget the axes cannot reach;
* :meth:`PruneRun.select` — the plan that meets the budget for given unit scores, materialised;
* :meth:`PruneRun.finish` — fine-tune the small model with distillation, measure it, and write
  the compression report.

The budget (``target``, the FLOP fraction kept) is read from the config once, in ``start``; every
later step takes it from the run. The state lives in one object so that the steps pass the run,
not an eight-tuple one way and nineteen arguments the other.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from gtcompress.compress.budget import BudgetError, CostModel
from gtcompress.compress.distill import attach_teacher, distillation_loss, has_teacher
from gtcompress.compress.gates import GateSet
from gtcompress.compress.masks import attach_gates
from gtcompress.compress.materialise import LayerPlan, Plan, materialise, plain_copy, with_token_keep
from gtcompress.compress.plan_choice import Scores, fit_budget, random_scores, select_plan
from gtcompress.compress.prune_config import PruneConfig, resolve_auto
from gtcompress.compress.report import compression_report, finetune_record, layer_table
from gtcompress.compress.sparsity import cubic_sparsity, l0_project_, nonzero, projected, prunable_weights
from gtcompress.cost import Cost, measure_cost, reference_batch
from gtcompress.data.base import GraphDataset
from gtcompress.errors import ConfigError, UnsupportedModelError
from gtcompress.graph import GraphBatch
from gtcompress.models.model import GraphModel
from gtcompress.train.loop import TrainConfig, check_on_cpu, evaluate, seed_everything, train

__all__ = [
    "PruneResult",
    "PruneRun",
    "Selection",
    "check_prunable",
    "evaluate_splits",
    "finetune_pruned",
    "student_copy",
]

#: Offset of the student's token-scorer seed from ``cfg.seed``: random pruning gets a fresh random
#: scorer rather than GTSP's initial one.
STUDENT_SEED = {"gtsp": 0, "random": 12345}


@dataclass
class PruneResult:
    model: GraphModel
    plan: Plan
    report: dict[str, Any]
    gates: GateSet | None = None
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Selection:
    """The units kept (``plan``), the plain smaller model they make, and how many measured rounds
    :func:`~gtcompress.compress.plan_choice.fit_budget` took to land on the target (0: no FLOP target)."""

    plan: Plan
    model: GraphModel
    iterations: int = 0


@dataclass
class PruneRun:
    """Everything one GTSP or random-pruning run carries from :meth:`start` to :meth:`finish`."""

    method: str  # "gtsp" or "random": names the report and the fine-tuning progress bar
    model: GraphModel  # the dense model, never modified
    dataset: GraphDataset
    data_kd: GraphDataset  # ``dataset`` with the teacher's logits, when distilling
    cfg: PruneConfig  # resolved for ``model``: concrete axes and allocation
    target: float | None  # FLOP fraction to keep; None: per-axis ratios (``cfg.keep``) or weights only
    ref: GraphBatch  # the reference batch every cost is measured on
    cost_before: Cost
    metrics_before: dict[str, float]
    student: GraphModel  # the copy that is ranked (and, for GTSP, trained) and then sliced
    cost_model: CostModel  # calibrated on ``student`` and ``ref``
    show_progress: bool = True
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step, reported as ``timings_s``
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(
        cls,
        method: str,
        model: GraphModel,
        dataset: GraphDataset,
        cfg: PruneConfig,
        *,
        dense_metrics: dict[str, float] | None = None,
        show_progress: bool = True,
    ) -> PruneRun:
        """Set up a run of ``method`` on ``model`` (see the module docstring); raises
        :class:`~gtcompress.compress.budget.BudgetError` for a budget out of the axes' reach before
        any training. ``dense_metrics`` (the dense model's ``{"val", "test"}``) saves evaluating it
        again when several runs start from one model."""
        started = time.perf_counter()
        auto, cfg = "auto" in cfg.axes, resolve_auto(cfg, model)
        target = cfg.target_flops  # the budget's one read: every later step takes it from the run
        seed_everything(cfg.seed)
        check_on_cpu(model, dataset.splits.get("train", []), f"{method} pruning")
        check_prunable(model, cfg.axes)
        if cfg.cost_split not in dataset.splits or not dataset[cfg.cost_split]:
            raise ConfigError(f"cost split {cfg.cost_split!r} is missing or empty in this dataset")
        ref = reference_batch(dataset[cfg.cost_split], cfg.cost_graphs)
        dense = plain_copy(model).eval()
        cost_before = measure_cost(dense, ref)
        metrics_before = dict(dense_metrics) if dense_metrics is not None else evaluate_splits(dense, dataset)
        data_kd = attach_teacher(dataset, dense) if cfg.kd_weight > 0 and not has_teacher(dataset) else dataset
        student = student_copy(model, cfg, method)
        t0 = time.perf_counter()
        cm = CostModel.calibrate(student, ref, dense_flops=cost_before.flops)
        timings = {"calibrate": time.perf_counter() - t0}
        cfg = with_depth_budget(cfg, cm, auto, target)
        check_feasible(cm, cfg, target)
        return cls(
            method=method,
            model=model,
            dataset=dataset,
            data_kd=data_kd,
            cfg=cfg,
            target=target,
            ref=ref,
            cost_before=cost_before,
            metrics_before=metrics_before,
            student=student,
            cost_model=cm,
            show_progress=show_progress,
            timings=timings,
            started=started,
        )

    @property
    def axes(self) -> tuple[str, ...]:
        """The structured axes (heads, layers, ffn) units are ranked and removed on."""
        return self.cfg.structured_axes

    def select(self, scores: Scores) -> Selection:
        """The plan for ``scores`` that meets the budget and the model it materialises: with a FLOP
        target, selected, sliced and *measured* until within tolerance; else by the per-axis ratios."""
        if self.target is not None and self.axes:
            cfg = self.cfg
            fit = fit_budget(
                self.student,
                scores,
                self.cost_model,
                self.ref,
                self.axes,
                self.target,
                cfg.tolerance,
                allocation=cfg.allocation,
            )
            return Selection(fit.plan, fit.model, fit.iterations)
        plan = select_plan(self.cost_model, scores, self.axes, axis_keep=self.cfg.keep or None)
        return Selection(plan, materialise(self.student, plan))

    def exactness(self, gates: GateSet, sel: Selection) -> float:
        """Largest difference between the gated student (eval: gates exactly 0/1, deterministic
        top-k) and the materialised model on the reference batch: slicing must not change the function."""
        with attach_gates(self.student, gates, lambda: sel.plan):
            return _max_diff(self.student, sel.model, self.ref)

    def finish(
        self,
        sel: Selection,
        exact_diff: float,
        *,
        finetune_epochs: int,
        finetune_time_s: float,
        history: list[dict[str, float]],
        lead_in: tuple[int, float] | None = None,
    ) -> PruneResult:
        """Fine-tune ``sel.model`` (distillation; ``weights`` axis: gradual magnitude pruning),
        measure it and report. ``history`` is the mask training's, if any. ``lead_in`` (epochs,
        seconds) is a first distillation phase without the weights axis, in place of GTSP's mask
        training (the random baseline when only one phase is timed); reported as ``finetune.lead_in``."""
        cfg, small = self.cfg, sel.model
        metrics_materialised = evaluate_splits(small, self.dataset, splits=("val",))
        t0 = time.perf_counter()
        first = None
        if lead_in is not None and lead_in[0] > 0:
            first = finetune_pruned(
                small, self.data_kd, cfg, *lead_in, self.show_progress, f"{self.method} lead-in", weight_sparsity=0.0
            )
        ft = finetune_pruned(
            small, self.data_kd, cfg, finetune_epochs, finetune_time_s, self.show_progress, f"{self.method} fine-tune"
        )
        if first is not None:
            ft["lead_in"] = first
        self.timings["finetune"] = time.perf_counter() - t0
        small.eval()
        cost_after = measure_cost(small, self.ref)
        removed = sel.plan.summary(self.student)
        # over the weights the axis prunes (matrices), as --weight-sparsity is meant: the cost's sparsity
        # counts biases and norms too and read 0.45 for 0.5 asked
        weights = [w for _, w in prunable_weights(small)]
        removed["weights_sparsity"] = 1.0 - nonzero(weights) / max(1, sum(w.numel() for w in weights))
        measured = cost_after.flops / max(self.cost_before.flops, 1)
        budget = {
            "target_flops": self.target,
            "measured_flops_ratio": measured,
            "tolerance": cfg.tolerance,
            "within_tolerance": None if self.target is None else abs(measured / self.target - 1.0) <= cfg.tolerance,
            "selection_iterations": sel.iterations,
            "cost_model": self.cost_model.to_dict(),
        }
        report = compression_report(
            method=self.method,
            settings=cfg.to_dict(),
            seed=cfg.seed,
            metric=self.dataset.info.metric,
            metrics_before=self.metrics_before,
            metrics_after=evaluate_splits(small, self.dataset),
            cost_before=self.cost_before,
            cost_after=cost_after,
            removed=removed,
            model_before=layer_table(self.model.config),
            model_after=layer_table(small.config),
            timings=self.timings,
            extra={
                "budget": budget,
                "plan": sel.plan.to_dict(),
                "metric_after_materialise": metrics_materialised,
                "materialise_max_abs_diff": exact_diff,
                "finetune": ft,
                "mask_training": history,
                "reference_batch": {"split": cfg.cost_split, "graphs": self.ref.num_graphs},
            },
        )
        report["timings_s"]["total"] = time.perf_counter() - self.started
        return PruneResult(small, sel.plan, report, None, history)


# ------------------------------------------------------------------------------------------ helpers
def evaluate_splits(
    model: nn.Module, dataset: GraphDataset, batch_size: int = 128, splits: tuple[str, ...] = ("val", "test")
) -> dict[str, float]:
    """The dataset's metric on each of ``splits`` that exists and is not empty."""
    info = dataset.info
    out = {}
    for split in splits:
        if split in dataset.splits and dataset[split]:
            out[split] = evaluate(model, dataset[split], info, batch_size)[info.metric]
    return out


def check_prunable(model: GraphModel, axes: tuple[str, ...]) -> None:
    """Clear errors for models the axes cannot apply to."""
    has_attn = any(layer.attn is not None for layer in model.layers)
    has_ffn = any(layer.ffn is not None for layer in model.layers)
    if ("heads" in axes or "tokens" in axes) and not has_attn:
        raise UnsupportedModelError(
            "the model has no attention sublayer left (every layer has heads=0): axes 'heads' and "
            "'tokens' do not apply; use --axes ffn,layers,weights"
        )
    if "ffn" in axes and not has_ffn:
        raise UnsupportedModelError("the model has no FFN sublayer (every layer has ffn_dim=0): drop axis 'ffn'")
    if "layers" in axes and not (has_attn or has_ffn):
        raise UnsupportedModelError("the model has no attention or FFN sublayer to remove")


def finetune_pruned(
    small: GraphModel,
    data_kd: GraphDataset,
    cfg: PruneConfig,
    epochs: int,
    time_budget_s: float,
    show_progress: bool,
    description: str,
    weight_sparsity: float | None = None,
) -> dict[str, Any]:
    """KD fine-tuning of the materialised model (+ gradual magnitude pruning for ``weights``, to
    ``weight_sparsity`` if given, else ``cfg``'s: 0 trains without it).

    With no fine-tuning epochs the ``weights`` axis is still applied, in one shot (the magnitude
    projection that ends the gradual schedule, as ``gtc sparsify --epochs 0`` does): returning
    early left every weight in place while the report and ``config.json`` recorded the requested
    ``weight_sparsity``."""
    info = data_kd.info
    sparsity = cfg.weight_sparsity if weight_sparsity is None else weight_sparsity
    if epochs <= 0:
        if sparsity > 0:
            params = [p for _, p in prunable_weights(small)]
            with torch.no_grad():
                l0_project_(params, round(sum(p.numel() for p in params) * (1.0 - sparsity)))
        return {"epochs_run": 0}
    tcfg = TrainConfig(
        epochs=epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_epochs=min(1, epochs),
        seed=cfg.seed + 1,
        time_budget_s=time_budget_s,
    )
    kd = distillation_loss(info, cfg.kd_weight, cfg.kd_temperature)
    if sparsity > 0:
        params = [p for _, p in prunable_weights(small)]
        total = sum(p.numel() for p in params)
        per_epoch = max(1, math.ceil(len(data_kd["train"]) / cfg.batch_size))
        final_k = round(total * (1.0 - sparsity))
        # The schedule spans the steps the run plans: `epochs` at first, then, under a time budget, the
        # epochs that fit (as the learning rate's does). Sized by `epochs` alone, a run cut short by the
        # budget stopped at e.g. 0.84 of 0.9 asked and the final projection below jumped to 0.9 with no
        # training after it. k only ever falls, should a later estimate plan more epochs again.
        sched = {"steps": epochs * per_epoch, "k": total}

        def k_at(step: int) -> int:
            k = round(total * (1.0 - cubic_sparsity(step, sched["steps"], sparsity, 0.0, 0.5)))
            sched["k"] = min(sched["k"], k)
            return sched["k"]

        def replan(planned_epochs: int) -> None:
            sched["steps"] = planned_epochs * per_epoch

        # The best epoch is chosen among those that end at the final sparsity: an earlier one, denser and
        # so better on validation, won, and the one-shot projection below then cut it to the sparsity
        # with no training after it (worse than the last epoch, which had trained at that sparsity). A
        # run stopped before the schedule ends (a budget shorter than the first epoch's estimate) keeps
        # its last epoch, and only it is cut in one shot.
        with projected(params, k_at):
            res = train(
                small,
                data_kd,
                tcfg,
                extra_loss=kd,
                show_progress=show_progress,
                description=description,
                on_plan=replan,
                selectable=lambda _epoch: sched["k"] <= final_k,
            )
        l0_project_(params, final_k)
    else:
        # The materialised model is already a valid result: fine-tuning that does not beat it keeps it
        # (not in the branch above, whose start is denser than the sparsity asked for).
        res = train(
            small, data_kd, tcfg, extra_loss=kd, show_progress=show_progress, description=description, keep_start=True
        )
    return finetune_record(res, info.metric)


@torch.no_grad()
def _max_diff(a: nn.Module, b: nn.Module, batch: GraphBatch) -> float:
    a.eval()
    b.eval()
    return float((a(batch) - b(batch)).abs().max())


def student_copy(model: GraphModel, cfg: PruneConfig, method: str) -> GraphModel:
    """The copy of ``model`` that a ``method`` ("gtsp" or "random") run ranks and slices: the dense
    weights plus, with the tokens axis, a node scorer per attention layer seeded by ``cfg.seed +
    STUDENT_SEED[method]``. A plan with ``token_keep < 1`` materialises only from such a model
    (the plain dense one has no scorer), so whatever starts a run from the dense weights starts here.

    With the tokens axis the ratio is set whatever ``model`` keeps, 1.0 included: re-pruning a
    token-pruned checkpoint with ``--token-keep 1.0`` (``--keep tokens=1``) kept its old ratio and
    scorers while the report's settings said 1.0. Without the axis the model's own ratios stay."""
    if "tokens" in cfg.axes:
        return with_token_keep(model, cfg.token_keep, seed=cfg.seed + STUDENT_SEED[method])
    return plain_copy(model)


def with_depth_budget(cfg: PruneConfig, cm: CostModel, auto: bool, target: float | None) -> PruneConfig:
    """Auto axes without ``layers`` (GT) gain it when the FLOP target is below what they reach:
    depth is kept while the budget allows, and an aggressive target still works."""
    axes = cfg.structured_axes
    if not auto or target is None or not axes or "layers" in cfg.axes or cm.min_cost(axes) <= target * cm.dense:
        return cfg
    return replace(cfg, axes=(*cfg.axes, "layers"))


def check_feasible(cm: CostModel, cfg: PruneConfig, target: float | None) -> None:
    """Refuse, before any training, a FLOP target the axes cannot reach (below their least cost, or
    between the costs their coarse units allow), or that token pruning alone already undershoots,
    or per-axis ``keep`` ratios they cannot meet."""
    if target is None:
        if cfg.keep and cfg.structured_axes:  # the selection the run makes, on any scores: raises as it would
            select_plan(cm, random_scores(cm, 0), cfg.structured_axes, axis_keep=cfg.keep)
        return
    axes = cfg.structured_axes
    if not axes and "tokens" not in cfg.axes:  # weights only: tokens were never asked for, so not their message
        raise BudgetError(
            f"--target-flops {target:g} cannot be met with --axes {','.join(cfg.axes)}: "
            "the weights axis does not reduce FLOPs (it zeroes weights; every matmul still runs): "
            "--target-flops needs heads, ffn, layers or tokens in --axes"
        )
    full = cm.cost(full_plan_from_cost(cm)) / cm.dense
    if not axes:
        if abs(full / target - 1.0) > cfg.tolerance:
            raise BudgetError(
                f"with only the tokens axis the FLOPs are set by --token-keep {cfg.token_keep}: "
                f"{full:.3f} of the dense model, not the target {target:.3f}; add heads/ffn/layers axes"
            )
        return
    lo = cm.min_cost(axes) / cm.dense
    if lo > target * (1.0 + 1e-9):  # as select_plan: no plan above the target is chosen, tolerance or not
        raise BudgetError(
            f"target {target:.3f} of the FLOPs is impossible with axes {','.join(cfg.axes)}: the least reachable is "
            f"{lo:.3f} (what no axis removes: encoders, structural encodings such as graphormer's shortest "
            f"paths, local MPNN, prediction head"
            f"{', every sublayer keeps one unit without the layers axis' if 'layers' not in axes else ''})"
        )
    # Every plan costs at most the full one: below the window, no unit axis can help (the window's message
    # below would name the full cost as the nearest reachable and suggest adding finer axes).
    if full < target * (1.0 - cfg.tolerance):
        raise BudgetError(
            f"token pruning alone (keep {cfg.token_keep}) already gives {full:.3f} of the FLOPs, below the "
            f"target {target:.3f}; raise --token-keep or lower --target-flops"
        )
    # Only after mask training did fit_budget find that no plan of these (coarse) units lands within the
    # tolerance (GPS, --axes layers, --target-flops 0.4: 0.369 or 0.444, minutes of training later).
    # The costs a plan can reach are known now. A plan is chosen at or below the target (select_plan),
    # measured and modelled costs agree (calibrated), and a hair of slack absorbs rounding.
    window = (target * (1.0 - cfg.tolerance) - 1e-6, target + 1e-6)
    nearest = cm.nearest_reachable(axes, window[0] * cm.dense, window[1] * cm.dense)
    if nearest is not None:
        near = " and ".join(f"{c / cm.dense:.3f}" for c in nearest if c is not None)
        finer = " or ".join(f"'{a}'" for a in ("heads", "ffn", "tokens") if a not in cfg.axes)
        raise BudgetError(
            f"target {target:.3f} of the FLOPs cannot be met within -{cfg.tolerance:.0%} with axes "
            f"{','.join(cfg.axes)} (a plan is chosen at or below the target): the units are too coarse, the "
            f"nearest reachable FLOP ratios are {near}; {f'add {finer} or ' if finer else ''}choose a target "
            f"from one of them to {cfg.tolerance:.0%} above it"
        )


def full_plan_from_cost(cm: CostModel) -> Plan:
    """The plan that keeps every unit, with the token ratios the cost model was calibrated with."""
    tk = cm.token_keep or [1.0] * len(cm.heads)
    return Plan(
        [
            LayerPlan(list(range(h)), list(range(f)), tk[i])
            for i, (h, f) in enumerate(zip(cm.heads, cm.widths, strict=True))
        ]
    )
