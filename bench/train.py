"""Train GT and GPS on the reference benchmarks under a per-run time budget and record the test
metric, parameter count and wall time next to the published full-scale results.

    python bench/train.py                     # all runs, 4 min each
    python bench/train.py --minutes 20 --only gps:tu:NCI1

Writes ``bench/results/train/train.json`` (with the command, commit, machine and date of the run) and
``train.png``. The budgets make these *reduced* runs on a
2-core CPU; the published numbers come from full splits, 100+ epochs and GPUs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    RESULTS,
    at_least,
    data_root,
    earlier_runs,
    missing_data,
    positive_minutes,
    provenance,
    set_threads,
    unknown_names,
)
from bench._json import read_json, write_json
from gtcompress.train.loop import TrainConfig
from gtcompress.train.metrics import higher_is_better
from gtcompress.train.recipe import DataSpec, fit

# Published full-scale test results (GT: Dwivedi & Bresson 2020, sparse graph, LapPE;
# GPS: Rampášek et al. 2022). Metrics in percent except where noted.
PUBLISHED = {
    ("gt", "pattern"): 84.8,
    ("gt", "cluster"): 73.2,
    ("gps", "pattern"): 86.7,
    ("gps", "cluster"): 78.0,
    ("gps", "molhiv"): 78.8,
}

# (name, size, model overrides, train overrides). Reduced splits keep each run inside its budget.
RUNS: list[tuple[str, str, str, dict, dict]] = [
    ("gt", "cluster", "2000,500,500", {"hidden": 64, "num_layers": 4, "heads": 4}, {"batch_size": 32}),
    ("gps", "cluster", "2000,500,500", {"hidden": 64, "num_layers": 4, "heads": 4}, {"batch_size": 32}),
    ("gt", "pattern", "2000,500,500", {"hidden": 64, "num_layers": 4, "heads": 4}, {"batch_size": 32}),
    ("gps", "pattern", "2000,500,500", {"hidden": 64, "num_layers": 4, "heads": 4}, {"batch_size": 32}),
    ("gt", "tu:NCI1", "full", {"hidden": 64, "num_layers": 4, "heads": 4, "readout": "mean"}, {"batch_size": 64}),
    ("gps", "tu:NCI1", "full", {"hidden": 64, "num_layers": 4, "heads": 4, "readout": "mean"}, {"batch_size": 64}),
    ("gt", "molhiv", "full", {"hidden": 64, "num_layers": 4, "heads": 4, "readout": "mean"}, {"batch_size": 128}),
    ("gps", "molhiv", "full", {"hidden": 64, "num_layers": 4, "heads": 4, "readout": "mean"}, {"batch_size": 128}),
]


def _root(name: str) -> str | None:
    if name.startswith("tu:"):
        return str(data_root() / "TU")
    if name == "molhiv":
        return str(data_root() / "ogbg_molhiv")
    if name.startswith("ogb:"):
        return str(data_root() / "ogb")
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=positive_minutes, default=4.0, help="wall-time budget per run")
    ap.add_argument(
        "--epochs", type=at_least(1), default=200, help="upper bound on epochs (the budget usually stops first)"
    )
    ap.add_argument("--only", nargs="*", default=None, help="runs as ARCH:DATASET, e.g. gps:tu:NCI1")
    ap.add_argument("--out", type=Path, default=RESULTS / "train" / "train.json")
    ap.add_argument(
        "--threads",
        type=at_least(0),
        default=0,
        help="torch intra-op threads (0 = torch's default); use 1 "
        "when another process shares the CPU: OpenMP spin-waits make 2 threads ~15x slower then",
    )
    args = ap.parse_args(argv)
    if problem := unknown_names("--only", args.only, [f"{a}:{n}" for a, n, *_ in RUNS]):
        ap.error(problem)
    if problem := missing_data(_root(n) for a, n, *_ in RUNS if not args.only or f"{a}:{n}" in args.only):
        ap.error(problem)
    prov = provenance()
    set_threads(prov, args.threads)

    # Every run keeps its earlier result until this one has its new row, which then takes the old row's
    # place, so the file always holds the full table. Dropping the selected runs' rows up front (as this did)
    # lost them for good when the run was stopped before reaching them: the file is rewritten after every row.
    old = read_json(args.out) if args.out.exists() else {}
    rows: list[dict] = list(old.get("runs", []))
    redone: set[str] = set()
    for arch, name, size, model_kw, train_kw in RUNS:
        if args.only and f"{arch}:{name}" not in args.only:
            continue
        spec = DataSpec(name, _root(name), size, seed=0)
        warmup = 2 if name in ("molhiv",) else 5
        cfg = TrainConfig(epochs=args.epochs, warmup_epochs=warmup, time_budget_s=args.minutes * 60, **train_kw)
        t0 = time.perf_counter()
        res = fit(spec, arch, model_kw, cfg)
        m = res.meta["metrics"]
        scale = 100.0 if higher_is_better(m["metric"]) else 1.0
        key = name.split(":")[-1].lower()
        row = {
            "arch": arch,
            "dataset": name,
            "size": size,
            "splits": {k: len(v) for k, v in res.dataset.splits.items()},
            "metric": m["metric"],
            "test": m["test"] * scale,
            "val": m["val"] * scale,
            "published": PUBLISHED.get((arch, key)),
            "params": m["params"],
            "epochs": m["epochs_run"],
            "best_epoch": m["best_epoch"],
            "train_time_s": m["train_time_s"],
            "total_time_s": time.perf_counter() - t0,
            "model": res.model.config.to_dict(),
            "train": cfg.to_dict(),
        }
        key = f"{arch}:{name}"
        at = next((i for i, r in enumerate(rows) if f"{r['arch']}:{r['dataset']}" == key), None)
        if at is None:
            rows.append(row)
        else:
            rows[at] = row
        redone.add(key)
        print(
            f"{arch:4s} {name:10s} test {row['metric']} {row['test']:.2f} (published {row['published']}) "
            f"params {row['params']} epochs {row['epochs']} time {row['train_time_s']:.0f}s",
            flush=True,
        )
        kept = any(f"{r['arch']}:{r['dataset']}" not in redone for r in rows)
        before = earlier_runs(old) if kept else []  # the runs whose rows are still in the table
        doc = {**prov, **({"earlier_runs": before} if before else {}), "minutes_per_run": args.minutes, "runs": rows}
        write_json(args.out, doc)
        _plot(rows, args.out.with_suffix(".png"))  # with the JSON, so that the two show the same rows


def _plot(rows: list[dict], path: Path) -> None:
    from bench._plot import paired_bars

    paired_bars(
        path,
        [f"{r['arch']}\n{r['dataset'].split(':')[-1]}" for r in rows],
        ("gtcompress (reduced, CPU budget)", [r["test"] for r in rows]),
        ("published (full scale)", [r["published"] if r["published"] is not None else math.nan for r in rows]),
        ylabel="test metric (%)",
        title="Dense model quality: reduced runs vs published",
    )


if __name__ == "__main__":
    main()
