"""``gtc pipeline``: options → :class:`~gtcompress.pipeline.PipelineConfig` → :func:`~gtcompress.pipeline.run_pipeline`
→ a table. Everything else (stages, cache, report) is the library's, :mod:`gtcompress.pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import check_data_option, check_out_writable, console, dir_value, path_value, user_errors
from gtcompress.pipeline import DEFAULT_OUT

if TYPE_CHECKING:
    from gtcompress.pipeline import PipelineConfig


def register(app: typer.Typer) -> None:
    """Add ``pipeline`` to the ``gtc`` app."""
    app.command("pipeline")(pipeline_cmd)


@user_errors
def pipeline_cmd(
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML or TOML config (sections as in gtcompress/pipeline/config.py).",
            parser=path_value,
            metavar="<path>",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override, e.g. --set 'prune.budgets=[0.5,0.3]' (quoted: [ ] is a shell glob)."),
    ] = None,
    data: Annotated[str | None, typer.Option(help="Dataset (overrides data.name).")] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            help="Directory of a file-based dataset (e.g. ../shared/data/TU).",
            parser=dir_value,
            metavar="<dir>",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Start from this trained checkpoint, on the dataset and split it records.",
            parser=path_value,
            metavar="<path>",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Run directory (re-running resumes).", parser=path_value, metavar="<path>")
    ] = DEFAULT_OUT,
) -> None:
    """The main job: train (or take) a GT, TEDDY-sparsify, GTSP-prune, export, verify, profile, serve.

    Default: CLUSTER-small, GT and GPS, three FLOP budgets plus a random baseline; about 18 minutes on
    2 CPU cores. Example: gtc pipeline --set 'prune.budgets=[0.5]' --out runs/demo
    """
    from rich.table import Table

    from gtcompress.data import check_data_root
    from gtcompress.pipeline import run_pipeline
    from gtcompress.pipeline.report import int8_notes, table_cells

    check_out_writable(out, inside=True)  # the run's folder is made at once, but named here by its option
    overrides = list(set_ or [])
    check_data_option(data)  # named as the user typed it, not as the data.name override it becomes
    for option, key, value in (
        ("--data", "data.name", data),
        ("--data-root", "data.root", data_root),
        ("--checkpoint", "train.checkpoint", checkpoint),
    ):
        if value is not None:
            _refuse_two_values(option, key, str(value), overrides)
            overrides.append(f"{key}={value}")
    cfg = _with_checkpoint_data(config, overrides)
    if data_root:  # named as the user typed it; PipelineConfig.check names data.root, which a --set gives
        check_data_root(cfg["data"]["name"], data_root, "--data-root")
    report = run_pipeline(cfg, out, log=console.print)
    # report.md's cells (its other columns are there), under headers that fit 80 columns unfolded
    shown = {
        "model": "model",
        "lowering": "lowering",
        "test": "test",
        "Δ vs dense-ft": "Δ vs\ndense-ft",
        "Δ vs dense": "Δ vs\ndense",
        "latency p50 (ms)": "p50\nms",
        "speed-up": "speed-\nup",
    }
    metric = report["rows"][0]["metric"] if report["rows"] else "test"
    t = Table(title=f"pipeline → {out}/report.md (test: {metric})", title_justify="left")
    for col, header in shown.items():
        t.add_column(header, justify="left" if col in ("model", "lowering") else "right", overflow="fold")
    for c in map(table_cells, report["rows"]):
        t.add_row(*(c[col] for col in shown))
    console.print(t)
    for note in int8_notes(report["rows"]):  # which int8 rows keep blocks float32, or missed the bound
        console.print(note.replace("`", ""), markup=False, highlight=False)
    failed = (report.get("profile") or {}).get("failed") or []
    if failed:  # each was logged as it failed, long before this table; the run's products are all there
        n = len(failed)
        console.print(
            f"[yellow]profile incomplete: {n} measurement{'s' if n > 1 else ''} failed, named in {out}/report.md; "
            f"the next run measures {'them' if n > 1 else 'it'} again[/]"
        )


def _refuse_two_values(option: str, key: str, value: str, overrides: list[str]) -> None:
    """Refuse ``--set KEY=...`` beside the option that sets the same key to something else: the option
    was applied last and won without a word (``--data pattern --set data.name=csl`` ran PATTERN)."""
    import os

    import yaml

    from gtcompress.errors import ConfigError

    for item in overrides:
        name, sep, given = item.partition("=")
        if not sep or name.strip() != key:
            continue
        try:  # as the override is read: data.name='csl' is csl
            read = yaml.safe_load(given)
        except yaml.YAMLError:
            read = given  # the override's own check names it
        if os.path.normpath(str(read).strip()) != os.path.normpath(value):
            raise ConfigError(f"{option} {value} and --set {item} set {key} twice; give one of them")


def _with_checkpoint_data(path: Path | None, overrides: list[str]) -> PipelineConfig:
    """The run's config; with a checkpoint given (``--checkpoint``, ``train.checkpoint``), its
    ``data`` section is the dataset the checkpoint records, split as when it was trained.

    The model must be compressed and measured on its own dataset and split: another split's test
    graphs may be its training graphs (a leaked metric), another dataset's inputs it cannot read.
    So the recorded dataset is the default, laid under the config file and ``--set``/``--data``;
    what they set must agree with it (``data.root`` aside, which only says where the files are
    now), else one error names both. A checkpoint that records no dataset takes the configured
    one, which the pipeline checks against the model's inputs."""
    from gtcompress.checkpoint import read_checkpoint_meta
    from gtcompress.checkpoint_data import data_spec_conflicts
    from gtcompress.data import GENERATED
    from gtcompress.errors import ConfigError
    from gtcompress.pipeline import PipelineConfig, load_config
    from gtcompress.pipeline.context import data_spec

    cfg = load_config(path, overrides)
    ckpt = cfg["train"]["checkpoint"]
    if ckpt is None:
        return cfg
    meta = read_checkpoint_meta(ckpt)
    recorded = {k: v for k, v in (meta.get("dataset") or {}).items() if k != "info"}
    if not recorded.get("name"):
        return cfg
    if str(recorded["name"]).strip().lower() in GENERATED:  # a root gtc train once took and ignored: no files
        recorded.pop("root", None)
    base = PipelineConfig.default().with_overrides({"data": recorded})
    cfg = (base.with_file(path) if path is not None else base).with_overrides(overrides)
    conflicts = data_spec_conflicts(meta, data_spec(cfg))
    if conflicts:
        key, was, now = conflicts[0]
        raise ConfigError(
            f"data.{key} {now!r} (from --data, --set or --config) conflicts with the dataset of checkpoint {ckpt} "
            f"(config.json dataset.{key} {was!r}); the model is measured on the dataset and split it was trained "
            f"on: leave data.{key} out to use the checkpoint's"
        )
    return cfg
