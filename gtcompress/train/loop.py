"""Seeded, reproducible training with the recipe GraphGPS uses: AdamW, linear warm-up then
cosine decay, gradient clipping, and selection of the best epoch on validation."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from gtcompress.data.base import DatasetInfo, GraphDataset, iterate_batches
from gtcompress.errors import ConfigError, GTCompressError
from gtcompress.graph import GraphBatch, random_sign_flip
from gtcompress.preprocess.batching import MAX_EVAL_CELLS
from gtcompress.train.metrics import compute_metric, higher_is_better, task_loss
from gtcompress.train.steps import MAX_TRAIN_CELLS, pads_every_graph, training_steps

# Extra loss term added to the task loss, e.g. distillation or a budget penalty: (model, batch, logits) -> loss.
ExtraLoss = Callable[[nn.Module, GraphBatch, Tensor], Tensor]


class TrainingDivergedError(GTCompressError):
    """The loss became NaN or infinite. Raised instead of carrying on: every later step would feed
    NaN gradients to the optimiser, and the checkpoint written at the end would hold NaN weights
    while the run still exited 0."""


def check_time_budget(value: float, option: str) -> None:
    """Refuse a time budget that is not a finite number >= 0 (0 = no limit). A negative budget is
    already spent after the first epoch and NaN compares false with everything: both silently cut
    training to one epoch (and NaN was also written to the checkpoint's config)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} must be a finite number of seconds >= 0 (0 = no limit), got {value!r}")


def check_finite_loss(loss: Tensor, where: str, epoch: int, step: int, steps: int, lr: float) -> None:
    """Stop at the first non-finite loss (see :class:`TrainingDivergedError`), naming where it
    happened and the usual cure."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingDivergedError(
            f"{where}: the loss became {float(loss.detach()):g} at epoch {epoch + 1}, step {step + 1} of {steps}; "
            f"training diverged, so no weights were written: lower the learning rate (--lr, now {lr:g})"
        )


def optimizer_step(opt: torch.optim.Optimizer, where: str, epoch: int, step: int, steps: int, rates: str) -> None:
    """``opt.step()``, with a step too large for a float32 weight made a :class:`TrainingDivergedError`.

    Adam's first step moves a weight by the learning rate over its bias correction (ten times the
    rate): from about 3.4e37 up that no longer fits a float32, and torch refuses with "value cannot
    be converted to type float without overflow", a traceback out of ``gtc train --lr 1e38``.
    ``rates`` names the options that set the step sizes, as the user typed them (``--lr, now 1e+38``)."""
    try:
        opt.step()
    except RuntimeError as e:
        if "overflow" not in str(e):
            raise
        raise TrainingDivergedError(
            f"{where}: the optimiser step overflowed float32 at epoch {epoch + 1}, step {step + 1} of {steps}; "
            f"training diverged, so no weights were written: lower the learning rate ({rates})"
        ) from None


_SHOWN = {"rocauc": "ROC-AUC", "ap": "average precision"}


def _device(model: nn.Module) -> torch.device | None:
    return next((t.device for t in (*model.parameters(), *model.buffers())), None)


def check_on_cpu(model: nn.Module, graphs: list[GraphBatch], what: str) -> None:
    """Refuse a model, or graphs, off the CPU for gtcompress's training and compression, which run there: a
    model moved to a GPU by hand met the loaders' CPU graphs in its first layer, torch's "Expected all
    tensors to be on the same device" naming neither the model nor the fix."""
    device = _device(model)
    where = next((g.x.device for g in graphs if g.x.device.type != "cpu"), None)
    if device is not None and device.type != "cpu":
        raise ConfigError(
            f"{what}: the model is on {device}; gtcompress's training and compression run on the CPU, with the "
            "dataset's graphs: pass model.cpu() (the result serves on a GPU: gtc serve --device cuda)"
        )
    if where is not None:
        raise ConfigError(
            f"{what}: the dataset's graphs are on {where}; gtcompress's training and compression run on the "
            "CPU: give the graphs as its loaders do, on the CPU"
        )


def check_defined_metric(value: float, info: DatasetInfo, epoch: int | None, loss: float | None = None) -> None:
    """Stop at a validation metric that is NaN (ROC-AUC of a val split with one class; any metric of
    outputs holding a NaN). NaN is never "better" than the starting best, so a loop that selects its
    best epoch on it would restore the weights it started from, every epoch of training thrown away,
    and still exit 0. ``epoch`` None: the starting weights, evaluated before training
    (``train(keep_start=True)``). ``loss``: the val loss, not finite where the outputs are not, which
    tells the two causes apart."""
    if math.isnan(value):
        when = "for the starting weights" if epoch is None else f"at epoch {epoch}"
        if loss is not None and not math.isfinite(loss):
            why = ": the model's val outputs are not finite (NaN or infinite: its weights or activations overflow)"
        elif info.metric in _SHOWN:
            why = f": {_SHOWN[info.metric]} needs both classes among a task's val labels"
        else:
            why = ""
        raise ConfigError(
            f"dataset {info.name!r}: the val {info.metric} is undefined (NaN) {when}, so no best epoch can be chosen"
            + why
        )


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup_epochs: int = 5
    grad_clip: float = 1.0
    seed: int = 0
    eval_batch_size: int = 128
    time_budget_s: float = 0.0  # stop after the epoch that crosses this wall time (0 = no limit)
    lap_sign_flip: bool = True
    # Epochs before this one do not compete for the best: their weights are not yet what the run is
    # for (a gradual pruning schedule still below its sparsity). None reached: the last epoch is kept.
    select_from_epoch: int = 0

    def __post_init__(self) -> None:
        check_time_budget(self.time_budget_s, "--time-budget")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` did. ``best_epoch`` is the best selectable epoch run, else the last epoch
    run (-1: none ran, or none was selectable and ``keep_start`` kept the start); ``val_metric``
    and ``test_metric`` are those of the weights the model holds on return.

    With ``train(keep_start=True)``, ``start_val`` is the starting weights' validation metric and
    ``kept_start`` says that no selectable epoch beat it, so the model holds its starting weights,
    not ``best_epoch``'s: ``best_epoch`` still names the best epoch trained (its metric is in
    ``history``), so that a report can show both numbers."""

    best_epoch: int
    val_metric: float
    test_metric: float
    train_time_s: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    start_val: float | None = None  # None: the starting weights were not evaluated (keep_start off)
    kept_start: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def epoch_progress(disable: bool = False) -> Progress:
    """The bar every training loop shows: epochs done, a status line (loss, metric, …), times."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ep"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=disable,
    )


#: The largest training seed (2**63-1). ``torch.manual_seed`` takes up to 2**64-1, but the compression
#: stages seed later steps with ``seed + 1`` and ``seed + 12345`` (``prune_run.STUDENT_SEED``), which
#: overflowed there after minutes of work: int64's range leaves room for those offsets. A literal, so
#: that the CLI reads it without importing torch (``cli.library_values.library_constant``).
MAX_SEED = 9_223_372_036_854_775_807


def seed_everything(seed: int) -> torch.Generator:
    if not 0 <= seed <= MAX_SEED:  # torch's own refusal is "Overflow when unpacking long long"
        raise ConfigError(f"seed {seed}: expected an integer from 0 to {MAX_SEED} (2**63-1)")
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def predict(model: nn.Module, graphs: list[GraphBatch], batch_size: int = 128) -> tuple[Tensor, Tensor]:
    """Concatenated (logits, targets) of a split in eval mode."""
    if not graphs:  # torch.cat() would fail with a message that names neither split nor cause
        raise ConfigError("nothing to evaluate: the split holds no graphs")
    device = _device(model)
    if device is not None and device != graphs[0].x.device:  # torch's error names neither model nor graphs
        raise ConfigError(
            f"evaluate: the model is on {device} and the graphs on {graphs[0].x.device}; move one to the other"
        )
    model.eval()
    outs, ys = [], []
    for batch in iterate_batches(graphs, batch_size, max_cells=MAX_EVAL_CELLS):
        outs.append(model(batch))
        assert batch.y is not None
        ys.append(batch.y)
    return torch.cat(outs), torch.cat(ys)


def evaluate(model: nn.Module, graphs: list[GraphBatch], info: DatasetInfo, batch_size: int = 128) -> dict[str, float]:
    """Loss and the dataset's metric on one split."""
    logits, y = predict(model, graphs, batch_size)
    return {"loss": float(task_loss(logits, y, info)), info.metric: compute_metric(info.metric, logits, y)}


class _Schedule:
    """Linear warm-up then cosine decay to 0 at ``total`` steps. ``total`` may shrink once the
    first epoch's duration shows how many epochs fit a time budget, so a budgeted run still ends
    with a fully decayed learning rate instead of being cut off at a high one."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        # a warm-up as long as the run (gtc train --epochs 3 with 5 warm-up epochs) would end it at a
        # high rate, never decayed: a tenth of the run warms up instead
        warmup = self.warmup if self.warmup < self.total else max(1, self.total // 10)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, self.total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epochs_in_budget(budget_s: float, epoch_times: list[float], planned: int, cap: int, slack: float = 0.1) -> int:
    """Epochs that fit in a wall-time budget, re-estimated after every epoch from the median epoch
    so far. Sizing the LR schedule from the first epoch alone let one slow epoch (a busy machine)
    end a run at a third of its budget; the slack keeps the plan, and so the schedule, steady while
    the estimate moves by less than 10 %."""
    done, per = len(epoch_times), max(statistics.median(epoch_times), 1e-9)
    fit = max(1, min(cap, done + int(max(0.0, budget_s - sum(epoch_times)) / per)))
    if done > 1 and abs(fit - planned) <= slack * planned:
        return planned
    return fit


def train(
    model: nn.Module,
    dataset: GraphDataset,
    cfg: TrainConfig,
    extra_loss: ExtraLoss | None = None,
    show_progress: bool = True,
    description: str = "train",
    *,
    on_plan: Callable[[int], None] | None = None,
    selectable: Callable[[int], bool] | None = None,
    keep_start: bool = False,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch from
    ``cfg.select_from_epoch`` on (the last epoch run if the run stopped before that one).

    ``on_plan`` is told the number of epochs the run now plans whenever a time budget re-estimates
    it (after each epoch), so that a schedule riding along (gradual pruning) can end with the run,
    as the learning rate does. ``selectable(epoch)``, if given, also decides which epochs compete
    for the best (asked right after the epoch, so it may look at state the epoch left behind).

    ``keep_start``: the starting weights are evaluated on validation first and compete with the
    epochs; unless a selectable epoch is strictly better, the model keeps them bit for bit. For a
    fine-tune whose start is already a valid result (a compressed model before its fine-tuning): a
    run of one or two epochs, as a time budget on a busy machine gives, could otherwise hand back a
    model worse than the one it was given. Off for training from scratch, whose start is random,
    and for a start that is not yet the product (a gradual pruning schedule starts denser)."""
    info = dataset.info
    check_on_cpu(model, dataset.splits.get("train", []), description)
    for split in ("train", "val"):  # an empty one fails later as torch.cat() on an empty list
        if not dataset.splits.get(split):
            raise ConfigError(
                f"dataset {info.name!r}: the {split} split is empty; training needs graphs in train and val"
            )
    train_graphs, val_graphs = dataset["train"], dataset["val"]
    start = time.perf_counter()  # the budget counts the start's evaluation; the epoch estimate does not
    start_val = None
    if keep_start:  # before seeding: training then runs exactly as it would without keep_start
        start_eval = evaluate(model, val_graphs, info, cfg.eval_batch_size)
        start_val = start_eval[info.metric]
        check_defined_metric(start_val, info, None, start_eval["loss"])
    lead_s = time.perf_counter() - start
    gen = seed_everything(cfg.seed)
    test_graphs = dataset.splits.get("test", [])
    steps_per_epoch = max(1, math.ceil(len(train_graphs) / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = _Schedule(cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    planned_epochs = cfg.epochs
    better = higher_is_better(info.metric)
    best_val = start_val if start_val is not None else -math.inf if better else math.inf
    best_state, best_epoch = copy.deepcopy(model.state_dict()), -1
    top_epoch, top_val = -1, -math.inf if better else math.inf  # the best selectable epoch, start or not
    history: list[dict[str, float]] = []
    epochs_run = 0
    epoch_times: list[float] = []
    max_cells = MAX_TRAIN_CELLS if pads_every_graph(model) else None
    with epoch_progress(disable=not show_progress) as progress:
        task = progress.add_task(description, total=cfg.epochs, status="")
        for epoch in range(cfg.epochs):
            if epoch >= planned_epochs:
                break
            model.train()
            total, count = 0.0, 0
            steps = training_steps(train_graphs, cfg.batch_size, info, gen, max_cells)
            for step, parts in enumerate(steps):
                opt.zero_grad(set_to_none=True)
                step_loss = 0.0
                for part in parts.parts:  # one, unless the batch would not fit (see gtcompress.train.steps)
                    batch = part.batch
                    if cfg.lap_sign_flip and "lap" in batch.pe:
                        batch.pe["lap"] = random_sign_flip(batch.pe["lap"], gen)
                    logits = model(batch)
                    loss = parts.task_loss(part, logits, info)
                    if extra_loss is not None:
                        extra = extra_loss(model, batch, logits)
                        loss = loss + (extra if part.row_share == 1.0 else extra * part.row_share)
                    check_finite_loss(loss, description, epoch, step, steps_per_epoch, cfg.lr)
                    loss.backward()
                    step_loss += loss.item()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer_step(opt, description, epoch, step, steps_per_epoch, f"--lr, now {cfg.lr:g}")
                sched.step()
                total += step_loss * parts.num_graphs
                count += parts.num_graphs
            val = evaluate(model, val_graphs, info, cfg.eval_batch_size)
            row = {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                **{f"val_{k}": v for k, v in val.items()},
            }
            history.append(row)
            v = val[info.metric]
            check_defined_metric(v, info, epoch, val["loss"])
            candidate = epoch >= cfg.select_from_epoch and (selectable is None or selectable(epoch))
            if candidate and ((better and v > top_val) or (not better and v < top_val)):
                top_epoch, top_val = epoch, v
            if candidate and ((better and v > best_val) or (not better and v < best_val)):
                best_val, best_epoch = v, epoch
                best_state = copy.deepcopy(model.state_dict())
            epochs_run = epoch + 1
            at = "start" if best_epoch < 0 and start_val is not None else best_epoch
            progress.update(
                task,
                advance=1,
                status=f"loss {row['train_loss']:.4f}  val {info.metric} {v:.4f}  best {best_val:.4f}@{at}",
            )
            if cfg.time_budget_s:
                elapsed = time.perf_counter() - start
                epoch_times.append(elapsed - lead_s - sum(epoch_times))
                planned_epochs = epochs_in_budget(cfg.time_budget_s - lead_s, epoch_times, planned_epochs, cfg.epochs)
                if epoch == 0:
                    schedule.warmup = min(schedule.warmup, max(1, planned_epochs // 10) * steps_per_epoch)
                schedule.total = planned_epochs * steps_per_epoch
                if on_plan is not None:
                    on_plan(planned_epochs)
                progress.update(task, total=planned_epochs)
                if elapsed > cfg.time_budget_s:
                    break
    kept_start = start_val is not None and best_epoch < 0
    if best_epoch < 0 and epochs_run > 0 and not kept_start:  # stopped before any selectable epoch: the last
        best_epoch, best_val = epochs_run - 1, history[-1][f"val_{info.metric}"]
    else:
        model.load_state_dict(best_state)
    elapsed = time.perf_counter() - start
    test_metric = evaluate(model, test_graphs, info, cfg.eval_batch_size)[info.metric] if test_graphs else math.nan
    return TrainResult(
        top_epoch if kept_start else best_epoch,
        best_val,
        test_metric,
        elapsed,
        epochs_run,
        history,
        start_val=start_val,
        kept_start=kept_start,
    )
