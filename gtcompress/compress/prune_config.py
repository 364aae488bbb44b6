"""GTSP's settings: :class:`PruneConfig`, and the ``auto`` choices it resolves per model.

:class:`PruneConfig` is the single place every pruning default is written: ``gtc prune`` takes its
option defaults from it, and ``gtc pipeline``'s ``prune`` section takes from it every key the
pipeline does not deliberately set to a faster recipe. The ``auto`` axes and allocation depend on
the model pruned, so they stay ``auto`` here and :func:`resolve_auto` makes them concrete once the
model is known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gtcompress.compress.distill import check_distillation
from gtcompress.compress.gates import parse_axes
from gtcompress.compress.plan_choice import ALLOCATIONS
from gtcompress.errors import ConfigError
from gtcompress.models.model import GraphModel
from gtcompress.train.loop import check_time_budget

__all__ = ["PruneConfig", "default_allocation", "default_axes", "resolve_auto"]


def default_allocation(arch: str) -> str:
    """How to split a FLOP target between heads and FFN units (``select_plan``'s ``allocation``).

    GT: ``uniform`` — its attention is its only message passing and its FFN its only per-node
    capacity; ranked together by their gates (``global``), the gates kept the heads and stripped the
    FFNs, and lost to uniform (NCI1, 2-minute runs: −2.2/+2.4/−3.7 vs +1.0/+0.7/−0.7 points at
    0.6/0.45/0.3 of the FLOPs; CLUSTER at 0.45: 56.7 vs 58.8). GPS and Graphormer: ``global`` — a
    local path carries the messages, so dropping global attention wholesale is often right (GPS on
    NCI1: −0.2/+0.2/±0.0 global vs +1.9/−1.7/−4.1 uniform)."""
    return "uniform" if arch == "gt" else "global"


def default_axes(arch: str, task_level: str = "graph") -> str:
    """Axes that suit the model. Tokens only for GPS and Graphormer on graph-level tasks:

    * GT's attention *is* its message passing, so dropping tokens from it cuts nodes off their
      neighbours (CLUSTER, 3+3 epochs at 40 % FLOPs: 33 % accuracy with tokens vs 49 % without).
      For the same reason each attention sublayer is one hop: GT gets heads,ffn, so every sublayer
      keeps a unit, and the layers axis only when the target lies below what heads,ffn reach
      (:func:`gtcompress.compress.prune_run.with_depth_budget`). CLUSTER at 30 % of the FLOPs, 3
      seeds: 69.1 % with heads,ffn vs 65.3 % with heads,layers,ffn (1–2 attention sublayers dropped),
      at the same latency.
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
    """Settings of one GTSP (or random-pruning) run, validated on construction.

    The defaults below are the library's, and the only copy: the CLI and the pipeline read them
    from this class (``tests/compress/test_cli_defaults.py`` holds them to it)."""

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
            raise ConfigError(f"--allocation {self.allocation!r}: expected auto, {' or '.join(ALLOCATIONS)}")
        if "tokens" in self.keep:
            self.token_keep = self.keep["tokens"]
        structural = [k for k in self.keep if k != "tokens"]
        if self.target_flops is not None and structural:
            raise ConfigError("give either --target-flops or per-axis --keep ratios (heads/ffn/layers), not both")
        if self.target_flops is None and not self.keep and "weights" not in self.axes:
            raise ConfigError("no budget: give --target-flops or per-axis --keep ratios")
        if self.target_flops is not None and not 0.0 < self.target_flops < 1.0:
            raise ConfigError(f"--target-flops must lie in (0, 1) (fraction of FLOPs kept), got {self.target_flops}")
        flop_axes = ("auto", "heads", "ffn", "layers", "tokens")
        if self.target_flops is not None and not any(a in flop_axes for a in self.axes):
            # refused here, before the checkpoint is loaded and its cost measured (check_feasible)
            raise ConfigError(
                f"--target-flops {self.target_flops:g} cannot be met with --axes {','.join(self.axes)}: "
                "the weights axis does not reduce FLOPs (it zeroes weights; every matmul still runs): "
                "--target-flops needs heads, ffn, layers or tokens in --axes"
            )
        if not 0.0 < self.token_keep <= 1.0:
            raise ConfigError(f"--token-keep must lie in (0, 1] (fraction of nodes kept), got {self.token_keep}")
        if not 0.0 <= self.weight_sparsity < 1.0:
            raise ConfigError(
                f"--weight-sparsity must lie in [0, 1) (fraction of weights zeroed), got {self.weight_sparsity}"
            )
        if self.weight_sparsity > 0 and "weights" not in self.axes:
            self.axes = (*self.axes, "weights")
        if "weights" in self.axes and self.weight_sparsity == 0.0:
            self.weight_sparsity = 0.5
        # a zero temperature or NaN weight makes every weight NaN in the first step, and a NaN or
        # negative time budget silently cuts training to one epoch: refused before any work starts
        check_distillation(self.kd_weight, self.kd_temperature, "--kd-weight", "kd_temperature")
        check_time_budget(self.time_budget_s, "--time-budget")
        check_time_budget(self.finetune_time_budget_s, "--finetune-time-budget")

    @property
    def structured_axes(self) -> tuple[str, ...]:
        return tuple(a for a in self.axes if a in ("heads", "layers", "ffn"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["axes"] = list(self.axes)
        return d


def resolve_auto(cfg: PruneConfig, model: GraphModel) -> PruneConfig:
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
