"""Answers a client does not take: the connection of a client that stops reading its answer is aborted
(runtime.http_head.SEND_TIMEOUT_S), so the answer's bytes and the connection are not held forever,
while a client that reads steadily, however slowly its reads come, gets every byte."""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from runtime.served import ServerLimits
from runtime.server import BackgroundServer, ServedModel, create_app
from runtime.session import GraphSession

MiB = 1024 * 1024

GRAPH_NODES = 10


@pytest.fixture(scope="module")
def server(exported) -> Iterator[BackgroundServer]:
    app = create_app([ServedModel("m", GraphSession(exported["node"].path))], warmup=False)
    with BackgroundServer(app) as srv:
        yield srv


def _request(nodes: int, binary_output: bool = False) -> bytes:
    """An HTTP request for ``nodes`` nodes in graphs of GRAPH_NODES without edges: a small binary body
    whose JSON answer (3 floats a node) is 63 bytes a node (``binary_output``: 12)."""
    x = np.zeros((nodes, 2), np.int64).tobytes()
    counts = np.full(nodes // GRAPH_NODES, GRAPH_NODES, np.int64).tobytes()
    inputs = [
        {"name": "x", "datatype": "INT64", "shape": [nodes, 2], "parameters": {"binary_data_size": len(x)}},
        {"name": "edge_index", "datatype": "INT64", "shape": [2, 0], "data": []},
        {"name": "edge_attr", "datatype": "FP32", "shape": [0, 2], "data": []},
        {
            "name": "node_counts",
            "datatype": "INT64",
            "shape": [nodes // GRAPH_NODES],
            "parameters": {"binary_data_size": len(counts)},
        },
    ]
    request: dict = {"inputs": inputs}
    if binary_output:
        request["outputs"] = [{"name": "output", "parameters": {"binary_data": True}}]
    head = json.dumps(request).encode()
    body = head + x + counts
    return (
        f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: {len(head)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _client(srv: BackgroundServer) -> socket.socket:
    """A client with a small receive buffer, so that an answer it does not read stays with the server."""
    host, port = srv.url.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect((host, int(port)))
    return s


def _read(s: socket.socket, pause: float = 0.0) -> tuple[bytes, bytes]:
    """Head and body as far as the server sends them: until the answer is complete, the connection
    ends, or nothing comes for the socket's timeout; ``pause`` seconds between reads."""
    data = b""
    length = None
    try:
        while chunk := s.recv(65536):
            data += chunk
            if length is None and b"\r\n\r\n" in data:
                length = _length(data.partition(b"\r\n\r\n")[0])
            if length is not None and len(data.partition(b"\r\n\r\n")[2]) >= length:
                break
            time.sleep(pause)
    except (ConnectionResetError, TimeoutError):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def _length(head: bytes) -> int:
    match = re.search(rb"\r\ncontent-length: (\d+)", head.lower())
    assert match, head
    return int(match[1])


def test_a_client_that_stops_reading_its_answer_is_cut_off(server, monkeypatch) -> None:
    """Nothing timed out a client that did not read its answer: uvicorn's keep-alive timer and the head
    timer only close the connection, which waits for the buffered answer to flush, so 60 clients that
    sent 1.6 MiB each and read nothing took a server from 120 to 733 MiB with max_inflight_mib 64, and
    held it and their connections for as long as they stayed connected. Now a connection whose answer
    is not taken for SEND_TIMEOUT_S is aborted: the client gets part of it, then the connection ends."""
    import runtime.http_head

    monkeypatch.setattr(runtime.http_head, "SEND_TIMEOUT_S", 0.5)
    s = _client(server)
    try:
        s.sendall(_request(100_000))
        # Wait for the answer's first bytes rather than a guessed compute time: on a loaded machine the
        # answer can take longer than any fixed sleep, and a client that then reads it while the
        # server still sends is a reading client, not the one this test is about.
        assert select.select([s], [], [], 120)[0], "no answer within 120 s"
        time.sleep(8 * runtime.http_head.SEND_TIMEOUT_S)  # taking nothing for 8 times the cut-off
        head, body = _read(s)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert len(body) < _length(head) // 2, (len(body), _length(head))
    r = httpx.get(f"http://{server.url}/v2/health/ready")
    assert r.status_code == 200


def test_a_client_that_reads_slowly_but_steadily_gets_its_whole_answer(server, monkeypatch) -> None:
    """The cut-off is for a client that takes nothing (or under 500 bytes a second): one that reads
    a few KiB (its receive buffer) every 50 ms, ten times within SEND_TIMEOUT_S, gets every byte of a
    315 kB answer, taken in about 50 reads over five times the cut-off."""
    import runtime.http_head

    monkeypatch.setattr(runtime.http_head, "SEND_TIMEOUT_S", 0.5)
    s = _client(server)
    try:
        s.sendall(_request(5_000))
        head, body = _read(s, pause=0.05)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert len(body) == _length(head)
    assert json.loads(body)["outputs"][0]["shape"] == [5_000, 3]


ANSWER_BYTES = 6_300_114  # the JSON answer to _request(100_000): every node alike, so every answer alike


def _settled(held: Callable[[], int], before: int, timeout: float = 20.0) -> int:
    """The budget's bytes once a request sent after it held ``before`` has been answered and the answer
    is not taken: ``before`` and the answer's body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if held() == before + ANSWER_BYTES:
            return before + ANSWER_BYTES
        time.sleep(0.05)
    raise AssertionError(f"in-flight bytes never settled: {held()} (before the request: {before})")


def _body_bytes(request: bytes) -> int:
    return len(request.partition(b"\r\n\r\n")[2])


def test_answers_not_yet_taken_stay_charged_and_a_burst_of_them_is_held_to_the_budget(exported) -> None:
    """An answer's bytes were charged to nothing: the request's share of max_inflight_mib was given
    back once the answer was built, while the answer (a node-level JSON answer is 4x this binary
    request's body) stayed in memory until the client took it. Clients that read slowly took the
    server past its budget however small it was. Now the answer is charged before the model runs (64
    bytes a JSON value) and its body until the client has taken it: with 48 MiB, five unread 6.3 MB
    answers leave no room for a sixth request's 20.9 MB (503), and reading them gives it all back."""
    limits = ServerLimits(max_inflight_mib=48, max_body_bytes=2 * MiB)
    app = create_app([ServedModel("m", GraphSession(exported["node"].path))], limits=limits, warmup=False)
    budget = app.state.inflight
    with BackgroundServer(app) as srv:
        clients: list[socket.socket] = []
        try:
            held = 0
            for _ in range(5):
                clients.append(_client(srv))
                clients[-1].sendall(_request(100_000))
                held = _settled(lambda: budget.held, held)
                assert held <= budget.limit
            charge = 100_000 * 3 * 64 + _body_bytes(_request(100_000))  # 64 bytes a JSON value, and the body
            late = _client(srv)
            clients.append(late)
            late.sendall(_request(100_000))
            head, body = _read(late)
            assert head.startswith(b"HTTP/1.1 503 "), head
            assert json.loads(body)["error"] == (
                f"server is busy: requests in flight hold {held} bytes, and this one's {charge} "
                f"would take them past this server's limit of {48 * MiB} bytes (max_inflight_mib); retry later"
            )
            for s in clients[:5]:
                head, body = _read(s)
                assert len(body) == _length(head) == ANSWER_BYTES
        finally:
            for s in clients:
                s.close()
        deadline = time.monotonic() + 5
        while budget.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert budget.held == 0


def test_an_answer_larger_than_the_whole_budget_is_a_400_before_the_model_runs(exported) -> None:
    """A JSON answer that alone takes more than the budget can never be served: 400 naming the sizes and
    binary output, which is 8x cheaper and is served."""
    limits = ServerLimits(max_inflight_mib=16, max_body_bytes=2 * MiB)
    app = create_app([ServedModel("m", GraphSession(exported["node"].path))], limits=limits, warmup=False)
    with BackgroundServer(app) as srv:
        replies = []
        for binary in (False, True):
            s = _client(srv)
            try:
                s.sendall(_request(100_000, binary_output=binary))
                replies.append(_read(s))
            finally:
                s.close()
    (head, body), (binary_head, binary_body) = replies
    assert head.startswith(b"HTTP/1.1 400 "), head
    sent = _body_bytes(_request(100_000))
    assert json.loads(body)["error"] == (
        "input 'x': encoding the answer of model 'm' to this request takes about 19,200,000 bytes of memory, which "
        f"with its {sent:,} bytes of body and arrays is more than this server's in-flight budget of 16,777,216 bytes "
        "(--max-inflight-mib 16); send fewer nodes, or ask for binary output (output parameter binary_data, 8x "
        "smaller), or start the server with a larger --max-inflight-mib"
    )
    assert binary_head.startswith(b"HTTP/1.1 200 "), binary_head
    assert len(binary_body) == _length(binary_head)


def test_a_shutdown_cuts_off_an_answer_not_being_taken_without_a_traceback(exported) -> None:
    """Once answers stayed charged until taken, a client that did not read its answer kept its request
    running through a shutdown until uvicorn's graceful timeout cancelled it: "Cancel 1 running task(s)"
    and an "Exception in ASGI application" traceback, after holding the shutdown that long. From the
    shutdown on, an untaken answer may wait SHUTDOWN_SEND_S: its connection is aborted, the request
    ends, and the budget is given back."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("uvicorn.error")
    app = create_app([ServedModel("m", GraphSession(exported["node"].path))], warmup=False)
    srv = BackgroundServer(app).start()
    s = _client(srv)
    log.addHandler(handler)
    try:
        s.sendall(_request(100_000))
        _settled(lambda: app.state.inflight.held, 0)  # answered, and the answer not taken
        srv.stop()
    finally:
        log.removeHandler(handler)
        s.close()
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []
    assert app.state.inflight.held == 0


def test_a_large_answer_is_encoded_off_the_event_loop(server, monkeypatch) -> None:
    """Answers were encoded on the event loop: a 1M-node answer as JSON took 0.4 s, in which no other
    request was read or answered and no health check either. Past INLINE_ANSWER_VALUES values an answer
    is encoded in a worker thread; a small one still on the loop (a thread hop costs more than it)."""
    import runtime.server

    threads: list[str] = []
    real = runtime.server.encode_infer_response

    def spy(*args: object) -> tuple[bytes, dict[str, str]]:
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(runtime.server, "encode_infer_response", spy)
    for nodes in (1_000, 100_000):  # 3,000 values, then 300,000
        s = _client(server)
        try:
            s.sendall(_request(nodes))
            head, body = _read(s)
        finally:
            s.close()
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert json.loads(body)["outputs"][0]["shape"] == [nodes, 3]
    assert threads[0] == server.thread.name  # the event loop's
    assert threads[1] != server.thread.name
