"""Plots more than one benchmark draws."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def paired_bars(
    path: Path,
    labels: Sequence[str],
    left: tuple[str, Sequence[float]],
    right: tuple[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
    right_notes: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = 120,
) -> None:
    """Two bars per label, ``left`` and ``right`` (each a legend name and its values), written as a PNG to
    ``path`` atomically; ``right_notes`` are written above the right bars (a ratio, say)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gtcompress.io import write_atomic

    fig, ax = plt.subplots(figsize=figsize or (max(6, 1.1 * len(labels)), 4))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], left[1], width=0.4, label=left[0])
    ax.bar([i + 0.2 for i in x], right[1], width=0.4, label=right[0])
    for i, note in enumerate(right_notes or ()):
        ax.annotate(note, (i + 0.2, right[1][i]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    plt.close(fig)
