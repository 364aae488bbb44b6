"""Latency of exported models (ONNX Runtime CPU) vs PyTorch eager vs the PyG equivalent.

    python bench/export.py                 # full sweep (1k → 1M edges), ~10 min on 2 cores
    python bench/export.py --quick         # small sizes only (writes export_quick.json)

Same batch, same thread count, measured side by side in one run. For each workload:
GT (every lowering) and GPS (dense), each with a PyG model of the same sizes built from
``TransformerConv`` / ``GPSConv``. ONNX numbers include the numpy pre-processing a deployment runs
per request (layout construction), reported separately too. Writes ``bench/results/export/export.json``
(with the command, commit, machine and date of the run; ``export_quick.json`` with ``--quick``) and ``.png``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, at_least, earlier_runs, provenance, set_threads, unknown_names
from bench._json import read_json, write_json
from exporters.onnx import export_onnx, has_token_pruning
from gtcompress.data.base import FeatureSpec
from gtcompress.graph import GraphBatch
from gtcompress.io import write_atomic
from gtcompress.models import ModelConfig, build_model
from gtcompress.preprocess import NumpyGraph, union_graphs
from gtcompress.preprocess.inputs import build_inputs
from gtcompress.preprocess.spec import InputSpec, choose_lowering

HIDDEN, LAYERS, HEADS, CARD = 64, 4, 4, 7


def sbm_batch(rng: np.random.Generator, graphs: int = 32) -> NumpyGraph:
    """CLUSTER-size graphs: 6 blocks of 5..34 nodes, p=0.55 within, q=0.25 between."""
    out = []
    for _ in range(graphs):
        sizes = rng.integers(5, 35, 6)
        block = np.repeat(np.arange(6), sizes)
        n = block.size
        prob = np.where(block[:, None] == block[None, :], 0.55, 0.25)
        upper = np.triu(rng.random((n, n)) < prob, 1)
        src, dst = np.nonzero(upper | upper.T)
        out.append(NumpyGraph(rng.integers(0, CARD, (n, 1)), np.stack([src, dst])))
    return union_graphs(out)


def molecule_batch(rng: np.random.Generator, graphs: int = 128) -> NumpyGraph:
    """Molecule-size graphs: ~23 atoms, a ring-ish chain plus a few branches, bonds both ways."""
    out = []
    for _ in range(graphs):
        n = int(rng.integers(12, 36))
        src = np.arange(n - 1)
        dst = src + 1
        extra = rng.integers(0, n, (2, n // 6))
        e = np.concatenate([np.stack([src, dst]), extra], axis=1)
        e = e[:, e[0] != e[1]]
        out.append(NumpyGraph(rng.integers(0, CARD, (n, 1)), np.concatenate([e, e[::-1]], axis=1)))
    return union_graphs(out)


def sparse_graph(rng: np.random.Generator, edges: int) -> NumpyGraph:
    """One large sparse graph, average in-degree 10 (citation/social-network-like)."""
    n = max(edges // 10, 2)
    return NumpyGraph(rng.integers(0, CARD, (n, 1)), rng.integers(0, n, (2, edges)))


class PygGT(nn.Module):
    """PyG equivalent of our GT: TransformerConv attention + output projection, BN, FFN, BN."""

    def __init__(self) -> None:
        from torch_geometric.nn import TransformerConv

        super().__init__()
        self.emb = nn.Embedding(CARD, HIDDEN)
        self.convs = nn.ModuleList(
            TransformerConv(HIDDEN, HIDDEN // HEADS, heads=HEADS, root_weight=False) for _ in range(LAYERS)
        )
        self.out = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(LAYERS))
        self.bn1 = nn.ModuleList(nn.BatchNorm1d(HIDDEN) for _ in range(LAYERS))
        self.ffn = nn.ModuleList(
            nn.Sequential(nn.Linear(HIDDEN, 2 * HIDDEN), nn.ReLU(), nn.Linear(2 * HIDDEN, HIDDEN))
            for _ in range(LAYERS)
        )
        self.bn2 = nn.ModuleList(nn.BatchNorm1d(HIDDEN) for _ in range(LAYERS))
        self.head = nn.Sequential(nn.Linear(HIDDEN, HIDDEN // 2), nn.ReLU(), nn.Linear(HIDDEN // 2, CARD - 1))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        h = self.emb(x[:, 0])
        for conv, o, bn1, ffn, bn2 in zip(self.convs, self.out, self.bn1, self.ffn, self.bn2, strict=True):
            h = bn1(h + o(conv(h, edge_index)))
            h = bn2(h + ffn(h))
        return self.head(h)


class PygGPS(nn.Module):
    """PyG ``GPSConv`` (GIN local conv, multi-head attention) with the same sizes as our GPS."""

    def __init__(self) -> None:
        from torch_geometric.nn import GINConv, GPSConv

        super().__init__()
        self.emb = nn.Embedding(CARD, HIDDEN)
        self.convs = nn.ModuleList(
            GPSConv(
                HIDDEN,
                GINConv(nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN))),
                heads=HEADS,
            )
            for _ in range(LAYERS)
        )
        self.head = nn.Sequential(nn.Linear(HIDDEN, HIDDEN // 2), nn.ReLU(), nn.Linear(HIDDEN // 2, CARD - 1))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        h = self.emb(x[:, 0])
        for conv in self.convs:
            h = conv(h, edge_index, batch)
        return self.head(h)


def timeit(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def ours(arch: str) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch,
        node_features=FeatureSpec("categorical", 1, [CARD]),
        out_dim=CARD - 1,
        hidden=HIDDEN,
        num_layers=LAYERS,
        heads=HEADS,
    )
    return build_model(cfg).eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    ap.add_argument("--threads", type=at_least(1), default=2, help="ONNX Runtime and torch intra-op threads")
    ap.add_argument("--repeat", type=at_least(1), default=5, help="timed runs per measurement (median)")
    ap.add_argument("--only", nargs="*", default=None, help="architectures to run (gt, gps)")
    ap.add_argument("--workloads", nargs="*", default=None, help="workload names, e.g. sbm molecules sparse-1000")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/export/export[_quick].json")
    args = ap.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    names = ["sbm", "molecules", *(f"sparse-{e}" for e in sizes)]  # the workloads built below, in order
    for problem in (
        unknown_names("--only", args.only, ["gt", "gps"]),
        unknown_names("--workloads", args.workloads, names),
    ):
        if problem:
            ap.error(problem)
    prov = provenance()
    args.out = args.out or RESULTS / "export" / ("export_quick.json" if args.quick else "export.json")
    import onnxruntime as ort

    set_threads(prov, args.threads)
    rng = np.random.default_rng(0)
    workloads = [("sbm", sbm_batch(rng, 8 if args.quick else 32)), ("molecules", molecule_batch(rng))]
    workloads += [(f"sparse-{e}", sparse_graph(rng, e)) for e in sizes]
    if args.workloads:
        workloads = [w for w in workloads if w[0] in args.workloads]
    models = {"gt": (ours("gt"), PygGT().eval()), "gps": (ours("gps"), PygGPS().eval())}
    models = {k: v for k, v in models.items() if not args.only or k in args.only}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    rows: list[dict] = []
    # A partial run (--only/--workloads) replaces its own (workload, arch) rows in --out, keeps the rest.
    kept: list[dict] = []
    before: list[dict] = []  # provenance of the runs whose rows are kept
    if (args.only or args.workloads) and args.out.exists():
        ran = {(w, a) for (w, _), a in itertools.product(workloads, models)}
        old = read_json(args.out)
        kept = [_run_tagged(r, old) for r in old.get("rows", []) if (r["workload"], r["arch"]) not in ran]
        before = earlier_runs(old) if kept else []
    head = {**prov, **({"earlier_runs": before} if before else {})}
    # the exported models, one per (arch, lowering); removed when the run ends, however it ends
    with tempfile.TemporaryDirectory(prefix="gtc-bench-export-") as tmp_dir:
        tmp = Path(tmp_dir)
        sessions: dict[tuple[str, str], tuple[ort.InferenceSession, InputSpec]] = {}
        for wname, g in workloads:
            batch = GraphBatch.from_numpy(g)
            counts = np.bincount(g.batch) if g.batch is not None else np.array([g.num_nodes])
            for arch, (model, pyg) in models.items():
                if arch == "gps" and counts.max() > 5000:
                    continue  # global attention over 100k+ nodes of one graph is quadratic: not a GPS workload
                lowerings = ["scatter", "padded", "dense", "plugin"] if arch == "gt" else ["dense"]
                auto = str(choose_lowering(arch, token_pruned=has_token_pruning(model), profile=g))
                ei, x, b = batch.edge_index, batch.x, batch.batch_vector
                with torch.no_grad():
                    pyg_ms = timeit(lambda pyg=pyg, x=x, ei=ei, b=b: pyg(x, ei, b), args.repeat)
                    eager_ms = timeit(lambda model=model, batch=batch: model(batch), args.repeat)
                base = {
                    "workload": wname,
                    "arch": arch,
                    "nodes": g.num_nodes,
                    "edges": g.num_edges,
                    "graphs": int(counts.size),
                    "auto": auto,
                    "threads": args.threads,
                    "pyg_eager_ms": statistics.median(pyg_ms),
                    "ours_eager_ms": statistics.median(eager_ms),
                }
                for low in lowerings:
                    if low == "dense" and counts.size * int(counts.max()) ** 2 > 2e8:
                        continue  # the padded score matrix would not fit in memory
                    key = (arch, low)
                    if key not in sessions:
                        path = tmp / f"{arch}-{low}.onnx"
                        res = export_onnx(model, path, low, verify_batches=3)
                        sessions[key] = (
                            ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]),
                            res.spec,
                        )
                    sess, spec = sessions[key]
                    prep = timeit(lambda g=g, spec=spec: build_inputs(g, spec), args.repeat, warmup=1)
                    inputs = build_inputs(g, spec)
                    run = timeit(lambda sess=sess, inputs=inputs: sess.run(None, inputs), args.repeat)
                    total = statistics.median(prep) + statistics.median(run)
                    row = {
                        **base,
                        "run": prov["date"],
                        "lowering": low,
                        "prep_ms": statistics.median(prep),
                        "ort_ms": statistics.median(run),
                        "ort_total_ms": total,
                        "speedup_vs_pyg": base["pyg_eager_ms"] / total,
                        "speedup_vs_eager": base["ours_eager_ms"] / total,
                    }
                    rows.append(row)
                    print(
                        f"{wname:16s} {arch:4s} {low:8s}{'*' if low == auto else ' '} E={g.num_edges:>8d} "
                        f"pyg {row['pyg_eager_ms']:9.1f} ms  eager {row['ours_eager_ms']:9.1f} ms  "
                        f"onnx {total:9.1f} ms (prep {row['prep_ms']:.1f})  x{row['speedup_vs_pyg']:.1f} vs PyG",
                        flush=True,
                    )
    # Written once, when every row is measured: a run stopped part-way (Ctrl-C, SIGTERM, a crash) leaves the
    # previous result and its PNG as they were, not a file of the rows so far, without ``linearity``, beside
    # a PNG of other numbers. A partial run keeps rows by ``--only``/``--workloads``, so nothing resumes from
    # such a file either.
    rows = _ordered(kept + rows, [w for w, _ in workloads])
    write_json(args.out, {**head, "rows": rows, "linearity": _linearity(rows)})
    _plot(rows, args.out.with_suffix(".png"))


def _ordered(rows: list[dict], names: list[str]) -> list[dict]:
    """Rows grouped by workload in the sweep's order (sbm, molecules, sparse-* by size), stable within."""
    order = ["sbm", "molecules"]
    sparse = sorted({r["workload"] for r in rows if r["workload"].startswith("sparse-")}, key=lambda w: int(w[7:]))
    rank: dict[str, int] = {}
    for w in order + sparse + names:
        rank.setdefault(w, len(rank))
    return sorted(rows, key=lambda r: rank.get(r["workload"], len(rank)))


def _run_tagged(row: dict, old: dict) -> dict:
    """A row kept from an earlier result, with ``run`` naming the run that measured it: its own tag, else the
    earlier file's date when that file was one run (no ``earlier_runs``), else None (unknown)."""
    if "run" in row:
        return row
    return {**row, "run": None if old.get("earlier_runs") else old.get("date")}


def _linearity(rows: list[dict]) -> dict[str, float]:
    """Time ratio per 10x edges on the sparse sweep, per lowering (10.0 = linear: 10x edges, 10x time).

    Only sizes measured in the same run are paired: after a partial ``--workloads`` run the file holds
    rows of several runs (another machine load, another commit), and a ratio across them measures the
    difference between the runs as much as the scaling. Rows of an unknown run are not paired."""
    out = {}
    for low in ("scatter", "padded", "plugin"):
        pts = sorted(
            (r["edges"], r["ort_total_ms"], r.get("run"))
            for r in rows
            if r["workload"].startswith("sparse") and r["arch"] == "gt" and r["lowering"] == low
        )
        for (e1, t1, run1), (e2, t2, run2) in itertools.pairwise(pts):
            if run1 is not None and run1 == run2:
                out[f"{low}: {e1}->{e2} edges"] = t2 / t1
    return out


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    sparse = [r for r in rows if r["workload"].startswith("sparse") and r["arch"] == "gt"]
    for low in ("scatter", "padded", "plugin", "dense"):
        pts = sorted((r["edges"], r["ort_total_ms"]) for r in sparse if r["lowering"] == low)
        if pts:
            a1.plot(*zip(*pts, strict=True), marker="o", label=f"ONNX {low}")
    pyg = sorted({(r["edges"], r["pyg_eager_ms"]) for r in sparse})
    if pyg:
        a1.plot(*zip(*pyg, strict=True), marker="s", linestyle="--", color="k", label="PyG eager")
        a1.set(xscale="log", yscale="log")  # log axes need data: a run without sparse workloads has none
        a1.legend()
    a1.set(xlabel="edges", ylabel="latency (ms)", title="GT on one sparse graph")
    small = [r for r in rows if not r["workload"].startswith("sparse")]
    labels = [f"{r['workload']}\n{r['arch']} {r['lowering']}" for r in small]
    a2.bar(range(len(small)), [r["speedup_vs_pyg"] for r in small])
    a2.axhline(10, color="r", linestyle=":", label="10x target")
    a2.set_xticks(range(len(small)), labels, rotation=60, fontsize=7)
    a2.set(ylabel="speed-up vs PyG eager", title="SBM and molecule batches")
    a2.legend()
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


if __name__ == "__main__":
    main()
