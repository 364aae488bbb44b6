"""Graph-aware dynamic batching: concurrent requests become one disjoint-union model call.

Triton's dynamic batcher stacks requests along dimension 0, which for graphs is wrong (a batch of
graphs is one big graph with offset node ids). Here each queued item is a request's validated
graphs; the batcher takes items in arrival order while the union stays within the soft limits of
one call (:mod:`runtime.packing`: nodes, edges, graphs, requests, padded attention), then runs the
union once and hands every request its own slice of the output.

When to fire: a batch whose queue has run dry waits for more only while it holds fewer requests than
were recently in flight at once (the peak over the last ``CONCURRENCY_WINDOW_S``), and never longer
than ``max_delay_ms`` after its oldest item arrived. A lone client thus pays no batching delay (a
fixed 2 ms wait cut its throughput 3x), and under load a batch fires as soon as every client that
has been waiting is in it. (The event loop decodes a small request without yielding, so requests not
yet decoded cannot be counted directly; recent concurrency is the signal that is available.)

Batches are formed *and* run by one worker thread that blocks on a thread-safe queue, so the event
loop keeps accepting requests and its per-request cost is one ``put`` and one future: no asyncio
queue, timer task or executor hop per request or per batch. While a batch runs, new requests
queue up, and the next batch takes them all at once (self-clocking). Results go back to the event
loop with one ``call_soon_threadsafe`` per batch.

* An item larger than the soft limits runs alone rather than being rejected (hard limits are
  checked when the request is decoded).
* If a merged call fails, every item is retried alone, so one bad item cannot fail the others.
* ``max_requests=1`` disables batching: one model call per request, in arrival order (what Triton
  does for a model without a dynamic batcher and one instance).
* A request whose client leaves while it waits is withdrawn (:meth:`DynamicBatcher.submit`'s ``gone``):
  not run if still queued.
* :meth:`DynamicBatcher.close` drains: it finishes every queued item before the worker stops.
* :meth:`DynamicBatcher.hurry` (shutdown has begun, no request will join any more): a batch waiting
  for company fires at once instead of at ``max_delay_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph
from runtime.body import ClientDisconnected
from runtime.heap import release_heap
from runtime.packing import BatchConfig, GraphRequest, add, fits, past_limits


@dataclass(slots=True)
class BatchItem(GraphRequest):
    """A request of ``gtc serve`` and the future its handler awaits."""

    future: asyncio.Future[np.ndarray] = field(repr=False)
    arrival: float = field(default_factory=time.perf_counter)
    #: True once the request's client has gone away (read by the worker thread: a flag, no await)
    gone: Callable[[], bool] | None = field(default=None, repr=False)


#: One output per item, or an exception in an item's place: that item fails, the others are answered.
RunBatch = Callable[[Sequence[BatchItem]], Sequence[np.ndarray | BaseException]]
CONCURRENCY_WINDOW_S = 0.5
_STOP = object()
_WAKE = object()  # queued by hurry(): wakes a worker waiting for company, carries no request
log = logging.getLogger("gtcompress.serve")


def _withdraw(fut: asyncio.Future[Any]) -> None:
    """On the loop: fail the future of a request whose client has gone (see :meth:`DynamicBatcher.submit`)."""
    if not fut.done():
        fut.set_exception(ClientDisconnected())


class DynamicBatcher:
    """Collects :class:`BatchItem`s and runs them with ``run_batch`` in one worker thread.

    ``submit`` is called on the event loop; ``run_batch(items)`` returns one output array per item
    and is called in the worker thread, as is ``on_batch(items, seconds)`` (optional; it observes
    every successful call, e.g. for metrics, and must be thread-safe)."""

    def __init__(
        self,
        run_batch: RunBatch,
        config: BatchConfig,
        on_batch: Callable[[Sequence[BatchItem], float], None] | None = None,
    ) -> None:
        self.run_batch, self.config, self.on_batch = run_batch, config, on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        self._hurry = False  # no request will come any more: never wait for company
        self._inflight = 0
        self._peak = 0  # most requests in flight at once since _peak_since (see _concurrency)
        self._peak_since = time.perf_counter()
        self.batches = 0
        self.items = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def pending(self) -> int:
        """Requests submitted and not yet answered (queued, being batched or running)."""
        return self._inflight

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._closing = self._hurry = False
        self._thread = threading.Thread(target=self._work, name="gtc-model", daemon=True)
        self._thread.start()

    async def submit(self, graph: NumpyGraph, num_graphs: int, gone: Callable[[], bool] | None = None) -> np.ndarray:
        """Queue one request's graphs; resolves to its own slice of the model output.

        ``gone``: whether the request's client has gone away, asked by the worker as it takes the item.
        Such a request is withdrawn (not run) and :class:`~runtime.body.ClientDisconnected` raised: a
        client that gave up (a timeout, often followed by a retry) had its answer computed for nobody,
        which under overload doubled the work, and its request was counted as answered. A flag the
        worker reads, not a task per request watching the connection: that task cost 0.05-0.1 ms of
        server CPU per request (7-10 % of the throughput of small requests)."""
        if not self.running or self._loop is None:
            raise RuntimeError("the batcher is not running (server starting up or shutting down)")
        fut: asyncio.Future[np.ndarray] = self._loop.create_future()
        self._queue.put(BatchItem(graph, num_graphs, fut, gone=gone))
        self._inflight += 1
        self._peak = max(self._peak, self._inflight)
        try:
            return await fut
        finally:
            self._inflight -= 1

    def _abandoned(self, item: BatchItem) -> bool:
        """Whether a queued item is not to be run: its caller gave up (a timeout, a cancelled task), or
        its client has gone away (its future then fails with ClientDisconnected, on the loop)."""
        if item.future.done():
            return True
        if item.gone is not None and item.gone():
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_withdraw, item.future)
            return True
        return False

    def hurry(self) -> None:
        """Stop waiting for company: a batch being collected fires now, later ones do not wait.

        For the start of a shutdown, when the server accepts no more requests. Without it a batch
        that waits for company (up to ``max_delay_ms``, at most a minute) waits for requests that can
        no longer come: the shutdown took that long, and past uvicorn's graceful timeout the waiting
        requests were cancelled (HTTP 500 and a traceback) instead of answered. Thread-safe (a signal
        handler or another thread may call it); ``submit`` still works after it, without the wait."""
        self._hurry = True
        self._queue.put(_WAKE)

    async def close(self) -> None:
        """Finish every queued item, then stop the worker (items submitted before ``close`` precede
        the stop marker in the queue, and ``submit`` refuses from now on)."""
        if self._closing:
            if self._stopped is not None:
                await asyncio.shield(self._stopped)
            return
        self._closing = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            assert self._stopped is not None
            await asyncio.shield(self._stopped)
            self._thread.join()

    # ------------------------------------------------------------------ worker thread
    def _concurrency(self) -> int:
        """Recent peak of requests in flight at once; the window restarts from the current count,
        so the estimate follows the load down within about ``CONCURRENCY_WINDOW_S``."""
        now = time.perf_counter()
        peak = self._peak
        if now - self._peak_since > CONCURRENCY_WINDOW_S:
            self._peak, self._peak_since = self._inflight, now  # racy with submit: at worst one late update
        return peak

    def _collect(self, items: list[BatchItem], stop: bool) -> tuple[BatchItem | None, bool]:
        """Fill the batch ``items`` (its first item already in it) from the queue; the item that did not
        fit (if any), and whether the stop marker was seen (after it the queue is empty: nothing is
        worth waiting for). ``items`` is the caller's list, so items taken are never lost to an error."""
        q, delay = self._queue, self.config.max_delay_ms / 1000.0
        first = items[0]
        totals: list[Any] = [0, 0, 0, 0, None, None]
        add(self.config, totals, first)
        deadline = first.arrival + delay
        expected = self._concurrency()
        while len(items) < self.config.max_requests:
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                wait = deadline - time.perf_counter()
                if stop or self._hurry or wait <= 0 or len(items) >= expected:
                    break
                try:
                    nxt = q.get(timeout=wait)
                except queue.Empty:
                    break
            if nxt is _STOP:
                stop = True
                continue
            if nxt is _WAKE:  # hurry(): the next empty queue ends the batch
                continue
            if self._abandoned(nxt):  # not run for nobody
                continue
            items.append(nxt)  # in the caller's list before anything else can fail
            if not fits(self.config, len(items) - 1, totals, nxt):
                return items.pop(), stop
            add(self.config, totals, nxt)
        return None, stop

    def _work(self) -> None:
        carry: BatchItem | None = None
        items: list[BatchItem] = []  # taken from the queue and not yet answered
        stop = False
        try:
            while carry is not None or not stop:
                first = carry if carry is not None else self._queue.get()
                carry = None
                if first is _STOP:
                    stop = True
                    continue
                if first is _WAKE:
                    continue
                if self._abandoned(first):  # see _collect
                    continue
                items = [first]
                carry, stop = self._collect(items, stop)
                self._run(items)  # answers every item, whatever happens in the model
                items = []
        except BaseException:  # a bug here must not leave requests waiting forever
            log.exception("batcher worker failed")
            failed = RuntimeError("the batcher failed; see the server log")
            taken = [*items, *([carry] if carry is not None else [])]
            self._post(_settle_all, [(it.future, None, failed) for it in taken])
            self._fail_queued(failed)
        finally:
            self._post(_resolve_stopped, self._stopped)

    def _run(self, items: list[BatchItem]) -> None:
        start = time.perf_counter()
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
        try:
            outs = self.run_batch(items)
            if len(outs) != len(items):
                raise RuntimeError(f"run_batch returned {len(outs)} outputs for {len(items)} requests")
            results = [_result(it.future, out) for it, out in zip(items, outs, strict=True)]
            self._observe(items, start)
        except Exception as e:
            if len(items) == 1:
                results = [(items[0].future, None, e)]
            else:
                results = []
                for it in items:  # isolate the failure: every item alone
                    alone = time.perf_counter()
                    try:
                        results.append(_result(it.future, self.run_batch([it])[0]))
                    except Exception as e1:
                        results.append((it.future, None, e1))
                    else:  # a successful call like any other: counted and observed (metrics)
                        self._observe([it], alone)
        self._post(_settle_all, results)
        if past_limits(self.config, items):
            release_heap()

    def _observe(self, items: list[BatchItem], start: float) -> None:
        """Count one successful model call and show it to ``on_batch``."""
        self.batches += 1
        self.items += len(items)
        if self.on_batch is not None:
            try:
                self.on_batch(items, time.perf_counter() - start)
            except Exception:  # metrics must never fail a request
                log.exception("batch observer failed")

    def _fail_queued(self, exc: BaseException) -> None:
        while True:
            try:
                it = self._queue.get_nowait()
            except queue.Empty:
                return
            if it is not _STOP and it is not _WAKE:
                self._post(_settle_all, [(it.future, None, exc)])

    def _post(self, fn: Callable[..., None], arg: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting any more
            loop.call_soon_threadsafe(fn, arg)


def _result(fut: asyncio.Future[Any], out: Any) -> tuple[asyncio.Future[Any], Any, BaseException | None]:
    """An item's outcome from ``run_batch``: its output, or the error it returned in the output's place
    (one item of a call refused, the others answered)."""
    return (fut, None, out) if isinstance(out, BaseException) else (fut, out, None)


def _settle_all(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in results:
        if fut.done():  # the client went away and its handler was cancelled
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def _resolve_stopped(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)
