"""Sparse graph attention on a GPU: our kernel v2 against v1, PyG and ``torch.compile``, op and model
(the run's driver: options, GPU probe, timing, levels, writing; workloads and peers are in
``kernel_workloads``, the tile sweep in ``kernel_sweep``, targets and plot in ``kernel_report``).

    python bench/kernel.py                     # the committed table (GPU; about 5 minutes on an H200)
    python bench/kernel.py --quick             # small sizes only
    python bench/kernel.py --no-sweep --levels op
    python bench/kernel.py --sweep-families bf16:8x32 --levels op   # tune a model's own head shape

Writes ``bench/results/kernel/kernel.json`` (every row, the command, commit, machine and date of the run,
the measured device copy bandwidth) and ``kernel.png``, and prints the ratios the GPU issue sets targets for,
all measured side by side in this one process on the same data: op speed against
``torch.compile`` of the PyG-style op, bandwidth as a fraction of the copy bandwidth, power-law
over uniform time, model speed against PyG eager and ``torch.compile(PyG model)``, and the latency
of one molecule through 4 layers with CUDA-graph replay.

Timing: CUDA events around each call, median of ``--reps`` (at least 10) runs after warm-up.
A peer whose first run exceeds ``--slow-ms`` is timed once and marked so (v1 on big power-law
graphs takes seconds). The rows the targets read run first (after the tile sweep), so that
``--max-minutes`` cuts only the others. Rows are written to the JSON as they finish, so an interrupted run keeps
what it measured; one stopped by SIGTERM or by an error outside any row still writes its summary and PNG
(``stopped`` or ``failed`` in the JSON; a failure exits 1). Without a GPU the script says so, runs a small
parity check of the kernel under Triton's interpreter and exits 0 without touching the results.
"""

from __future__ import annotations

import argparse
import math
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, provenance
from bench._json import write_json
from bench.kernel_report import MOLECULE_PEERS, plot, summarize
from bench.kernel_sweep import SWEEP_FAMILIES, config_dict, parse_families, sweep_and_tune
from bench.kernel_timing import copy_bandwidth, cuda_graph, kernel_split, time_cuda
from bench.kernel_workloads import (
    DTYPES,
    SPEC_DTYPE,
    BenchGT,
    Graph,
    min_bytes,
    molecule_batch,
    power_law_graph,
    pyg_attention,
    sbm_batch,
    uniform_graph,
)

OUT = RESULTS / "kernel" / "kernel.json"


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * scale)


def _empty_cache() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


def kernel_stack() -> dict[str, Any]:
    """What this bench adds to :func:`bench._common.machine`: the host and the Triton / PyG / CUDA versions."""
    import triton

    info: dict[str, Any] = {"host": platform.node(), "triton": triton.__version__, "cuda": torch.version.cuda}
    try:
        import torch_geometric

        info["torch_geometric"] = torch_geometric.__version__
    except ImportError:
        info["torch_geometric"] = None
    return info


def error_text(e: BaseException) -> str:
    """How a row records a failure: the exception's type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def parity(row: dict[str, Any], key: str, check: Callable[[], float | None]) -> None:
    """Store ``check()`` (a max |difference| against a peer) as ``row[key]``; a failure (the float32
    reference's OOM on a large graph, our kernel not compiling) goes to ``row["parity_error"]``
    instead, so that the row is still timed and the run goes on to its summary, as for a timed failure."""
    try:
        row[key] = check()
    except Exception as e:
        row[key] = None
        row["parity_error"] = error_text(e)
        _empty_cache()


#: Where every row runs (``--cpu-dry-run``: the CPU); rows are timed by :mod:`bench.kernel_timing`.
DEVICE = torch.device("cuda")
#: ``torch.compile``'s backend for every compiled peer. The CPU dry run traces them with ``aot_eager``:
#: Dynamo and AOTAutograd (graph breaks, the op's fake kernel, dynamic shapes) run as on the GPU, while
#: Inductor's C++ code generation, which the GPU run never uses and which took 24 of the dry run's 58 s,
#: does not.
COMPILE_BACKEND = "inductor"


# ---------------------------------------------------------------- runner


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.deadline = time.monotonic() + args.max_minutes * 60
        self.skip_reason = f"--max-minutes {args.max_minutes} reached"
        prov = provenance()
        prov["machine"].update(kernel_stack())
        self.doc: dict[str, Any] = {
            "bench": "kernel",
            **prov,
            "timing": f"CUDA events, median of {args.reps} runs after {args.warmup} warm-up runs",
            "rows": self.rows,
        }
        self.compiled: dict[str, Any] = {}

    def save(self) -> None:
        write_json(self.args.out, self.doc, indent=1)  # strict JSON: a failed row's ratio may be inf

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def measure(self, row: dict[str, Any], fn: Callable[[], Any], slow_ms: float | None = None) -> None:
        """Time ``fn`` into ``row`` and append it; a failure is recorded, not raised."""
        if "error" in row:
            pass
        elif self.out_of_time():
            row["skipped"] = self.skip_reason
        else:
            try:
                row.update(time_cuda(fn, self.args.reps, self.args.warmup, slow_ms or self.args.slow_ms, DEVICE))
            except Exception as e:  # an OOM or a compile failure of one peer must not end the run
                row["error"] = error_text(e)
                _empty_cache()
        if "ms" in row and row.get("bytes"):
            row["gbps"] = row["bytes"] / (row["ms"] * 1e-3) / 1e9
            row["bw_fraction"] = row["gbps"] / self.doc["copy_gbps"]
        self.rows.append(row)
        self.save()
        shown = f"{row['ms']:.3f} ms" if "ms" in row else row.get("error") or row.get("skipped")
        frac = f"  {100 * row['bw_fraction']:.0f}% of copy bw" if "bw_fraction" in row else ""
        print(
            f"  {row['level']:5} {row['workload']:18} {row.get('dtype', ''):4} {row.get('hd', ''):5} "
            f"{row['peer']:22} {shown}{frac}",
            flush=True,
        )

    def compiled_fn(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """One ``torch.compile`` (dynamic shapes) per key, reused across workloads."""
        if key not in self.compiled:
            self.compiled[key] = torch.compile(fn, dynamic=True, backend=COMPILE_BACKEND)
        return self.compiled[key]


#: The most edges of a graph the dry run runs kernel v1 on (under the interpreter): one molecule's.
DRY_V1_EDGES = 200
#: The op-level peers ``op_rows`` takes, by the names its rows carry.
PEER_NAMES = {"v1": "ours v1", "pyg": "PyG eager", "compile": "PyG torch.compile", "reference": "gtcompress reference"}


def op_rows(b: Bench, g: Graph, dtype_name: str, heads: int, head_dim: int, peers: set[str]) -> None:
    from gtcompress.nn.attention import sparse_attention
    from trt_plugins.kernels_v1 import sparse_graph_attention_v1

    dtype = DTYPES[dtype_name]
    n, e = g.num_nodes, g.num_edges
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    q, k, v = (torch.randn(n, heads, head_dim, device=DEVICE, dtype=dtype, generator=gen) for _ in range(3))
    scale = 1.0 / math.sqrt(head_dim)
    from trt_plugins import spec

    base = {
        "level": "op",
        "workload": g.name,
        "kind": g.kind,
        "N": n,
        "E": e,
        "max_in_degree": g.max_in_degree(),
        "dtype": dtype_name,
        "hd": f"{heads}x{head_dim}",
        "bytes": min_bytes(n, e, heads, head_dim, q.element_size()),
    }
    ours = lambda: torch.ops.gtcompress.sparse_graph_attention(q, k, v, g.rowptr, g.col, None, scale)  # noqa: E731
    if b.out_of_time():  # no compile or reference for rows that would be skipped: the summary needs the time
        named = [PEER_NAMES[p] for p in sorted(peers) if not (p == "v1" and dtype_name == "bf16")]
        for peer in ("ours v2", *named):
            b.measure({**base, "peer": peer}, ours)  # recorded as skipped, never run
        return
    cfg = config_dict(spec.select_config(heads, head_dim, SPEC_DTYPE[dtype_name]))
    row: dict[str, Any] = {**base, "peer": "ours v2"}

    def err_vs_pyg() -> float | None:
        if e > 20_000_000:  # the float32 reference's gathers would not fit
            return None
        ref = pyg_attention(q.float(), k.float(), v.float(), g.src, g.dst, n)
        return float((ours().float() - ref).abs().max())

    parity(row, "max_abs_err_vs_pyg_fp32", err_vs_pyg)
    row["config"] = cfg
    if (e >= 1_000_000 or DEVICE.type == "cpu") and not b.out_of_time():
        row["kernels"] = kernel_split(ours, DEVICE)
    b.measure(row, ours)
    # Triton's interpreter walks v1's edges one at a time (10-30 s a row on the dry run's 2k-edge graphs,
    # half the dry run): a dry run checks its path once, on the first graph of a molecule's size
    v1_checked = b.args.cpu_dry_run and (e > DRY_V1_EDGES or any(r["peer"] == PEER_NAMES["v1"] for r in b.rows))
    if "v1" in peers and dtype_name != "bf16" and not v1_checked:
        b.measure({**base, "peer": PEER_NAMES["v1"]}, lambda: sparse_graph_attention_v1(q, k, v, g.rowptr, g.col))
    if "pyg" in peers:
        b.measure({**base, "peer": PEER_NAMES["pyg"]}, lambda: pyg_attention(q, k, v, g.src, g.dst, n))
    if "compile" in peers:
        fn = b.compiled_fn(f"op-{dtype_name}-{heads}x{head_dim}", pyg_attention)
        b.measure({**base, "peer": PEER_NAMES["compile"]}, lambda: fn(q, k, v, g.src, g.dst, n), slow_ms=60_000)
    if "reference" in peers:
        ei = g.edge_index
        b.measure({**base, "peer": PEER_NAMES["reference"]}, lambda: sparse_attention(q, k, v, ei, scale=scale))


class Models:
    """The benchmark GT twice with the same weights (PyG attention, our op), built once so that
    ``torch.compile`` compiles each once for every workload (dynamic shapes), plus our own model."""

    def __init__(self, dtype: torch.dtype) -> None:
        from gtcompress.data.base import FeatureSpec
        from gtcompress.models import ModelConfig, build_model

        torch.manual_seed(0)
        self.dtype = dtype
        self.pyg = BenchGT().to(DEVICE).eval().to(dtype)
        self.ours = BenchGT(ours=True).to(DEVICE).eval().to(dtype)
        self.ours.load_state_dict(self.pyg.state_dict())  # the same weights in every variant
        cfg = ModelConfig(arch="gt", node_features=FeatureSpec("float", 64), out_dim=64, hidden=64, heads=4)
        self.own = build_model(cfg).to(DEVICE).eval().to(dtype)
        self.pyg_compiled = torch.compile(self.pyg, dynamic=True, backend=COMPILE_BACKEND)
        self.ours_compiled = torch.compile(self.ours, dynamic=True, backend=COMPILE_BACKEND)


def model_rows(b: Bench, m: Models, g: Graph, dtype_name: str, small: bool) -> None:
    pyg_model, ours_model = m.pyg, m.ours
    x = torch.randn(g.num_nodes, 64, device=DEVICE, dtype=m.dtype)
    base = {
        "level": "model",
        "workload": g.name,
        "kind": g.kind,
        "N": g.num_nodes,
        "E": g.num_edges,
        "dtype": dtype_name,
        "hd": "4x16",
    }
    with torch.inference_mode():
        ours_row: dict[str, Any] = {**base, "peer": "ours eager"}
        diff = lambda: float((ours_model(x, g).float() - pyg_model(x, g).float()).abs().max())  # noqa: E731
        parity(ours_row, "max_abs_diff_vs_pyg", diff)
        b.measure({**base, "peer": "PyG eager"}, lambda: pyg_model(x, g))
        b.measure({**base, "peer": "PyG torch.compile"}, lambda: m.pyg_compiled(x, g), slow_ms=60_000)
        b.measure(ours_row, lambda: ours_model(x, g))
        b.measure({**base, "peer": "ours torch.compile"}, lambda: m.ours_compiled(x, g), slow_ms=60_000)
        if small and DEVICE.type == "cuda":
            # Replay of the eager layers, and of what inductor fused around our op (fewer launches).
            for peer, fn in zip(MOLECULE_PEERS, (ours_model, m.ours_compiled), strict=True):
                if b.out_of_time():  # capturing warms up (a first inductor compile) for a row then skipped
                    b.measure({**base, "peer": peer}, lambda: None)
                    continue
                replay, captured = cuda_graph(lambda fn=fn: fn(x, g))
                if replay is None:
                    b.measure({**base, "peer": peer, "error": captured}, lambda: None)
                else:
                    b.measure({**base, "peer": peer}, replay)
        # gtcompress's own GraphTransformer: model.cuda() alone, no layout supplied (CSR built per call)
        batch = g.batch if g.batch is not None else torch.zeros(g.num_nodes, dtype=torch.long, device=DEVICE)
        own = lambda: m.own.compute(x, g.edge_index, None, batch, {}, g.num_graphs)  # noqa: E731
        b.measure({**base, "peer": "gtcompress GT eager"}, own)
        if small and DEVICE.type == "cuda" and b.out_of_time():
            b.measure({**base, "peer": "gtcompress GT CUDA graph"}, lambda: None)
        elif small and DEVICE.type == "cuda":
            replay, captured = cuda_graph(own)
            if replay is None:
                b.measure({**base, "peer": "gtcompress GT CUDA graph", "error": captured}, lambda: None)
            else:
                b.measure({**base, "peer": "gtcompress GT CUDA graph"}, replay)


def _core(e: int, dtype: str, heads: int) -> bool:
    """Whether an op row is one the targets read: E up to 10M, fp32/fp16 at 4x16, fp16 at 8x64."""
    return e <= 10_000_000 and (dtype in ("fp32", "fp16") if heads == 4 else dtype == "fp16")


def op_level(b: Bench, sizes: list[int], dtypes: list[str], dev: torch.device, core: bool) -> None:
    """Op rows on uniform and power-law graphs of each size: the :func:`_core` ones, or the others."""
    for kind in ("uniform", "power-law"):
        for e in sizes:
            narrow = {"v1", "pyg", "compile"} | ({"reference"} if e <= 10_000_000 else set())
            jobs = [(dt, 4, 16, narrow) for dt in dtypes]
            if e <= 10_000_000:  # wide heads: torch.compile only in fp16, the dtype of its bandwidth target
                jobs += [(dt, 8, 64, {"v1", "pyg"} | ({"compile"} if dt == "fp16" else set())) for dt in dtypes]
            jobs = [j for j in jobs if _core(e, j[0], j[1]) == core]
            if not jobs or b.out_of_time():  # a 50M-edge graph takes seconds to build, for skipped rows
                continue
            g = (uniform_graph if kind == "uniform" else power_law_graph)(e // 10, e, dev)
            for dt, heads, head_dim, peers in jobs:
                op_rows(b, g, dt, heads, head_dim, peers)
            del g
            _empty_cache()


def small_graphs(dev: torch.device, dry: bool) -> list[Graph]:
    """One molecule, a batch of 128 molecules, a batch of 32 CLUSTER-size SBMs (tiny in a dry run)."""
    return [molecule_batch(1, dev), molecule_batch(4 if dry else 128, dev), sbm_batch(1 if dry else 32, dev)]


#: What Triton 3.6's interpreter raises under numpy 2.4 and later (``int()`` of a 1-element array).
NUMPY_SCALAR_BUG = "only 0-dimensional arrays can be converted to Python scalars"


def smoke_without_gpu() -> int:
    """No GPU: say so, check the kernel under Triton's interpreter on a small graph, exit 0."""
    from gtcompress.nn.attention import sparse_attention
    from trt_plugins import spec
    from trt_plugins.csr import edge_index_to_csr
    from trt_plugins.kernels import sparse_graph_attention

    print("no CUDA GPU visible to torch: nothing is timed and bench/results/kernel is left as it is.")
    g = torch.Generator().manual_seed(0)
    n, h, d = 24, 2, 8
    ei = torch.randint(0, n, (2, 90), generator=g)
    ei = torch.cat([ei, torch.stack([torch.randint(0, n, (40,), generator=g), torch.full((40,), 3)])], dim=1)
    q, k, v = (torch.randn(n, h, d, generator=g) for _ in range(3))
    rowptr, col, _ = edge_index_to_csr(ei, n)
    cfg = spec.KernelConfig(tile_e=8, tiles=2, block_h=2, block_d=8, block_r=8, block_p=4)
    try:
        out = sparse_graph_attention(q, k, v, rowptr, col, config=cfg)
    except Exception as e:
        if NUMPY_SCALAR_BUG not in str(e):
            raise
        import numpy
        import triton

        print(
            f"interpreter parity NOT checked: Triton {triton.__version__}'s interpreter cannot run under numpy "
            f"{numpy.__version__} ('{NUMPY_SCALAR_BUG}', triton-lang/triton#9171, fixed in later Triton); "
            "the compiled kernel on a GPU does not use the interpreter"
        )
        return 0
    err = float((out.double() - sparse_attention(q.double(), k.double(), v.double(), ei)).abs().max())
    print(f"interpreter parity of kernel v2 (hub spanning chunks, isolated nodes): max |diff| = {err:.2e}")
    return 0 if err < 1e-5 else 1


class Stopped(BaseException):
    """The run was told to stop (SIGTERM: the device run's ``timeout``); a BaseException, as
    KeyboardInterrupt, so that no row's ``except Exception`` records it as that row's error."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(f"stopped by signal {signal.Signals(signum).name}")


def run_rows(b: Bench, args: argparse.Namespace, dev: torch.device) -> None:
    """Every row, the sweep first: what the targets read comes before the rest, so that
    ``--max-minutes`` (or a SIGTERM) cuts only the rest."""
    if args.sweep:  # first, so that every later row runs the config this run measured best
        e = 40 if args.cpu_dry_run else 10_000_000
        graphs = [uniform_graph(e // 10, e, dev), power_law_graph(e // 10, e, dev)]
        sweep_and_tune(b, graphs, args.sweep_families)
    levels = set(args.levels.split(","))
    dtypes = args.dtypes.split(",")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    # What the targets read comes first, so that --max-minutes cuts only the rest: the core op rows,
    # then the model level, then every other op row (bf16, the other widths, 50M edges, small graphs).
    if "op" in levels:
        op_level(b, sizes, dtypes, dev, core=True)
    if "model" in levels:
        models = Models(torch.float32)
        for g in small_graphs(dev, args.cpu_dry_run):
            model_rows(b, models, g, "fp32", small=True)
        for e in (parse_size(s) for s in args.model_sizes.split(",")):
            for maker in (uniform_graph, power_law_graph):
                if not b.out_of_time():  # building a 10M-edge graph for skipped rows costs the summary's time
                    model_rows(b, models, maker(e // 10, e, dev), "fp32", small=False)
    if "op" in levels:
        op_level(b, sizes, dtypes, dev, core=False)
        for g in small_graphs(dev, args.cpu_dry_run):
            for dt in dtypes:
                op_rows(b, g, dt, 4, 16, {"v1", "pyg", "compile", "reference"})


#: What ``--levels`` may name.
LEVELS = ("op", "model")


def argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the list options, or ``None``. They are read only when their rows come up, so
    a typo (``--dtypes fp32,f16``, ``--model-sizes 1G``) would end the GPU run with a traceback after the
    sweep and the rows before it, without the summary; ``--levels op,modle`` would skip a level silently."""
    for option, text in (("--sizes", args.sizes), ("--model-sizes", args.model_sizes)):
        for item in text.split(","):
            try:
                edges = parse_size(item)
            except ValueError:
                return f"{option}: {item!r} is not an edge count such as 500K, 1M or 2000000"
            if edges < 10:
                return f"{option}: {item!r} is below 10 edges (its graphs have E/10 nodes)"
    for option, text, known in (("--dtypes", args.dtypes, tuple(DTYPES)), ("--levels", args.levels, LEVELS)):
        unknown = [item for item in text.split(",") if item not in known]
        if unknown:
            names = ", ".join(map(repr, unknown))
            return f"{option}: {names} not among {', '.join(known)} (comma-separated, no spaces)"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--sizes", default="1M,10M,50M", help="edge counts of the uniform and power-law graphs")
    p.add_argument("--model-sizes", default="1M,10M")
    p.add_argument("--dtypes", default="fp32,fp16,bf16")
    p.add_argument("--levels", default="op,model")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--slow-ms", type=float, default=500.0, help="time a peer once if its first run is slower")
    p.add_argument("--max-minutes", type=float, default=7.0, help="skip the remaining rows after this long")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--sweep-families",
        type=parse_families,
        default=list(SWEEP_FAMILIES),
        help="DTYPE:HEADSxHEAD_DIM list to tune (default: the targets' shapes); name your model's to tune it",
    )
    p.add_argument("--quick", action="store_true", help="sizes 1M only, no sweep")
    p.add_argument("--cpu-dry-run", action="store_true", help="run every code path on tiny CPU graphs; times nothing")
    args = p.parse_args(argv)
    if args.reps < 10:
        p.error("--reps must be at least 10 (the median of at least 10 runs is what the results report)")
    if problem := argument_problem(args):
        p.error(problem)
    global DEVICE, COMPILE_BACKEND
    if args.cpu_dry_run:
        DEVICE, COMPILE_BACKEND = torch.device("cpu"), "aot_eager"
        args.sizes, args.model_sizes, args.reps, args.warmup, args.dtypes = "2K", "2K", 10, 1, "fp32"
        if Path(args.out).resolve() == OUT:
            p.error("--cpu-dry-run needs --out elsewhere than the committed results")
    elif not torch.cuda.is_available():
        return smoke_without_gpu()
    if args.quick:
        args.sizes, args.model_sizes, args.sweep = "1M", "1M", False
    import gtcompress.nn.fused  # noqa: F401  (registers torch.ops.gtcompress.sparse_graph_attention)

    torch._dynamo.config.cache_size_limit = 64
    b = Bench(args)
    b.doc["copy_gbps"] = copy_bandwidth(DEVICE, 0.05 if args.cpu_dry_run else 2.0)
    print(f"device copy bandwidth: {b.doc['copy_gbps']:.0f} GB/s on {b.doc['machine'].get('gpu')}", flush=True)
    signal.signal(signal.SIGTERM, _stop)  # `timeout` in gpu_check.sh: still write the summary and PNG
    status = 0
    try:
        run_rows(b, args, DEVICE)
    except Stopped as e:
        b.doc["stopped"] = f"{e}: the rows after the last one recorded were not run"
        print(b.doc["stopped"], flush=True)
    except Exception as e:  # outside any row (a graph, the models, the sweep): what ran still gets its summary
        traceback.print_exc()
        b.doc["failed"] = f"{error_text(e)}: the rows after the last one recorded were not run"
        print(b.doc["failed"], flush=True)
        status = 1
    b.doc["cpu_dry_run"] = args.cpu_dry_run
    b.doc["summary"] = summarize(b.rows, b.doc["copy_gbps"], judged=not args.cpu_dry_run)
    b.save()
    png = plot(b.doc, Path(args.out).with_suffix(".png"))
    for line in b.doc["summary"]["lines"]:
        print(line)
    print(f"wrote {args.out} and {png}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
