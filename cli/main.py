"""``gtc``: compress, export and serve graph transformers.

Examples::

    gtc data generate cluster --size small
    gtc train --data cluster --arch gt --epochs 20 --out runs/gt-cluster
    gtc eval runs/gt-cluster
    gtc info runs/gt-cluster
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cli import compress_cmds, export_cmds, profile_cmd, runtime_cmds
from cli import pipeline as cli_pipeline
from cli.common import (
    OneLineErrorsGroup,
    check_checkpoint_out,
    check_data_option,
    console,
    dir_value,
    finite_number,
    join_help_paragraphs,
    parse_pe,
    path_value,
    seconds,
    table,
    training_learning_rate,
    user_errors,
)
from cli.library_values import MAX_SEED, library_constant, library_defaults

app = typer.Typer(
    cls=OneLineErrorsGroup,
    help="gtcompress: make a trained graph transformer smaller and faster, then ship it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate benchmark datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
compress_cmds.register(app)
export_cmds.register(app)
profile_cmd.register(app)
runtime_cmds.register(app)

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="Dataset: cluster, pattern, csl (generated) or tu:NAME, ogb:NAME, molhiv (read from --data-root).",
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Directory of a file-based dataset (e.g. ../shared/data/TU).",
        parser=dir_value,
        metavar="<dir>",
    ),
]
SizeOpt = Annotated[str, typer.Option(help="small, full or TRAIN,VAL,TEST counts (generated datasets, molhiv).")]


@data_app.command("generate")
@user_errors
def data_generate(
    name: Annotated[str, typer.Argument(help="pattern, cluster or csl")],
    size: Annotated[
        str, typer.Option(help="small, full or TRAIN,VAL,TEST graph counts (csl: small or full, 150 graphs).")
    ] = "small",
    seed: Annotated[int, typer.Option(min=0, help="Generator seed.")] = 0,
) -> None:
    """Generate a synthetic benchmark (cached on disk) and print its statistics.

    Example: gtc data generate pattern --size full --seed 1
    """
    import warnings

    from gtcompress.data.cache import CacheWriteWarning
    from gtcompress.errors import GTCompressError
    from gtcompress.train.recipe import DataSpec

    if name.lower() not in ("pattern", "cluster", "csl"):
        raise GTCompressError(f"unknown generated dataset {name!r}; expected pattern, cluster or csl")
    # The cache file is this command's only output: one it cannot write is its failure, not a warning under a
    # table of statistics with exit status 0 (gtc train, which only reads the data, still just warns).
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWriteWarning)
        try:
            ds = DataSpec(name.lower(), size=size, seed=seed).load()
        except CacheWriteWarning as e:
            raise GTCompressError(f"{e}; set GTCOMPRESS_CACHE to a folder that can be written") from None
    s = ds.summary()
    rows = [{"split": k, **v} for k, v in s.items() if isinstance(v, dict)]
    console.print(table(f"{ds.info.name} ({ds.info.task_level}-level, metric {ds.info.metric})", rows))


# gtc train's defaults are the library's (ModelConfig, TrainConfig, DataSpec), read without importing
# them (cli.library_values.library_defaults: their modules import torch), except the number of epochs.
_MODEL = library_defaults("gtcompress.models.config", "ModelConfig")
_TRAIN = library_defaults("gtcompress.train.loop", "TrainConfig")
_DATA = library_defaults("gtcompress.train.recipe", "DataSpec")
#: ``--readout``'s choices, ``ModelConfig``'s ``READOUTS`` (a Literal: typer offers its values as choices).
Readout = Literal[library_constant("gtcompress.models.config", "READOUTS")]  # type: ignore[valid-type]
#: ``gtc train``'s epochs, kept at what the command always used rather than TrainConfig.epochs (50):
#: the one option whose default departs from the library's (tests/compress/test_cli_defaults.py).
TRAIN_EPOCHS = 30
TimeBudgetOpt = Annotated[float, typer.Option(callback=seconds, help="Stop after this many seconds (0 = none).")]


@app.command()
@user_errors
def train(
    data: DataOpt = "cluster",
    out: Annotated[
        Path, typer.Option(help="Checkpoint directory to write.", parser=path_value, metavar="<path>")
    ] = Path("runs/model"),
    data_root: RootOpt = None,
    size: SizeOpt = _DATA["size"],
    arch: Annotated[str, typer.Option(help="gt, gps or graphormer")] = "gt",
    hidden: Annotated[int, typer.Option(min=8)] = _MODEL["hidden"],
    layers: Annotated[int, typer.Option(min=1)] = _MODEL["num_layers"],
    heads: Annotated[int, typer.Option(min=1)] = _MODEL["heads"],
    pe: Annotated[str | None, typer.Option(help="Positional encodings, e.g. lap:8 or rwse:20 or none.")] = None,
    dropout: Annotated[float, typer.Option(callback=finite_number(0.0, 0.9), help="Dropout rate, 0 to 0.9.")] = _MODEL[
        "dropout"
    ],
    readout: Annotated[
        Readout,
        typer.Option(
            help="How a graph-level model pools its nodes per graph (a node-level dataset pools nothing: only the "
            "default)."
        ),
    ] = _MODEL["readout"],
    epochs: Annotated[int, typer.Option(min=1)] = TRAIN_EPOCHS,
    batch_size: Annotated[int, typer.Option(min=1)] = _TRAIN["batch_size"],
    lr: Annotated[float, typer.Option(callback=training_learning_rate, help="Peak learning rate (> 0).")] = _TRAIN[
        "lr"
    ],
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seeds the model, the training and the data split.")
    ] = _TRAIN["seed"],
    time_budget: TimeBudgetOpt = _TRAIN["time_budget_s"],
) -> None:
    """Train a graph transformer and write a checkpoint (model.safetensors + config.json).

    Example: gtc train --data tu:NCI1 --data-root ../shared/data/TU --arch gps --pe rwse:20 --out runs/gps-nci1
    """
    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.data import check_data_root
    from gtcompress.train.loop import TrainConfig
    from gtcompress.train.recipe import DataSpec, fit

    check_checkpoint_out(out)
    check_data_root(data, data_root, "--data-root")
    _check_train_options(size, hidden, heads)
    spec = DataSpec(data, str(data_root) if data_root else None, size, seed)
    overrides = {"hidden": hidden, "num_layers": layers, "heads": heads, "dropout": dropout, "readout": readout}
    if pe is not None:
        overrides["pe"] = parse_pe(pe)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, time_budget_s=time_budget)
    res = fit(spec, arch, overrides, cfg)
    save_checkpoint(out, res.model, res.meta)
    m = res.meta["metrics"]
    console.print(
        table(
            f"{arch} on {res.dataset.info.name} → {out}",
            [
                {
                    "metric": m["metric"],
                    "val": m["val"],
                    "test": m["test"],
                    "best epoch": m["best_epoch"],
                    "params": m["params"],
                    "time (s)": m["train_time_s"],
                }
            ],
        )
    )


def _check_train_options(size: str, hidden: int, heads: int) -> None:
    """Option combinations the library would reject late or with advice the CLI cannot follow: a bad
    ``--size`` (an empty split is refused by ``parse_size``), and heads that do not divide
    ``--hidden`` (the library's "set head_dim" names no ``gtc train`` option)."""
    from gtcompress.data import parse_size
    from gtcompress.errors import ConfigError

    parse_size(size)
    if hidden % heads:
        raise ConfigError(
            f"--hidden {hidden} must be a multiple of --heads {heads} (each head gets hidden/heads channels)"
        )


@app.command("eval")
@user_errors
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory.", parser=path_value)],
    data: Annotated[str | None, typer.Option(help="Evaluate on another dataset (default: the training one).")] = None,
    data_root: RootOpt = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
) -> None:
    """Evaluate a checkpoint on a split of its dataset (or another with the same inputs and task).

    Its own dataset is split as when it was trained; a TEDDY checkpoint is fed graphs sparsified as
    its config.json records, the inputs it was trained and measured on.

    Example: gtc eval runs/gt-cluster --split val
    """
    from gtcompress.checkpoint import load_checkpoint
    from gtcompress.checkpoint_data import (
        checkpoint_data_spec,
        load_for_model,
        recorded_task,
        sparsified,
        teddy_transform,
    )
    from gtcompress.data import check_data_root
    from gtcompress.errors import GTCompressError
    from gtcompress.train.loop import evaluate

    check_data_option(data)
    model, meta = load_checkpoint(checkpoint)
    # the checkpoint's own dataset, split as when it was trained; --data another: that one's defaults
    spec = checkpoint_data_spec(meta, data, str(data_root) if data_root else None)
    if spec is None:
        raise GTCompressError(f"{checkpoint}: no dataset recorded in the checkpoint; pass --data")
    check_data_root(spec.name, data_root, "--data-root")
    what = f"--data {data}" if data is not None else f"dataset {spec.name}"
    ds = load_for_model(spec, model.config, what, checkpoint)
    _check_inputs(checkpoint, model.config, ds.info, what, recorded_task(meta))
    if split not in ds.splits:
        raise GTCompressError(f"unknown split {split!r}; this dataset has {', '.join(ds.splits)}")
    # a TEDDY model was trained on sparsified graphs: evaluate it on the graphs it will be served
    ds = sparsified(ds, teddy_transform(meta, model.config))
    res = evaluate(model, ds[split], ds.info)
    console.print(table(f"{checkpoint} on {ds.info.name}/{split}", [{"graphs": len(ds[split]), **res}]))


def _check_inputs(checkpoint: Path, config: object, info: object, what: str, task: str | None = None) -> None:
    """Refuse a dataset whose inputs or targets the model cannot take, before evaluating: an
    IndexError (a category it has no embedding for) or a shape error mid-run otherwise, and for a
    task other than the recorded one a metric of outputs that mean something else."""
    from gtcompress.checkpoint_data import input_mismatch
    from gtcompress.errors import ConfigError

    problem = input_mismatch(config, info, task)  # type: ignore[arg-type]
    if problem is not None:
        raise ConfigError(f"{what} does not fit the model of {checkpoint}: {problem}")


@app.command()
@user_errors
def info(checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory.", parser=path_value)]) -> None:
    """Show a checkpoint's architecture, per-layer sizes, parameters and recorded metrics.

    Example: gtc info runs/gt-cluster
    """
    from gtcompress.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    c = model.config
    from gtcompress.cost import param_stats

    # the figures of the compression report (weight bytes hold the buffers too), and the non-zero
    # parameters a weight-sparsified checkpoint keeps
    params, nonzero, nbytes = param_stats(model)
    console.print(
        table(
            f"{checkpoint}",
            [
                {
                    "arch": c.arch,
                    "task": c.task_level,
                    "hidden": c.hidden,
                    "layers": c.num_layers,
                    "pe": ",".join(f"{k}:{v}" for k, v in c.pe.items()) or "none",
                    "params": params,
                    "non-zero": nonzero,
                    "weight MB": nbytes / 1e6,
                }
            ],
        )
    )
    console.print(f"compressed: {_compression_summary(model, meta)}", markup=False, soft_wrap=True)
    console.print(
        table(
            "layers",
            [
                {"layer": i, "heads": s.heads, "ffn_dim": s.ffn_dim, "token_keep": s.token_keep}
                for i, s in enumerate(c.layers)
            ],
        )
    )
    m = meta.get("metrics")
    if m:
        console.print(table("recorded metrics", [{k: v for k, v in m.items() if not isinstance(v, dict)}]))


def _compression_summary(model: Any, meta: dict[str, Any]) -> str:
    """What was done to a checkpoint that changes what it computes or takes as input, in one cell: a
    TEDDY checkpoint must be served on sparsified inputs and a top-k GPS attends over fewer pairs, which
    neither its sizes nor its layers table show."""
    from gtcompress.checkpoint_data import teddy_ratio

    c = model.config
    details = []
    if teddy_ratio(meta) > 0:
        if meta["teddy"].get("threshold") is None:
            details.append(f"inputs lose {teddy_ratio(meta):.0%} of edges to TEDDY")
        else:  # the global rule: other graphs lose more or fewer than the training split's share
            measured = _edges_dropped_per_split(meta)
            details.append(
                "inputs lose their edges scoring below a TEDDY threshold"
                + (
                    f", set to drop {teddy_ratio(meta):.0%} of the training split's edges; dropped: {measured}"
                    if measured
                    else f" ({teddy_ratio(meta):.0%} of the training split's edges)"
                )
            )
    if getattr(c, "attention_topk", 0) > 0:
        details.append(f"attention over edges + top-{c.attention_topk} nodes by {c.attention_score}")
    report = meta.get("compression")
    method = report.get("method") if isinstance(report, dict) else None
    if not isinstance(method, str):
        return "; ".join(details) or "none"
    label = {"gtsp": "GTSP pruning", "random": "random pruning", "dense-ft": "fine-tuned dense"}.get(method, method)
    return f"{label} ({'; '.join(details)})" if details else label


def _edges_dropped_per_split(meta: dict[str, Any]) -> str | None:
    """``"29.5% of train, 33.3% of val, 30.7% of test"``: the share of each split's edges the TEDDY
    threshold dropped, from the counts ``gtc sparsify`` records in its report, or ``None`` where none are
    recorded (a checkpoint pruned from it records its own report). The ratio alone is the training split's
    target: one threshold drops other shares of other graphs (MUTAG, 0.3: 33.3 % of the val edges)."""
    report = meta.get("compression")
    removed = report.get("removed") if isinstance(report, dict) else None
    edges = removed.get("edges") if isinstance(removed, dict) else None
    counts = edges.get("counts") if isinstance(edges, dict) else None
    if not isinstance(counts, dict) or not counts:
        return None
    shares = []
    for split, c in counts.items():
        before, after = (c.get("before"), c.get("after")) if isinstance(c, dict) else (None, None)
        if not (isinstance(before, int) and isinstance(after, int) and 0 <= after <= before and before > 0):
            return None  # not what gtc sparsify writes: no figure rather than a wrong one
        shares.append(f"{1 - after / before:.1%} of {split}")
    return ", ".join(shares)


cli_pipeline.register(app)  # after info: the order of `gtc --help`
join_help_paragraphs(app)  # after every command is registered


def main() -> None:
    app()


if __name__ == "__main__":
    main()
