r"""GTSP's mask training: gates on heads, attention/FFN sublayers and FFN units (plus the token
scorers), trained jointly with the weights under the FLOP budget.

Step 4 of :func:`gtcompress.compress.prune.prune_model`. The gates start ordered by first-order
(Taylor) importance (:func:`gate_importance`), then :func:`train_gates` minimises
``task loss + λ_kd · KL(student ‖ teacher) + λ1 (c − t) + λ2 (c − t)²``, where ``c`` is the expected
FLOP ratio under the gates and the target ``t`` warms up from 1; the multipliers ascend. The
validation model of every epoch is the discrete plan that meets the budget, so the epoch kept is
the best *prunable* one, not the best gated one.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from torch import nn

from gtcompress.compress.budget import CostModel, Lagrangian
from gtcompress.compress.distill import distillation_loss
from gtcompress.compress.gates import GateSet
from gtcompress.compress.masks import attach_gates
from gtcompress.compress.materialise import Plan
from gtcompress.compress.plan_choice import gate_scores, select_plan
from gtcompress.compress.prune_config import PruneConfig
from gtcompress.compress.prune_run import PruneRun
from gtcompress.data.base import GraphDataset
from gtcompress.graph import random_sign_flip
from gtcompress.models.model import GraphModel
from gtcompress.train.loop import (
    check_defined_metric,
    check_finite_loss,
    epoch_progress,
    epochs_in_budget,
    evaluate,
    optimizer_step,
    seed_everything,
)
from gtcompress.train.metrics import higher_is_better
from gtcompress.train.steps import MAX_TRAIN_CELLS, pads_every_graph, training_steps

__all__ = ["gate_importance", "mask_training", "train_gates"]


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
            max_cells = MAX_TRAIN_CELLS if pads_every_graph(student) else None
            for i, step in enumerate(training_steps(dataset["train"], cfg.batch_size, info, gen, max_cells)):
                if i >= batches:
                    break
                step_grads: dict[tuple[str, int], torch.Tensor] = {}
                for part in step.parts:  # the batch's gradient is the sum of its parts'
                    logits = student(part.batch)
                    loss = step.task_loss(part, logits, info) + part.row_share * kd(student, part.batch, logits)
                    grads = torch.autograd.grad(loss, list(probe.values()), allow_unused=True)
                    for k, g in zip(probe, grads, strict=True):
                        if g is not None:
                            step_grads[k] = step_grads[k] + g.detach() if k in step_grads else g.detach()
                for k, g in step_grads.items():
                    acc[k] += g**2
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
    target: float | None,
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Jointly train weights and gates under the Lagrangian budget term (see module docstring).

    ``target`` is the FLOP fraction to reach (``None``: only ``cfg.keep``'s per-axis ratios); it is
    passed in rather than read from ``cfg`` so that one place, :class:`~gtcompress.compress.prune_run.PruneRun`,
    decides the budget. On return ``student`` and ``gates`` hold the state of the best validation
    epoch, where the validation model is the discrete plan that meets the budget."""
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

    def current_target(step: int) -> float:
        assert target is not None
        total = planned["epochs"] * steps_per_epoch * cfg.target_warmup
        return 1.0 - (1.0 - target) * min(1.0, step / max(total, 1.0))

    def eval_plan() -> Plan:  # tokens only: --token-keep sets the FLOPs, there is no unit to select for a target
        axes = cfg.structured_axes
        return select_plan(
            cm, gate_scores(gates), axes, target if axes else None, cfg.keep or None, allocation=cfg.allocation
        )

    handle = attach_gates(student, gates, eval_plan)
    kd = distillation_loss(info, cfg.kd_weight, cfg.kd_temperature)
    better = higher_is_better(info.metric)
    best_val, best_epoch = (-math.inf if better else math.inf), -1
    best_state = (copy.deepcopy(student.state_dict()), copy.deepcopy(gates.state_dict()))
    history: list[dict[str, float]] = []
    start, step = time.perf_counter(), 0
    epoch_times: list[float] = []
    max_cells = MAX_TRAIN_CELLS if pads_every_graph(student) else None
    try:
        with epoch_progress(disable=not show_progress) as progress:
            task = progress.add_task("GTSP masks", total=cfg.epochs, status="")
            for epoch in range(cfg.epochs):
                if epoch >= planned["epochs"]:
                    break
                student.train()
                total, count = 0.0, 0
                c = torch.tensor(1.0)
                for i, parts in enumerate(training_steps(train_graphs, cfg.batch_size, info, gen, max_cells)):
                    opt.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for j, part in enumerate(parts.parts):  # one, unless the batch would not fit in memory
                        batch = part.batch
                        if "lap" in batch.pe:
                            batch.pe["lap"] = random_sign_flip(batch.pe["lap"], gen)
                        logits = student(batch)
                        kd_term = kd(student, batch, logits)
                        loss = parts.task_loss(part, logits, info) + (
                            kd_term if part.row_share == 1.0 else kd_term * part.row_share
                        )
                        if j == 0:  # the budget terms depend on the gates only: once per step
                            c = cm.expected(gates) / cm.dense
                            if target is not None and len(groups) > 1:
                                loss = loss + lagr["flops"](c, current_target(step)).float()
                            if cfg.keep and len(groups) > 1:
                                fr = _expected_fractions(gates, cm)
                                for axis, ratio in cfg.keep.items():
                                    if axis in fr and axis in lagr:
                                        loss = loss + lagr[axis](fr[axis], ratio)
                        # NaN gates and weights would otherwise be masked, fine-tuned and saved, exit 0
                        check_finite_loss(loss, "GTSP masks", epoch, i, steps_per_epoch, cfg.lr)
                        loss.backward()
                        step_loss += loss.item()
                    nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                    rates = f"--lr, now {cfg.lr:g}" + (f"; --gate-lr, now {cfg.gate_lr:g}" if len(groups) > 1 else "")
                    optimizer_step(opt, "GTSP masks", epoch, i, steps_per_epoch, rates)
                    sched.step()
                    step += 1
                    total += step_loss * parts.num_graphs
                    count += parts.num_graphs
                val_eval = evaluate(student, val_graphs, info)
                val = val_eval[info.metric]
                # NaN: the untrained gates would come back as the best
                check_defined_metric(val, info, epoch, val_eval["loss"])
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


def mask_training(run: PruneRun) -> tuple[GateSet, list[dict[str, float]]]:
    """GTSP's gates for ``run.student`` (trained in place with them): importance-ordered start, then
    :func:`train_gates`; ``run.timings`` gains ``importance`` and ``mask_training``."""
    cfg, student, data_kd, axes = run.cfg, run.student, run.data_kd, run.axes
    gates = GateSet.for_model(student, axes, cfg.gate_init)
    if cfg.importance_batches > 0 and axes:
        t0 = time.perf_counter()
        gates.init_from_importance(gate_importance(student, gates, data_kd, cfg, cfg.importance_batches))
        run.timings["importance"] = time.perf_counter() - t0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    if cfg.epochs > 0 and (axes or "tokens" in cfg.axes):
        history = train_gates(student, gates, data_kd, run.cost_model, cfg, run.target, run.show_progress)
    run.timings["mask_training"] = time.perf_counter() - t0
    return gates, history
