"""Request bodies read as they stream in, decoded incrementally, refused the moment they are too big.

One limit (``ServerLimits.max_body_bytes``) bounds both the bytes received and the bytes after
``Content-Encoding`` decoding: a declared ``Content-Length`` above it is refused before the body is
read; otherwise each chunk is counted as it arrives and decompressed with a bounded output size
(``zlib.decompressobj(...).decompress(data, max_length)``), so a 1 MiB gzip body that would expand
to 1 GiB stops after ``limit + 1`` decoded bytes. The decoded body lives in one ``bytearray`` that
grows in place, so a request costs about the limit in memory, not the decoded size (and not twice
the body, as collecting chunks and joining them would).

Encodings: ``identity``, ``gzip`` (concatenated members too, as :func:`gzip.decompress` reads
them) and ``deflate`` — the zlib format HTTP specifies, or the raw deflate stream some clients send
under that name (told apart by the zlib header check bits).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

from runtime.errors import BodyTimeoutError, BodyTooLargeError, ProtocolError, ServerBusyError

ENCODINGS = ("identity", "gzip", "deflate")
#: Least average rate, in bytes a second, at which a request body must arrive once it has taken longer
#: than the body timeout (Apache's mod_reqtimeout default, ``MinRate=500``). The body timeout alone is
#: a pause between chunks: a client that sent one byte a second never paused long enough, and held its
#: connection for as long as its declared body lasted (days for a few MiB), so a few hundred such
#: clients took every file descriptor. At this rate the largest default body (512 MiB) may take 12
#: days; any real client is thousands of times faster.
MIN_BODY_RATE = 500
DECODE_STEP = 1 << 20  # most bytes one decompress call may produce: bounds the overshoot past the limit
_GZIP, _ZLIB, _RAW = 31, 15, -15  # zlib wbits of the three stream formats


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


class BodyDecoder:
    """Decode a request body chunk by chunk (:meth:`feed`), then :meth:`finish` for the decoded bytes.

    Raises :class:`BodyTooLargeError` as soon as more than ``limit`` bytes were fed or decoded, and
    :class:`ProtocolError` for an unknown encoding or a corrupt or truncated compressed stream."""

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        enc = (content_encoding or "identity").strip().lower()
        if enc not in ENCODINGS:
            raise ProtocolError(f"unsupported Content-Encoding {content_encoding!r}; use gzip, deflate or none")
        self.encoding, self.limit = enc, limit
        self.received = 0
        self._out = bytearray()
        self._head = b""  # deflate: the first bytes, until the format can be told
        self._z: Any = zlib.decompressobj(_GZIP) if enc == "gzip" else None

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body as received."""
        self.received += len(chunk)
        if self.received > self.limit:
            raise BodyTooLargeError(self.limit, self.encoding)
        if self.encoding == "identity":
            self._out += chunk
            return
        if self._z is None:  # deflate: zlib (RFC 1950) if the first two bytes are a valid zlib header
            self._head += chunk
            if len(self._head) < 2:
                return
            b0, b1 = self._head[0], self._head[1]
            zlib_format = b0 & 0x0F == 8 and b0 >> 4 <= 7 and (b0 << 8 | b1) % 31 == 0
            self._z = zlib.decompressobj(_ZLIB if zlib_format else _RAW)
            chunk, self._head = self._head, b""
        self._inflate(chunk)

    def _inflate(self, data: bytes) -> None:
        try:
            while True:
                room = self.limit - len(self._out) + 1  # one byte past the limit is enough to refuse
                piece = self._z.decompress(data, min(DECODE_STEP, room))
                self._out += piece
                if len(self._out) > self.limit:
                    raise BodyTooLargeError(self.limit, self.encoding, decoded=True)
                data = self._z.unconsumed_tail
                if self._z.eof and self._z.unused_data:
                    data = self._next_member()
                    continue
                if not data and len(piece) < min(DECODE_STEP, room):  # input used up, no output pending
                    return
        except zlib.error as e:
            raise ProtocolError(f"request body is not valid {self.encoding} data ({e})") from None

    def _next_member(self) -> bytes:
        """Bytes after the end of a compressed stream: the next gzip member, an error for deflate."""
        rest = self._z.unused_data
        if self.encoding != "gzip":
            raise ProtocolError(
                f"request body is not valid {self.encoding} data ({len(rest)} bytes after the end of the compressed "
                "stream)"
            )
        self._z = zlib.decompressobj(_GZIP)
        return rest

    @property
    def decoded(self) -> int:
        """Bytes decoded so far (what the body will hold)."""
        return len(self._out)

    def finish(self) -> bytearray:
        """The decoded body, once every chunk was fed (an empty body decodes to nothing)."""
        if self.encoding != "identity" and self.received:
            if self._z is None:  # a one-byte deflate body
                raise ProtocolError(f"request body is not valid {self.encoding} data (it is a single byte)")
            if not self._z.eof:
                raise ProtocolError(
                    f"request body is not valid {self.encoding} data (it ends inside the compressed stream)"
                )
        return self._out


class InflightBudget:
    """Bytes of request bodies the whole server holds at once, from the first byte read until the
    answer is built (the body, and the tensors viewing it, live that long: queued, batched, run).

    ``max_body_bytes`` bounds one request; this bounds all of them together, so a thousand clients
    (or a few that send most of a large body and then stall) cannot take the server's memory: past
    the budget a request gets :class:`ServerBusyError` (HTTP 503) instead of being read. Used from
    the event loop only, so the counts need no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def lease(self) -> Lease:
        """An empty share of the budget for one request; :meth:`Lease.release` gives it back."""
        return Lease(self)


class Lease:
    """One request's share of an :class:`InflightBudget`, grown as its body arrives."""

    def __init__(self, budget: InflightBudget) -> None:
        self.budget = budget
        self.held = 0

    def grow_to(self, size: int) -> None:
        """Hold ``size`` bytes in all, or raise :class:`ServerBusyError` (holding what was held)."""
        more = size - self.held
        if more <= 0:
            return
        b = self.budget
        if b.held + more > b.limit:
            others = b.held - self.held
            raise ServerBusyError(
                f"server is busy: requests in flight hold {others} bytes, and this one's {size} would take them "
                f"past this server's limit of {b.limit} bytes (max_inflight_mib); retry later"
            )
        b.held += more
        self.held = size

    def resize(self, size: int) -> None:
        """Hold ``size`` bytes in all: more as :meth:`grow_to` does, or fewer, giving the rest back (a
        parsed JSON body keeps only its arrays of what its parsing held)."""
        if size >= self.held:
            self.grow_to(size)
            return
        self.budget.held -= self.held - size
        self.held = size

    def release(self) -> None:
        """Give the whole share back (once the answer is built, or the request failed)."""
        self.budget.held -= self.held
        self.held = 0

    def shrink_to(self, size: int) -> None:
        """Hold no more than ``size`` bytes in all (what the request still holds once a step's working
        memory, such as its positional encodings', is freed); never grows the share."""
        if max(size, 0) < self.held:
            self.resize(max(size, 0))


class BodyClock:
    """How long a request body may stop arriving, and the timers of the bodies being read.

    The server's shutdown shortens both (:meth:`hurry`): otherwise a client stalled mid-body held
    the shutdown until uvicorn's graceful timeout (30 s) cancelled its request, which the client saw
    as a 500 and the log as a traceback. Used on the event loop only."""

    def __init__(self, idle: float) -> None:
        self._configured = idle
        self.idle = idle
        self.stopping = False
        self.timers: set[asyncio.Timeout] = set()

    def resume(self) -> None:
        """The server (re)starts: bodies may pause the configured time again. An app stopped once
        and served again (a second :class:`~runtime.server.BackgroundServer` on it) kept the
        shutdown's short pause, and every body that paused past it got 503 "server is shutting
        down" from a server that was running."""
        self.idle = self._configured
        self.stopping = False

    def hurry(self, idle: float) -> None:
        """The server is shutting down: from now a body may pause ``idle`` seconds at most, those
        already pausing included."""
        self.stopping = True
        self.idle = min(self.idle, idle)
        deadline = asyncio.get_running_loop().time() + self.idle
        for timer in self.timers:
            when = timer.when()
            timer.reschedule(deadline if when is None else min(when, deadline))


async def read_body(
    chunks: AsyncIterable[bytes],
    limit: int,
    content_encoding: str | None = None,
    content_length: str | None = None,
    lease: Lease | None = None,
    clock: BodyClock | None = None,
) -> bytearray:
    """The decoded body of a request whose raw chunks ``chunks`` yields, refused as early as possible:
    an unknown encoding or a declared ``content_length`` over ``limit`` before reading anything,
    then at the chunk that takes the received or decoded size past ``limit``.

    ``lease``: the request's share of the server's :class:`InflightBudget`, grown to the bytes
    received or decoded, whichever is larger, as they arrive (:class:`ServerBusyError` past it); the
    caller releases it. Bytes are counted once they arrive, not as declared: a client that declares
    a large body and sends nothing must not hold the budget the others need.

    ``clock``: how long the body may stop arriving (before its first chunk or between two) before
    :class:`BodyTimeoutError`; the HTTP server has no such timeout, so without it a client that
    stalls mid-body holds its connection and its share of the budget for as long as it stays
    connected. Past that time from the start the body must also have arrived at :data:`MIN_BODY_RATE`
    on average (``idle + received / MIN_BODY_RATE`` seconds in all), so a client that trickles it
    without ever pausing that long is refused too. One timer per request, moved on at each chunk."""
    decoder = BodyDecoder(content_encoding, limit)
    declared = (content_length or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # the HTTP server checked its syntax
        raise BodyTooLargeError(limit, decoder.encoding, declared=int(declared))
    loop = asyncio.get_running_loop()
    start = loop.time()
    idle = None if clock is None else clock.idle
    too_slow = False  # the timer is set by the average rate, not by a pause
    try:
        async with asyncio.timeout_at(None if clock is None else start + clock.idle) as timer:
            if clock is not None:
                clock.timers.add(timer)
            try:
                async for chunk in chunks:
                    if chunk:
                        decoder.feed(chunk)
                        if lease is not None:
                            lease.grow_to(max(decoder.received, decoder.decoded))
                    if clock is not None:
                        idle = clock.idle
                        pause = loop.time() + idle
                        rate = start + idle + decoder.received / MIN_BODY_RATE
                        too_slow = rate < pause
                        timer.reschedule(min(pause, rate))
            finally:
                if clock is not None:
                    clock.timers.discard(timer)
    except TimeoutError:
        of = f" of {declared}" if declared.isascii() and declared.isdigit() else ""
        if clock is not None and clock.stopping:
            raise BodyTimeoutError(
                f"server is shutting down and the request body stopped arriving after {decoder.received}{of} bytes; "
                "retry",
                shutting_down=True,
            ) from None
        if too_slow:
            raise BodyTimeoutError(
                f"request body too slow: {decoder.received}{of} bytes in {loop.time() - start:.1f} s, below this "
                f"server's minimum of {MIN_BODY_RATE} bytes a second for a body that takes longer than "
                f"{idle:g} s (body_timeout_s); send the body without trickling it"
            ) from None
        raise BodyTimeoutError(
            f"request body stalled: nothing arrived for {idle:g} s after {decoder.received}{of} bytes "
            "(this server's body_timeout_s); send the body without pauses"
        ) from None
    return decoder.finish()


async def receive_chunks(receive: Callable[[], Awaitable[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """The body chunks of an ASGI HTTP request, as they arrive; :class:`ClientDisconnected` if the
    client leaves first."""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        yield message.get("body", b"")
        more = message.get("more_body", False)
