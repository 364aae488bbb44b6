"""A client that shuts its sending side once its request is sent (``socket.shutdown(SHUT_WR)``, ``nc -N``,
some HTTP clients) still reads: it gets its answer. uvicorn closed the connection at that end of input,
and the request was withdrawn as if the client had left. One that really left (its socket closed, or the
connection reset) still has its queued request withdrawn, never run (runtime.http_head)."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from collections.abc import Callable

import numpy as np
import pytest

from runtime.batcher import BatchConfig
from runtime.server import BackgroundServer, ServedModel, create_app
from tests.runtime.conftest import gated_model_calls
from tests.runtime.test_server_limits import _request

INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"  # what the server writes to learn whether the client still reads


def _head(body: bytes, version: str = "1.1", close: bool = False) -> bytes:
    more = "Connection: close\r\n" if close else ""
    return f"POST /v2/models/m/infer HTTP/{version}\r\nHost: x\r\n{more}Content-Length: {len(body)}\r\n\r\n".encode()


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def _answers(data: bytes) -> list[np.ndarray]:
    """The outputs of the 200 answers in ``data`` (their interim responses checked and skipped)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        if head + b"\r\n\r\n" == INTERIM:
            data = rest
            continue
        assert head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")), head
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1])
        o = json.loads(rest[:length])["outputs"][0]
        out.append(np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]))
        data = rest[length:]
    return out


@pytest.mark.parametrize(("version", "count"), [("1.1", 1), ("1.1", 3), ("1.0", 1)], ids=["one", "pipelined", "1.0"])
def test_a_client_that_shuts_its_sending_side_gets_its_answers(session, graph, version: str, count: int) -> None:
    body = _request(graph)
    with BackgroundServer(create_app([ServedModel("m", session)], warmup=False)) as srv:
        host, port = srv.url.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall((_head(body, version) + body) * count)
            s.shutdown(socket.SHUT_WR)
            data = _read_all(s)  # the answers, then the server closes the connection
        assert srv.app.state.gtc["ready"]
    got = _answers(data)
    assert len(got) == count, data[:300]
    for a in got:
        np.testing.assert_allclose(a, session.run(graph)[0], atol=1e-5)


CLOSES: dict[str, Callable[[socket.socket], None]] = {
    "half": lambda s: s.shutdown(socket.SHUT_WR),  # still reads: answered
    "closed": lambda s: s.close(),  # gone: withdrawn
    "reset": lambda s: (s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)), s.close()),
}


@pytest.mark.parametrize("how", list(CLOSES))
def test_a_queued_request_is_run_for_a_half_closed_client_and_withdrawn_for_one_that_left(
    session, graph, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The model holds a first request on a gate while the second client's request waits in the queue and
    its client ends its side of the connection in one of three ways; then the gate opens."""
    gate, calls = gated_model_calls(monkeypatch)
    body = _request(graph)
    app = create_app([ServedModel("m", session, BatchConfig(max_delay_ms=0))], warmup=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    with BackgroundServer(app) as srv:
        host, port = srv.url.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as first:
            first.sendall(_head(body, close=True) + body)
            _wait(lambda: calls == [1])  # the model holds the first request
            second = socket.create_connection((host, int(port)), timeout=30)
            second.sendall(_head(body) + body)
            _wait(lambda: app.state.models["m"].batcher.pending == 2)  # queued behind it
            CLOSES[how](second)
            time.sleep(0.3)  # the server reads the end of input (an order, not a timing: no assertion on it)
            gate.set()
            assert len(_answers(_read_all(first))) == 1
        if how == "half":
            with second:
                assert len(_answers(_read_all(second))) == 1
            assert calls == [1, 1]
        else:
            _wait(lambda: app.state.models["m"].batcher.pending == 0)
            assert calls == [1]  # the second request never ran
    logging.getLogger("uvicorn.error").removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []  # no 500 for a withdrawn one


def _wait(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
