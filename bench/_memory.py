"""What the two padded-memory benches (``eval_memory.py``, ``train_memory.py``) share: the command
line, a measurement in a child process of its own (so its peak resident memory is its own), the
whole-vs-cut rows, the result file and the bar chart (:func:`main`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def measure_in_child(script: str, arch: str, dataset: str, mode: str, tmp: Path, key: str) -> dict[str, Any]:
    """Run ``script --child ARCH DATASET MODE OUT`` on one thread; its last stdout line is the row, and
    ``row[key]`` names the .npy file it saved (``{"error": ...}`` if it failed)."""
    out = tmp / f"{arch}-{dataset.replace(':', '_')}-{mode}.npy"
    cmd = [sys.executable, script, "--child", arch, dataset, mode, str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row[key] = str(out)
    return row


def whole_vs_cut(
    script: str,
    row: dict[str, Any],
    tmp: Path,
    key: str,
    max_whole_gib: float,
    skipped: str,
    compare: Callable[[Any, Any], dict[str, float]],
) -> dict[str, Any]:
    """Measure ``row["run"]`` (``ARCH:DATASET``) whole and cut, each in a child of ``script``; the whole
    one is not started where ``row["whole_scores_gib"]`` exceeds ``max_whole_gib`` (``skipped`` says of
    what). Where both ran, their saved arrays (``key``) are compared by ``compare`` and the ratios added.
    Prints the row's line and returns the row."""
    import numpy as np

    arch, _, dataset = row["run"].partition(":")
    if row["whole_scores_gib"] > max_whole_gib:
        row["whole"] = {"skipped": f"{skipped}: {row['whole_scores_gib']:.1f} GiB"}
    else:
        row["whole"] = measure_in_child(script, arch, dataset, "whole", tmp, key)
    row["cut"] = measure_in_child(script, arch, dataset, "cut", tmp, key)
    if key in row["whole"] and key in row["cut"]:
        row.update(compare(np.load(row["whole"].pop(key)), np.load(row["cut"].pop(key))))
        row["memory_ratio"] = row["whole"]["peak_mib"] / row["cut"]["peak_mib"]
        row["speedup"] = row["whole"]["seconds"] / row["cut"]["seconds"]
    for mode in ("whole", "cut"):
        row[mode].pop(key, None)
    ratio = f"  {row['memory_ratio']:.1f}x less memory, {row['speedup']:.1f}x faster" if "speedup" in row else ""
    whole, cut = cell(row["whole"]), cell(row["cut"])
    print(f"{row['run']:26s} largest {row['largest_graph']:5d}  whole: {whole}  cut: {cut}{ratio}")
    return row


def cell(m: dict[str, Any]) -> str:
    """A measurement as ``peak MiB  seconds``, or why there is none."""
    return f"{m['peak_mib']:7.0f} MiB {m['seconds']:7.1f} s" if "peak_mib" in m else str(next(iter(m.values())))


def plot_whole_vs_cut(rows: list[dict[str, Any]], path: Path, title: str, what: str) -> None:
    """Peak memory and time per run, the whole and the cut ``what`` side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(rows))
    for ax, key, unit in ((axes[0], "peak_mib", "peak resident memory (MiB)"), (axes[1], "seconds", "time (s)")):
        for k, mode in enumerate(("whole", "cut")):
            vals = [r[mode].get(key, 0) or 0 for r in rows]
            bars = ax.bar([i + (k - 0.5) * 0.38 for i in x], vals, 0.38, label=f"{mode} {what}")
            for b, r in zip(bars, rows, strict=True):
                if key not in r[mode]:
                    ax.annotate("not run", (b.get_x() + b.get_width() / 2, 0), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [r["run"] for r in rows], fontsize=8)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


@dataclass
class MemoryBench:
    """One padded-memory bench: what differs between evaluation and training."""

    name: str  # the result folder and file stem (``eval_memory``)
    script: str  # the bench's ``__file__``: its children run it with ``--child``
    description: str
    runs: list[str]  # default ``ARCH:DATASET`` runs
    child: Callable[..., None]  # one measurement in this process (``--child ARCH DATASET MODE OUT``)
    row_of: Callable[[str], dict[str, Any]]  # a run's sizes: ``largest_graph``, ``whole_scores_gib``, ...
    key: str  # what a child saves, compared between whole and cut
    skipped: str  # what ``whole_scores_gib`` measures, for a whole run not started
    compare: Callable[[Any, Any], dict[str, float]]
    settings: Callable[[], dict[str, Any]]  # the result file's fixed settings (bounds, batch, heads)
    title: str
    what: str  # "batches" or "batch", in the chart's legend


def main(bench: MemoryBench, argv: list[str] | None = None) -> int:
    """The command line of ``bench``: every run whole and cut, the result file and the chart."""
    from bench._common import RESULTS, data_root, missing_data, provenance
    from bench._json import write_json
    from gtcompress.io import write_atomic

    ap = argparse.ArgumentParser(description=bench.description)
    ap.add_argument("--runs", nargs="+", default=bench.runs, help="ARCH:DATASET, e.g. gps:tu:PROTEINS")
    ap.add_argument("--max-whole-gib", type=float, default=8.0, help="skip whole batches whose scores need more")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        bench.child(*args.child)
        return 0
    if (why := missing_data([str(data_root() / "TU")])) is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    prov = provenance()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            row = {"run": run, **bench.row_of(run.partition(":")[2])}
            rows.append(
                whole_vs_cut(bench.script, row, Path(tmp), bench.key, args.max_whole_gib, bench.skipped, bench.compare)
            )
    out = RESULTS / bench.name
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{bench.name}.json", {**prov, **bench.settings(), "rows": rows})
    write_atomic(out / f"{bench.name}.png", lambda p: plot_whole_vs_cut(rows, p, bench.title, bench.what))
    return 0
