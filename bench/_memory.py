"""What the two padded-memory benches (``eval_memory.py``, ``train_memory.py``) share: a measurement
in a child process of its own (so its peak resident memory is its own), a table cell and the
whole-vs-cut bar chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
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
