"""A header the server reads an inference request by, given twice: which copy it used decided the answer
(a dict keeps one), so conflicting copies are a 400 naming the header and both values (runtime.headers)."""

from __future__ import annotations

import gzip
import json
import socket

import numpy as np
import pytest

from runtime.errors import ProtocolError
from runtime.headers import request_headers
from runtime.server import BackgroundServer, ServedModel, create_app
from tests.runtime.test_server_limits import _read_response, _request


@pytest.fixture(scope="module")
def server(session):
    with BackgroundServer(create_app([ServedModel("m", session)], warmup=False)) as srv:
        yield srv


def _send(srv: BackgroundServer, headers: list[str], body: bytes) -> tuple[int, bytes]:
    """One request with ``headers`` as written (repeats kept), on a raw socket: no client merges them."""
    head = "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + "".join(h + "\r\n" for h in headers)
    host, port = srv.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        got, answer = _read_response(s)
    return int(got.split(b" ", 2)[1]), answer


ENCODINGS = {
    "identity then gzip": ("identity", "gzip"),  # was served: the last copy won
    "gzip then identity": ("gzip", "identity"),  # was a 400 "request JSON is malformed"
    "gzip twice": ("gzip", "gzip"),  # HTTP: gzipped twice
}


@pytest.mark.parametrize("case", list(ENCODINGS))
def test_a_repeated_content_encoding_is_a_400_naming_both(server, graph, case: str) -> None:
    first, second = ENCODINGS[case]
    body = gzip.compress(_request(graph))
    headers = [f"Content-Length: {len(body)}", f"Content-Encoding: {first}", f"Content-Encoding: {second}"]
    status, answer = _send(server, headers, body)
    assert status == 400, answer
    assert json.loads(answer)["error"] == (
        f"Content-Encoding is given twice ('{first}' and '{second}'), which HTTP reads as a body encoded twice "
        f"({first}, {second}); this server decodes one encoding: send the header once"
    )


@pytest.mark.parametrize("order", ["right first", "wrong first"])
def test_conflicting_inference_header_content_lengths_are_a_400_naming_both(server, graph, order: str) -> None:
    body = _request(graph)
    values = [str(len(body)), "3"] if order == "right first" else ["3", str(len(body))]  # one of them was served
    headers = [f"Content-Length: {len(body)}", *(f"Inference-Header-Content-Length: {v}" for v in values)]
    status, answer = _send(server, headers, body)
    assert status == 400, answer
    assert json.loads(answer)["error"] == (
        f"Inference-Header-Content-Length is given twice with different values, '{values[0]}' and '{values[1]}': "
        "which one the body is read by is ambiguous; send the header once"
    )


def test_an_inference_header_content_length_repeated_alike_is_served(server, session, graph) -> None:
    body = _request(graph)
    headers = [f"Content-Length: {len(body)}", *[f"Inference-Header-Content-Length: {len(body)}"] * 2]
    status, answer = _send(server, headers, body)
    assert status == 200, answer
    out = json.loads(answer)["outputs"][0]
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, session.run(graph)[0], atol=1e-5)


def test_a_repeated_content_length_is_refused_by_the_parser_with_a_kserve_error(server, graph) -> None:
    """llhttp refuses a repeated Content-Length before the app sees it, alike or not: uvicorn answered in
    plain text ("Invalid HTTP request received."), which tritonclient cannot read as an error."""
    body = _request(graph)
    for values in ([len(body), 5], [len(body), len(body)]):
        status, answer = _send(server, [f"Content-Length: {v}" for v in values], body)
        assert status == 400
        assert json.loads(answer) == {"error": "the request is not valid HTTP/1.1: Duplicate Content-Length"}


def test_the_app_refuses_conflicting_content_lengths_under_any_asgi_server() -> None:
    with pytest.raises(ProtocolError) as e:
        request_headers([(b"content-length", b"10"), (b"Content-Length", b"12")])
    assert str(e.value) == (
        "Content-Length is given twice with different values, '10' and '12': which one the body is read by is "
        "ambiguous; send the header once"
    )
    raw = [(b"Content-Length", b"10"), (b"content-length", b" 10"), (b"Content-Type", b"a"), (b"content-type", b"b")]
    assert request_headers(raw)["content-length"] == "10"  # alike copies pass; Content-Type is not read
