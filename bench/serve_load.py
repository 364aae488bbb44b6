"""Load generation for ``bench/serve.py``: clients in other processes, each thread on its own keep-alive connection.

By default the threads send the exact bytes ``tritonclient.http`` builds (binary tensor data, the
client's default) over plain sockets, so the load generator costs the 2-core machine far less
than the server it measures; ``client_kind="tritonclient"`` uses the client itself. Every response
is compared with the expected answer, so "0 errors" means 0 failed *and* 0 wrong answers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import threading
import time
from typing import Any

import numpy as np


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
                    seconds = time.monotonic() - t0
                    if out.shape != expected[j].shape or not np.allclose(out, expected[j], atol=1e-4):
                        errors[k].append(f"request {j}: wrong answer")
                    else:  # only right answers count towards throughput and latency
                        latencies[k].append(seconds)
                except Exception as e:  # count, never stop the load
                    errors[k].append(f"{type(e).__name__}: {e}")
                    if client_kind == "raw":
                        raw.close()
                        raw = RawClient(host, int(port))
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
    """``clients`` concurrent clients spread over ``procs`` processes (at most one per client: a
    process with no client thread would drop its share of the requests); throughput and latency of
    the right answers, the failed and wrong ones counted as ``errors``."""
    procs = max(1, min(procs, clients))
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
    sent = int(lat.size) + len(errors)
    load_cpu = sum(p["cpu_s"] for p in parts)
    return {
        "clients": clients,
        "client": client_kind,
        "load_processes": procs,
        "requests": sent,
        "answered_right": int(lat.size),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": wall,
        "throughput_rps": lat.size / wall if wall > 0 else 0.0,
        "latency_ms": (
            {
                "mean": float(lat.mean()),
                "p50": float(np.percentile(lat, 50)),
                "p90": float(np.percentile(lat, 90)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max()),
            }
            if lat.size
            else None
        ),
        "stopped_by_time_limit": bool(sent < requests),
        "load_cpu_ms_per_request": load_cpu * 1e3 / sent if sent else 0.0,
    }


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
