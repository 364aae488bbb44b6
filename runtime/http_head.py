"""uvicorn's HTTP protocol with the request *head* bounded, in bytes and in time.

``gtc serve`` bounds what a request costs once its head is parsed (body size, in-flight bytes,
body pauses: :mod:`runtime.body`), but uvicorn's httptools protocol reads the head itself with no
limit at all: an endless header section was collected in memory, and a connection that sent
nothing, or a byte now and then (slowloris), was held open forever. httptools also drops the body of a
request that offers a protocol upgrade this server does not take (``Upgrade: h2c``, which ``curl --http2``
and Java's ``RestClient`` send on plain http): llhttp treats everything after the head as the new
protocol's bytes, so the app read an empty body and answered 400 "request JSON is malformed" to a valid
request. RFC 9110 section 7.8 lets a server ignore an upgrade offer and answer in HTTP/1.1; this protocol
does, with the body read as usual. While a pipelined request (sent before the previous answer was read)
waits, nothing more is read: uvicorn resumed reading on every answer, so a client that never read its
answers had everything it sent held in memory. A request whose chunked body llhttp cannot parse gets its 400
at once, as its answer (not a body timeout's 408), and a transfer coding other than chunked gets 501. A body
the request was answered without (a 404, a 413 on its Content-Length) is dropped for :data:`DISCARD_S` at
most, then the connection closes; one that ends sooner leaves the connection waiting for its next head,
timed as after any answer. An answer the client stops taking is dropped with its connection
(:data:`SEND_TIMEOUT_S`). A client that shuts its sending side once its request is complete
(``shutdown(SHUT_WR)``, ``nc -N``) still reads, and gets its answer: uvicorn closed the connection at that
end of input and withdrew the request.
This module is the one place that knows uvicorn's protocol internals (``cycle``, ``pipeline``, ``flow``,
``loop``, ``transport``, ``pause_writing``), so that a uvicorn upgrade that moves them breaks here and in
``tests/runtime/test_http_head.py`` only; that is why it stays one module past 500 lines.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from typing import Any

from runtime.body import MIN_BODY_RATE
from runtime.protocol import error_body

#: Bytes of one request head (request line and headers) read before the request gets 431 and its
#: connection closes. uvicorn's httptools protocol has no such bound: it collected an endless header
#: section in memory (205 MiB of header lines took a server from 117 to 463 MiB). 64 KiB is more
#: than any client of this API sends and four times nginx's default.
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a request head may take, from the connection's start or the previous response (408 past it).
HEAD_TIMEOUT_S = 30.0
#: Seconds a refused head's connection is still read (and dropped) before it closes, so that the
#: client reads the answer instead of a connection reset.
HEAD_LINGER_S = 2.0
#: Seconds the rest of a request body is still read (and dropped) once the request was answered
#: without it (413 for a declared size over the limit, 404 for an unknown model, 400 for an unknown
#: encoding, a GET with a body), before the connection closes. uvicorn drops such a body for as long
#: as it arrives, and no body timeout runs (the app reads nothing more): a client that declared a
#: terabyte and sent a byte now and then held its connection forever. nginx's ``lingering_time``.
DISCARD_S = 30.0
#: Seconds an answer may wait in the connection's write buffer without the client taking any of it
#: before the connection is aborted (the buffered answer dropped). Past that time from the first
#: pause the client must also have taken it at :data:`runtime.body.MIN_BODY_RATE` on average. Nothing
#: else times out a client that stops reading: uvicorn's keep-alive and our head timer only *close*
#: the connection, which waits for the buffer to flush, so a client that never read its answer held
#: the answer's bytes and the connection forever (60 clients that sent 1.6 MiB each and read nothing
#: took a server from 120 to 733 MiB with ``max_inflight_mib`` 64, and kept it there).
SEND_TIMEOUT_S = 60.0
#: Once the server shuts down, how long an answer may wait untaken (from the client's last read) before
#: its connection is aborted: past uvicorn's graceful timeout its request would be cancelled instead,
#: with a traceback in the log, after holding the shutdown that long.
SHUTDOWN_SEND_S = 1.0
#: Written to a client that ended its input with a request unanswered, to learn whether it still reads: an
#: interim response, which an HTTP/1.1 client must accept before any answer (RFC 9110 section 15.2).
PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TCP_CLOSE = 7  # Linux's tcp_info.tcpi_state once the peer reset the connection


def _head_too_large() -> str:
    """The 431 message, one wording whether the head was caught while arriving or once parsed."""
    return f"request head (request line and headers) exceeds this server's limit of {MAX_HEAD_BYTES} bytes"


def _unsupported_transfer_coding(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first transfer coding other than ``chunked`` in a request's ``Transfer-Encoding`` lines (one
    comma-separated list, RFC 9110 section 5.3; a coding's parameters aside) whose last coding is
    ``chunked``, or None. Without a final ``chunked`` the body's end cannot be found, which RFC 9112
    section 6.3 answers with 400, not 501: llhttp refuses such a request itself."""
    codings = [
        item.split(";", 1)[0].strip().lower()
        for name, value in headers
        if name == b"transfer-encoding"
        for item in value.decode("latin-1").split(",")
    ]
    codings = [c for c in codings if c]
    if not codings or codings[-1] != "chunked":
        return None
    return next((c for c in codings if c != "chunked"), None)


def bounded_head_protocol() -> Any:
    """uvicorn's httptools protocol with a request head bounded by :data:`MAX_HEAD_BYTES` and
    :data:`HEAD_TIMEOUT_S`, and the rest of this module's bounds. httptools is required (the ``serve``
    extra installs it, and :mod:`runtime.uvicorn_run` imports it): uvicorn's other protocol, h11, has
    none of these bounds, and a server that fell back to it silently held slow clients forever."""
    import httptools
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class PipelineFlow(FlowControl):  # type: ignore[misc]
        """uvicorn's read flow control, with reading kept paused while a pipelined request waits.

        uvicorn pauses reading when it queues a pipelined request, but resumes it on every response
        and every body read of the request being served, so the next read queues as many more: a
        client sending requests back to back without reading the answers had every byte it sent
        parsed and held (617 MiB from one connection in 15 s took a server from 117 MiB to 1.3 GiB),
        none of it counted against ``max_inflight_mib``, which starts at the app's first body read.
        Held to the requests of the reads already made, a connection costs at most a read's worth."""

        def __init__(self, transport: Any, protocol: BoundedHeadProtocol) -> None:
            super().__init__(transport)
            self._protocol = protocol

        def resume_reading(self) -> None:
            if not self._protocol.pipeline:
                super().resume_reading()

    class UpgradeIgnoringParser:
        """A request parser that answers an upgrade offer the protocol does not take by going on in
        HTTP/1.1: the rest of the bytes (the offer's body, then any pipelined requests) go to a
        fresh parser, which is then the connection's parser. Everything else is the wrapped parser's."""

        def __init__(self, inner: Any, protocol: BoundedHeadProtocol) -> None:
            self._inner = inner
            self._protocol = protocol

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def feed_data(self, data: bytes) -> None:
            try:
                self._inner.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                if self._protocol._should_upgrade():  # an upgrade the protocol takes (websocket)
                    raise
                self._protocol._ignore_upgrade(data[upgrade.args[0] :])

    class AfterIgnoredUpgrade:
        """Parser callbacks for the body of a request whose upgrade offer was ignored, then for the
        connection's later requests. The fresh parser first reads a made-up head carrying only the
        offer's framing headers (Content-Length or Transfer-Encoding): its callbacks are dropped, the
        request's own head having been handled already. The body and everything after it go to the
        protocol."""

        def __init__(self, protocol: BoundedHeadProtocol, has_body: bool) -> None:
            self._protocol = protocol
            self._has_body = has_body
            self._in_offer = True

        def _forward(self, name: str, *args: Any) -> None:
            if not self._in_offer:
                callback: Callable[..., None] = getattr(self._protocol, name)
                callback(*args)

        def on_message_begin(self) -> None:
            self._forward("on_message_begin")

        def on_url(self, url: bytes) -> None:
            self._forward("on_url", url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._forward("on_header", name, value)

        def on_headers_complete(self) -> None:
            self._forward("on_headers_complete")

        def on_body(self, body: bytes) -> None:
            self._protocol.on_body(body)

        def on_message_complete(self) -> None:
            if self._has_body or not self._in_offer:  # a body-less offer was completed by the first parser
                self._protocol.on_message_complete()
            self._in_offer = False

    class BoundedHeadProtocol(HttpToolsProtocol):  # type: ignore[misc]
        """Bounds the request head being read (from the connection's start or the previous response
        until its headers are complete) in bytes and in time.

        Bytes: counted after parsing each chunk, so a chunk that also carries a body counts only when
        its head did not end in it (the parser holds at most one chunk past the limit); the chunk a
        head ends in is checked by the parsed head's own size instead; past :data:`MAX_HEAD_BYTES`, 431.
        Time: a head not complete :data:`HEAD_TIMEOUT_S` after the connection opened or the previous
        response went out gets 408 (a connection that sent nothing is closed quietly); uvicorn times
        out neither, so a client that sent nothing, or a byte now and then, held its connection
        forever. Either way the connection then closes."""

        _in_head = True
        _head_bytes = 0
        _refused = False
        _deferred: tuple[int, str, str] | None = None  # a refusal waiting for the responses before it
        _head_timer: asyncio.TimerHandle | None = None
        _discard_timer: asyncio.TimerHandle | None = None  # a body answered before it was read
        _send_timer: asyncio.TimerHandle | None = None  # the client is not taking the answer (paused writing)
        _send_paused_at = 0.0  # when writing paused
        _send_progress_at = 0.0  # when the write buffer last shrank
        _send_buffered = 0  # its size then
        _send_taken = 0  # bytes the client took since writing paused
        _send_stall: float | None = None  # how long the answer may wait untaken, once shutdown has begun
        _probed: Any = None  # the socket of a client that ended its input and was sent PROBE

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.flow = PipelineFlow(transport, self)
            self.parser = UpgradeIgnoringParser(self.parser, self)
            self._open: list[Any] = []  # request cycles parsed and not yet answered, in order
            self._arm_head_timer()

        def _ignore_upgrade(self, rest: bytes) -> None:
            """Serves the request whose upgrade offer llhttp stopped at as plain HTTP/1.1: httptools
            completed it with an empty body (the app has not read it yet: its task starts after this
            ``data_received``), so the cycle is reopened and its body read by a fresh parser."""
            if self._refused:  # its head was refused (431): the rest of the connection is dropped
                return
            framing = [(n, v) for n, v in self.headers if n in (b"content-length", b"transfer-encoding")]
            has_body = any(n == b"transfer-encoding" or v.strip() not in (b"", b"0") for n, v in framing)
            if has_body and self.cycle is not None:
                self.cycle.more_body = True
                self._in_head = False  # the body's bytes are not a head's
            head = b"POST / HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in framing) + b"\r\n"
            self.parser = UpgradeIgnoringParser(httptools.HttpRequestParser(AfterIgnoredUpgrade(self, has_body)), self)
            self.parser.feed_data(head + rest)

        def connection_lost(self, exc: Exception | None) -> None:
            """uvicorn marks only the last request parsed as disconnected: with pipelined requests, the
            one being served wrote its answer to the closed transport, and uvloop raised, a traceback
            ("Exception in ASGI application") for each client that left with requests pipelined.
            Every unanswered request is marked, so their answers are dropped as a lone one's is."""
            self._disarm_head_timer()
            self._disarm_discard_timer()
            self._disarm_send_timer()
            for cycle in self._open:
                if not cycle.response_complete:
                    cycle.disconnected = True
                    cycle.message_event.set()
            self._open.clear()
            super().connection_lost(exc)

        def eof_received(self) -> bool | None:
            """The client ended its input. With a request still mid-way (its head or body cut short), or
            nothing to answer, the connection closes as uvicorn closes it. With complete requests
            unanswered it may have shut only its sending side and still read: the connection stays open
            for their answers, then closes. Whether it reads is learnt by writing (a fully closed socket
            answers data with a reset): :data:`PROBE`, unless an answer is being written already (HTTP/1.0
            takes no interim response: its request is answered). :meth:`peer_left` reads the result."""
            waiting = [c for c in self._open if not c.response_complete]
            if self._refused or not waiting or not self._in_head or self._head_bytes:
                return None
            self._disarm_head_timer()
            self.cycle.keep_alive = False  # the last request parsed: the connection closes once it is answered
            serving = waiting[0]
            if not serving.response_started and serving.scope.get("http_version") == "1.1":
                self.transport.write(PROBE)
                self._probed = self.transport.get_extra_info("socket")
            return True

        def peer_left(self) -> bool:
            """Whether a client sent :data:`PROBE` has reset the connection (it had closed its socket, not
            only its sending side): its requests are then dropped, as a lost connection's are. Any thread
            (the batcher's worker asks, :func:`client_left`); the reset is read from the socket's TCP state,
            Linux only, since the event loop stops reading at the end of input and never sees it."""
            sock, info = self._probed, getattr(socket, "TCP_INFO", None)
            if sock is None or info is None:
                return False
            try:
                state = sock.getsockopt(socket.IPPROTO_TCP, info, 1)[0]
            except OSError:  # closed meanwhile: connection_lost has marked its requests
                return False
            if state != _TCP_CLOSE:
                return False
            self._probed = None
            self.loop.call_soon_threadsafe(self._drop_requests)
            return True

        def _drop_requests(self) -> None:
            """On the loop: the client is gone (:meth:`peer_left`): its requests are marked disconnected
            before the handler hears it, so that nobody answers them, and the connection is aborted."""
            for cycle in self._open:
                if not cycle.response_complete:
                    cycle.disconnected = True
                    cycle.message_event.set()
            if not self.transport.is_closing():
                self.transport.abort()

        def data_received(self, data: bytes) -> None:
            if self._refused or self.transport.is_closing():  # refused: read and dropped, never parsed
                return
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._refuse(431, "Request Header Fields Too Large", _head_too_large())

        def on_headers_complete(self) -> None:
            if self._refused:  # a pipelined request after a refused head: dropped with it
                return
            self._in_head = False
            self._disarm_head_timer()
            if self._parsed_head_bytes() > MAX_HEAD_BYTES:
                # The chunk count in data_received skips the chunk a head ends in (it may carry a body),
                # so a head past the limit that arrived in one read (66 000 bytes in one send) was served.
                self._refuse(431, "Request Header Fields Too Large", _head_too_large())
                return
            coding = _unsupported_transfer_coding(self.headers)
            if coding is not None:
                # llhttp frames a body by its final ``chunked`` and drops the codings before it, so the body
                # of ``Transfer-Encoding: gzip, chunked`` would reach the app still gzipped and unmarked
                # (plain JSON labelled gzip served, real gzip data "request JSON is malformed"). 501, not
                # 400: the request is valid HTTP in a coding this server does not implement, which RFC 9112
                # section 6.1 answers with 501 (as h11, uvicorn's other parser, does). Refused here, for
                # every route, as llhttp's own refusals are: the connection closes after the answer.
                value = b", ".join(v for n, v in self.headers if n == b"transfer-encoding").decode("latin-1")
                self._refuse(
                    501,
                    "Not Implemented",
                    f"unsupported Transfer-Encoding {value!r}: this server implements only chunked, not "
                    f"{coding!r}; send the body chunked or with a Content-Length, compressed with "
                    "Content-Encoding: gzip or deflate",
                )
                return
            super().on_headers_complete()
            self._open.append(self.cycle)

        def _parsed_head_bytes(self) -> int:
            """Bytes of the head just parsed: request line and header lines as sent, up to the
            whitespace llhttp strips around header values."""
            method = self.parser.get_method()
            line = len(method) + len(self.url) + len(b"  HTTP/1.1\r\n")
            return line + sum(len(n) + len(v) + 4 for n, v in self.headers) + 2

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0
            self._disarm_discard_timer()
            if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
                self._await_next_head()

        def _await_next_head(self) -> None:
            """The body of a request answered before it was read has ended: the connection now waits
            for a head, timed by the head timer as after any answer. The dropped body's reads had
            cancelled uvicorn's keep-alive timer and the head timer is armed only at an answer, so a
            connection idle after such a body (a 404 to a POST whose body came in a later packet, then
            a pooled client's silence) was held open forever. Not uvicorn's keep-alive timer: armed
            here, in the read that may also carry the next request's head, nothing would cancel it,
            and it would close the connection under that request."""
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            self._open = [c for c in self._open if not c.response_complete]
            super().on_response_complete()
            if self._refused or self.transport.is_closing():
                if self._deferred is not None and not self._unanswered() and not self.transport.is_closing():
                    self._write_refusal(*self._deferred)
                return
            if self._in_head and not self.pipeline:  # awaiting a head
                self._arm_head_timer()
            elif not self._in_head and self.cycle is not None and self.cycle.response_complete:
                # the last request parsed was answered while its body still arrives (not a pipelined
                # request whose body its own handler is reading): dropped for DISCARD_S at most
                self._disarm_discard_timer()
                self._discard_timer = self.loop.call_later(DISCARD_S, self._stop_discarding)

        def pause_writing(self) -> None:
            """The write buffer is past its high-water mark: the client is not (yet) taking the answer.
            From now on it must take some of it every :data:`SEND_TIMEOUT_S`, and at
            :data:`~runtime.body.MIN_BODY_RATE` on average past that time, or the connection is aborted."""
            super().pause_writing()
            self._send_paused_at = self._send_progress_at = self.loop.time()
            self._send_buffered = self.transport.get_write_buffer_size()
            self._send_taken = 0
            self._disarm_send_timer()
            self._send_timer = self.loop.call_later(min(1.0, SEND_TIMEOUT_S), self._check_send)

        def resume_writing(self) -> None:
            self._disarm_send_timer()
            super().resume_writing()

        def shutdown(self) -> None:
            """The server shuts down: an answer the client is not taking may wait :data:`SHUTDOWN_SEND_S`
            more at most (checked at the next poll, within a second)."""
            self._send_stall = SHUTDOWN_SEND_S
            super().shutdown()

        def _disarm_send_timer(self) -> None:
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def _check_send(self) -> None:
            """Polled while writing is paused (the transport reports no progress by itself): abort the
            connection of a client that stopped taking its answer, or takes it too slowly. Aborted, not
            closed: a close waits for the buffer to flush, which is what never happens."""
            self._send_timer = None
            now = self.loop.time()
            buffered = self.transport.get_write_buffer_size()
            if buffered < self._send_buffered:
                self._send_taken += self._send_buffered - buffered
                self._send_progress_at = now
            self._send_buffered = buffered
            stalled = now - self._send_progress_at >= min(SEND_TIMEOUT_S, self._send_stall or SEND_TIMEOUT_S)
            slow = now - self._send_paused_at >= SEND_TIMEOUT_S + self._send_taken / MIN_BODY_RATE
            if stalled or slow:
                self.transport.abort()  # connection_lost follows: the handler's send returns, its lease goes
                return
            self._send_timer = self.loop.call_later(min(1.0, SEND_TIMEOUT_S), self._check_send)

        def _disarm_discard_timer(self) -> None:
            if self._discard_timer is not None:
                self._discard_timer.cancel()
                self._discard_timer = None

        def _stop_discarding(self) -> None:
            """The body of a request answered :data:`DISCARD_S` ago is still arriving: the connection
            closes (the answer went out long ago, so the client has it)."""
            self._discard_timer = None
            if not self._in_head and not self.transport.is_closing():
                self.transport.close()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if not self._in_head or busy or self.transport.is_closing():
                return
            if not self._head_bytes:  # nothing of a request came: an idle connection, closed quietly
                self.transport.close()
                return
            self._refuse(
                408,
                "Request Timeout",
                f"request head (request line and headers) not complete {HEAD_TIMEOUT_S:g} s after the connection "
                "opened or the previous response; send it without pauses",
            )

        def send_400_response(self, msg: str) -> None:
            """A request llhttp cannot parse (a repeated Content-Length, Content-Length with chunked
            framing, a malformed request line, a bad chunk size in a chunked body): uvicorn answered it in
            plain text, which a KServe client (tritonclient) cannot read as an error. The same 400 as a
            KServe error body, naming llhttp's reason; called inside uvicorn's ``except HttpParserError``,
            where that error is at hand.

            An error past a head (in a chunked body, its trailer, or framing llhttp judges once the head is
            complete, such as ``Transfer-Encoding: gzip``) belongs to the last request parsed, whose handler
            may be reading its body: that request is withdrawn (:meth:`_withdraw`) and gets the 400 as its
            answer. Left open, its handler would wait for body bytes that the refusal drops until the body
            timeout, holding its in-flight share, then answer 408 "request body stalled" to a client that
            sent its whole body at once."""
            error = sys.exc_info()[1]
            why = f": {error}" if error is not None and str(error) else ""
            if not self._in_head:
                self._withdraw(self.cycle)
            self._refuse(400, "Bad Request", f"the request is not valid HTTP/1.1{why}")

        def _withdraw(self, cycle: Any) -> None:
            """Ends a request whose body cannot be read before anything of its answer went out: its handler
            reads the end of the request (``http.disconnect``: it gives its in-flight share back), whatever
            it sends is dropped, and a queued (pipelined) one is never started. A request whose answer has
            started keeps it; the refusal then follows the answer."""
            if cycle is None or cycle.response_started:
                return
            cycle.disconnected = True
            cycle.message_event.set()
            for queued in [item for item in self.pipeline if item[0] is cycle]:
                self.pipeline.remove(queued)
            self._open = [c for c in self._open if c is not cycle]

        def _unanswered(self) -> bool:
            """Whether a request parsed so far still awaits its answer (a withdrawn one awaits none)."""
            return any(not c.response_complete and not c.disconnected for c in self._open)

        def _refuse(self, status: int, reason: str, message: str) -> None:
            """``status`` with a KServe error body, then a lingering close: closing at once with the
            client's bytes unread would reset the connection, and the client would see the reset
            instead of the answer. The rest is read and dropped until the client closes or
            :data:`HEAD_LINGER_S` has passed."""
            if self._refused:
                # One refusal a connection: llhttp goes on parsing the rest of a read whose head was refused
                # from a callback (431, 501) and may fail on it (a malformed chunk), once the first refusal
                # has ended the connection's output (``write_eof``: a second write raises).
                return
            self._disarm_head_timer()
            self._refused = True
            if self._unanswered():
                # The request refused follows pipelined requests not yet answered (a head is refused before
                # its own cycle exists, a body's request is withdrawn first): they are answered first, then
                # the refusal (:meth:`on_response_complete`). Closing at once lost their answers: a valid GET
                # sent with an oversized second request in one write got no response at all.
                self._deferred = (status, reason, message)
                return
            self._write_refusal(status, reason, message)

        def _write_refusal(self, status: int, reason: str, message: str) -> None:
            """The refusal's response, then a lingering close (see :meth:`_refuse`)."""
            self._deferred = None
            body = error_body(message)
            head = (
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
            )
            self.transport.write(head.encode("latin-1") + body)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(HEAD_LINGER_S, self.transport.close)

    return BoundedHeadProtocol


def client_left(receive: Any) -> Callable[[], bool]:
    """Whether the client of an ASGI request has gone away, as a flag any thread may read
    (:meth:`runtime.batcher.DynamicBatcher.submit`'s ``gone``): uvicorn's request cycle, whose bound
    ``receive`` this is, sets ``disconnected`` when the connection is lost (and
    :func:`bounded_head_protocol` marks every unanswered request of it, and tells a client that shut its
    sending side, which still reads, from one that closed its socket: ``peer_left``). Another ASGI server's
    ``receive`` has no such cycle: its requests are never withdrawn, only answered."""
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return lambda: False
    transport = getattr(cycle, "transport", None)
    peer_left = getattr(transport.get_protocol(), "peer_left", None) if transport is not None else None
    if peer_left is None:
        return lambda: bool(cycle.disconnected)
    return lambda: bool(cycle.disconnected) or peer_left()
