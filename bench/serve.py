"""Serving throughput: graph-aware dynamic batching on vs off, driven by tritonclient over loopback
(one protocol: server process, load generator, checks and plot, hence one module of ~500 lines).

    python bench/serve.py                     # 16 and 32 clients, 10 000 requests each, ~10 min on 2 cores
    python bench/serve.py --requests 2000 --repeats 3   # reduced run, median of 3
    python bench/serve.py --model gt.onnx     # an exported model instead of the built-in small GT

The server (``runtime.server.serve``, the same code as ``gtc serve``) runs in its own process on
127.0.0.1; the load comes from other processes whose threads send requests back-to-back, each on
its own keep-alive connection. By default they send the exact bytes ``tritonclient.http`` builds
(binary tensor data, the client's default) over plain sockets, so the load generator costs the
2-core machine far less than the server it measures; ``--client tritonclient`` uses the client
itself. Requests are molecule-size graphs (12–35 nodes) carrying the full exported input set
built by ``runtime.client.make_inputs`` (so the same load would run against NVIDIA Triton); every
response is checked against a direct ``GraphSession`` run, so "0 errors" means 0 failed *and*
0 wrong answers. Both servers (batching on, off) run side by side and the load alternates between
them, so drifting background load on a shared machine hits both alike; with ``--repeats`` the run
with the median throughput is reported (every run is kept under ``runs``). Each run stops early
at ``--time-limit`` seconds. Writes
``bench/results/serve/serve.json`` (with the command, commit, machine and date of the run) and ``serve.png``
(``serve_reduced.*`` below 10 000 requests).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, provenance

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


def make_pool(path: Path, count: int, seed: int) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray], dict]:
    """``count`` requests (full input sets) and the answer a direct session run gives for each."""
    from runtime.client import make_inputs
    from runtime.session import GraphSession

    sess = GraphSession(path)
    rng = np.random.default_rng(seed)
    graphs = [molecule(rng, sess.spec) for _ in range(count)]
    inputs = [make_inputs([g], sess.spec) for g in graphs]
    expected = [sess.run_inputs(i)[sess.output_name] for i in inputs]
    return inputs, expected, sess.spec


# ---------------------------------------------------------------------------------- server process
def _server_main(path: str, name: str, port: int, batching: bool, delay_ms: float, threads: int | None) -> None:
    from runtime.batcher import BatchConfig
    from runtime.server import serve

    cfg = BatchConfig(max_delay_ms=delay_ms) if batching else BatchConfig.disabled()
    serve(path, name, host="127.0.0.1", port=port, batch=cfg, threads=threads or None, metrics=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


# ---------------------------------------------------------------------------------- load processes
def request_bytes(name: str, inputs: dict[str, np.ndarray]) -> bytes:
    """One complete HTTP/1.1 request, body exactly as ``tritonclient.http`` builds it (binary tensors)."""
    import tritonclient.http as triton
    from tritonclient.http._utils import _get_inference_request

    from runtime.client import triton_inputs

    outputs = [triton.InferRequestedOutput("output")]
    body, json_size = _get_inference_request(triton_inputs(inputs), "", outputs, 0, False, False, 0, None, None)
    head = (
        f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        f"Inference-Header-Content-Length: {json_size}\r\n\r\n"
    )
    return head.encode() + body


class RawClient:
    """A keep-alive HTTP/1.1 connection sending pre-built requests: a load generator that costs the
    machine far less than the server it measures (tritonclient itself is used by the tests and by
    ``--client tritonclient``)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _read_until(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk

    def infer(self, request: bytes) -> np.ndarray:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            self._read_until(len(self.buf) + 1)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        length = int(headers["content-length"])
        self._read_until(length)
        body, self.buf = self.buf[:length], self.buf[length:]
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        json_len = int(headers["inference-header-content-length"])
        out = json.loads(body[:json_len])["outputs"][0]
        return np.frombuffer(body[json_len:], dtype=np.float32).reshape(out["shape"])

    def close(self) -> None:
        self.sock.close()


def _load_main(
    url: str,
    name: str,
    inputs: list[dict[str, np.ndarray]],
    expected: list[np.ndarray],
    threads: int,
    requests: int,
    offset: int,
    time_limit: float,
    start_at: float,
    queue: Any,
    client_kind: str = "raw",
) -> None:
    """``threads`` clients sending ``requests`` in total, back-to-back; results go to ``queue``."""
    import tritonclient.http as triton

    from runtime.client import triton_inputs

    host, port = url.rsplit(":", 1)
    if client_kind == "raw":
        prebuilt: list[Any] = [request_bytes(name, i) for i in inputs]
    else:
        prebuilt = [triton_inputs(i) for i in inputs]
    wanted = [triton.InferRequestedOutput("output")]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[list[str]] = [[] for _ in range(threads)]
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker(k: int) -> None:
        if client_kind == "raw":
            raw = RawClient(host, int(port))
        else:
            client = triton.InferenceServerClient(url, connection_timeout=120, network_timeout=120)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None or time.monotonic() > start_at + time_limit:
                    return
                j = (offset + i) % len(prebuilt)
                t0 = time.monotonic()
                try:
                    if client_kind == "raw":
                        out = raw.infer(prebuilt[j])
                    else:
                        out = client.infer(name, prebuilt[j], outputs=wanted).as_numpy("output")
                    if out.shape != expected[j].shape or not np.allclose(out, expected[j], atol=1e-4):
                        errors[k].append(f"request {j}: wrong answer")
                except Exception as e:  # count, never stop the load
                    errors[k].append(f"{type(e).__name__}: {e}")
                    if client_kind == "raw":
                        raw.close()
                        raw = RawClient(host, int(port))
                latencies[k].append(time.monotonic() - t0)
        finally:
            (raw if client_kind == "raw" else client).close()

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    while time.monotonic() < start_at:
        time.sleep(0.001)
    begin, cpu = time.monotonic(), time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put(
        {
            "begin": begin,
            "end": time.monotonic(),
            "cpu_s": time.process_time() - cpu,
            "latencies": [v for lat in latencies for v in lat],
            "errors": [e for err in errors for e in err],
        }
    )


def drive(
    url: str,
    name: str,
    inputs: list[dict[str, np.ndarray]],
    expected: list[np.ndarray],
    clients: int,
    requests: int,
    procs: int,
    time_limit: float,
    client_kind: str = "raw",
) -> dict[str, Any]:
    """``clients`` concurrent clients spread over ``procs`` processes; throughput and latency."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.monotonic() + 3.0 + 0.5 * procs  # every process imported and ready before the gun
    workers = []
    for p in range(procs):
        threads = clients // procs + (1 if p < clients % procs else 0)
        share = requests // procs + (1 if p < requests % procs else 0)
        args = (url, name, inputs, expected, threads, share, p * 7919, time_limit, start_at, queue, client_kind)
        workers.append(ctx.Process(target=_load_main, args=args, daemon=True))
    for w in workers:
        w.start()
    parts = [queue.get(timeout=time_limit + 300) for _ in workers]
    for w in workers:
        w.join(30)
    lat = np.asarray([v for p in parts for v in p["latencies"]]) * 1e3
    wall = max(p["end"] for p in parts) - min(p["begin"] for p in parts)
    errors = [e for p in parts for e in p["errors"]]
    load_cpu = sum(p["cpu_s"] for p in parts)
    return {
        "clients": clients,
        "client": client_kind,
        "load_processes": procs,
        "requests": int(lat.size),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": wall,
        "throughput_rps": lat.size / wall if wall > 0 else 0.0,
        "latency_ms": {
            "mean": float(lat.mean()),
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        },
        "stopped_by_time_limit": bool(lat.size < requests),
        "load_cpu_ms_per_request": load_cpu * 1e3 / lat.size if lat.size else 0.0,
    }


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    prov = provenance()
    with tempfile.TemporaryDirectory(prefix="gtc-bench-serve-") as tmp:
        path = Path(args.model) if args.model else export_small_gt(Path(tmp) / "gt_small.onnx")
        inputs, expected, spec = make_pool(path, args.pool, args.seed)
        name = "bench"
        ctx = mp.get_context("spawn")
        servers: dict[bool, tuple[Any, int]] = {}
        runs: list[dict[str, Any]] = []
        try:
            for batching in (True, False):  # both up at once; an idle one costs nothing (no spinning)
                port = free_port()
                proc = ctx.Process(
                    target=_server_main, args=(str(path), name, port, batching, args.max_delay_ms, args.threads)
                )
                proc.start()
                servers[batching] = (proc, port)
            for _, port in servers.values():
                wait_ready(port)
                warm = min(200, args.requests)
                drive(f"127.0.0.1:{port}", name, inputs, expected, 4, warm, 1, 60, args.client)
            # on/off alternate, so drifting background load on a shared machine hits both alike
            for clients in args.clients:
                procs = args.load_procs or (2 if clients >= 16 else 1)
                for rep in range(args.repeats):
                    for batching, (proc, port) in servers.items():
                        before = server_batch_stats(port, name)
                        cpu0 = process_cpu_s(proc.pid)
                        res = drive(
                            f"127.0.0.1:{port}",
                            name,
                            inputs,
                            expected,
                            clients,
                            args.requests,
                            procs,
                            args.time_limit,
                            args.client,
                        )
                        calls = server_batch_stats(port, name)["model_calls"] - before["model_calls"]
                        cpu1 = process_cpu_s(proc.pid)
                        res.update(batching=batching, repeat=rep, model_calls=int(calls))
                        if cpu0 is not None and cpu1 is not None and res["requests"]:
                            res["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1e3 / res["requests"]
                        res["requests_per_model_call"] = res["requests"] / calls if calls else 0.0
                        runs.append(res)
                        print(
                            f"batching={'on ' if batching else 'off'} clients={clients:3d} run {rep + 1}: "
                            f"{res['throughput_rps']:8.1f} req/s  p50 {res['latency_ms']['p50']:7.2f} ms  "
                            f"p99 {res['latency_ms']['p99']:7.2f} ms  errors {res['errors']}  "
                            f"({res['requests']} requests, {res['requests_per_model_call']:.1f} per model call; "
                            f"CPU per request: server {res.get('server_cpu_ms_per_request', float('nan')):.3f} ms, "
                            f"load {res['load_cpu_ms_per_request']:.3f} ms)",
                            flush=True,
                        )
        finally:
            for proc, _ in servers.values():
                proc.terminate()  # SIGTERM: the server drains, then exits
            for proc, _ in servers.values():
                proc.join(60)
        results, speedup = [], {}
        for c in args.clients:
            for batching in (True, False):  # the run with the median throughput represents the config
                reps = sorted(
                    (r for r in runs if r["clients"] == c and r["batching"] == batching),
                    key=lambda r: r["throughput_rps"],
                )
                best = dict(reps[len(reps) // 2])
                best["throughput_rps_all_runs"] = [r["throughput_rps"] for r in reps]
                best["errors_all_runs"] = sum(r["errors"] for r in reps)
                results.append(best)
            on = next(r for r in results if r["clients"] == c and r["batching"])
            off = next(r for r in results if r["clients"] == c and not r["batching"])
            speedup[str(c)] = on["throughput_rps"] / off["throughput_rps"] if off["throughput_rps"] else None
        return {
            **prov,
            "model": {
                "path": str(args.model) if args.model else "built-in small GT (hidden 64, 4 layers, 4 heads, RWSE 8)",
                "lowering": str(spec.lowering),
                "task_level": spec.task_level,
            },
            "settings": {
                "requests_per_config": args.requests,
                "clients": args.clients,
                "max_delay_ms": args.max_delay_ms,
                "server_threads": args.threads,
                "client": args.client,
                "pool": args.pool,
                "time_limit_s": args.time_limit,
                "repeats": args.repeats,
                "graphs": "molecule-size, 12-35 nodes, one graph per request, full exported input set, binary",
                "reduced": args.requests < 10_000,
            },
            "results": results,
            "runs": runs,
            "batching_speedup": speedup,
        }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = report["settings"]["clients"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    for k, batching in enumerate((True, False)):
        rows = [next(r for r in report["results"] if r["clients"] == c and r["batching"] == batching) for c in clients]
        xs = [i + (k - 0.5) * width for i in range(len(clients))]
        label = "batching on" if batching else "batching off"
        bars = a1.bar(xs, [r["throughput_rps"] for r in rows], width, label=label)
        a1.bar_label(bars, fmt="%.0f", fontsize=8)
        a2.bar(xs, [r["latency_ms"]["p50"] for r in rows], width, label=f"{label} p50")
        a2.scatter(xs, [r["latency_ms"]["p99"] for r in rows], marker="_", s=400, color="k", zorder=3)
    for ax in (a1, a2):
        ax.set_xticks(range(len(clients)), [f"{c} clients" for c in clients])
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    a1.set(ylabel="requests / s", title="throughput")
    a2.set(ylabel="latency (ms); black bar: p99", title="latency")
    tag = " (reduced)" if report["settings"]["reduced"] else ""
    fig.suptitle(f"gtc serve, one small graph per request{tag}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="exported .onnx (default: export a small GT)")
    p.add_argument("--requests", type=int, default=10_000, help="requests per configuration")
    p.add_argument("--clients", type=lambda s: [int(v) for v in s.split(",")], default=[16, 32])
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime intra-op threads in the server (0: its default)"
    )
    p.add_argument("--load-procs", type=int, default=0, help="load processes (0: 2 for >=16 clients)")
    p.add_argument(
        "--client",
        choices=("raw", "tritonclient"),
        default="raw",
        help="raw: tritonclient's request bytes over keep-alive sockets (cheap); tritonclient: the client itself",
    )
    p.add_argument("--pool", type=int, default=256, help="distinct graphs cycled through")
    p.add_argument("--time-limit", type=float, default=240.0, help="seconds per configuration at most")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "serve", help="folder for serve[_reduced].json and .png")
    args = p.parse_args()
    report = run(args)
    stem = "serve" if args.requests >= 10_000 else "serve_reduced"
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, args.out / f"{stem}.json")
    plot(report, args.out / f"{stem}.png")
    for c, s in report["batching_speedup"].items():
        print(f"{c} clients: batching gives {s:.2f}x the throughput of no batching")
    print(f"wrote {args.out / (stem + '.json')} and {stem}.png")


if __name__ == "__main__":
    main()
