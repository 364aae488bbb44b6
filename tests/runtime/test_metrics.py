"""``gtc serve --metrics``: what each request's outcome is counted as, read back from ``/metrics``."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import httpx
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from runtime.batcher import BatchConfig
from runtime.client import fetch_spec, infer_graphs
from runtime.metrics import OUTCOMES, outcome_of
from runtime.server import BackgroundServer, create_app
from runtime.session import GraphSession
from tests.runtime.conftest import gated_model_calls


def _requests(url: str) -> dict[tuple[str, str], float]:
    """``gtc_inference_requests_total`` by (model, outcome), and the unknown-model count under ("", "")."""
    text = httpx.get(f"http://{url}/metrics").text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gtc_inference_requests_total":
                out[(s.labels["model"], s.labels["outcome"])] = s.value
            elif s.name == "gtc_unknown_model_requests_total":
                out[("", "")] = s.value
    return out


def test_the_outcome_of_a_status() -> None:
    assert [outcome_of(s) for s in (200, 400, 404, 408, 413, 503, 500, None)] == [
        "success",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "unavailable",
        "error",
        "disconnected",
    ]


def test_bad_requests_and_disconnects_are_not_counted_as_server_errors(exported) -> None:
    """Every outcome was ``error`` but success: a client's malformed requests, or clients leaving mid-body,
    read on a dashboard as the server failing. Unknown model names were not counted at all."""
    app = create_app({"m": GraphSession(exported["graph"].path)}, BatchConfig(max_delay_ms=1), metrics=True)
    with BackgroundServer(app) as srv:
        counts = _requests(srv.url)
        assert {counts[("m", o)] for o in OUTCOMES} == {0.0}  # every outcome is shown from the start
        client = triton.InferenceServerClient(srv.url)
        infer_graphs(client, "m", exported["graph"].graphs(2), fetch_spec(client, "m"))
        client.close()
        bad = httpx.post(f"http://{srv.url}/v2/models/m/infer", content=b"{not json", timeout=30)
        assert bad.status_code == 400
        unknown = httpx.post(f"http://{srv.url}/v2/models/nope/infer", content=b"{}", timeout=30)
        assert unknown.status_code == 404
        host, port = srv.url.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:  # 10 of its 1000 bytes, then gone
            s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while _requests(srv.url)[("m", "disconnected")] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = _requests(srv.url)
    assert counts[("m", "success")] == 1.0
    assert counts[("m", "invalid")] == 1.0
    assert counts[("m", "disconnected")] == 1.0
    assert counts[("m", "error")] == 0.0 and counts[("m", "unavailable")] == 0.0
    assert counts[("", "")] == 1.0
    assert not any(model == "nope" for model, _ in counts)


def test_a_client_that_leaves_before_its_answer_is_counted_as_gone_and_not_run(exported, monkeypatch) -> None:
    """A client that sent its whole request and left while it waited (a client timeout, often followed by a
    retry) had its request run for nobody and counted as a success. It is now withdrawn as the worker takes
    it from the queue, never run, and counted as disconnected. The model call is held on a gate so that the
    second request waits in the queue while its client leaves."""
    gate, calls = gated_model_calls(monkeypatch)
    graph = exported["graph"].graphs(1)[0]
    body = json.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": list(graph.x.shape), "data": graph.x.ravel().tolist()},
        {"name": "edge_index", "datatype": "INT64", "shape": list(graph.edge_index.shape),
         "data": graph.edge_index.ravel().tolist()},
    ]}).encode()  # fmt: skip
    request = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    app = create_app({"m": GraphSession(exported["graph"].path)}, BatchConfig(max_delay_ms=0), metrics=True)
    with BackgroundServer(app) as srv:
        host, port = srv.url.rsplit(":", 1)
        first = socket.create_connection((host, int(port)), timeout=30)
        first.sendall(request)
        _wait(lambda: calls == [1])  # the model holds the first request
        with socket.create_connection((host, int(port)), timeout=30) as second:
            second.sendall(request)
            _wait(lambda: app.state.models["m"].batcher.pending == 2)  # queued behind it
        time.sleep(0.3)  # the server sees the connection lost (an order, not a timing: no assertion on it)
        gate.set()
        _wait(lambda: _requests(srv.url)[("m", "disconnected")] == 1.0)  # withdrawn when the worker takes it
        with first:
            assert first.recv(12) == b"HTTP/1.1 200"
        _wait(lambda: _requests(srv.url)[("m", "success")] == 1.0)
        assert calls == [1]  # the second request never ran
        counts = _requests(srv.url)
        assert (counts[("m", "success")], counts[("m", "disconnected")]) == (1.0, 1.0)


def _wait(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
