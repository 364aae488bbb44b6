"""What the two padded-memory benches (``eval_memory.py``, ``train_memory.py``) share: a measurement
in a child process of its own (so its peak resident memory is its own), a table cell and the
whole-vs-cut bar chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
