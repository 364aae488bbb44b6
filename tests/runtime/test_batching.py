"""Disjoint-union batching round trips and the dynamic batcher's scheduling rules."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import numpy as np
import pytest

from gtcompress.preprocess import NumpyGraph, union_graphs
from gtcompress.preprocess.random_graphs import random_graph
from runtime.batcher import BatchConfig, BatchItem, DynamicBatcher
from runtime.graphs import Prepared, merge_graphs, split_output

SPEC_X = {"kind": "float", "dim": 3, "cardinalities": []}
SPEC_E = {"kind": "float", "dim": 2, "cardinalities": []}


def _graphs(count: int, seed: int = 0) -> list[NumpyGraph]:
    rng = np.random.default_rng(seed)
    return [
        random_graph(rng, int(rng.integers(1, 9)), int(rng.integers(0, 20)), SPEC_X, SPEC_E, i % 2, i % 3)
        for i in range(count)
    ]


def test_merge_then_split_round_trip() -> None:
    graphs = _graphs(7)
    merged = merge_graphs(graphs)
    assert merged.num_nodes == sum(g.num_nodes for g in graphs)
    assert merged.num_graphs == len(graphs)
    counts = np.bincount(merged.batch)
    np.testing.assert_array_equal(counts, [g.num_nodes for g in graphs])
    # edges stay inside their own graph and map back to the original ids
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    edge_graph = merged.batch[merged.edge_index[0]]
    np.testing.assert_array_equal(edge_graph, merged.batch[merged.edge_index[1]])
    pos = 0
    for i, g in enumerate(graphs):
        ei = merged.edge_index[:, pos : pos + g.num_edges] - offsets[i]
        np.testing.assert_array_equal(ei, g.edge_index)
        np.testing.assert_array_equal(merged.edge_attr[pos : pos + g.num_edges], g.edge_attr)
        pos += g.num_edges
    node_out = np.arange(merged.num_nodes)[:, None] * np.ones((1, 2))
    prepared = Prepared({}, [g.num_nodes for g in graphs], [1] * len(graphs))
    parts = split_output(node_out, prepared, node_level=True)
    for i, (g, part) in enumerate(zip(graphs, parts, strict=True)):
        assert part.shape == (g.num_nodes, 2)
        np.testing.assert_array_equal(part[:, 0], np.arange(g.num_nodes) + offsets[i])
    graph_parts = split_output(np.arange(len(graphs))[:, None], prepared, node_level=False)
    assert [int(p[0, 0]) for p in graph_parts] == list(range(len(graphs)))


def test_merge_of_unions_matches_flat_union() -> None:
    graphs = _graphs(9, seed=1)
    a, b, c = union_graphs(graphs[:3]), graphs[3], union_graphs(graphs[4:])
    merged = merge_graphs([a, b, c])
    flat = union_graphs(graphs)
    for field in ("x", "edge_index", "edge_attr", "batch"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(flat, field))
    prepared = Prepared({}, [a.num_nodes, b.num_nodes, c.num_nodes], [3, 1, 5])
    parts = split_output(np.arange(9)[:, None], prepared, node_level=False)
    assert [p.ravel().tolist() for p in parts] == [[0, 1, 2], [3], [4, 5, 6, 7, 8]]


def _item_graph(n: int, tag: float) -> NumpyGraph:
    return NumpyGraph(np.full((n, 1), tag, np.float32), np.zeros((2, 0), np.int64))


async def _drive(
    cfg: BatchConfig,
    sizes: list[int],
    fail_tag: float | None = None,
    delay: float = 0.0,
    refuse_tag: float | None = None,
):
    """Submit one item per size (tagged with its index) and gather the results. ``run`` raises for a call
    holding ``fail_tag``, and returns an error in the place of the item tagged ``refuse_tag``."""
    calls: list[list[int]] = []

    def run(items: list[BatchItem]) -> list[np.ndarray | Exception]:
        calls.append([it.nodes for it in items])
        if delay:
            time.sleep(delay)
        if fail_tag is not None and any(float(it.graph.x[0, 0]) == fail_tag for it in items):
            raise ValueError("poisoned")
        refused = ValueError("refused")
        return [refused if float(it.graph.x[0, 0]) == refuse_tag else it.graph.x[:, 0].copy() for it in items]

    b = DynamicBatcher(run, cfg)
    b.start()
    tasks = [asyncio.ensure_future(b.submit(_item_graph(n, float(i)), 1)) for i, n in enumerate(sizes)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await b.close()
    return calls, results


def test_batcher_merges_within_limits_and_returns_each_its_own() -> None:
    cfg = BatchConfig(max_nodes=10, max_edges=100, max_graphs=100, max_requests=100, max_delay_ms=20)
    calls, results = asyncio.run(_drive(cfg, [3, 3, 3, 3, 25, 2]))
    assert all(sum(c) <= 10 or len(c) == 1 for c in calls)  # the 25-node item runs alone
    assert [25] in calls
    assert sum(len(c) for c in calls) == 6 and len(calls) < 6
    for i, r in enumerate(results):
        assert isinstance(r, np.ndarray) and np.all(r == i)


def test_batcher_does_not_make_a_lone_client_wait() -> None:
    """One request at a time: each runs at once; the worker never blocks waiting for company."""
    waits: list[float] = []

    class RecordingQueue(queue.SimpleQueue):
        def get(self, block: bool = True, timeout: float | None = None) -> object:
            if timeout is not None:  # only the wait for more requests passes a timeout
                waits.append(timeout)
            return super().get(block, timeout)

    async def main() -> int:
        b = DynamicBatcher(lambda items: [it.graph.x[:, 0] for it in items], BatchConfig(max_delay_ms=2000))
        b._queue = RecordingQueue()
        b.start()
        for i in range(3):
            assert int((await b.submit(_item_graph(2, float(i)), 1))[0]) == i
        await b.close()
        return b.batches

    assert asyncio.run(main()) == 3
    assert waits == []


def test_requests_their_callers_gave_up_on_are_not_run() -> None:
    """A caller that times out (or is cancelled) while its request is queued leaves nothing to
    answer: the model must not spend a call on it before the requests still waited for."""
    calls: list[int] = []
    gate = threading.Event()

    def run(items: list[BatchItem]) -> list[np.ndarray]:
        calls.append(len(items))
        gate.wait(5)  # the first call holds the worker until every abandoned request has timed out
        return [it.graph.x[:, 0] for it in items]

    async def main() -> float:
        b = DynamicBatcher(run, BatchConfig(max_requests=1, max_delay_ms=0))
        b.start()
        first = asyncio.create_task(b.submit(_item_graph(2, 0.0), 1))
        await asyncio.sleep(0.05)  # the worker is inside the first call
        waits = [asyncio.wait_for(b.submit(_item_graph(2, 1.0), 1), 0.01) for _ in range(8)]
        gave_up = await asyncio.gather(*waits, return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in gave_up)
        gate.set()
        await first
        fresh = await b.submit(_item_graph(2, 7.0), 1)
        await b.close()
        return float(fresh[0])

    assert asyncio.run(main()) == 7.0
    assert calls == [1, 1]  # the first request and the fresh one; none of the eight abandoned


def test_batcher_disabled_runs_one_request_per_call() -> None:
    calls, results = asyncio.run(_drive(BatchConfig.disabled(), [2, 2, 2, 2]))
    assert calls == [[2], [2], [2], [2]]
    assert [int(r[0]) for r in results] == [0, 1, 2, 3]


def test_batcher_isolates_a_failing_item() -> None:
    cfg = BatchConfig(max_delay_ms=20)
    calls, results = asyncio.run(_drive(cfg, [2, 2, 2, 2], fail_tag=2.0))
    assert isinstance(results[2], ValueError)
    assert [int(r[0]) for i, r in enumerate(results) if i != 2] == [0, 1, 3]
    assert len(calls[0]) > 1  # merged first, then retried alone


def test_calls_retried_alone_after_a_failed_merge_are_counted_and_observed() -> None:
    """After a merged call fails, each request runs alone: those that succeed are model calls like any
    other, so ``on_batch`` (the server's batch and model-time metrics) and the counters see them (they
    saw none: 3 answered requests, 0 batches)."""

    async def main() -> tuple[list[list[float]], list[list[float]], list, DynamicBatcher]:
        calls: list[list[float]] = []
        observed: list[list[float]] = []

        def run(items: list[BatchItem]) -> list[np.ndarray]:
            tags = [float(it.graph.x[0, 0]) for it in items]
            calls.append(tags)
            if 2.0 in tags:
                raise ValueError("poisoned")
            return [it.graph.x[:, 0].copy() for it in items]

        def on_batch(items: object, seconds: float) -> None:
            assert seconds >= 0
            observed.append([float(it.graph.x[0, 0]) for it in items])  # type: ignore[attr-defined]

        b = DynamicBatcher(run, BatchConfig(max_delay_ms=50), on_batch)
        b.start()
        tasks = [asyncio.ensure_future(b.submit(_item_graph(2, float(i)), 1)) for i in range(4)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        return calls, observed, results, b

    calls, observed, results, b = asyncio.run(main())
    assert isinstance(results[2], ValueError)
    assert any(len(c) > 1 for c in calls)  # a merged call failed, then its requests ran alone
    succeeded = [c for c in calls if 2.0 not in c]
    assert observed == succeeded
    assert sorted(t for c in observed for t in c) == [0.0, 1.0, 3.0]
    assert (b.batches, b.items) == (len(succeeded), 3)


def test_batcher_drains_on_close_and_refuses_afterwards() -> None:
    async def main() -> tuple[list, list]:
        done: list[int] = []

        def run(items: list[BatchItem]) -> list[np.ndarray]:
            time.sleep(0.01)
            done.extend(int(it.graph.x[0, 0]) for it in items)
            return [it.graph.x[:, 0] for it in items]

        b = DynamicBatcher(run, BatchConfig(max_requests=2, max_delay_ms=1))
        b.start()
        tasks = [asyncio.ensure_future(b.submit(_item_graph(1, float(i)), 1)) for i in range(7)]
        await asyncio.sleep(0)  # let every submit enqueue
        await b.close()
        results = await asyncio.gather(*tasks)
        with pytest.raises(RuntimeError, match="not running"):
            await b.submit(_item_graph(1, 0.0), 1)
        return done, results

    done, results = asyncio.run(main())
    assert sorted(done) == list(range(7))
    assert [int(r[0]) for r in results] == list(range(7))


def test_a_failing_worker_answers_the_requests_it_had_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's last-resort handler failed only the requests still queued: those it had already
    taken into a batch waited forever (gtc serve --max-delay-ms inf made the wait for more requests
    raise OverflowError, and the request in hand hung while later ones got 503)."""
    import runtime.batcher as batcher

    def broken_fits(*args: object) -> bool:
        raise OverflowError("timestamp out of range for platform time_t")

    monkeypatch.setattr(batcher, "fits", broken_fits)

    async def main() -> list[object]:
        b = DynamicBatcher(lambda items: [it.graph.x[:, 0] for it in items], BatchConfig(max_delay_ms=50))
        b.start()
        tasks = [asyncio.ensure_future(b.submit(_item_graph(1, float(i)), 1)) for i in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        await b.close()
        return results

    results = asyncio.run(main())
    assert [str(r) for r in results] == ["the batcher failed; see the server log"] * 3


@pytest.mark.parametrize("delay", [float("inf"), float("nan"), -1.0, 60_001.0])
def test_a_batching_delay_the_worker_cannot_wait_is_refused(delay: float) -> None:
    """max_delay_ms=inf was accepted, and the worker's first wait for company raised OverflowError."""
    with pytest.raises(ValueError, match=r"^BatchConfig.max_delay_ms must be between 0 and 60000, got "):
        BatchConfig(max_delay_ms=delay)
    assert BatchConfig(max_delay_ms=60_000.0).max_delay_ms == 60_000.0


def test_an_error_returned_for_one_item_fails_that_item_only_without_rerunning_the_call() -> None:
    """``run_items`` returns the error of an item it refuses (an answer of NaN) in its output's place: that
    request fails, the others of the call get their outputs, and the call is not repeated item by item."""
    cfg = BatchConfig(max_nodes=100, max_edges=100, max_graphs=100, max_requests=100, max_delay_ms=50)
    calls, results = asyncio.run(_drive(cfg, [2, 2, 2, 2], refuse_tag=1.0))
    assert sum(len(c) for c in calls) == 4  # every item ran once
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused"
    for i in (0, 2, 3):
        assert isinstance(results[i], np.ndarray) and np.all(results[i] == i)
