"""The one memory check of a request: what its call holds in all, held to the server's ``max_attention_mib``.

A call holds its dense attention's cells (:func:`runtime.request_cost.check_attention`) or the
``padded`` lowering's neighbour-list slots (:func:`runtime.request_cost.check_slots`), and besides them
what it holds per edge and per node (:func:`runtime.edge_cost.call_bytes`). Each was held to the limit
on its own, so one request could take nearly twice it, and the per-node memory of a GPS, a Graphormer
or a GT on the dense or padded lowering was counted nowhere: 100,000 graphs of 10 nodes to a hidden-64
GPS hold about 5 GiB of node rows under a 2 GiB limit, with few cells. Now their sum is held to the
limit (:func:`check_call_memory`). A part past the limit alone is refused in its own words (the cells
naming the largest graph, the slots naming the in-degrees, the per-edge and per-node bytes naming
their counts); a request whose parts are each within it but not their sum names every part.

Merged calls: the batcher's soft limits (:class:`runtime.packing.BatchConfig`: 8,192 nodes, 65,536
edges, ``max_attention_mib`` 256 MiB or the server's limit if lower) held a merged call's cells or slots
but not what it holds per edge and per node, so merging could pass the server's limit: at
``--max-attention-mib 64`` two requests of 2,000 nodes and 15,000 edges to a hidden-64, 4-head GT
exported ``scatter`` (44.8 MiB each) merged into one call of 89.5 MiB, and within the soft node and edge
limits a hidden-128, 8-head one holds 384 MiB, above the batch's 256. So :func:`runtime.packing.fits`
counts a merged call's per-edge and per-node bytes with its cells or slots against the batch's
``max_attention_mib`` (never above the server's), as this check counts one request's: a merged call
holds at most that sum. A request past the batch's limit alone still runs alone, within the server's
limit (checked here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from runtime.edge_cost import CallBytes
from runtime.errors import GraphTooLargeError
from runtime.packing import MIB
from runtime.request_cost import check_attention, check_slots

if TYPE_CHECKING:
    from runtime.served import ServedModel, ServerLimits


def check_call_memory(
    model: ServedModel, limits: ServerLimits, counts: np.ndarray, edge_index: np.ndarray, nodes: int, edges: int
) -> None:
    """Refuse a request whose call would hold more than ``max_attention_mib`` in all: its cells or
    slots (each refused alone in their own words first) and what it holds per edge and per node."""
    cost: CallBytes = model.edge_cost
    held = cost.need(nodes, edges)
    limit = limits.max_attention_mib * MIB
    cells, cells_words = check_attention(model, limits, counts, besides=held)
    slots, slots_words = check_slots(model, limits, edge_index, nodes)
    layer, layer_words = (cells, f"attention scores ({cells_words})") if cells else (slots, slots_words)
    if held + layer <= limit:
        return
    per, size = cost.words(nodes, edges)
    tensor = "edge_index" if cost.edge * edges + slots > cost.node * nodes + cells else "x"
    if held > limit or not layer:  # per edge and per node alone
        advice = "send fewer edges or smaller graphs" if cost.edge else "send fewer or smaller graphs"
        raise GraphTooLargeError(
            tensor,
            f"model '{model.name}' holds about {per} in one call ({cost.what}), so this request's {size} take "
            f"{held / MIB:,.1f} MiB, above this server's {limits.max_attention_mib:,g} MiB ({advice})",
        )
    raise GraphTooLargeError(
        tensor,
        f"model '{model.name}' holds about {per} in one call ({cost.what}), so this request's {size} take "
        f"{held / MIB:,.1f} MiB, and its {layer_words} {layer / MIB:,.1f} MiB more: {(held + layer) / MIB:,.1f} "
        f"MiB in all, above this server's {limits.max_attention_mib:,g} MiB (send fewer or smaller graphs)",
    )
