"""The compression report: one JSON document per run, stored in the checkpoint and next to it.

It records what each axis removed (which heads, sublayers, FFN units, the token ratios, edges and
weights), the measured cost before and after (params, non-zero params, weight bytes, FLOPs on the
same reference batch), the metric before and after, the settings, the seed and timings, and what
fine-tuning did, including whether it kept the weights it started from (:func:`finetune_record`).
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any

from gtcompress import __version__
from gtcompress.cost import Cost

if TYPE_CHECKING:
    from gtcompress.train.loop import TrainResult

__all__ = [
    "checkpoint_metrics",
    "compression_report",
    "cost_summary",
    "finetune_record",
    "kept_start_notes",
    "layer_table",
]


def cost_summary(before: Cost, after: Cost) -> dict[str, Any]:
    return {
        "before": before.to_dict(),
        "after": after.to_dict(),
        "flops_ratio": after.flops / max(before.flops, 1),
        "params_ratio": after.params / max(before.params, 1),
        "nonzero_params_ratio": after.nonzero_params / max(before.nonzero_params, 1),
        "weight_bytes_ratio": after.weight_bytes / max(before.weight_bytes, 1),
    }


def compression_report(
    method: str,
    settings: dict[str, Any],
    seed: int,
    metric: str,
    metrics_before: dict[str, float],
    metrics_after: dict[str, float],
    cost_before: Cost,
    cost_after: Cost,
    removed: dict[str, Any],
    model_before: Any,
    model_after: Any,
    timings: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report (plain JSON types only)."""
    return {
        "method": method,
        "gtcompress_version": __version__,
        "python": platform.python_version(),
        "seed": seed,
        "settings": settings,
        "metric": {
            "name": metric,
            "before": metrics_before,
            "after": metrics_after,
            "delta": {k: metrics_after[k] - metrics_before[k] for k in metrics_before if k in metrics_after},
        },
        "cost": cost_summary(cost_before, cost_after),
        "removed": removed,
        "layers_before": model_before,
        "layers_after": model_after,
        "timings_s": timings,
        **(extra or {}),
    }


def layer_table(config: Any) -> list[dict[str, Any]]:
    """``[{heads, ffn_dim, token_keep}]`` per layer of a :class:`ModelConfig`."""
    return [{"heads": s.heads, "ffn_dim": s.ffn_dim, "token_keep": s.token_keep} for s in config.layers]


def checkpoint_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics`` entry a compressed checkpoint records, from its compression report: the
    compressed model's own metric and parameter count (what ``gtc info`` shows as recorded).

    A checkpoint written with its parent's meta copied would carry the *dense* model's metrics
    (val, test and params) next to a smaller model, so every writer of a compressed checkpoint
    (``gtc prune``/``gtc sparsify``, the pipeline's stages) takes them from here."""
    m = report["metric"]
    return {
        "metric": m["name"],
        "val": m["after"].get("val"),
        "test": m["after"].get("test"),
        "params": report["cost"]["after"]["params"],
    }


def finetune_record(res: TrainResult, metric: str) -> dict[str, Any]:
    """The ``finetune`` entry of a report for one :func:`~gtcompress.train.loop.train` run. Where the
    starting weights competed (``keep_start``), it adds their validation metric (``start_val``), that
    of the best epoch trained (``best_epoch_val``, None if none was selectable) and ``kept_start``:
    whether the model returned is the one fine-tuning started from."""
    out: dict[str, Any] = {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "train_time_s": res.train_time_s}
    if res.start_val is not None:
        best = res.history[res.best_epoch][f"val_{metric}"] if res.best_epoch >= 0 else None
        out.update(start_val=res.start_val, best_epoch_val=best, kept_start=res.kept_start)
    return out


def kept_start_notes(report: dict[str, Any]) -> list[str]:
    """One sentence per fine-tuning phase of ``report`` (``finetune`` and its ``lead_in``) that did not
    beat the weights it started from and so returned them: a user who asked for N epochs of
    fine-tuning would otherwise take the model for a fine-tuned one."""
    metric = report["metric"]["name"]
    ft = report.get("finetune") or {}
    phases = [("fine-tuning", ft), ("the lead-in", ft.get("lead_in") or {})]
    notes = []
    for name, rec in phases:
        if not rec.get("kept_start"):
            continue
        best = rec.get("best_epoch_val")
        trained = (
            f"its best epoch ({rec['best_epoch'] + 1} of {rec['epochs_run']}) reached {best:.4f}"
            if best is not None
            else "no epoch could be selected"
        )
        notes.append(
            f"{name} did not beat its start on val {metric} ({trained}, the start {rec['start_val']:.4f}): "
            "the starting weights were kept"
        )
    return notes
