"""Which requests may share one model call: the soft limits of a merged call and the packing of items
within them, for both servers that merge requests (``gtc serve``'s :class:`runtime.batcher.DynamicBatcher`
and Triton's python variant, :mod:`runtime.triton_python`, whose batches Triton forms).

Requests are merged into one disjoint union while it stays within ``max_nodes``, ``max_edges``,
``max_graphs`` and ``max_requests`` and within ``max_attention_mib`` of what the call holds: its padded
attention or neighbour lists, for a model that attends densely within each graph or pads neighbour lists
(the cost of one cell or slot comes from :mod:`runtime.request_cost`), and what it holds per node and per
edge besides (:mod:`runtime.edge_cost`), summed as the server's per-request check sums them
(:mod:`runtime.call_memory`). An item larger than the limits alone runs alone: the hard limits are the
server's per-request checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph, largest_graph
from gtcompress.preprocess.layouts import degree_histogram, merge_histograms, node_counts, padded_rows, padded_slots

MIB = 1024 * 1024
#: Longest batching delay: the worker waits with a queue timeout, which cannot take infinity (or
#: anything past ~292 years), and a longer wait would only hold requests back.
MAX_DELAY_MS = 60_000.0


@dataclass(frozen=True)
class BatchConfig:
    """Soft limits of one merged model call; ``max_delay_ms`` bounds the wait for more requests."""

    max_nodes: int = 8192
    max_edges: int = 65536
    max_graphs: int = 1024
    max_requests: int = 256
    max_delay_ms: float = 2.0
    #: A merged call of a model that attends densely within each graph pads every graph to the
    #: largest: its scores take graphs x largest^2 x ``attention_cell_bytes`` per layer, and one large
    #: graph merged with many small ones can take far more than either alone. Merging stops at this
    #: many MiB (a request above it alone runs alone); ``attention_cell_bytes`` 0: no dense attention.
    max_attention_mib: float = 256.0
    attention_cell_bytes: int = 0
    #: A model whose layout packs small graphs into shared rows as long as the largest (GT on the
    #: ``dense`` lowering, :func:`~gtcompress.preprocess.layouts.padded_rows`): one row per graph is then
    #: only an upper bound of a merged call's rows, and where it would stop a merge the packed rows are
    #: counted instead, as the server's per-request check does. With a GT cell counted at what a call
    #: holds (204 B for 4 heads, edge features, 4 layers), the bound alone stopped two 128-molecule
    #: requests from merging: 303 MiB counted one row per graph, 109 MiB in their packed rows.
    packed_rows: bool = False
    #: A model on the ``padded`` lowering pads each node's incoming edges to its degree bucket's largest
    #: in-degree: a merged call's layout is cut from the union's in-degrees (``slot_buckets`` buckets,
    #: 0: one list), and its slots x ``slot_bytes`` count against the same ``max_attention_mib``;
    #: ``slot_bytes`` 0: no neighbour lists (:func:`runtime.request_cost.slot_bytes`).
    slot_bytes: int = 0
    slot_buckets: int = 0
    #: What a call holds per node and per edge besides its cells or slots (:func:`runtime.edge_cost.call_bytes`),
    #: counted with them against the same ``max_attention_mib`` (:mod:`runtime.call_memory`: the soft node
    #: and edge limits alone let a merged call of a hidden-128 GT on an edge lowering hold 384 MiB).
    node_bytes: int = 0
    edge_bytes: int = 0

    def __post_init__(self) -> None:
        # inf (or nan) passed every check until the worker's first wait for company raised OverflowError
        if not 0.0 <= self.max_delay_ms <= MAX_DELAY_MS:
            raise ValueError(
                f"BatchConfig.max_delay_ms must be between 0 and {MAX_DELAY_MS:g}, got {self.max_delay_ms}"
            )

    @classmethod
    def disabled(cls) -> BatchConfig:
        return cls(max_requests=1, max_delay_ms=0.0)

    @property
    def enabled(self) -> bool:
        return self.max_requests > 1


class Sized(Protocol):
    """What packing needs of an item: its size (a :class:`BatchItem`, or a Triton request's graph)."""

    @property
    def nodes(self) -> int: ...

    @property
    def edges(self) -> int: ...

    @property
    def num_graphs(self) -> int: ...

    @property
    def largest(self) -> int: ...

    @property
    def graph_nodes(self) -> np.ndarray: ...

    @property
    def degrees(self) -> tuple[np.ndarray, np.ndarray]: ...


SizedT = TypeVar("SizedT", bound=Sized)


def fits(config: BatchConfig, count: int, totals: Sequence[Any], item: Sized) -> bool:
    """Whether ``item`` may join a batch of ``count`` items holding ``totals`` (nodes, edges, graphs,
    largest graph's nodes, with neighbour lists the in-degree histogram, and with packed rows each
    graph's nodes; None before the first)."""
    ok = (
        count < config.max_requests
        and totals[0] + item.nodes <= config.max_nodes
        and totals[1] + item.edges <= config.max_edges
        and totals[2] + item.num_graphs <= config.max_graphs
    )
    # what the call holds per node and per edge leaves the rest of the limit to its cells or slots
    limit = config.max_attention_mib * MIB
    limit -= (totals[0] + item.nodes) * config.node_bytes + (totals[1] + item.edges) * config.edge_bytes
    ok = ok and limit >= 0
    if ok and config.attention_cell_bytes:
        largest = max(totals[3], item.largest)
        cells = (totals[2] + item.num_graphs) * largest**2
        if cells * config.attention_cell_bytes > limit and len(totals) > 5 and totals[5] is not None:
            # one row per graph is an upper bound where small graphs share rows: pack them, as the
            # layout will, only for the merges the bound would stop
            cells = padded_rows(np.concatenate([totals[5], item.graph_nodes]), pack=True) * largest**2
        ok = cells * config.attention_cell_bytes <= limit
    if ok and config.slot_bytes and len(totals) > 4 and totals[4] is not None:
        slots = padded_slots(*merge_histograms(totals[4], item.degrees), config.slot_buckets)
        ok = slots * config.slot_bytes <= limit
    return ok


def past_limits(config: BatchConfig, items: Sequence[Sized]) -> bool:
    """Whether one merged call of ``items`` holds more nodes or edges than ``config`` lets a batch
    grow to (a request larger than the limits runs alone): after such a call the servers give its
    memory back (:func:`runtime.heap.release_heap`; the session's arena, ``ServedModel``)."""
    return sum(it.nodes for it in items) > config.max_nodes or sum(it.edges for it in items) > config.max_edges


def add(config: BatchConfig, totals: list[Any], item: Sized) -> None:
    """``totals`` (see :func:`fits`) with ``item`` merged in (the largest graph only where it counts)."""
    totals[0] += item.nodes
    totals[1] += item.edges
    totals[2] += item.num_graphs
    if config.attention_cell_bytes:
        totals[3] = max(totals[3], item.largest)
    if config.slot_bytes:
        totals[4] = item.degrees if totals[4] is None else merge_histograms(totals[4], item.degrees)
    if config.attention_cell_bytes and config.packed_rows:
        totals[5] = item.graph_nodes if totals[5] is None else np.concatenate([totals[5], item.graph_nodes])


def pack(items: Sequence[SizedT], config: BatchConfig) -> list[list[SizedT]]:
    """``items`` in order, cut into consecutive batches within the soft limits (an item larger than
    them alone): what the worker does with a queue that is already full."""
    batches: list[list[SizedT]] = []
    totals: list[Any] = [0, 0, 0, 0, None, None]
    for it in items:
        if not batches or not fits(config, len(batches[-1]), totals, it):
            batches.append([])
            totals = [0, 0, 0, 0, None, None]
        batches[-1].append(it)
        add(config, totals, it)
    return batches


@dataclass(slots=True)
class GraphRequest:
    """One request's graphs, already validated: a :class:`Sized` item for either server's batcher."""

    graph: NumpyGraph
    num_graphs: int
    _largest: int = field(init=False, default=-1, repr=False)
    _degrees: tuple[np.ndarray, np.ndarray] | None = field(init=False, default=None, repr=False)
    _graph_nodes: np.ndarray | None = field(init=False, default=None, repr=False)

    @property
    def largest(self) -> int:
        """Nodes of its largest graph, counted when first asked (only models with dense attention ask)."""
        if self._largest < 0:
            self._largest = largest_graph(self.graph.batch, self.graph.num_nodes, self.num_graphs)[0]
        return self._largest

    @property
    def degrees(self) -> tuple[np.ndarray, np.ndarray]:
        """In-degree histogram (:func:`degree_histogram`), counted when first asked (only models on the
        ``padded`` lowering ask): a merged call's neighbour-list slots are cut from its union."""
        if self._degrees is None:
            self._degrees = degree_histogram(self.graph.edge_index[1], self.graph.num_nodes)
        return self._degrees

    @property
    def graph_nodes(self) -> np.ndarray:
        """Nodes of each of its graphs, counted when first asked (only a model whose layout packs
        graphs into shared rows asks): a merged call's packed rows are cut from them."""
        if self._graph_nodes is None:
            self._graph_nodes = node_counts(self.graph.batch, self.graph.num_nodes, self.num_graphs)
        return self._graph_nodes

    @property
    def nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def edges(self) -> int:
        return self.graph.num_edges
