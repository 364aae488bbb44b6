"""Per-request LapPE of this tree against another revision's, side by side in one process.

A served request pays for its positional encodings: LapPE is one partial eigendecomposition per graph, and
most of the pre-processing of a CLUSTER batch (the pipeline's ``prep`` column). This times
:func:`gtcompress.preprocess.pe.laplacian_pe` of the working tree and of ``--against`` (that revision's
``gtcompress/preprocess/pe.py``, which imports only numpy and scipy, read from git), on the same batches of
real graphs, the two taking turns batch by batch (which goes first alternates) so the machine's load hits
both alike; and it checks that both give the same bits, batch by batch.

    python bench/prep.py --against 11a58fc        # bench/results/prep/lap_pe.json and .png

Workloads: CLUSTER and PATTERN (the benchmark's small sizes: test graphs of 40 to 190 nodes, batches of 32,
k = 8 as GraphGPS trains them) and NCI1 molecules (about 30 nodes, batches of 128), each batch a disjoint
union as a request brings it. One BLAS thread, as the runtime runs LapPE.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench._common import RESULTS, at_least, data_root, provenance, unknown_names
from bench._json import write_json

ROOT = Path(__file__).resolve().parents[1]
#: name: (dataset, graphs per batch, LapPE dimension)
WORKLOADS = {"cluster": ("cluster", 32, 8), "pattern": ("pattern", 32, 8), "nci1": ("tu:NCI1", 128, 8)}


def pe_module_at(rev: str) -> Any:
    """``gtcompress/preprocess/pe.py`` as it was at ``rev``, imported as a module of its own; a ValueError
    that says why where git cannot give it."""
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:gtcompress/preprocess/pe.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = (getattr(e, "stderr", "") or str(e)).strip()
        raise ValueError(f"--against {rev}: cannot read its gtcompress/preprocess/pe.py: {detail}") from None
    with tempfile.TemporaryDirectory(prefix="gtc-prep-") as tmp:  # compiled on import: the file can go
        path = Path(tmp) / "pe_against.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"pe_at_{rev}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def batches(name: str, size: str | None, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` batches of the workload's test graphs: (edge_index of their union, ptr)."""
    from gtcompress.preprocess import union_graphs
    from gtcompress.train.recipe import DataSpec

    dataset, per_batch, _ = WORKLOADS[name]
    root = str(data_root() / "TU") if dataset.startswith("tu:") else None
    ds = DataSpec(dataset, root, size or DataSpec.size, 0).load({})
    graphs = [g.to_numpy() for g in ds["test"]][: per_batch * count]
    out = []
    for i in range(0, len(graphs), per_batch):
        group = graphs[i : i + per_batch]
        ptr = np.concatenate([[0], np.cumsum([g.num_nodes for g in group])]).astype(np.int64)
        out.append((union_graphs(group).edge_index, ptr))
    return out


def time_pair(ours: Any, theirs: Any, work: list[tuple[np.ndarray, np.ndarray]], k: int, rounds: int) -> dict:
    """Median ms per batch of each implementation over ``rounds`` passes, taking turns batch by batch,
    and whether every batch came out bit-identical."""
    times: dict[str, list[float]] = {"this": [], "against": []}
    identical = True
    impls = [("this", ours), ("against", theirs)]
    for r in range(rounds + 1):  # the first pass warms both up and is not counted
        for b, (ei, ptr) in enumerate(work):
            got = {}
            for name, module in impls if (r + b) % 2 == 0 else impls[::-1]:
                t = time.perf_counter()
                got[name] = module.laplacian_pe(ei, ptr, k)
                if r:
                    times[name].append(time.perf_counter() - t)
            identical &= bool(np.array_equal(got["this"], got["against"]))
    this, against = (1e3 * float(np.median(times[name])) for name in ("this", "against"))
    return {"ms_this": this, "ms_against": against, "speedup": against / this, "identical": identical}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench/prep.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", required=True, help="the revision whose LapPE this tree's is set against")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), metavar="NAME", help=", ".join(WORKLOADS))
    ap.add_argument("--batches", type=at_least(1), default=8, help="batches per workload")
    ap.add_argument("--rounds", type=at_least(1), default=10, help="timed passes over them")
    ap.add_argument("--size", default=None, help="generated datasets' size (default: small)")
    ap.add_argument("--out", type=Path, default=RESULTS / "prep" / "lap_pe.json")
    args = ap.parse_args(argv)
    bad = unknown_names("--workloads", args.workloads, list(WORKLOADS))
    if bad:
        ap.error(bad)
    prov = provenance(argv)
    from gtcompress.preprocess import pe

    try:
        theirs = pe_module_at(args.against)
    except ValueError as e:
        ap.error(str(e))
    rows = []
    for name in args.workloads:
        work = batches(name, args.size, args.batches)
        k = WORKLOADS[name][2]
        row = {"workload": name, "graphs_per_batch": WORKLOADS[name][1], "batches": len(work), "k": k}
        row["nodes_per_batch"] = float(np.mean([int(p[-1]) for _, p in work]))
        row |= time_pair(pe, theirs, work, k, args.rounds)
        rows.append(row)
        print(
            f"{name:8s} {row['nodes_per_batch']:7.0f} nodes/batch  this {row['ms_this']:6.2f} ms  "
            f"{args.against} {row['ms_against']:6.2f} ms  {row['speedup']:.2f}x  identical: {row['identical']}"
        )
    doc = prov | {"against": args.against, "rounds": args.rounds, "rows": rows}
    write_json(args.out, doc)
    _plot(rows, args.against, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(rows: list[dict[str, Any]], against: str, path: Path) -> None:
    from bench._plot import paired_bars

    paired_bars(
        path,
        [f"{r['workload']}\n{r['graphs_per_batch']} graphs" for r in rows],
        (against, [r["ms_against"] for r in rows]),
        ("this tree", [r["ms_this"] for r in rows]),
        ylabel="LapPE ms per batch (median)",
        title="per-request LapPE, one BLAS thread, side by side",
        right_notes=[f"{r['speedup']:.2f}x" for r in rows],
        figsize=(6.4, 3.6),
        dpi=110,
    )


if __name__ == "__main__":
    main()
