"""Answers a client does not take: the connection of a client that stops reading its answer is aborted
(runtime.http_head.SEND_TIMEOUT_S), so the answer's bytes and the connection are not held forever,
while a client that reads steadily, however slowly its reads come, gets every byte."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from runtime.server import BackgroundServer, ServedModel, create_app
from runtime.session import GraphSession

GRAPH_NODES = 10


@pytest.fixture(scope="module")
def server(exported) -> Iterator[BackgroundServer]:
    app = create_app([ServedModel("m", GraphSession(exported["node"].path))], warmup=False)
    with BackgroundServer(app) as srv:
        yield srv


def _request(nodes: int) -> bytes:
    """An HTTP request for ``nodes`` nodes in graphs of GRAPH_NODES without edges: a small binary body
    whose JSON answer (3 floats a node) is about 63 bytes a node."""
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
    head = json.dumps({"inputs": inputs}).encode()
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
                head = data.partition(b"\r\n\r\n")[0].lower()
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            if length is not None and len(data.partition(b"\r\n\r\n")[2]) >= length:
                break
            time.sleep(pause)
    except (ConnectionResetError, TimeoutError):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def _length(head: bytes) -> int:
    return int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])


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
        time.sleep(4)  # the answer (6 MB) is ready within a second or two, then waits for the client
        head, body = _read(s)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert len(body) < _length(head) // 2, (len(body), _length(head))
    r = httpx.get(f"http://{server.url}/v2/health/ready")
    assert r.status_code == 200


def test_a_client_that_reads_slowly_but_steadily_gets_its_whole_answer(server, monkeypatch) -> None:
    """The cut-off is for a client that takes nothing (or under 500 bytes a second): one that reads
    64 KiB every 50 ms, ten times within SEND_TIMEOUT_S, gets every byte of a 1.3 MB answer."""
    import runtime.http_head

    monkeypatch.setattr(runtime.http_head, "SEND_TIMEOUT_S", 0.5)
    s = _client(server)
    try:
        s.sendall(_request(20_000))
        head, body = _read(s, pause=0.05)
    finally:
        s.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert len(body) == _length(head)
    assert json.loads(body)["outputs"][0]["shape"] == [20_000, 3]
