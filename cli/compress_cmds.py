"""``gtc sparsify`` (TEDDY) and ``gtc prune`` (GTSP): compressed checkpoint + compression report.

Both read a trained checkpoint and the dataset it records (``--data-root`` overrides where the
files are), write a new checkpoint (an ordinary one: ``gtc eval``/``info``/``export`` work on it)
whose ``config.json`` holds the report under ``compression``, and the same report as
``OUT/compression_report.json``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.checkpoint_dataset import DataOpt, RootOpt, load_with_dataset
from cli.common import (
    check_checkpoint_out,
    console,
    learning_rate,
    path_value,
    seconds,
    table,
    user_errors,
)
from cli.library_values import MAX_SEED, library_defaults


def register(app: typer.Typer) -> None:
    """Add ``sparsify`` and ``prune`` to the ``gtc`` app."""
    app.command("sparsify")(sparsify_cmd)
    app.command("prune")(prune_cmd)


#: The library's defaults for ``gtc sparsify`` and ``gtc prune``.
SPARSIFY = library_defaults("gtcompress.compress.teddy", "SparsifyConfig")
PRUNE = library_defaults("gtcompress.compress.prune_config", "PruneConfig")


CheckpointArg = Annotated[Path, typer.Argument(help="Trained checkpoint directory.", parser=path_value)]
OutOpt = Annotated[
    Path, typer.Option(help="Compressed checkpoint directory to write.", parser=path_value, metavar="<path>")
]
#: a checkpoint whose weights are at least this share exactly zero was sparsified (trained dense
#: weights are practically never exactly zero): gtc prune keeps its sparsity unless told otherwise
INHERITED_SPARSITY = 0.05


def _zero_share(model: Any) -> float:
    """The share of the weights that weight sparsity applies to that are exactly zero."""
    from gtcompress.compress.sparsity import nonzero, prunable_weights

    params = [p for _, p in prunable_weights(model)]
    total = sum(p.numel() for p in params)
    return 1.0 - nonzero(params) / total if total else 0.0


def _save(out: Path, model: Any, meta: dict[str, Any], report: dict[str, Any], extra: dict[str, Any]) -> None:
    """The compressed checkpoint, its report inside it: one atomic save, so no checkpoint lacks its report."""
    import json

    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.compress.report import checkpoint_metrics
    from gtcompress.io import _json_default

    keep = {k: v for k, v in meta.items() if k in ("dataset", "train")}
    metrics = checkpoint_metrics(report)
    report_text = json.dumps(report, indent=2, default=_json_default) + "\n"
    save_checkpoint(
        out,
        model,
        {**keep, "metrics": metrics, "compression": report, **extra},
        files={"compression_report.json": report_text},
    )


def _summary(title: str, report: dict[str, Any]) -> None:
    from gtcompress.compress.report import kept_start_notes

    c, m = report["cost"], report["metric"]
    rows = []
    for when in ("before", "after"):
        rows.append(
            {
                "model": when,
                f"val {m['name']}": m[when].get("val", float("nan")),
                f"test {m['name']}": m[when].get("test", float("nan")),
                "params": c[when]["params"],
                "nonzero": c[when]["nonzero_params"],
                "GFLOPs": c[when]["flops"] / 1e9,
            }
        )
    console.print(table(title, rows))
    console.print(
        f"FLOPs kept {c['flops_ratio']:.3f}  params kept {c['params_ratio']:.3f}  "
        f"non-zero params kept {c['nonzero_params_ratio']:.3f}"
    )
    for note in kept_start_notes(report):
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    if c["flops_ratio"] > 1:  # said, not only shown: a user who gave --keep ratios expects a smaller model
        tokens = any(layer.get("token_keep", 1.0) < 1.0 for layer in report.get("layers_after", []))
        why = (
            " Pruned tokens make attention dense within each graph (every pair of kept tokens) instead of "
            "along its edges, which costs more than it saves on graphs of many nodes and few edges; prune "
            "without the tokens axis for such graphs."
            if tokens
            else ""
        )
        console.print(
            f"[yellow]warning:[/yellow] the compressed model takes {c['flops_ratio']:.2f}x the FLOPs of the "
            f"model it was made from on these graphs.{why}",
            soft_wrap=True,
        )


@user_errors
def sparsify_cmd(
    checkpoint: CheckpointArg,
    edges: Annotated[
        float, typer.Option(help="Fraction of edges to remove (TEDDY scores; self-loops kept).")
    ] = SPARSIFY["edges"],
    weights: Annotated[
        float, typer.Option(help="Fraction of weights to zero (ℓ0-projected gradient descent).")
    ] = SPARSIFY["weights"],
    global_: Annotated[
        bool, typer.Option("--global", help="One score threshold for the dataset instead of the ratio per graph.")
    ] = not SPARSIFY["per_graph"],
    attention_topk: Annotated[
        int,
        typer.Option(help="GPS: global attention over input edges + self + top-k nodes per graph (-1: calibrate k)."),
    ] = SPARSIFY["attention_topk"],
    attention_coverage: Annotated[
        float, typer.Option(help="Calibration: share of the dense attention mass the sparse graph keeps.")
    ] = SPARSIFY["attention_coverage"],
    kd_weight: Annotated[float, typer.Option(help="λ of CE + λ·KL(student ‖ teacher).")] = SPARSIFY["kd_weight"],
    kd_temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = SPARSIFY["kd_temperature"],
    epochs: Annotated[int, typer.Option(min=0, help="Fine-tuning epochs.")] = SPARSIFY["epochs"],
    batch_size: Annotated[int, typer.Option(min=1)] = SPARSIFY["batch_size"],
    lr: Annotated[float, typer.Option(callback=learning_rate, help="Peak learning rate (>= 0).")] = SPARSIFY["lr"],
    time_budget: Annotated[
        float, typer.Option(callback=seconds, help="Stop fine-tuning after this many seconds (0 = none).")
    ] = SPARSIFY["time_budget_s"],
    cost_graphs: Annotated[int, typer.Option(min=1, help="Validation graphs FLOPs are measured on.")] = SPARSIFY[
        "cost_graphs"
    ],
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = SPARSIFY["seed"],
    data: DataOpt = None,
    data_root: RootOpt = None,
    out: OutOpt = Path("runs/sparsified"),
) -> None:
    """TEDDY: remove low-scoring edges, sparsify weights by ℓ0 projection, distil from the dense model.

    Example: gtc sparsify runs/gt-cluster --edges 0.3 --weights 0.5 --epochs 5 --out runs/gt-teddy

    Example (GPS, sparse global attention): gtc sparsify runs/gps-cluster --attention-topk -1 --out runs/gps-sa
    """
    from gtcompress.compress.teddy import SparsifyConfig, sparsify_model
    from gtcompress.cost import EDGE_ATTENTION_KINDS

    cfg = SparsifyConfig(
        edges=edges,
        per_graph=not global_,
        weights=weights,
        kd_weight=kd_weight,
        kd_temperature=kd_temperature,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        time_budget_s=time_budget,
        cost_graphs=cost_graphs,
        seed=seed,
        attention_topk=attention_topk,
        attention_coverage=attention_coverage,
    )
    check_checkpoint_out(out, checkpoint)
    _refuse_resparsifying(checkpoint)
    model, meta, ds = load_with_dataset(checkpoint, data_root, data)
    res = sparsify_model(model, ds, cfg)
    _save(out, res.model, meta, res.report, {"teddy": res.transform.to_dict()})
    _summary(f"TEDDY {checkpoint} → {out}", res.report)
    att = res.report["removed"].get("attention")
    if att:  # what the calibration chose, and what it costs
        kept = f", {100 * att['coverage']:.1f} % of the dense attention mass kept" if "coverage" in att else ""
        target = f" (target {100 * att['target']:.0f} %)" if att.get("target") is not None else ""
        console.print(
            f"attention: input edges + self + top-{att['k']} nodes by {att['kind']} score{kept}{target}. "
            "[yellow]It changes the answers, not the cost:[/] the attention runs as the dense padded one with "
            "the other pairs masked (every pair is still computed: 'FLOPs kept' counts it a little under the "
            "dense one only because that one folds its key padding into each score product as one more column; "
            "on CPU the mask made a call up to 1.3x the dense model's time, bench/HISTORY.md); compare both with "
            "gtc profile."
        )
    attends = res.model.config.arch == "gt" and any(layer.heads > 0 for layer in res.model.config.layers)
    if edges > 0 and attends and not EDGE_ATTENTION_KINDS & res.report["cost"]["after"]["flops_by_kind"].keys():
        console.print(
            "[yellow]note:[/] removing edges saved no FLOPs here: on these graphs the attention runs on the dense "
            "lowering, which computes every pair of a graph and masks the non-edges. Edges cost FLOPs on the "
            "scatter, padded and plugin lowerings (gtc export --attention); compare them with gtc profile."
        )
    if edges > 0:
        console.print(
            "[yellow]note:[/] this model expects TEDDY-sparsified inputs "
            "(gtcompress.preprocess.teddy.teddy_sparsify with the edges, per_graph and threshold recorded under "
            "'teddy' in config.json)"
        )


@user_errors
def prune_cmd(
    ctx: typer.Context,
    checkpoint: CheckpointArg,
    target_flops: Annotated[
        float | None, typer.Option(help="Keep this fraction of the measured FLOPs, e.g. 0.4.")
    ] = None,  # not PruneConfig's 0.5: --keep ratios (or the weights axis alone) are the budget without it
    axes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: tokens, heads, layers, ffn, weights. auto: tokens,heads,layers,ffn for GPS and "
            "graphormer on graph-level tasks, heads,layers,ffn on node-level tasks (every node needs its full "
            "context); heads,ffn for GT (its attention is its message passing: every attention layer is a hop), "
            "plus layers only when the target is below what heads,ffn reach; plus any axis given a --keep ratio. "
            "auto may be combined, e.g. auto,weights."
        ),
    ] = PRUNE["axes"],
    keep: Annotated[
        str | None,
        typer.Option(
            help="Per-axis ratios instead of a FLOP target, e.g. heads=0.5,ffn=0.5,tokens=0.7; each keeps the "
            "nearest count (at least one); a heads, ffn or layers ratio below 1 that keeps them all is refused."
        ),
    ] = None,
    token_keep: Annotated[
        float,
        typer.Option(
            help="tokens axis: nodes kept per graph in each attention layer; given, it is the tokens ratio "
            "(auto then adds the tokens axis, as --keep tokens= does)."
        ),
    ] = PRUNE["token_keep"],
    allocation: Annotated[
        str,
        typer.Option(
            help="How --target-flops is split: uniform (about the same fraction of heads and of FFN units kept), "
            "global (heads and units ranked together by their gates), auto (uniform for GT, global for GPS and "
            "graphormer, whose local path lets global attention go)."
        ),
    ] = PRUNE["allocation"],
    weight_sparsity: Annotated[
        float | None,
        typer.Option(
            help="weights axis: fraction of weights zeroed; above 0 it adds the weights axis, and 0 with weights "
            "in --axes zeroes 0.5. Default: the checkpoint's own (the share of its weights that are exactly "
            "zero, as gtc sparsify --weights leaves them), else 0.",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=0, help="Mask-training epochs.")] = PRUNE["epochs"],
    finetune_epochs: Annotated[int, typer.Option(min=0, help="Fine-tuning epochs after materialising.")] = PRUNE[
        "finetune_epochs"
    ],
    batch_size: Annotated[int, typer.Option(min=1)] = PRUNE["batch_size"],
    lr: Annotated[float, typer.Option(callback=learning_rate, help="Peak learning rate (>= 0).")] = PRUNE["lr"],
    gate_lr: Annotated[
        float, typer.Option(callback=learning_rate, help="Learning rate of gates and multipliers (>= 0).")
    ] = PRUNE["gate_lr"],
    kd_weight: Annotated[float, typer.Option(help="λ of the distillation term.")] = PRUNE["kd_weight"],
    time_budget: Annotated[
        float, typer.Option(callback=seconds, help="Mask-training wall time in seconds (0 = none).")
    ] = PRUNE["time_budget_s"],
    finetune_time_budget: Annotated[
        float,
        typer.Option(
            callback=seconds,
            help="Fine-tuning wall time in seconds (0 = none): the epochs that fit are run, and the learning "
            "rate and the weights axis's sparsity schedule end with them (a budget shorter than one epoch cuts "
            "to --weight-sparsity in one shot after it).",
        ),
    ] = PRUNE["finetune_time_budget_s"],
    cost_graphs: Annotated[int, typer.Option(min=1, help="Validation graphs FLOPs are measured on.")] = PRUNE[
        "cost_graphs"
    ],
    random: Annotated[
        bool,
        typer.Option(
            "--random",
            help="Random pruning baseline at the same budget; it fine-tunes for --epochs + --finetune-epochs "
            "(or --time-budget + --finetune-time-budget seconds), the training GTSP gets in all; with only one of "
            "the two budgets, in GTSP's two phases, each with its epochs or seconds.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = PRUNE["seed"],
    data: DataOpt = None,
    data_root: RootOpt = None,
    out: OutOpt = Path("runs/pruned"),
) -> None:
    """GTSP: train gates on tokens, heads, layers and FFN units under a FLOP budget, then materialise.

    Example: gtc prune runs/gt-cluster --target-flops 0.4 --axes heads,layers,ffn --epochs 5 --out runs/gt-p40
    """
    from gtcompress.compress.prune import PruneConfig, prune_model, random_prune

    keep_d = _token_keep_as_ratio(_parse_keep(keep), axes, token_keep, ctx)
    cfg = PruneConfig(
        target_flops=target_flops,
        axes=axes,
        keep=keep_d,
        token_keep=token_keep,
        allocation=allocation,
        weight_sparsity=weight_sparsity or 0.0,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        batch_size=batch_size,
        lr=lr,
        gate_lr=gate_lr,
        kd_weight=kd_weight,
        time_budget_s=time_budget,
        finetune_time_budget_s=finetune_time_budget,
        cost_graphs=cost_graphs,
        seed=seed,
    )  # validated before the checkpoint is loaded; auto settings are resolved for its model
    check_checkpoint_out(out, checkpoint)
    model, meta, ds = load_with_dataset(checkpoint, data_root, data)
    if weight_sparsity is None and (zeros := _zero_share(model)) >= INHERITED_SPARSITY:
        # fine-tuning every weight again made a sparsified checkpoint dense, silently
        cfg = replace(cfg, weight_sparsity=round(zeros, 4))
        console.print(
            f"keeping the weight sparsity of {checkpoint}: {zeros:.1%} of its weights are zero "
            "(--weight-sparsity 0 gives a dense result)"
        )
    res = (random_prune if random else prune_model)(model, ds, cfg)
    # a pruned TEDDY model still takes TEDDY-sparsified inputs: its checkpoint says so
    _save(out, res.model, meta, res.report, {"teddy": meta["teddy"]} if meta.get("teddy") else {})
    _summary(f"{'random' if random else 'GTSP'} {checkpoint} → {out}", res.report)
    console.print(
        table(
            "layers after",
            [{"layer": i, **row} for i, row in enumerate(res.report["layers_after"])],
        )
    )


def _refuse_resparsifying(checkpoint: Path) -> None:
    """A checkpoint whose inputs are already TEDDY-sparsified cannot be sparsified again: its
    ``teddy`` record would describe only the second step, so the graphs it is served would keep
    edges it never saw. Checked before the data is loaded; sparsify the dense parent instead."""
    from gtcompress.checkpoint import read_checkpoint_meta
    from gtcompress.checkpoint_data import teddy_ratio
    from gtcompress.errors import ConfigError

    edges = teddy_ratio(read_checkpoint_meta(checkpoint))
    if edges > 0:
        raise ConfigError(
            f"{checkpoint}: already TEDDY-sparsified (config.json teddy.edges {edges}); "
            "sparsify the dense checkpoint it was made from instead"
        )


def _token_keep_as_ratio(keep: dict[str, float], axes: str, token_keep: float, ctx: typer.Context) -> dict[str, float]:
    """``keep`` with a ``--token-keep`` given on the command line as its ``tokens`` ratio, so that it
    adds the tokens axis under ``auto`` as ``--keep tokens=`` does. Without this, ``--token-keep 0.5``
    on a model whose auto axes have no tokens (GT; GPS and graphormer on node-level tasks), or
    next to ``--axes`` without tokens, was ignored: no token was pruned while the report's settings
    said token_keep 0.5. A ``--token-keep`` the axes cannot use is refused instead."""
    from gtcompress.compress.gates import parse_axes
    from gtcompress.errors import ConfigError

    source = ctx.get_parameter_source("token_keep")  # typer may ship its own click: compare by name
    if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
        return keep
    if not 0.0 < token_keep <= 1.0:  # named as given, not as the --keep tokens= ratio it becomes
        raise ConfigError(f"--token-keep must lie in (0, 1] (fraction of nodes kept), got {token_keep}")
    named = parse_axes(axes, allow_auto=True)
    if "tokens" not in named and "auto" not in named:
        raise ConfigError(
            f"--token-keep {token_keep:g} sets the tokens axis, which --axes {','.join(named)} does not name; "
            "add tokens to --axes or leave --token-keep out"
        )
    if "tokens" in keep and keep["tokens"] != token_keep:
        raise ConfigError(
            f"--token-keep {token_keep:g} and --keep tokens={keep['tokens']:g} give two token ratios; give one"
        )
    return {**keep, "tokens": token_keep}


def _parse_keep(text: str | None) -> dict[str, float]:
    """``"heads=0.5,ffn=0.7"`` → ``{"heads": 0.5, "ffn": 0.7}``. An axis given twice is refused: the
    last ratio silently won (``heads=0.5,heads=0.7`` pruned to 0.7)."""
    from gtcompress.errors import ConfigError

    if text is None:
        return {}
    if not text.strip():  # as --pe '' and --names '': an empty value is a mistake, not "no ratios"
        raise ConfigError("--keep: empty; expected entries like heads=0.5 (comma-separated)")
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        try:
            ratio = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--keep: expected entries like heads=0.5 (comma-separated), got {part!r}")
        if name in out:
            raise ConfigError(f"--keep: {name} given twice ({name}={out[name]:g} and {name}={ratio:g}); give it once")
        out[name] = ratio
    return out
