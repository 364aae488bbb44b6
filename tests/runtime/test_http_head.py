"""The request head, as runtime.http_head reads it: bounded in bytes (431) and in time (408), upgrade
offers (Upgrade: h2c) answered in HTTP/1.1 with their bodies read, a chunked body llhttp cannot parse
refused at once (400), and transfer codings other than chunked refused (501)."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from runtime.server import BackgroundServer, ServedModel, create_app
from runtime.session import GraphSession
from tests.runtime.conftest import wait_for_held
from tests.runtime.test_server_limits import _post, _read_response, _ready, _request


@pytest.fixture(scope="module")
def server(exported) -> Iterator[BackgroundServer]:
    app = create_app([ServedModel("m", GraphSession(exported["node"].path))], warmup=False)
    with BackgroundServer(app) as srv:
        yield srv


@pytest.mark.parametrize("head", ["many-headers", "one-endless-value", "endless-url"])
def test_a_request_head_past_the_limit_gets_431_and_is_read_no_further(server, head: str) -> None:
    """uvicorn's httptools protocol collected a request head of any size: 205 MiB of header lines
    took the server from 117 to 463 MiB, one connection at a time. A head past MAX_HEAD_BYTES now
    gets 431 and its connection is closed (sent in pieces, as a client streaming headers would)."""
    from runtime.http_head import MAX_HEAD_BYTES

    host, port = server.url.rsplit(":", 1)
    start = {
        "many-headers": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n",
        "one-endless-value": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: ",
        "endless-url": b"GET /v2/health/live?pad=",
    }[head]
    piece = b"X-Pad: " + b"a" * 1000 + b"\r\n" if head == "many-headers" else b"a" * 1000
    s = socket.create_connection((host, int(port)), timeout=10)
    try:
        s.sendall(start)
        for _ in range(4 * MAX_HEAD_BYTES // len(piece)):  # read and dropped after the refusal, no reset
            s.sendall(piece)
        got, body = _read_response(s)
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 431 "), got
    assert json.loads(body)["error"] == (
        f"request head (request line and headers) exceeds this server's limit of {MAX_HEAD_BYTES} bytes"
    )
    assert _ready(server)


@pytest.mark.parametrize("extra", [0, 1, 1000])
def test_a_head_that_arrives_in_one_read_is_held_to_the_limit_too(server, extra: int) -> None:
    """Heads were counted per chunk read, and the chunk a head ended in was never checked: a head of
    64 KiB + 1000 bytes sent in one write was served with 200, not 431 as documented. Now the parsed
    head's size is checked once it is complete: a head of exactly MAX_HEAD_BYTES is served, one byte
    more is refused."""
    from runtime.http_head import MAX_HEAD_BYTES

    start = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    end = b"\r\n\r\n"
    head = start + b"a" * (MAX_HEAD_BYTES + extra - len(start) - len(end)) + end
    assert len(head) == MAX_HEAD_BYTES + extra
    host, port = server.url.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    try:
        s.sendall(head)  # one write: the server reads it in one chunk
        got, body = _read_response(s)
    finally:
        s.close()
    if extra == 0:
        assert got.startswith(b"HTTP/1.1 200 "), got
    else:
        assert got.startswith(b"HTTP/1.1 431 "), got
        assert json.loads(body)["error"] == (
            f"request head (request line and headers) exceeds this server's limit of {MAX_HEAD_BYTES} bytes"
        )
    assert _ready(server)


def test_a_body_in_the_same_packets_as_its_head_is_not_counted_as_head(server, graph) -> None:
    """Heads are counted per chunk read: a large body sent with its head, and pipelined requests on
    one connection, must not be taken for a long head."""
    from runtime.http_head import MAX_HEAD_BYTES

    body = _request(graph, 4 * MAX_HEAD_BYTES)
    one = f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    last = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    host, port = server.url.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    try:
        s.sendall(one * 3 + last)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200"] * 4


def test_a_request_head_that_takes_too_long_gets_408_and_an_idle_connection_closes(
    server, graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing timed out a request head: a connection that sent nothing, or a head a byte now and
    then (slowloris), was held open forever (20 s and counting). Now a head has HEAD_TIMEOUT_S from
    the connection's start or the previous response; a body's time is not the head's."""
    import runtime.http_head

    monkeypatch.setattr(runtime.http_head, "HEAD_TIMEOUT_S", 0.5)
    host, port = server.url.rsplit(":", 1)
    request = _request(graph)
    full = f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(request)}\r\n\r\n".encode()
    partial = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
    idle = socket.create_connection((host, int(port)), timeout=10)
    slow = socket.create_connection((host, int(port)), timeout=10)
    try:
        slow.sendall(full)  # the head at once, the body in pieces over more than the head's time
        for i in range(0, len(request), len(request) // 4 + 1):
            slow.sendall(request[i : i + len(request) // 4 + 1])
            time.sleep(0.2)
        slow.sendall(partial)  # then half a head after the answer: 408 once its time is up
        data = b""
        while chunk := slow.recv(65536):
            data += chunk
        assert idle.recv(100) == b""  # sent nothing: closed without an answer
    finally:
        idle.close()
        slow.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"408"]
    assert json.loads(data.rpartition(b"\r\n\r\n")[2])["error"] == (
        "request head (request line and headers) not complete 0.5 s after the connection opened or the previous "
        "response; send it without pauses"
    )
    assert _ready(server)


def _upgrade_offer(body: bytes, chunked: bool) -> tuple[bytes, bytes]:
    """A head offering ``Upgrade: h2c`` (as ``curl --http2`` and Java's RestClient send on plain http)
    and its body, framed by Content-Length or in chunks."""
    head = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Type: application/json\r\n"
    )
    if not chunked:
        return head + f"Content-Length: {len(body)}\r\n\r\n".encode(), body
    third = len(body) // 3
    parts = [body[:third], body[third : 2 * third], body[2 * third :]]
    return head + b"Transfer-Encoding: chunked\r\n\r\n", b"".join(
        f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts
    ) + b"0\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "body-in-pieces"])
def test_an_ignored_upgrade_offer_is_answered_in_http1_with_its_body_read(server, graph, chunked, split) -> None:
    """httptools stops at an upgrade offer and drops the body after it: the app read an empty body
    and answered 400 "request JSON is malformed" to a valid request. The offer is ignored (RFC 9110
    section 7.8) and the request served as HTTP/1.1; the connection then serves a later request."""
    body = _request(graph)
    expected = _post(server, body).json()
    head, framed = _upgrade_offer(body, chunked)
    last = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        if split:
            s.sendall(head)
            for i in range(0, len(framed), 7):
                s.sendall(framed[i : i + 7])
                time.sleep(0.001)
            s.sendall(last)
        else:
            s.sendall(head + framed + head + framed + last)  # pipelined: the parser after the offer serves the rest
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200"] * (2 if split else 3), data[:300]
    first = data.split(b"\r\n\r\n", 1)[1]
    length = int(re.search(rb"(?i)content-length: *(\d+)", data)[1])
    assert json.loads(first[:length]) == expected


def test_an_upgrade_offer_without_a_body_is_served(server) -> None:
    head = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    last = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head + last)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"200"]
    assert b'{"ready": true}' in data or b'{"ready":true}' in data


@pytest.mark.parametrize("before", ["plain", "upgrade-offer"])
def test_requests_pipelined_before_a_refused_head_are_answered_before_its_431(server, graph, before: str) -> None:
    """A head refused while the requests pipelined before it were still unanswered closed the connection
    at once: a valid request sent in one write with an oversized second one got no response at all
    (nor did an upgrade offer's, whose body the first parser had handed on). They are answered, in order,
    and then the 431."""
    from runtime.http_head import MAX_HEAD_BYTES

    body = _request(graph)
    expected = _post(server, body).json()
    if before == "plain":
        head = f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        first = head + body
    else:
        head, framed = _upgrade_offer(body, chunked=False)
        first = head + framed
    ready = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    big = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (MAX_HEAD_BYTES + 1000) + b"\r\n\r\n"
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(first + ready + big)  # one write: the refused head is parsed before the others are answered
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"200", b"431"], data[:300]
    answer = data.split(b"\r\n\r\n", 1)[1]
    length = int(re.search(rb"(?i)content-length: *(\d+)", data)[1])
    assert json.loads(answer[:length]) == expected
    assert json.loads(data.rsplit(b"\r\n\r\n", 1)[1])["error"] == (
        f"request head (request line and headers) exceeds this server's limit of {MAX_HEAD_BYTES} bytes"
    )
    assert _ready(server)


def _infer_head(body: bytes) -> bytes:
    return f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()


def test_a_client_pipelining_without_reading_answers_holds_one_read_of_requests(server, graph) -> None:
    """uvicorn resumed reading on every answer, so a client sending requests back to back without
    reading the answers had everything it sent parsed and held, outside ``max_inflight_mib`` (617 MiB
    from one connection in 15 s: 117 MiB to 1.3 GiB). Reading now waits while a pipelined request
    does: the server holds what its reads so far brought (one read: 256 KiB at most), the client's
    sends block, and the requests are answered in order once it reads."""
    request = _infer_head(body := _request(graph)) + body
    count = 20 * (256 * 1024) // len(request)  # 20 reads' worth
    host, port = server.url.rsplit(":", 1)
    connections = server.server.server_state.connections
    held = 0
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # answers back up soon
        sender = threading.Thread(target=s.sendall, args=(request * count,), daemon=True)
        sender.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            held = max(held, *(len(c.pipeline) for c in list(connections)), 0)
            time.sleep(0.001)
        assert held <= -(-256 * 1024 // len(request)) + 1, f"{held} requests of {len(request)} bytes held"
        answers = 0
        data = b""
        while answers < count:  # reading the answers lets the rest in, and every request is answered
            data += s.recv(1 << 20)
            answers = data.count(b"HTTP/1.1 200 ")
        sender.join(30)
    assert answers == count and not sender.is_alive()
    assert _ready(server)


def test_a_client_leaving_with_requests_pipelined_logs_no_traceback(server, graph) -> None:
    """uvicorn marks only the last request parsed as disconnected: the one being served wrote to the
    closed connection and logged "Exception in ASGI application" with a traceback for each such client."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("uvicorn.error")
    log.addHandler(handler)
    request = _infer_head(body := _request(graph)) + body
    host, port = server.url.rsplit(":", 1)
    try:
        for _ in range(5):
            with socket.create_connection((host, int(port)), timeout=30) as s:
                s.sendall(request * 50)
                time.sleep(0.05)  # the first are being answered
        time.sleep(1)
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []
    assert _ready(server)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("POST /v2/models/nope/infer HTTP/1.1\r\nContent-Length: 1000000000000", b"404"),  # unknown model
        ("POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 1000000000000", b"413"),  # declared over the limit
        ("GET /v2/health/live HTTP/1.1\r\nContent-Length: 1000000000000", b"200"),  # a body nobody reads
    ],
    ids=["404", "413", "get"],
)
def test_a_body_answered_before_it_was_read_is_dropped_for_a_bounded_time(
    server, monkeypatch: pytest.MonkeyPatch, head: str, status: bytes
) -> None:
    """A request answered before its body was read (no body timeout runs then): uvicorn dropped the
    body for as long as it arrived, so a client that declared a terabyte and sent a byte now and then
    held its connection forever (20 s and counting). Now the connection closes DISCARD_S after the answer."""
    import runtime.http_head

    monkeypatch.setattr(runtime.http_head, "DISCARD_S", 0.5)
    host, port = server.url.rsplit(":", 1)
    data, closed = b"", False
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"{head}\r\nHost: x\r\n\r\n".encode() + b"x" * 10)
        s.settimeout(0.1)
        for _ in range(200):  # 20 s of a byte every 0.1 s at most; the server closes after 0.5 s
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                closed = True
                break
            data += chunk or b""
            try:
                s.sendall(b"x")
            except OSError:  # the server closed while the byte was on its way
                closed = True
                break
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [status]
    assert closed
    assert _ready(server)


@pytest.mark.parametrize("then", ["idle", "next-request", "next-request-same-read"])
def test_a_connection_waits_for_its_next_head_with_a_timer_once_a_dropped_body_ends(
    server, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    """A 404 sent before its body arrived, then the body: the body's reads cancelled uvicorn's
    keep-alive timer and the head timer was armed only at an answer, so a client that went quiet
    after the body (a pooled connection) was held open forever (still open after 3 s with a 0.5 s
    head timeout). The next request on the connection is still served."""
    import runtime.http_head

    monkeypatch.setattr(runtime.http_head, "HEAD_TIMEOUT_S", 0.5)
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        data = s.recv(65536)  # the 404, sent before the body
        nxt = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(b"0123456789" + (nxt if then == "next-request-same-read" else b""))
        if then == "next-request":
            time.sleep(0.2)
            s.sendall(nxt)
        s.settimeout(3)
        try:
            while chunk := s.recv(65536):
                data += chunk
            closed = True
        except TimeoutError:
            closed = False
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"404"] + ([b"200"] if then != "idle" else [])
    assert closed
    assert _ready(server)


#: Chunked bodies llhttp cannot parse, each sent after a valid head, with llhttp's reason for refusing it.
MALFORMED_CHUNKED = {
    "bad-chunk-size": (b"zz\r\nabc\r\n0\r\n\r\n", "Invalid character in chunk size"),
    "bad-size-after-a-chunk": (b"a\r\n0123456789\r\nqq\r\n", "Invalid character in chunk size"),
    "chunk-longer-than-its-size": (b"5\r\nabcdefg\r\n0\r\n\r\n", "Expected LF after chunk data"),
    "size-overflow": (b"ffffffffffffffffffff\r\nabc\r\n", "Chunk size overflow"),
    "malformed-trailer": (b"a\r\n0123456789\r\n0\r\nX-Trailer\r\n\r\n", "Invalid header token"),
}
_CHUNKED_HEAD = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "after-the-body-began"])
@pytest.mark.parametrize("case", list(MALFORMED_CHUNKED))
def test_a_malformed_chunked_body_gets_an_immediate_400_and_gives_its_share_back(
    server, case: str, split: bool
) -> None:
    """An error inside a chunked body was refused as if it belonged to a later pipelined request: the
    refusal waited for the request's own answer while every byte after the error was dropped, so its
    handler waited for the rest of its body until body_timeout_s (60 s), held its in-flight share that
    long, and answered 408 "request body stalled ... send the body without pauses" to a client that had
    sent its whole body at once. It is now the request's answer: a 400 naming llhttp's reason, at once
    (the socket's timeout is far below body_timeout_s), the connection closed and the share given back.
    ``after-the-body-began``: the handler is already reading (and holds the first chunk) when the bad
    bytes arrive."""
    chunks, reason = MALFORMED_CHUNKED[case]
    good = b"a\r\n0123456789\r\n"
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        if split:
            s.sendall(_CHUNKED_HEAD + good)
            assert wait_for_held(server.app, 10) == 10  # the handler holds the first chunk
        s.sendall(_CHUNKED_HEAD + chunks if not split else chunks)
        got, body = _read_response(s)
    assert got.startswith(b"HTTP/1.1 400 "), got
    assert b"connection: close" in got.lower()
    assert json.loads(body) == {"error": f"the request is not valid HTTP/1.1: {reason}"}
    assert wait_for_held(server.app, 0) == 0
    assert _ready(server)


def test_framing_refused_once_the_head_is_complete_gets_an_immediate_400(server) -> None:
    """llhttp judges a request's Transfer-Encoding once its head is complete (its request has begun):
    ``Transfer-Encoding: gzip`` (chunked not last, so the body's end cannot be found) waited for the
    body timeout and got 408, as a malformed chunked body did."""
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}")
        got, body = _read_response(s)
    assert got.startswith(b"HTTP/1.1 400 "), got
    assert json.loads(body) == {"error": "the request is not valid HTTP/1.1: Request has invalid `Transfer-Encoding`"}
    assert wait_for_held(server.app, 0) == 0


def test_a_request_pipelined_after_one_being_answered_gets_its_400_after_that_answer(server, graph) -> None:
    """A malformed chunked body of a request pipelined behind one not yet answered: the earlier request
    is answered first, then the malformed one gets its 400 (it was queued, then served once the first was
    answered, and waited for the body timeout's 408)."""
    body = _request(graph)
    expected = _post(server, body).json()
    chunks, reason = MALFORMED_CHUNKED["bad-chunk-size"]
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(_infer_head(body) + body + _CHUNKED_HEAD + chunks)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"400"], data[:300]
    answer = data.split(b"\r\n\r\n", 1)[1]
    length = int(re.search(rb"(?i)content-length: *(\d+)", data)[1])
    assert json.loads(answer[:length]) == expected
    assert json.loads(data.rsplit(b"\r\n\r\n", 1)[1]) == {"error": f"the request is not valid HTTP/1.1: {reason}"}
    assert wait_for_held(server.app, 0) == 0
    assert _ready(server)


def _unsupported_coding(value: str, coding: str) -> str:
    return (
        f"unsupported Transfer-Encoding {value!r}: this server implements only chunked, not {coding!r}; send the "
        "body chunked or with a Content-Length, compressed with Content-Encoding: gzip or deflate"
    )


@pytest.mark.parametrize(
    ("lines", "value", "coding"),
    [
        (["gzip, chunked"], "gzip, chunked", "gzip"),
        (["deflate;q=1 , chunked"], "deflate;q=1 , chunked", "deflate"),
        (["gzip", "chunked"], "gzip, chunked", "gzip"),  # two lines are one list (RFC 9110 section 5.3)
        (["chunked, chunked"], None, None),  # no other coding: llhttp's own 400 for chunked applied twice
    ],
    ids=["gzip", "deflate-with-a-parameter", "two-lines", "chunked-twice"],
)
@pytest.mark.parametrize("gzipped", [False, True], ids=["plain-body", "gzip-body"])
def test_a_transfer_coding_other_than_chunked_gets_501_naming_it(
    server, graph, lines: list[str], value: str | None, coding: str | None, gzipped: bool
) -> None:
    """llhttp frames a body by its final ``chunked`` and drops the codings before it: plain JSON sent as
    ``Transfer-Encoding: gzip, chunked`` was answered 200, and real gzip data sent so got 400 "request JSON
    is malformed". A transfer coding the server does not implement gets 501 (RFC 9112 section 6.1)."""
    import gzip

    body = gzip.compress(_request(graph)) if gzipped else _request(graph)
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"Transfer-Encoding: %s\r\n" % v.encode() for v in lines
    )
    host, port = server.url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + b"\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        got, answer = _read_response(s)
    if coding is None:  # refused by llhttp while reading the head
        assert got.startswith(b"HTTP/1.1 400 "), got
        assert json.loads(answer) == {
            "error": "the request is not valid HTTP/1.1: Invalid `Transfer-Encoding` header value"
        }
        return
    assert got.startswith(b"HTTP/1.1 501 "), got
    assert b"connection: close" in got.lower()
    assert json.loads(answer) == {"error": _unsupported_coding(value, coding)}
    assert _ready(server)


@pytest.mark.parametrize("refused", ["501-transfer-coding", "431-head"])
def test_a_refused_head_followed_by_bad_bytes_in_the_same_read_is_refused_once(
    server, caplog: pytest.LogCaptureFixture, refused: str
) -> None:
    """llhttp goes on parsing the bytes read with a head refused from its callback: a parse error in them
    (a malformed chunk after it) refused the connection a second time, after the first refusal had ended
    its output, and the write raised: "Fatal error on transport" with a traceback in the log."""
    from runtime.http_head import MAX_HEAD_BYTES

    framing = b"gzip, chunked" if refused == "501-transfer-coding" else b"chunked\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + framing + b"\r\n\r\n"
    host, port = server.url.rsplit(":", 1)
    with caplog.at_level(logging.ERROR), socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + b"zz\r\nabc\r\n")  # one write: the server reads it in one chunk
        got, answer = _read_response(s)
        time.sleep(0.2)  # the server has handled the rest of the read
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got + answer) == [refused[:3].encode()]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert _ready(server)
