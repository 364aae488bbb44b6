"""``gtc pipeline``: options → :class:`~gtcompress.pipeline.PipelineConfig` → :func:`~gtcompress.pipeline.run_pipeline`
→ a table. Everything else (stages, cache, report) is the library's, :mod:`gtcompress.pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, table, user_errors
from gtcompress.pipeline import DEFAULT_OUT


def register(app: typer.Typer) -> None:
    """Add ``pipeline`` to the ``gtc`` app."""
    app.command("pipeline")(pipeline_cmd)


@user_errors
def pipeline_cmd(
    config: Annotated[
        Path | None, typer.Option(help="YAML or TOML config (sections as in gtcompress/pipeline/config.py).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. --set prune.budgets=[0.5,0.3]")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Dataset (overrides data.name).")] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root", help="Directory of a file-based dataset (e.g. ../shared/data/TU).", file_okay=False
        ),
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Start from this trained checkpoint.")] = None,
    out: Annotated[Path, typer.Option(help="Run directory (re-running resumes).")] = DEFAULT_OUT,
) -> None:
    """The main job: train (or take) a GT, TEDDY-sparsify, GTSP-prune, export, verify, profile, serve.

    Default: CLUSTER-small, GT and GPS, three FLOP budgets plus a random baseline; about 10 minutes on
    2 CPU cores. Example: gtc pipeline --set prune.budgets=[0.5] --out runs/demo
    """
    from gtcompress.pipeline import load_config, run_pipeline

    overrides = list(set_ or [])
    if data:
        overrides.append(f"data.name={data}")
    if data_root:
        overrides.append(f"data.root={data_root}")
    if checkpoint:
        overrides.append(f"train.checkpoint={checkpoint}")
    report = run_pipeline(load_config(config, overrides), out, log=console.print)
    rows = [
        {
            "model": r["model"],
            "lowering": r["lowering"],
            r["metric"]: r["test"],
            "Δ": -r.get("metric_drop", 0.0),
            "p50 ms": r["latency_ms_p50"],
            "speed-up": r.get("speedup_vs_dense", 1.0),
        }
        for r in report["rows"]
    ]
    console.print(table(f"pipeline → {out}/report.md", rows))
