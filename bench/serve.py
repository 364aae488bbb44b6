"""Serving throughput under concurrent clients, driven by tritonclient's request bytes over loopback.

    python bench/serve.py                       # gtc serve, graph-aware batching on vs off
    python bench/serve.py --server triton       # gtc serve vs NVIDIA Triton, ragged batching on vs off
    python bench/serve.py --requests 2000 --repeats 3   # reduced run, median of 3
    python bench/serve.py --model gt.onnx       # an exported model instead of the built-in small GT

``--server gtc`` (default): the server (``runtime.server.serve``, the same code as ``gtc serve``)
runs twice in its own processes, batching on and off; requests carry the full exported input set
built by ``runtime.client.make_inputs`` (what Triton's native variant takes).

``--server triton``: three targets take the same *raw* graphs: ``gtc serve`` (batching on), and a
real Triton server (``runtime.tritonserver``, the nvidia-pytriton wheel's binary) serving the
Python-backend repository ``gtc export --triton-repo`` writes, once with ragged dynamic batching
and once without (``dynamic_batching`` omitted: one request per model call). Requests to Triton
carry the leading batch dimension of 1 that ``max_batch_size > 0`` asks for.

Requests are molecule-size graphs (12–35 nodes), one per request; every response is checked
against a direct ``GraphSession`` run (:mod:`bench.serve_load`), so "0 errors" means 0 failed
*and* 0 wrong answers. All targets run side by side and the load alternates between them, so
drifting background load on a shared machine hits each alike; with ``--repeats`` the run with the
median throughput is reported (of an even count, the slower middle one; every run is kept under
``runs``). Each run stops early at
``--time-limit`` seconds. Writes ``bench/results/serve/serve[_triton][_reduced].json`` (with the
command, commit, machine and date of the run) and the ``.png`` beside it. One module of ~450
lines: a benchmark reads best top to bottom.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, at_least, provenance
from bench._json import write_json
from bench.serve_load import drive, process_cpu_s
from gtcompress.io import write_atomic
from runtime.tritonserver import free_port

CARD, NODE_COLUMNS = 7, 2


# ---------------------------------------------------------------------------------- model and requests
def export_small_gt(path: Path) -> Path:
    """A small graph-level GT (hidden 64, 4 layers, 4 heads, RWSE 8) exported with the dense lowering."""
    import torch

    from exporters.onnx import export_onnx
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("categorical", NODE_COLUMNS, [CARD] * NODE_COLUMNS),
        out_dim=2,
        hidden=64,
        num_layers=4,
        heads=4,
        pe={"rwse": 8},
        task_level="graph",
    )
    export_onnx(build_model(cfg).eval(), path, "dense", verify_batches=3)
    return path


def molecule(rng: np.random.Generator, spec: Any) -> Any:
    """A molecule-size graph: a chain of 12–35 atoms plus a few ring closures, bonds both ways."""
    from gtcompress.preprocess import NumpyGraph
    from gtcompress.preprocess.random_graphs import _features

    n = int(rng.integers(12, 36))
    src = np.arange(n - 1)
    extra = rng.integers(0, n, (2, max(1, n // 8)))
    e = np.concatenate([np.stack([src, src + 1]), extra], axis=1)
    e = e[:, e[0] != e[1]]
    ei = np.concatenate([e, e[::-1]], axis=1).astype(np.int64)
    ea = None if spec.edge_attr is None else _features(rng, ei.shape[1], spec.edge_attr)
    return NumpyGraph(_features(rng, n, spec.x), ei, ea)


def make_pool(
    path: Path, count: int, seed: int, *, raw: bool = False
) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray], Any]:
    """``count`` requests and the answer a direct session run gives for each. ``raw``: the request
    is the raw graph (``x``, ``edge_index``[, ``edge_attr``]) the server pre-processes; else the
    full exported input set."""
    from runtime.client import make_inputs, raw_request
    from runtime.session import GraphSession

    sess = GraphSession(path)
    rng = np.random.default_rng(seed)
    graphs = [molecule(rng, sess.spec) for _ in range(count)]
    full = [make_inputs([g], sess.spec) for g in graphs]
    expected = [sess.run_inputs(i)[sess.output_name] for i in full]
    inputs = [raw_request([g], sess.spec)[0] for g in graphs] if raw else full
    return inputs, expected, sess.spec


# ---------------------------------------------------------------------------------- server process
def _server_main(path: str, name: str, port: int, batching: bool, delay_ms: float, threads: int | None) -> None:
    from runtime.packing import BatchConfig
    from runtime.server import serve

    cfg = BatchConfig(max_delay_ms=delay_ms) if batching else BatchConfig.disabled()
    serve(path, name, host="127.0.0.1", port=port, batch=cfg, threads=threads or None, metrics=True)


def wait_ready(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def server_batch_stats(port: int, name: str) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    vals: dict[str, float] = {}
    for line in text.splitlines():
        for key in ("gtc_batch_requests_sum", "gtc_batch_requests_count", "gtc_batch_graphs_sum"):
            if line.startswith(f'{key}{{model="{name}"}}'):
                vals[key] = float(line.rsplit(" ", 1)[1])
    calls = vals.get("gtc_batch_requests_count", 0.0)
    return {
        "model_calls": calls,
        "requests_per_call": vals.get("gtc_batch_requests_sum", 0.0) / calls if calls else 0.0,
    }


# ---------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """One server configuration the load is driven against."""

    label: str
    server: str  # "gtc" or "triton"
    batching: bool
    port: int
    model: str
    pid: int
    batch_dim: bool  # requests carry Triton's leading batch dimension

    def model_calls(self) -> int:
        if self.server == "gtc":
            return int(server_batch_stats(self.port, self.model)["model_calls"])
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", f"/v2/models/{self.model}/stats")
        stats = json.loads(conn.getresponse().read())["model_stats"][0]
        return int(stats.get("execution_count", 0))


def start_gtc(path: Path, port: int, batching: bool, args: argparse.Namespace) -> Any:
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_server_main, args=(str(path), "bench", port, batching, args.max_delay_ms, args.threads))
    proc.start()
    return proc


def triton_repository(path: Path, root: Path, args: argparse.Namespace) -> Path:
    """The python-variant repository: ``bench`` with ragged dynamic batching, ``bench_nobatch`` without."""
    from exporters.triton_repo import PythonModelOptions, write_model_repository
    from runtime.spec import model_spec, onnx_metadata

    spec = model_spec(onnx_metadata(path), str(path)).spec
    delay = int(args.max_delay_ms * 1000)
    for name, opts in (
        (
            "bench",
            PythonModelOptions(max_batch_size=args.triton_max_batch, max_queue_delay_us=delay, threads=args.threads),
        ),
        ("bench_nobatch", PythonModelOptions(max_queue_delay_us=None, threads=args.threads)),
    ):
        write_model_repository(root, name, path, spec, backend="python", options=opts)
    return root


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of a process and its children (Triton's Python stubs are children), if psutil is here."""
    try:
        import psutil
    except ImportError:
        return process_cpu_s(pid)
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return None
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


# ---------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    prov = provenance()
    raw = args.server == "triton"
    with tempfile.TemporaryDirectory(prefix="gtc-bench-serve-") as tmp, contextlib.ExitStack() as stack:
        path = Path(args.model) if args.model else export_small_gt(Path(tmp) / "gt_small.onnx")
        inputs, expected, spec = make_pool(path, args.pool, args.seed, raw=raw)
        procs: list[Any] = []
        targets: list[Target] = []
        runs: list[dict[str, Any]] = []
        try:
            for batching in (True,) if raw else (True, False):  # all up at once; an idle one costs nothing
                port = free_port()
                procs.append(start_gtc(path, port, batching, args))
                label = f"gtc serve, batching {'on' if batching else 'off'}"
                targets.append(Target(label, "gtc", batching, port, "bench", procs[-1].pid, False))
            if raw:
                from runtime.tritonserver import TritonServer

                repo = triton_repository(path, Path(tmp) / "triton", args)
                srv = stack.enter_context(TritonServer(repo, log=Path(tmp) / "tritonserver.log"))
                assert srv.pid is not None
                targets.append(Target("Triton, ragged batching", "triton", True, srv.http_port, "bench", srv.pid, True))
                targets.append(
                    Target("Triton, no batching", "triton", False, srv.http_port, "bench_nobatch", srv.pid, True)
                )
            for t in targets:
                wait_ready(t.port)
                warm = min(200, args.requests)
                drive(
                    f"127.0.0.1:{t.port}",
                    t.model,
                    _batched(inputs, t),
                    _batched(expected, t),
                    4,
                    warm,
                    1,
                    60,
                    args.client,
                )
            # targets alternate, so drifting background load on a shared machine hits all alike
            for clients in args.clients:
                nprocs = args.load_procs or (2 if clients >= 16 else 1)
                for rep in range(args.repeats):
                    for t in targets:
                        calls0, cpu0 = t.model_calls(), tree_cpu_s(t.pid)
                        res = drive(
                            f"127.0.0.1:{t.port}",
                            t.model,
                            _batched(inputs, t),
                            _batched(expected, t),
                            clients,
                            args.requests,
                            nprocs,
                            args.time_limit,
                            args.client,
                        )
                        calls, cpu1 = t.model_calls() - calls0, tree_cpu_s(t.pid)
                        res.update(target=t.label, server=t.server, batching=t.batching, repeat=rep)
                        res["model_calls"] = calls
                        if cpu0 is not None and cpu1 is not None and res["requests"]:
                            res["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1e3 / res["requests"]
                        res["requests_per_model_call"] = res["requests"] / calls if calls else 0.0
                        runs.append(res)
                        print(
                            f"{t.label:<26} clients={clients:3d} run {rep + 1}: "
                            f"{res['throughput_rps']:8.1f} req/s  p50 {_ms(res, 'p50')} ms  "
                            f"p99 {_ms(res, 'p99')} ms  errors {res['errors']}  "
                            f"({res['requests']} requests, {res['requests_per_model_call']:.1f} per model call; "
                            f"CPU per request: server {res.get('server_cpu_ms_per_request', float('nan')):.3f} ms, "
                            f"load {res['load_cpu_ms_per_request']:.3f} ms)",
                            flush=True,
                        )
        finally:
            for proc in procs:
                proc.terminate()  # SIGTERM: the server drains, then exits
            for proc in procs:
                proc.join(60)
        results = []
        for c in args.clients:
            for t in targets:  # the run with the median throughput represents the configuration
                reps = sorted(
                    (r for r in runs if r["clients"] == c and r["target"] == t.label), key=lambda r: r["throughput_rps"]
                )
                best = dict(median_run(reps))
                best["throughput_rps_all_runs"] = [r["throughput_rps"] for r in reps]
                best["errors_all_runs"] = sum(r["errors"] for r in reps)
                results.append(best)
        return {
            **prov,
            "model": {
                "path": str(args.model) if args.model else "built-in small GT (hidden 64, 4 layers, 4 heads, RWSE 8)",
                "lowering": str(spec.lowering),
                "task_level": spec.task_level,
            },
            "settings": {
                "server": args.server,
                "targets": [t.label for t in targets],
                "requests_per_config": args.requests,
                "clients": args.clients,
                "max_delay_ms": args.max_delay_ms,
                "triton_max_batch_size": args.triton_max_batch if raw else None,
                "server_threads": args.threads,
                "client": args.client,
                "pool": args.pool,
                "time_limit_s": args.time_limit,
                "repeats": args.repeats,
                "graphs": "molecule-size, 12-35 nodes, one graph per request, "
                + ("raw graph (server pre-processes)" if raw else "full exported input set")
                + ", binary",
                "reduced": args.requests < 10_000,
            },
            "results": results,
            "runs": runs,
            "ratios": ratios(results, args.clients),
        }


def _batched(values: list[Any], t: Target) -> list[Any]:
    """Requests (input dicts) or expected outputs with Triton's leading batch dimension when ``t`` needs it."""
    if not t.batch_dim:
        return values
    return [{k: v[None] for k, v in x.items()} if isinstance(x, dict) else x[None] for x in values]


def _lat(row: dict[str, Any], stat: str) -> float:
    """A latency percentile (ms); NaN when no request was answered right."""
    return float("nan") if row["latency_ms"] is None else row["latency_ms"][stat]


def _ms(res: dict[str, Any], stat: str) -> str:
    """:func:`_lat` for the log, ``n/a`` for NaN."""
    v = _lat(res, stat)
    return "    n/a" if v != v else f"{v:7.2f}"


def ratios(results: list[dict[str, Any]], clients: list[int]) -> dict[str, dict[str, float | None]]:
    """Per client count: batching on over off for each server, and Triton (batching) over gtc serve."""
    out: dict[str, dict[str, float | None]] = {}
    for c in clients:
        rps = {r["target"]: r["throughput_rps"] for r in results if r["clients"] == c}
        row: dict[str, float | None] = {}
        for a, b in (
            ("gtc serve, batching on", "gtc serve, batching off"),
            ("Triton, ragged batching", "Triton, no batching"),
            ("Triton, ragged batching", "gtc serve, batching on"),
        ):
            if a in rps and b in rps:
                row[f"{a} / {b}"] = rps[a] / rps[b] if rps[b] else None
        out[str(c)] = row
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = report["settings"]["clients"]
    labels = report["settings"]["targets"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        rows = [next(r for r in report["results"] if r["clients"] == c and r["target"] == label) for c in clients]
        xs = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(clients))]
        bars = a1.bar(xs, [r["throughput_rps"] for r in rows], width, label=label)
        a1.bar_label(bars, fmt="%.0f", fontsize=8)
        a2.bar(xs, [_lat(r, "p50") for r in rows], width, label=f"{label} p50")
        a2.scatter(xs, [_lat(r, "p99") for r in rows], marker="_", s=300, color="k", zorder=3)
    for ax in (a1, a2):
        ax.set_xticks(range(len(clients)), [f"{c} clients" for c in clients])
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    a1.set(ylabel="requests / s", title="throughput")
    a2.set(ylabel="latency (ms); black bar: p99", title="latency")
    tag = " (reduced)" if report["settings"]["reduced"] else ""
    what = "raw graphs" if report["settings"]["server"] == "triton" else "pre-processed input sets"
    fig.suptitle(f"one molecule-size graph per request, {what}{tag}")
    fig.tight_layout()
    try:  # renamed into place: a run killed while saving leaves the previous plot, not half a PNG
        write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=120))
    finally:
        plt.close(fig)


def _client_counts(text: str) -> list[int]:
    """``--clients``: comma-separated client counts, each at least 1 (0 clients send nothing and
    wrote a result of 0 requests, exit 0, over the last one)."""
    return [at_least(1)(v.strip()) for v in text.split(",")]


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (``timeout``, ``kill``, a scheduler) ends the run the way Ctrl-C does: by unwinding through
    :func:`run`'s ``finally``, which stops the ``gtc serve`` processes and leaves ``tritonserver`` and the
    temporary model folder to their context managers. Python's default for SIGTERM ends the process at once,
    skipping all of that: the spawned servers, which nothing else stops, went on serving on their ports with
    no parent. Further SIGTERMs are ignored so that this clean-up is not cut short (nothing is started after
    this, so no child inherits the ignored disposition)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput. It must be a measured run, not an average, so of an even
    count the slower of the two middle ones is taken: the faster one flattered every even --repeats."""
    ranked = sorted(runs, key=lambda r: r["throughput_rps"])
    return ranked[(len(ranked) - 1) // 2]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--server",
        choices=("gtc", "triton"),
        default="gtc",
        help="gtc: gtc serve, batching on vs off; triton: gtc serve vs Triton (python variant), batching on vs off",
    )
    p.add_argument("--model", help="exported .onnx (default: export a small GT)")
    p.add_argument("--requests", type=at_least(1), default=10_000, help="requests per configuration")
    p.add_argument("--clients", type=_client_counts, default=[16, 32], help="concurrent clients, e.g. 16,32")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="batching delay (gtc serve and Triton)")
    p.add_argument(
        "--triton-max-batch", type=at_least(1), default=64, help="Triton's max_batch_size (requests per call)"
    )
    p.add_argument(
        "--threads", type=at_least(0), default=1, help="ONNX Runtime intra-op threads in the server (0: its default)"
    )
    p.add_argument("--load-procs", type=at_least(0), default=0, help="load processes (0: 2 for >=16 clients)")
    p.add_argument(
        "--client",
        choices=("raw", "tritonclient"),
        default="raw",
        help="raw: tritonclient's request bytes over keep-alive sockets (cheap); tritonclient: the client itself",
    )
    p.add_argument("--pool", type=at_least(1), default=256, help="distinct graphs cycled through")
    p.add_argument("--time-limit", type=_positive_seconds, default=240.0, help="seconds per configuration at most")
    p.add_argument("--repeats", type=at_least(1), default=1, help="runs per configuration (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "serve", help="folder for the JSON and PNG")
    args = p.parse_args(argv)
    if not 0 <= args.max_delay_ms < float("inf"):
        p.error(f"argument --max-delay-ms: must be a finite number of milliseconds >= 0, got {args.max_delay_ms}")
    if args.model and not Path(args.model).is_file():  # else a SessionError traceback once the run had begun
        p.error(f"argument --model: no such file: {args.model}")
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        report = run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    stem = "serve" + ("_triton" if args.server == "triton" else "") + ("" if args.requests >= 10_000 else "_reduced")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{stem}.json", report)
    plot(report, args.out / f"{stem}.png")
    for c, row in report["ratios"].items():
        for what, value in row.items():
            print(f"{c} clients: {what} = {value:.2f}x throughput" if value else f"{c} clients: {what}: n/a")
    errors = sum(r["errors_all_runs"] for r in report["results"])
    print(f"errors (failed or wrong answers): {errors}")
    print(f"wrote {args.out / (stem + '.json')} and {stem}.png")


if __name__ == "__main__":
    main()
