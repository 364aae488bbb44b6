"""Graph-aware dynamic batching: concurrent requests become one disjoint-union model call.

Triton's dynamic batcher stacks requests along dimension 0, which for graphs is wrong (a batch of
graphs is one big graph with offset node ids). Here each queued item is a request's validated
graphs; the batcher takes items in arrival order while the union stays within ``max_nodes``,
``max_edges``, ``max_graphs`` and ``max_requests``, waiting at most ``max_delay_ms`` after the
oldest item arrived, then runs the union once in a worker thread (so the event loop keeps
accepting requests) and hands every request its own slice of the output.

* An item larger than the soft limits runs alone rather than being rejected (hard limits are
  checked when the request is decoded).
* If a merged call fails, every item is retried alone, so one bad item cannot fail the others.
* ``max_requests=1`` disables batching: one model call per request, in arrival order (what Triton
  does for a model without a dynamic batcher and one instance).
* :meth:`DynamicBatcher.close` drains: it finishes every queued item before the worker stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph


@dataclass(frozen=True)
class BatchConfig:
    """Soft limits of one merged model call; ``max_delay_ms`` bounds the wait for company."""

    max_nodes: int = 8192
    max_edges: int = 65536
    max_graphs: int = 1024
    max_requests: int = 256
    max_delay_ms: float = 2.0

    @classmethod
    def disabled(cls) -> BatchConfig:
        return cls(max_requests=1, max_delay_ms=0.0)

    @property
    def enabled(self) -> bool:
        return self.max_requests > 1


@dataclass
class BatchItem:
    """One request's graphs (already validated) and the future its handler awaits."""

    graph: NumpyGraph
    num_graphs: int
    future: asyncio.Future[np.ndarray] = field(repr=False)
    arrival: float = field(default_factory=time.perf_counter)

    @property
    def nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def edges(self) -> int:
        return self.graph.num_edges


RunBatch = Callable[[Sequence[BatchItem]], list[np.ndarray]]
_STOP = object()


class DynamicBatcher:
    """Collects :class:`BatchItem`s on the event loop and runs them with ``run_batch`` in one thread.

    ``run_batch(items)`` returns one output array per item; it is called in the worker thread.
    ``on_batch(items, seconds)`` (optional) observes every call, e.g. for metrics."""

    def __init__(
        self,
        run_batch: RunBatch,
        config: BatchConfig,
        on_batch: Callable[[Sequence[BatchItem], float], None] | None = None,
    ) -> None:
        self.run_batch, self.config, self.on_batch = run_batch, config, on_batch
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gtc-model")
        self._carry: BatchItem | None = None
        self._closing = False
        self._inflight = 0
        self.batches = 0
        self.items = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def pending(self) -> int:
        """Requests submitted and not yet answered (queued, being batched or running)."""
        return self._inflight

    def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="gtc-batcher")

    async def submit(self, graph: NumpyGraph, num_graphs: int) -> np.ndarray:
        """Queue one request's graphs; resolves to its own slice of the model output."""
        if self._closing or not self.running or self._queue is None:
            raise RuntimeError("the batcher is not running (server starting up or shutting down)")
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(BatchItem(graph, num_graphs, fut))
        self._inflight += 1
        try:
            return await fut
        finally:
            self._inflight -= 1

    async def close(self) -> None:
        """Finish every queued item, then stop the worker."""
        self._closing = True
        if self._queue is not None and self.running:
            self._queue.put_nowait(_STOP)
            assert self._task is not None
            await self._task
        self._executor.shutdown(wait=True)

    def _fits(self, items: list[BatchItem], nxt: BatchItem, totals: list[int]) -> bool:
        c = self.config
        return (
            len(items) < c.max_requests
            and totals[0] + nxt.nodes <= c.max_nodes
            and totals[1] + nxt.edges <= c.max_edges
            and totals[2] + nxt.num_graphs <= c.max_graphs
        )

    async def _collect(self) -> tuple[list[BatchItem], bool]:
        """The next batch, and whether the stop marker was seen."""
        assert self._queue is not None
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        if first is _STOP:
            return [], True
        items = [first]
        totals = [first.nodes, first.edges, first.num_graphs]
        deadline = first.arrival + self.config.max_delay_ms / 1000.0
        stop = False
        while len(items) < self.config.max_requests:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                wait = deadline - time.perf_counter()
                if wait <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), wait)
                except TimeoutError:
                    break
            if nxt is _STOP:
                stop = True
                break
            if not self._fits(items, nxt, totals):
                self._carry = nxt
                break
            items.append(nxt)
            totals[0] += nxt.nodes
            totals[1] += nxt.edges
            totals[2] += nxt.num_graphs
        return items, stop

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop or self._carry is not None:
            items, saw_stop = await self._collect()
            stop = stop or saw_stop
            if items:
                await self._run(loop, items)

    async def _run(self, loop: asyncio.AbstractEventLoop, items: list[BatchItem]) -> None:
        start = time.perf_counter()
        try:
            outs = await loop.run_in_executor(self._executor, self.run_batch, items)
        except Exception as e:
            if len(items) == 1:
                _settle(items[0].future, exc=e)
                return
            for it in items:  # isolate the failure: every item alone
                try:
                    out = await loop.run_in_executor(self._executor, self.run_batch, [it])
                    _settle(it.future, result=out[0])
                except Exception as e1:
                    _settle(it.future, exc=e1)
            return
        self.batches += 1
        self.items += len(items)
        if self.on_batch is not None:
            self.on_batch(items, time.perf_counter() - start)
        for it, out in zip(items, outs, strict=True):
            _settle(it.future, result=out)


def _settle(fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():  # the client went away and its handler was cancelled
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
