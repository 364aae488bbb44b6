"""bench/serve_load.drive against a stub server that fails every request: failures are errors, not
throughput, and every request asked for is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bench.serve_load import drive


class _Failing(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error":"boom"}'
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_failed_requests_are_no_throughput_and_none_is_dropped(failing_server: str) -> None:
    """A server failing every request reported 1,700 req/s; with two load processes for one client,
    the second process had no client thread and half the requests were never sent."""
    inputs = [{"x": np.zeros((3, 1), np.float32), "edge_index": np.zeros((2, 2), np.int64)}]
    res = drive(failing_server, "m", inputs, [np.zeros((1, 2), np.float32)], clients=1, requests=40, procs=2,
                time_limit=60)  # fmt: skip
    assert res["load_processes"] == 1
    assert (res["requests"], res["answered_right"], res["errors"]) == (40, 0, 40)
    assert res["throughput_rps"] == 0.0 and res["latency_ms"] is None
    assert res["stopped_by_time_limit"] is False
