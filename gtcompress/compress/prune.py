r"""GTSP (Liu et al. 2023): four-axis differentiable-mask pruning under one budget, materialised.

:func:`prune_model` runs the whole recipe on a trained model:

1. **Measure** the dense model on a fixed reference batch (:mod:`gtcompress.cost`) and evaluate it.
2. **Tokens** — if the axis is on, every attention layer gets a node scorer and keeps a ratio
   ``r`` of each graph's nodes (:mod:`.tokens`; straight-through Gumbel top-k while training).
3. **Calibrate** the cost model on the same batch (:class:`.budget.CostModel`).
4. **Mask training** — gates start ordered by first-order (Taylor) importance
   (:func:`gate_importance`); then hard-concrete gates on heads, attention/FFN sublayers and FFN hidden units
   (:mod:`.gates`, attached by hooks, :mod:`.masks`) are trained jointly with the weights on
   ``task loss + λ_kd · KL(student ‖ teacher) + λ1 (c − t) + λ2 (c − t)²`` where ``c`` is the
   expected FLOP ratio and the target ``t`` warms up from 1; the multipliers ascend. The progress
   bar shows loss, the validation metric of the discrete (budget-meeting) model and ``c``.
5. **Discrete choice + materialise** — the plan that meets the target, *measured*
   (:func:`.budget.fit_budget`), sliced into a plain smaller model (:mod:`.materialise`); its eval
   output equals the gated model's (checked, recorded as ``max_abs_diff``).
6. **Fine-tune** the small model with distillation from the dense one
   (:func:`gtcompress.train.loop.train` with ``extra_loss``); with the ``weights`` axis, gradual
   magnitude pruning to the requested unstructured sparsity (reported as sparsity, not FLOPs).

:func:`random_prune` is the baseline: same budget, same measured selection, random ranking, the
same total number of training epochs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from gtcompress.compress.budget import (
    ALLOCATIONS,
    BudgetError,
    CostModel,
    Lagrangian,
    fit_budget,
    gate_scores,
    random_scores,
    select_plan,
)
from gtcompress.compress.distill import attach_teacher, distillation_loss, has_teacher
from gtcompress.compress.gates import GateSet, parse_axes
from gtcompress.compress.masks import attach_gates
from gtcompress.compress.materialise import LayerPlan, Plan, materialise, plain_copy, with_token_keep
from gtcompress.compress.report import compression_report, layer_table
from gtcompress.compress.sparsity import cubic_sparsity, l0_project_, projected, prunable_weights
from gtcompress.cost import Cost, measure_cost, reference_batch
from gtcompress.data.base import GraphDataset, iterate_batches
from gtcompress.errors import ConfigError, UnsupportedModelError
from gtcompress.graph import GraphBatch, random_sign_flip
from gtcompress.models.model import GraphModel
from gtcompress.train.loop import TrainConfig, epoch_progress, epochs_in_budget, evaluate, seed_everything, train
from gtcompress.train.metrics import higher_is_better, task_loss

__all__ = [
    "PruneConfig",
    "PruneResult",
    "check_prunable",
    "default_axes",
    "mask_training",
    "prune_model",
    "random_prune",
    "train_gates",
]


def default_allocation(arch: str) -> str:
    """How to split a FLOP target between heads and FFN units (``select_plan``'s ``allocation``).

    GT: ``uniform`` — its attention is its only message passing and its FFN its only per-node
    capacity; ranked together by their gates (``global``), the gates kept the heads and stripped the
    FFNs, and lost to uniform (NCI1, 2-minute runs: −2.2/+2.4/−3.7 vs +1.0/+0.7/−0.7 points at
    0.6/0.45/0.3 of the FLOPs; CLUSTER at 0.45: 56.7 vs 58.8). GPS and Graphormer: ``global`` — a
    local path carries the messages, so dropping global attention wholesale is often right (GPS on
    NCI1: −0.2/+0.2/±0.0 global vs +1.9/−1.7/−4.1 uniform)."""
    return "uniform" if arch == "gt" else "global"


def _resolved(cfg: PruneConfig, model: GraphModel) -> PruneConfig:
    """``cfg`` with ``auto`` axes and allocation made concrete for ``model`` (validated again)."""
    changes: dict[str, Any] = {}
    if cfg.allocation == "auto":
        changes["allocation"] = default_allocation(model.config.arch)
    if "auto" in cfg.axes:
        chosen = parse_axes(default_axes(model.config.arch, model.config.task_level))
        # an axis the user gave a ratio for is wanted, whatever the default says
        wanted = (*chosen, *cfg.keep, *(a for a in cfg.axes if a != "auto"))
        changes["axes"] = tuple(dict.fromkeys(wanted))
    return replace(cfg, **changes) if changes else cfg


def _with_depth_budget(cfg: PruneConfig, cm: CostModel, auto: bool) -> PruneConfig:
    """Auto axes without ``layers`` (GT) gain it when the FLOP target is below what they reach:
    depth is kept while the budget allows, and an aggressive target still works."""
    t, axes = cfg.target_flops, cfg.structured_axes
    if not auto or t is None or not axes or "layers" in cfg.axes or cm.min_cost(axes) <= t * cm.dense:
        return cfg
    return replace(cfg, axes=(*cfg.axes, "layers"))


def default_axes(arch: str, task_level: str = "graph") -> str:
    """Axes that suit the model. Tokens only for GPS and Graphormer on graph-level tasks:

    * GT's attention *is* its message passing, so dropping tokens from it cuts nodes off their
      neighbours (CLUSTER, 3+3 epochs at 40 % FLOPs: 33 % accuracy with tokens vs 49 % without).
      For the same reason each attention sublayer is one hop: GT gets heads,ffn, so every sublayer
      keeps a unit, and the layers axis only when the target lies below what heads,ffn reach
      (:func:`_with_depth_budget`). CLUSTER at 30 % of the FLOPs, 3 seeds: 69.1 % with heads,ffn vs
      65.3 % with heads,layers,ffn (1–2 attention sublayers dropped), at the same latency.
    * GPS and Graphormer keep a local path for dropped tokens, which suffices when one prediction
      is pooled over the graph (NCI1: within 0.3 points at 45 % and 30 % of the FLOPs), but not when
      every node needs its own from full context (GPS on CLUSTER, 2-minute runs, at 60 % / 45 % of
      the FLOPs: −5.7 / −6.2 points with tokens kept at 80 %, +0.4 / −1.7 without)."""
    if arch == "gt":
        return "heads,ffn"
    if task_level == "node":
        return "heads,layers,ffn"
    return "tokens,heads,layers,ffn"


@dataclass
class PruneConfig:
    target_flops: float | None = 0.5  # keep this fraction of the measured FLOPs
    axes: str | tuple[str, ...] = "auto"  # auto: default_axes(arch, task_level) of the model pruned
    keep: dict[str, float] = field(default_factory=dict)  # per-axis ratios: heads, ffn, layers, tokens
    token_keep: float = 0.7  # tokens axis: nodes kept per graph in every attention layer
    weight_sparsity: float = 0.0  # weights axis: fraction of weights zeroed (unstructured)
    epochs: int = 10  # mask training
    finetune_epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    gate_lr: float = 0.05
    weight_decay: float = 1e-5
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    target_warmup: float = 0.5  # fraction of mask-training steps over which the target goes 1 → t
    gate_init: float = 0.95  # initial open probability of every gate
    importance_batches: int = 8  # order the gates' start by first-order (Taylor) importance; 0 = off
    allocation: str = "auto"  # how the FLOP target is split between axes: uniform, global, auto (by arch)
    tolerance: float = 0.03  # relative: the measured FLOP ratio lands within ±3 % of the target
    cost_graphs: int = 32  # reference batch: the first graphs of `cost_split`
    cost_split: str = "val"
    time_budget_s: float = 0.0  # mask training wall time (0 = epochs only)
    finetune_time_budget_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.axes = parse_axes(self.axes, allow_auto=True)
        self.keep = {k.lower(): float(v) for k, v in (self.keep or {}).items()}
        bad = [k for k in self.keep if k not in ("heads", "ffn", "layers", "tokens")]
        if bad:
            raise ConfigError(f"--keep: unknown axis {', '.join(bad)}; expected heads, ffn, layers or tokens")
        for k, v in self.keep.items():
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"--keep {k}={v}: ratios must lie in (0, 1]")
            if k not in self.axes and "auto" not in self.axes:  # auto adds the axes given ratios
                raise ConfigError(f"--keep {k}=…: axis {k!r} is not in --axes {','.join(self.axes)}")
        if self.allocation not in ("auto", *ALLOCATIONS):
            raise ConfigError(f"allocation {self.allocation!r}: expected auto, {' or '.join(ALLOCATIONS)}")
        if "tokens" in self.keep:
            self.token_keep = self.keep["tokens"]
        structural = [k for k in self.keep if k != "tokens"]
        if self.target_flops is not None and structural:
            raise ConfigError("give either --target-flops or per-axis --keep ratios (heads/ffn/layers), not both")
        if self.target_flops is None and not self.keep and "weights" not in self.axes:
            raise ConfigError("no budget: give --target-flops or per-axis --keep ratios")
        if self.target_flops is not None and not 0.0 < self.target_flops < 1.0:
            raise ConfigError(f"--target-flops must lie in (0, 1) (fraction of FLOPs kept), got {self.target_flops}")
        if not 0.0 < self.token_keep <= 1.0:
            raise ConfigError(f"token keep ratio must lie in (0, 1], got {self.token_keep}")
        if not 0.0 <= self.weight_sparsity < 1.0:
            raise ConfigError(f"weight sparsity must lie in [0, 1), got {self.weight_sparsity}")
        if self.weight_sparsity > 0 and "weights" not in self.axes:
            self.axes = (*self.axes, "weights")
        if "weights" in self.axes and self.weight_sparsity == 0.0:
            self.weight_sparsity = 0.5

    @property
    def structured_axes(self) -> tuple[str, ...]:
        return tuple(a for a in self.axes if a in ("heads", "layers", "ffn"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["axes"] = list(self.axes)
        return d


@dataclass
class PruneResult:
    model: GraphModel
    plan: Plan
    report: dict[str, Any]
    gates: GateSet | None = None
    history: list[dict[str, float]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ helpers
def _metrics(
    model: nn.Module, dataset: GraphDataset, batch_size: int = 128, splits: tuple[str, ...] = ("val", "test")
) -> dict[str, float]:
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


def _expected_fractions(gates: GateSet, cm: CostModel) -> dict[str, torch.Tensor]:
    """Expected kept fraction of heads, FFN units and sublayers (per-axis budgets)."""
    heads, units, subs = [], [], []
    for i in range(gates.num_layers):
        pa = gates.prob_open("attn", i)
        pf = gates.prob_open("ffn_layer", i)
        if cm.heads[i]:
            ph = gates.prob_open("heads", i)
            ph = ph if ph is not None else torch.ones(cm.heads[i])
            heads.append((ph * (pa if pa is not None else 1.0)).sum())
            subs.append(pa.reshape(()) if pa is not None else torch.ones(()))
        if cm.widths[i]:
            pu = gates.prob_open("ffn", i)
            pu = pu if pu is not None else torch.ones(cm.widths[i])
            units.append((pu * (pf if pf is not None else 1.0)).sum())
            subs.append(pf.reshape(()) if pf is not None else torch.ones(()))
    out = {}
    if heads:
        out["heads"] = torch.stack(heads).sum() / max(sum(cm.heads), 1)
    if units:
        out["ffn"] = torch.stack(units).sum() / max(sum(cm.widths), 1)
    if subs:
        out["layers"] = torch.stack(subs).mean()
    return out


# ------------------------------------------------------------------------------------- mask training
def gate_importance(
    student: GraphModel, gates: GateSet, dataset: GraphDataset, cfg: PruneConfig, batches: int
) -> dict[tuple[str, int], torch.Tensor]:
    """First-order (Taylor) importance of every gated unit: the mean squared gradient of the loss
    with respect to its gate held at 1, over ``batches`` training batches (eval mode)."""
    info = dataset.info
    probe = {
        (kind, int(key)): torch.ones(gate.n, requires_grad=True)
        for kind, group in gates.groups().items()
        for key, gate in group.items()
    }
    acc = {k: torch.zeros_like(v) for k, v in probe.items()}
    if not probe:
        return acc
    kd = distillation_loss(info, cfg.kd_weight, cfg.kd_temperature)
    was = student.training
    gen = torch.Generator().manual_seed(cfg.seed)
    gates.probe = probe
    try:
        with attach_gates(student, gates, None, gumbel_tokens=False):
            student.eval()
            for i, batch in enumerate(iterate_batches(dataset["train"], cfg.batch_size, shuffle=True, generator=gen)):
                if i >= batches:
                    break
                logits = student(batch)
                assert batch.y is not None
                loss = task_loss(logits, batch.y, info) + kd(student, batch, logits)
                grads = torch.autograd.grad(loss, list(probe.values()), allow_unused=True)
                for k, g in zip(probe, grads, strict=True):
                    if g is not None:
                        acc[k] += g.detach() ** 2
    finally:
        gates.probe = None
        student.train(was)
    return acc


def train_gates(
    student: GraphModel,
    gates: GateSet,
    dataset: GraphDataset,
    cm: CostModel,
    cfg: PruneConfig,
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Jointly train weights and gates under the Lagrangian budget term (see module docstring).

    On return ``student`` and ``gates`` hold the state of the best validation epoch, where the
    validation model is the discrete plan that meets the budget."""
    info = dataset.info
    gen = seed_everything(cfg.seed)
    lagr = nn.ModuleDict({"flops": Lagrangian()})
    for axis in cfg.keep:
        if axis != "tokens":
            lagr[axis] = Lagrangian()
    groups: list[dict[str, Any]] = [
        {"params": list(student.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}
    ]
    if list(gates.parameters()):
        groups.append({"params": list(gates.parameters()), "lr": cfg.gate_lr, "weight_decay": 0.0})
        groups.append({"params": list(lagr.parameters()), "lr": cfg.gate_lr, "weight_decay": 0.0, "maximize": True})
    opt = torch.optim.AdamW(groups)
    train_graphs, val_graphs = dataset["train"], dataset["val"]
    steps_per_epoch = max(1, math.ceil(len(train_graphs) / cfg.batch_size))
    planned = {"epochs": cfg.epochs}
    warm = max(1, steps_per_epoch // 2)

    def lr_model(step: int) -> float:
        total = planned["epochs"] * steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [lr_model] + [lambda s: 1.0] * (len(groups) - 1))
    target = cfg.target_flops

    def current_target(step: int) -> float:
        assert target is not None
        total = planned["epochs"] * steps_per_epoch * cfg.target_warmup
        return 1.0 - (1.0 - target) * min(1.0, step / max(total, 1.0))

    def eval_plan() -> Plan:
        return select_plan(
            cm, gate_scores(gates), cfg.structured_axes, target, cfg.keep or None, allocation=cfg.allocation
        )

    handle = attach_gates(student, gates, eval_plan)
    kd = distillation_loss(info, cfg.kd_weight, cfg.kd_temperature)
    better = higher_is_better(info.metric)
    best_val, best_epoch = (-math.inf if better else math.inf), -1
    best_state = (copy.deepcopy(student.state_dict()), copy.deepcopy(gates.state_dict()))
    history: list[dict[str, float]] = []
    start, step = time.perf_counter(), 0
    epoch_times: list[float] = []
    try:
        with epoch_progress(disable=not show_progress) as progress:
            task = progress.add_task("GTSP masks", total=cfg.epochs, status="")
            for epoch in range(cfg.epochs):
                if epoch >= planned["epochs"]:
                    break
                student.train()
                total, count = 0.0, 0
                c = torch.tensor(1.0)
                for batch in iterate_batches(train_graphs, cfg.batch_size, shuffle=True, generator=gen):
                    if "lap" in batch.pe:
                        batch.pe["lap"] = random_sign_flip(batch.pe["lap"], gen)
                    logits = student(batch)
                    assert batch.y is not None
                    loss = task_loss(logits, batch.y, info) + kd(student, batch, logits)
                    c = cm.expected(gates) / cm.dense
                    if target is not None and len(groups) > 1:
                        loss = loss + lagr["flops"](c, current_target(step)).float()
                    if cfg.keep and len(groups) > 1:
                        fr = _expected_fractions(gates, cm)
                        for axis, ratio in cfg.keep.items():
                            if axis in fr and axis in lagr:
                                loss = loss + lagr[axis](fr[axis], ratio)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    step += 1
                    total += loss.item() * batch.num_graphs
                    count += batch.num_graphs
                val = evaluate(student, val_graphs, info)[info.metric]
                plan = eval_plan()
                row = {
                    "epoch": epoch,
                    "loss": total / max(count, 1),
                    f"val_{info.metric}": val,
                    "expected_cost": float(c.detach()),
                    "plan_cost": cm.cost(plan) / cm.dense,
                    "lambda1": float(lagr["flops"].lambda1.detach()),
                }
                history.append(row)
                if (better and val > best_val) or (not better and val < best_val):
                    best_val, best_epoch = val, epoch
                    best_state = (copy.deepcopy(student.state_dict()), copy.deepcopy(gates.state_dict()))
                progress.update(
                    task,
                    advance=1,
                    status=f"loss {row['loss']:.4f}  val {info.metric} {val:.4f}  "
                    f"exp. cost {row['expected_cost']:.3f}  plan {row['plan_cost']:.3f}",
                )
                if cfg.time_budget_s:
                    elapsed = time.perf_counter() - start
                    epoch_times.append(elapsed - sum(epoch_times))
                    planned["epochs"] = epochs_in_budget(cfg.time_budget_s, epoch_times, planned["epochs"], cfg.epochs)
                    progress.update(task, total=planned["epochs"])
                    if elapsed > cfg.time_budget_s:
                        break
    finally:
        handle.remove()
    student.load_state_dict(best_state[0])
    gates.load_state_dict(best_state[1])
    for row in history:
        row["best"] = float(row["epoch"] == best_epoch)
    return history


def mask_training(
    student: GraphModel,
    data_kd: GraphDataset,
    cm: CostModel,
    cfg: PruneConfig,
    show_progress: bool,
    timings: dict[str, float],
) -> tuple[GateSet, list[dict[str, float]]]:
    """GTSP's gates for ``student`` (trained in place with them): importance-ordered start, then
    :func:`train_gates`; ``timings`` gains ``importance`` and ``mask_training``."""
    axes = cfg.structured_axes
    gates = GateSet.for_model(student, axes, cfg.gate_init)
    if cfg.importance_batches > 0 and axes:
        t0 = time.perf_counter()
        gates.init_from_importance(gate_importance(student, gates, data_kd, cfg, cfg.importance_batches))
        timings["importance"] = time.perf_counter() - t0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    if cfg.epochs > 0 and (axes or "tokens" in cfg.axes):
        history = train_gates(student, gates, data_kd, cm, cfg, show_progress)
    timings["mask_training"] = time.perf_counter() - t0
    return gates, history


# ----------------------------------------------------------------------------------------- pipeline
def _finetune(
    small: GraphModel,
    data_kd: GraphDataset,
    cfg: PruneConfig,
    epochs: int,
    time_budget_s: float,
    show_progress: bool,
    description: str,
) -> dict[str, Any]:
    """KD fine-tuning of the materialised model (+ gradual magnitude pruning for ``weights``)."""
    info = data_kd.info
    if epochs <= 0:
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
    if cfg.weight_sparsity > 0:
        params = [p for _, p in prunable_weights(small)]
        total = sum(p.numel() for p in params)
        steps = epochs * max(1, math.ceil(len(data_kd["train"]) / cfg.batch_size))

        def k_at(step: int) -> int:
            return round(total * (1.0 - cubic_sparsity(step, steps, cfg.weight_sparsity, 0.0, 0.5)))

        with projected(params, k_at):
            res = train(small, data_kd, tcfg, extra_loss=kd, show_progress=show_progress, description=description)
        l0_project_(params, round(total * (1.0 - cfg.weight_sparsity)))
    else:
        res = train(small, data_kd, tcfg, extra_loss=kd, show_progress=show_progress, description=description)
    return {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "train_time_s": res.train_time_s}


@torch.no_grad()
def _max_diff(a: nn.Module, b: nn.Module, batch: GraphBatch) -> float:
    a.eval()
    b.eval()
    return float((a(batch) - b(batch)).abs().max())


def _prepare(
    model: GraphModel, dataset: GraphDataset, cfg: PruneConfig, dense_metrics: dict[str, float] | None
) -> tuple[GraphBatch, Cost, dict[str, float], GraphDataset]:
    check_prunable(model, cfg.axes)
    if cfg.cost_split not in dataset.splits or not dataset[cfg.cost_split]:
        raise ConfigError(f"cost split {cfg.cost_split!r} is missing or empty in this dataset")
    ref = reference_batch(dataset[cfg.cost_split], cfg.cost_graphs)
    dense = plain_copy(model).eval()
    cost_before = measure_cost(dense, ref)
    metrics_before = dict(dense_metrics) if dense_metrics is not None else _metrics(dense, dataset)
    data_kd = dataset
    if cfg.kd_weight > 0 and not has_teacher(dataset):
        data_kd = attach_teacher(dataset, dense)
    return ref, cost_before, metrics_before, data_kd


def _setup(
    model: GraphModel,
    dataset: GraphDataset,
    cfg: PruneConfig,
    dense_metrics: dict[str, float] | None,
    student_seed: int,
) -> tuple[PruneConfig, GraphBatch, Cost, dict[str, float], GraphDataset, GraphModel, CostModel, dict[str, float]]:
    """What GTSP and random pruning share before ranking units: the config made concrete for
    ``model`` (auto axes and allocation, plus layers where the target needs them), the reference
    batch and dense cost, the teacher, the student (token scorer seeded ``cfg.seed + student_seed``)
    and its calibrated cost model, checked for feasibility."""
    auto, cfg = "auto" in cfg.axes, _resolved(cfg, model)
    seed_everything(cfg.seed)
    ref, cost_before, metrics_before, data_kd = _prepare(model, dataset, cfg, dense_metrics)
    student = _student(model, cfg, cfg.seed + student_seed)
    t0 = time.perf_counter()
    cm = CostModel.calibrate(student, ref, dense_flops=cost_before.flops)
    timings = {"calibrate": time.perf_counter() - t0}
    cfg = _with_depth_budget(cfg, cm, auto)
    _feasibility(cm, cfg)
    return cfg, ref, cost_before, metrics_before, data_kd, student, cm, timings


def _student(model: GraphModel, cfg: PruneConfig, seed: int) -> GraphModel:
    if "tokens" in cfg.axes and cfg.token_keep < 1.0:
        return with_token_keep(model, cfg.token_keep, seed=seed)
    return plain_copy(model)


def _feasibility(cm: CostModel, cfg: PruneConfig) -> None:
    t = cfg.target_flops
    if t is None:
        return
    axes = cfg.structured_axes
    full = cm.cost(full_plan_from_cost(cm)) / cm.dense
    if not axes:
        if abs(full / t - 1.0) > cfg.tolerance:
            raise BudgetError(
                f"with only the tokens axis the FLOPs are set by --token-keep {cfg.token_keep}: "
                f"{full:.3f} of the dense model, not the target {t:.3f}; add heads/ffn/layers axes"
            )
        return
    lo = cm.min_cost(axes) / cm.dense
    if lo > t * (1.0 + cfg.tolerance):
        raise BudgetError(
            f"target {t:.3f} of the FLOPs is impossible with axes {','.join(cfg.axes)}: the least reachable is "
            f"{lo:.3f} (what no axis removes: encoders, structural encodings such as graphormer's shortest "
            f"paths, local MPNN, prediction head"
            f"{', every sublayer keeps one unit without the layers axis' if 'layers' not in axes else ''})"
        )
    if full < t * (1.0 - cfg.tolerance):
        raise BudgetError(
            f"token pruning alone (keep {cfg.token_keep}) already gives {full:.3f} of the FLOPs, below the "
            f"target {t:.3f}; raise --token-keep or lower --target-flops"
        )


def full_plan_from_cost(cm: CostModel) -> Plan:
    tk = cm.token_keep or [1.0] * len(cm.heads)
    return Plan(
        [
            LayerPlan(list(range(h)), list(range(f)), tk[i])
            for i, (h, f) in enumerate(zip(cm.heads, cm.widths, strict=True))
        ]
    )


def _finish(
    method: str,
    model: GraphModel,
    small: GraphModel,
    plan: Plan,
    student: GraphModel,
    dataset: GraphDataset,
    data_kd: GraphDataset,
    ref: GraphBatch,
    cost_before: Cost,
    metrics_before: dict[str, float],
    cfg: PruneConfig,
    cm: CostModel,
    fit: Any,
    exact_diff: float,
    timings: dict[str, float],
    finetune_epochs: int,
    finetune_time_s: float,
    show_progress: bool,
    history: list[dict[str, float]],
) -> PruneResult:
    metrics_materialised = _metrics(small, dataset, splits=("val",))
    t0 = time.perf_counter()
    ft = _finetune(small, data_kd, cfg, finetune_epochs, finetune_time_s, show_progress, f"{method} fine-tune")
    timings["finetune"] = time.perf_counter() - t0
    small.eval()
    cost_after = measure_cost(small, ref)
    metrics_after = _metrics(small, dataset)
    removed = plan.summary(student)
    removed["weights_sparsity"] = cost_after.sparsity
    target = cfg.target_flops
    budget = {
        "target_flops": target,
        "measured_flops_ratio": cost_after.flops / max(cost_before.flops, 1),
        "tolerance": cfg.tolerance,
        "within_tolerance": None
        if target is None
        else abs(cost_after.flops / max(cost_before.flops, 1) / target - 1.0) <= cfg.tolerance,
        "selection_iterations": getattr(fit, "iterations", 0),
        "cost_model": cm.to_dict(),
    }
    report = compression_report(
        method=method,
        settings=cfg.to_dict(),
        seed=cfg.seed,
        metric=dataset.info.metric,
        metrics_before=metrics_before,
        metrics_after=metrics_after,
        cost_before=cost_before,
        cost_after=cost_after,
        removed=removed,
        model_before=layer_table(model.config),
        model_after=layer_table(small.config),
        timings=timings,
        extra={
            "budget": budget,
            "plan": plan.to_dict(),
            "metric_after_materialise": metrics_materialised,
            "materialise_max_abs_diff": exact_diff,
            "finetune": ft,
            "mask_training": history,
            "reference_batch": {"split": cfg.cost_split, "graphs": ref.num_graphs},
        },
    )
    return PruneResult(small, plan, report, None, history)


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
    t_all = time.perf_counter()
    cfg, ref, cost_before, metrics_before, data_kd, student, cm, timings = _setup(
        model, dataset, cfg, dense_metrics, student_seed=0
    )
    axes = cfg.structured_axes
    gates, history = mask_training(student, data_kd, cm, cfg, show_progress, timings)
    t0 = time.perf_counter()
    scores = gate_scores(gates)
    fit = None
    if cfg.target_flops is not None and axes:
        fit = fit_budget(student, scores, cm, ref, axes, cfg.target_flops, cfg.tolerance, allocation=cfg.allocation)
        plan, small = fit.plan, fit.model
    else:
        plan = select_plan(cm, scores, axes, axis_keep=cfg.keep or None)
        small = materialise(student, plan)
    timings["select_materialise"] = time.perf_counter() - t0
    # the gated model (eval: gates exactly 0/1, deterministic top-k) vs the materialised one
    with attach_gates(student, gates, lambda: plan):
        diff = _max_diff(student, small, ref)
    res = _finish(
        "gtsp",
        model,
        small,
        plan,
        student,
        dataset,
        data_kd,
        ref,
        cost_before,
        metrics_before,
        cfg,
        cm,
        fit,
        diff,
        timings,
        cfg.finetune_epochs,
        cfg.finetune_time_budget_s,
        show_progress,
        history,
    )
    res.gates = gates
    res.report["timings_s"]["total"] = time.perf_counter() - t_all
    return res


def random_prune(
    model: GraphModel,
    dataset: GraphDataset,
    cfg: PruneConfig,
    show_progress: bool = True,
    epochs: int | None = None,
    dense_metrics: dict[str, float] | None = None,
) -> PruneResult:
    """Random pruning at the same budget: random unit ranking (and a fresh random token scorer),
    the same measured selection, then KD fine-tuning for ``epochs`` (default: the GTSP run's mask
    training + fine-tuning epochs, so both get the same training)."""
    t_all = time.perf_counter()
    cfg, ref, cost_before, metrics_before, data_kd, student, cm, timings = _setup(
        model, dataset, cfg, dense_metrics, student_seed=12345
    )
    axes = cfg.structured_axes
    scores = random_scores(cm, cfg.seed)
    fit = None
    if cfg.target_flops is not None and axes:
        fit = fit_budget(student, scores, cm, ref, axes, cfg.target_flops, cfg.tolerance, allocation=cfg.allocation)
        plan, small = fit.plan, fit.model
    else:
        plan = select_plan(cm, scores, axes, axis_keep=cfg.keep or None)
        small = materialise(student, plan)
    with attach_gates(student, GateSet.for_model(student, axes), lambda: plan):
        diff = _max_diff(student, small, ref)
    n_epochs = cfg.epochs + cfg.finetune_epochs if epochs is None else epochs
    budget_s = (
        cfg.time_budget_s + cfg.finetune_time_budget_s if (cfg.time_budget_s or cfg.finetune_time_budget_s) else 0.0
    )
    res = _finish(
        "random",
        model,
        small,
        plan,
        student,
        dataset,
        data_kd,
        ref,
        cost_before,
        metrics_before,
        cfg,
        cm,
        fit,
        diff,
        timings,
        n_epochs,
        budget_s,
        show_progress,
        [],
    )
    res.report["timings_s"]["total"] = time.perf_counter() - t_all
    return res
