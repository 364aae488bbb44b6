"""Request body limits: bodies are read and decoded as they stream in and refused with 413 as soon as
the bytes received or the bytes decoded pass ``ServerLimits.max_body_bytes`` (gzip bombs included)."""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from gtcompress.preprocess import NumpyGraph
from runtime.body import BodyDecoder, InflightBudget
from runtime.errors import BodyTooLargeError, ProtocolError, ServerBusyError
from runtime.server import BackgroundServer, ServedModel, ServerLimits, create_app
from tests.runtime.conftest import wait_for_held

MiB = 1 << 20
LIMIT = MiB


def _too_large(stage: str, encoding: str, limit: int = LIMIT) -> str:
    return (
        f"request body exceeds this server's limit of {limit} bytes (max_body_bytes) {stage}; "
        f"Content-Encoding: {encoding}"
    )


def _bomb(decoded: int, wbits: int = 31) -> bytes:
    """``decoded`` zero bytes compressed (gzip: wbits 31, zlib: 15, raw deflate: -15), built a MiB at a
    time so the test itself never holds the decoded body."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(MiB)
    parts = [c.compress(zeros) for _ in range(decoded // MiB)]
    parts.append(c.compress(bytes(decoded % MiB)))
    parts.append(c.flush())
    return b"".join(parts)


ENCODERS = {  # Content-Encoding, wbits
    "gzip": ("gzip", 31),
    "deflate-zlib": ("deflate", 15),
    "deflate-raw": ("deflate", -15),
}


def _compress(body: bytes, how: str) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, ENCODERS[how][1])
    return c.compress(body) + c.flush()


@pytest.fixture(scope="module")
def server(session) -> Iterator[BackgroundServer]:
    app = create_app([ServedModel("m", session)], limits=ServerLimits(max_body_bytes=LIMIT), warmup=False)
    with BackgroundServer(app) as srv:
        yield srv


def _request(g: NumpyGraph, size: int | None = None) -> bytes:
    """A JSON inference request for ``g``, padded with trailing whitespace to ``size`` bytes."""
    tensors = {"x": ("INT64", g.x), "edge_index": ("INT64", g.edge_index), "edge_attr": ("FP32", g.edge_attr)}
    inputs = [
        {"name": n, "datatype": d, "shape": list(a.shape), "data": a.ravel().tolist()} for n, (d, a) in tensors.items()
    ]
    body = json.dumps({"inputs": inputs}).encode()
    return body if size is None else body + b" " * (size - len(body))


def _post(
    srv: BackgroundServer, body: bytes | Iterator[bytes], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(f"http://{srv.url}/v2/models/m/infer", content=body, headers=headers or {}, timeout=60)


def _ready(srv: BackgroundServer) -> bool:
    return httpx.get(f"http://{srv.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("how", list(ENCODERS))
def test_a_compression_bomb_is_refused_once_decoded_past_the_limit(server, session, graph, how) -> None:
    encoding, wbits = ENCODERS[how]
    bomb = _bomb(64 * MiB, wbits)
    assert len(bomb) < LIMIT // 8  # small on the wire: only the decoded size can catch it
    r = _post(server, bomb, {"Content-Encoding": encoding})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == _too_large("once decoded", encoding)
    assert _ready(server)
    r = _post(server, _compress(_request(graph), how), {"Content-Encoding": encoding})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("how", ["identity", *ENCODERS])
def test_a_body_of_exactly_the_limit_is_served_one_byte_more_is_a_413(server, session, graph, how) -> None:
    want = session.run(graph)[0]
    for size, status in ((LIMIT, 200), (LIMIT + 1, 413)):
        body, headers = _request(graph, size), {}
        if how != "identity":
            body, headers = _compress(body, how), {"Content-Encoding": ENCODERS[how][0]}
        r = _post(server, body, headers)
        assert r.status_code == status, r.text
        if status == 200:
            out = r.json()["outputs"][0]
            np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(out["shape"]), want, atol=1e-5)
        elif how == "identity":  # httpx sends a Content-Length: refused before the body is read
            assert r.json()["error"] == (
                f"request body of {LIMIT + 1} bytes (Content-Length) exceeds this server's limit of {LIMIT} bytes "
                "(max_body_bytes); Content-Encoding: identity"
            )
        else:
            assert r.json()["error"] == _too_large("once decoded", ENCODERS[how][0])
    assert _ready(server)


def _exchange(srv: BackgroundServer, head: bytes, payload: bytes, timeout: float = 10.0) -> tuple[int, dict]:
    """Send a request head and part of a body on a raw socket (never finishing the body) and read
    the response; a server that waits for the rest of the body times out here."""
    host, port = srv.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head + payload)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head_end = data.index(b"\r\n\r\n") + 4
            length = int(re.search(rb"(?i)content-length: *(\d+)", data[:head_end])[1])
            while len(data) < head_end + length:
                data += s.recv(65536)
        except TimeoutError:
            pytest.fail(f"no response within {timeout} s while the body was still unfinished")
    return int(data.split(b" ", 2)[1]), json.loads(data[head_end : head_end + length])


def test_a_declared_content_length_over_the_limit_is_refused_before_reading_the_body(server) -> None:
    head = (
        f"POST /v2/models/m/infer HTTP/1.1\r\nHost: {server.url}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {513 * MiB}\r\n\r\n"
    ).encode()
    status, body = _exchange(server, head, b"{")
    assert status == 413
    assert body["error"] == (
        f"request body of {513 * MiB} bytes (Content-Length) exceeds this server's limit of {LIMIT} bytes "
        "(max_body_bytes); Content-Encoding: identity"
    )
    assert _ready(server)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_chunked_body_is_refused_as_soon_as_the_bytes_received_pass_the_limit(server, encoding) -> None:
    """No Content-Length (chunked transfer): the server counts what arrives and answers at once."""
    head = (
        f"POST /v2/models/m/infer HTTP/1.1\r\nHost: {server.url}\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Encoding: {encoding}\r\n\r\n"
    ).encode()
    if encoding == "identity":
        payload = b" " * (LIMIT + 1)
    else:  # a gzip stream of empty stored blocks: it grows on the wire and decodes to nothing
        payload = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\x00\x00\x00\xff\xff" * (LIMIT // 5 + 1)
    chunks = b"".join(
        f"{len(payload[i : i + 65536]):x}\r\n".encode() + payload[i : i + 65536] + b"\r\n"
        for i in range(0, len(payload), 65536)
    )
    status, body = _exchange(server, head, chunks)  # the terminating 0-chunk is never sent
    assert status == 413
    assert body["error"] == _too_large("as sent", encoding)
    assert _ready(server)


def test_the_fastapi_route_streams_under_the_same_limit(session) -> None:
    """The app without its fast path (``app.app``, e.g. mounted elsewhere) reads through Starlette's
    ``request.stream()`` and refuses the same way."""
    import asyncio

    app = create_app([ServedModel("m", session)], limits=ServerLimits(max_body_bytes=LIMIT), warmup=False)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app.app), base_url="http://t") as client:
            return await client.post(
                "/v2/models/m/infer", content=_bomb(64 * MiB), headers={"Content-Encoding": "gzip"}
            )

    r = asyncio.run(post())
    assert r.status_code == 413
    assert r.json()["error"] == _too_large("once decoded", "gzip")


def _stall(srv: BackgroundServer, declared: int, sent: int) -> socket.socket:
    """A client that declares a ``declared``-byte body, sends ``sent`` bytes of it and stalls."""
    host, port = srv.url.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    head = f"POST /v2/models/m/infer HTTP/1.1\r\nHost: {srv.url}\r\nContent-Length: {declared}\r\n\r\n"
    s.sendall(head.encode() + b" " * sent)
    return s


def test_requests_in_flight_together_are_bounded_and_past_it_get_503(session, graph) -> None:
    """Each body was bounded, all of them together were not: clients that sent most of a large body
    and stalled held it in the server forever (8 of 64 MiB took its RSS from 120 to 650 MB), and every
    further one added as much. Past max_inflight_mib a request is now a 503 and is read no further;
    what a request held is given back when it is answered or its client leaves."""
    limits = ServerLimits(max_body_bytes=LIMIT, max_inflight_mib=2.5)
    app = create_app([ServedModel("m", session)], limits=limits, warmup=False)
    held = 2 * (LIMIT - 1)
    with BackgroundServer(app) as srv:
        declared_only = _stall(srv, LIMIT, 0)  # declares 1 MiB, sends nothing: holds nothing
        stalled = [_stall(srv, LIMIT, LIMIT - 1) for _ in range(2)]  # all but the last byte
        try:
            assert wait_for_held(app, held) == held
            r = _post(srv, _request(graph))  # a few hundred bytes: within the 0.5 MiB left
            assert r.status_code == 200, r.text
            big = MiB // 2 + 3
            r = _post(srv, _request(graph, big))
            assert r.status_code == 503, r.text
            assert r.json()["error"] == (
                f"server is busy: requests in flight hold {held} bytes, and this one's {big} would take them past "
                f"this server's limit of {int(2.5 * MiB)} bytes (max_inflight_mib); retry later"
            )
            assert _ready(srv)
        finally:
            for s in [declared_only, *stalled]:
                s.close()
        assert wait_for_held(app, 0) == 0  # the server sees the clients leave and gives their shares back
        # half a MiB: a JSON body is charged its parsing too (twice its text and more), 1.5 MiB of the 2.5 here
        assert _post(srv, _request(graph, MiB // 2)).status_code == 200


def _read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of the one response a raw client gets, read until the server closes."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("sent", [0, LIMIT - 1])
def test_a_body_that_stops_arriving_gets_408_and_gives_its_share_back(session, graph, sent: int) -> None:
    """No timeout covered a request body: a client that sent all but the last byte and stalled held
    its share of max_inflight_mib for as long as it stayed connected, and every other request got 503
    meanwhile. Now the body may pause for body_timeout_s: then 408, the connection closes, and the
    share is given back."""
    limits = ServerLimits(max_body_bytes=LIMIT, max_inflight_mib=1.0, body_timeout_s=0.5)
    app = create_app([ServedModel("m", session)], limits=limits, warmup=False)
    with BackgroundServer(app) as srv:
        s = _stall(srv, LIMIT, sent)
        try:
            head, body = _read_response(s)  # the server answers, then closes the connection
        finally:
            s.close()
        assert head.startswith(b"HTTP/1.1 408 "), head
        assert b"connection: close" in head.lower()
        assert json.loads(body)["error"] == (
            f"request body stalled: nothing arrived for 0.5 s after {sent} of {LIMIT} bytes "
            "(this server's body_timeout_s); send the body without pauses"
        )
        assert app.state.inflight.held == 0
        # the whole budget is free again: a quarter MiB of JSON is charged most of it (twice its text to parse)
        r = _post(srv, _request(graph, LIMIT // 4))
        assert r.status_code == 200, r.text


def test_a_body_trickled_below_the_minimum_rate_gets_408(session, graph) -> None:
    """body_timeout_s bounded a pause, not the body: a client that sent a byte every 0.2 s never paused
    for 0.5 s and held its connection until its declared megabyte had come (two days). Past
    body_timeout_s the body must now average MIN_BODY_RATE: 408, and the connection closes."""
    limits = ServerLimits(max_body_bytes=LIMIT, max_inflight_mib=1.0, body_timeout_s=0.5)
    app = create_app([ServedModel("m", session)], limits=limits, warmup=False)
    with BackgroundServer(app) as srv:
        s = _stall(srv, LIMIT, 1)
        sent, answer = 1, b""
        try:
            s.settimeout(0.2)
            while sent < 300 and not answer:  # a minute of trickling at most; the server answers long before
                try:
                    answer = s.recv(65536)
                except TimeoutError:
                    s.sendall(b" ")
                    sent += 1
            s.settimeout(10)
            while chunk := s.recv(65536):  # the rest of the answer, until the server closes
                answer += chunk
        finally:
            s.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), head
        assert b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert re.fullmatch(
            rf"request body too slow: \d+ of {LIMIT} bytes in [\d.]+ s, below this server's minimum of 500 bytes a "
            r"second for a body that takes longer than 0\.5 s \(body_timeout_s\); send the body without trickling it",
            error,
        ), error
        assert sent < 300
        assert app.state.inflight.held == 0
        assert _post(srv, _request(graph)).status_code == 200


def test_a_body_stalled_at_shutdown_gets_503_and_does_not_hold_the_shutdown(session) -> None:
    """A client stalled mid-body held the shutdown until uvicorn's graceful timeout cancelled its
    request: the client got a bare 500, the log a CancelledError traceback. Once shutdown begins a
    body may pause SHUTDOWN_BODY_S; past it the request gets 503 (retry elsewhere) and the server stops."""
    app = create_app([ServedModel("m", session)], limits=ServerLimits(max_body_bytes=LIMIT), warmup=False)
    srv = BackgroundServer(app).start()
    s = _stall(srv, 1000, 10)
    try:
        assert wait_for_held(app, 10) == 10  # the request is being read
        srv.stop()
        head, body = _read_response(s)
    finally:
        s.close()
    assert not srv.thread.is_alive()
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert json.loads(body)["error"] == (
        "server is shutting down and the request body stopped arriving after 10 of 1000 bytes; retry"
    )


def test_an_app_served_again_after_a_shutdown_gets_its_body_timeout_back(
    session, graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shutdown shortens the body timeout to SHUTDOWN_BODY_S, and nothing gave it back: the same
    app served again (a second BackgroundServer on it) answered a body that paused past that short
    timeout with 503 "server is shutting down" while it was running, not shutting down."""
    import runtime.server

    monkeypatch.setattr(runtime.server, "SHUTDOWN_BODY_S", 0.2)
    app = create_app([ServedModel("m", session)], limits=ServerLimits(max_body_bytes=LIMIT), warmup=False)
    body = _request(graph)
    for _ in range(2):
        with BackgroundServer(app) as srv:
            host, port = srv.url.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=10)
            try:
                s.sendall(
                    f"POST /v2/models/m/infer HTTP/1.1\r\nHost: {srv.url}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                time.sleep(0.6)  # a pause longer than the shutdown's, far shorter than body_timeout_s
                s.sendall(body)
                head, _ = _read_response(s)
            finally:
                s.close()
            assert head.startswith(b"HTTP/1.1 200 "), head


def test_a_lease_grows_within_the_budget_and_gives_everything_back() -> None:
    budget = InflightBudget(100)
    a, b = budget.lease(), budget.lease()
    a.grow_to(60)
    a.grow_to(40)  # never shrinks before release
    assert (a.held, budget.held) == (60, 60)
    with pytest.raises(ServerBusyError) as info:
        b.grow_to(41)
    assert str(info.value) == (
        "server is busy: requests in flight hold 60 bytes, and this one's 41 would take them past this server's "
        "limit of 100 bytes (max_inflight_mib); retry later"
    )
    b.grow_to(40)
    assert budget.held == 100
    a.release()
    b.release()
    assert budget.held == 0
    assert ServerLimits(max_body_bytes=8 * MiB, max_inflight_mib=1.0).inflight_bytes == 8 * MiB  # one largest body


# ------------------------------------------------------------------------------------------ decoder
def test_the_decoder_stops_reading_a_bomb_at_the_limit() -> None:
    bomb = _bomb(64 * MiB)
    dec = BodyDecoder("gzip", LIMIT)
    fed = 0
    with pytest.raises(BodyTooLargeError) as info:
        for i in range(0, len(bomb), 4096):
            dec.feed(bomb[i : i + 4096])
            fed += 4096
    assert str(info.value) == _too_large("once decoded", "gzip")
    assert fed <= LIMIT // 1000 + 4096  # deflate expands at most ~1032x: the limit is met within 2 chunks
    assert info.value.limit == LIMIT and info.value.encoding == "gzip"


@pytest.mark.parametrize("how", list(ENCODERS))
def test_the_decoder_round_trips_in_any_chunking(how) -> None:
    body = np.random.default_rng(0).integers(0, 4, 300_000, dtype=np.uint8).tobytes()
    packed = _compress(body, how)
    for step in (1, 7, 4096, len(packed)):
        dec = BodyDecoder(ENCODERS[how][0], len(body))
        for i in range(0, len(packed), step):
            dec.feed(packed[i : i + step])
        assert dec.finish() == body
    with pytest.raises(BodyTooLargeError):
        BodyDecoder(ENCODERS[how][0], len(body) - 1).feed(packed)


def test_the_decoder_reads_gzip_members_and_refuses_broken_streams() -> None:
    dec = BodyDecoder("GZip ", 100)
    dec.feed(gzip.compress(b"abc") + gzip.compress(b"def"))  # concatenated members, as gzip.decompress reads them
    assert dec.finish() == b"abcdef"
    assert BodyDecoder("gzip", 100).finish() == b""
    assert BodyDecoder(None, 100).finish() == b""
    ends, header = "it ends inside the compressed stream", "Error -3 while decompressing data: incorrect header check"
    cases = [  # (encoding, body, what is wrong)
        ("gzip", gzip.compress(b"abc")[:-3], ends),
        ("deflate", zlib.compress(b"abc")[:-1], ends),
        ("gzip", b"not gzip at all", header),
        ("deflate", zlib.compress(b"abc") + b"xy", "2 bytes after the end of the compressed stream"),
        ("gzip", gzip.compress(b"abc") + b"xy", header),  # trailing bytes are read as a broken next member
        ("deflate", b"x", "it is a single byte"),
    ]
    for encoding, data, message in cases:
        with pytest.raises(ProtocolError) as info:
            dec = BodyDecoder(encoding, 100)
            dec.feed(data)
            dec.finish()
        assert str(info.value) == f"request body is not valid {encoding} data ({message})"
    with pytest.raises(ProtocolError) as info:
        BodyDecoder("br", 100)
    assert str(info.value) == "unsupported Content-Encoding 'br'; use gzip, deflate or none"


# ------------------------------------------------------------------------------------------ memory
def _peak_and_current_kib() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1]), int(re.search(r"VmRSS:\s+(\d+)", status)[1])


def test_a_bomb_never_costs_more_than_a_few_times_the_limit_in_memory(session, graph) -> None:
    """Limit 64 MiB, a 1 MiB gzip body that decodes to 1 GiB: the process's peak resident memory
    (Linux's VmHWM, reset before the request) may grow by less than 3x the limit."""
    clear = Path("/proc/self/clear_refs")
    if not clear.exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    limit = 64 * MiB
    bomb = _bomb(1024 * MiB)
    assert len(bomb) < 2 * MiB
    app = create_app([ServedModel("m", session)], limits=ServerLimits(max_body_bytes=limit), warmup=False)
    with BackgroundServer(app) as srv:
        assert _post(srv, _request(graph)).status_code == 200  # warm: first-request allocations are not the body's
        try:
            clear.write_text("5")  # peak RSS := current RSS
        except OSError as e:
            pytest.skip(f"cannot reset the peak RSS here ({e})")
        _, before = _peak_and_current_kib()
        r = _post(srv, bomb, {"Content-Encoding": "gzip"})
        peak, _ = _peak_and_current_kib()
        grown = (peak - before) * 1024
        assert grown < 3 * limit, f"peak RSS grew by {grown / MiB:.0f} MiB for a {limit // MiB} MiB limit"
        assert r.status_code == 413, r.text
        assert r.json()["error"] == _too_large("once decoded", "gzip", limit)
        assert _ready(srv)
