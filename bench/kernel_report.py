"""The GPU issue's targets, read off ``bench/kernel.py``'s rows, and its PNG.

Every ratio is between two rows of the same run (same process, same data); a target whose rows
are missing (skipped, failed) is reported as "not measured", never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

TARGETS = {
    "op_vs_compile": 2.0,  # our op at least 2x faster than torch.compile of the PyG-style op, E >= 1M
    "bw_fp32_4x16": 0.60,  # fraction of copy bandwidth at E >= 10M
    "bw_fp16_8x64": 0.75,
    "skew": 1.3,  # power-law time / uniform time, same N and E
    "model_vs_compile": 1.5,  # 4-layer GT: at least 1.5x faster than torch.compile(PyG model)
    "model_vs_eager": 10.0,  # and 10x faster than PyG eager, E >= 1M
    "molecule_ms": 0.3,  # one molecule through 4 layers with CUDA-graph replay
}

#: The rows the latency target reads: the 4-layer GT replayed from a CUDA graph, eager layers or
#: inductor's fused ones around our op (``bench/kernel.py`` names its rows by this); the faster is what a
#: deployment would run.
MOLECULE_PEERS = ("ours CUDA graph", "ours torch.compile CUDA graph")


def _index(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(r["level"], r["workload"], r.get("dtype"), r.get("hd"), r["peer"]): r for r in rows if "ms" in r}


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summarize(rows: list[dict[str, Any]], copy_gbps: float, judged: bool = True) -> dict[str, Any]:
    """Ratios per target with a met/missed verdict, and printable lines. ``judged`` False (a CPU dry
    run, whose rows time CPU fallbacks): the ratios are listed, no target is called met or missed."""
    idx = _index(rows)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in TARGETS}
    op = [r for r in rows if r["level"] == "op" and r["peer"] == "ours v2" and "ms" in r]
    for r in op:
        key = ("op", r["workload"], r["dtype"], r["hd"])
        if r["E"] >= 1_000_000 and r["dtype"] in ("fp32", "fp16"):
            peer = idx.get((*key, "PyG torch.compile"))
            if peer:
                out["op_vs_compile"].append(_entry(r, peer["ms"] / r["ms"], TARGETS["op_vs_compile"], True))
        if r["E"] >= 10_000_000 and "bw_fraction" in r:
            name = {("fp32", "4x16"): "bw_fp32_4x16", ("fp16", "8x64"): "bw_fp16_8x64"}.get((r["dtype"], r["hd"]))
            if name:
                out[name].append(_entry(r, r["bw_fraction"], TARGETS[name], True))
        if r["kind"] == "power-law":
            uni = next(
                (
                    u
                    for u in op
                    if u["kind"] == "uniform"
                    and (u["N"], u["E"], u["dtype"], u["hd"]) == (r["N"], r["E"], r["dtype"], r["hd"])
                ),
                None,
            )
            if uni:
                out["skew"].append(_entry(r, r["ms"] / uni["ms"], TARGETS["skew"], False))
    for r in rows:
        if r["level"] != "model" or "ms" not in r or r["peer"] not in ("ours eager", "ours torch.compile"):
            continue
        key = ("model", r["workload"], r["dtype"], r["hd"])
        best = min(
            (idx[(*key, p)]["ms"] for p in ("ours eager", "ours torch.compile") if (*key, p) in idx), default=None
        )
        if best is None or r["ms"] != best or r["E"] < 1_000_000:
            continue
        for peer, name in (("PyG torch.compile", "model_vs_compile"), ("PyG eager", "model_vs_eager")):
            if (*key, peer) in idx:
                entry = _entry(r, idx[(*key, peer)]["ms"] / best, TARGETS[name], True)
                entry["ours"] = r["peer"]
                out[name].append(entry)
    replays = [r for r in rows if r["level"] == "model" and r["workload"] == "molecule" and r["peer"] in MOLECULE_PEERS]
    best_replay = min((r for r in replays if "ms" in r), key=lambda r: r["ms"], default=None)
    if best_replay is not None:
        entry = _entry(best_replay, best_replay["ms"], TARGETS["molecule_ms"], False)
        entry["ours"] = best_replay["peer"]
        out["molecule_ms"].append(entry)
    lines = [f"device copy bandwidth {copy_gbps:.0f} GB/s"]
    if not judged:
        lines[0] += " (CPU dry run: no GPU figure, no target judged)"
        for entry in (e for entries in out.values() for e in entries):
            entry["verdict"] = "not judged"
    for name, entries in out.items():
        if not entries:
            lines.append(f"{name}: not measured")
            continue
        for e in entries:
            lines.append(
                f"{name:17} {e['workload']:18} {e['dtype'] or '':4} {e['hd'] or '':5} "
                f"{e['value']:8.3f} (target {'>=' if e['higher'] else '<='} {e['target']}) {e['verdict']}"
            )
    return {"targets": TARGETS, "results": out, "lines": lines}


def _entry(row: dict[str, Any], value: float, target: float, higher: bool) -> dict[str, Any]:
    ok = value >= target if higher else value <= target
    return {
        "workload": row["workload"],
        "dtype": row.get("dtype"),
        "hd": row.get("hd"),
        "value": value,
        "target": target,
        "higher": higher,
        "verdict": _verdict(ok),
    }


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Op level (fp32 and fp16, 4x16) and model level: milliseconds per peer, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if "ms" in r]
    panels = [
        (
            "op, fp32, H x D = 4 x 16",
            [r for r in rows if r["level"] == "op" and r["dtype"] == "fp32" and r["hd"] == "4x16"],
        ),
        (
            "op, fp16, H x D = 8 x 64",
            [r for r in rows if r["level"] == "op" and r["dtype"] == "fp16" and r["hd"] == "8x64"],
        ),
        ("4-layer GT, fp32", [r for r in rows if r["level"] == "model"]),
    ]
    panels = [(title, sub) for title, sub in panels if sub]
    fig, axes = plt.subplots(max(1, len(panels)), 1, figsize=(13, 4.2 * max(1, len(panels))), squeeze=False)
    for ax, (title, sub) in zip(axes[:, 0], panels, strict=False):
        workloads = list(dict.fromkeys(r["workload"] for r in sub))
        peers = list(dict.fromkeys(r["peer"] for r in sub))
        width = 0.8 / max(1, len(peers))
        for j, peer in enumerate(peers):
            xs, ys = [], []
            for i, w in enumerate(workloads):
                hit = next((r for r in sub if r["workload"] == w and r["peer"] == peer), None)
                if hit:
                    xs.append(i + (j - (len(peers) - 1) / 2) * width)
                    ys.append(hit["ms"])
            ax.bar(xs, ys, width=width, label=peer)
        ax.set_yscale("log")
        ax.set_xticks(range(len(workloads)), workloads, rotation=15)
        ax.set_ylabel("ms (median)")
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=4)
        ax.grid(axis="y", alpha=0.3)
    gpu = doc.get("machine", {}).get("gpu", "GPU")
    fig.suptitle(f"Sparse graph attention on {gpu} (commit {str(doc.get('commit', ''))[:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
