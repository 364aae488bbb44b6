"""The one memory check of a request: what its call holds in all, held to the server's ``max_attention_mib``.

A call holds its dense attention's cells (:func:`runtime.request_cost.check_attention`) or the
``padded`` lowering's neighbour-list slots (:func:`runtime.request_cost.check_slots`), and besides them
what it holds per edge and per node (:func:`runtime.edge_cost.call_bytes`). The limit holds their sum
(:func:`check_call_memory`): each part held alone lets a request take nearly twice the limit, and many
small graphs have few cells but many node rows (100,000 graphs of 10 nodes to a hidden-64 GPS hold
about 5 GiB of them). A part past the limit alone is refused in its own words (the cells naming the
largest graph, the slots the in-degrees, the per-edge and per-node bytes their counts); a request whose
parts are each within it but not their sum is refused naming every part.

Merged calls: :func:`runtime.packing.fits` counts a merged call's per-edge and per-node bytes with its
cells or slots against the batch's ``max_attention_mib`` (256 MiB by default), which every server caps
at its own limit (:meth:`runtime.served.ServedModel.hold_to`), so a merged call holds no more than one
request may: within the batcher's soft node and edge limits alone, a hidden-128, 8-head GT exported
``scatter`` would hold 384 MiB, and at ``--max-attention-mib 64`` two requests of 44.8 MiB each would
merge into one call of 89.5 MiB. A request past the batch's limit alone runs alone, within the
server's limit (checked here).

TEDDY: a model fine-tuned on sparsified graphs sparsifies each raw request before its call, so the call
holds the edges TEDDY keeps (70 % at a TEDDY of 30 %), not the edges sent: counted on the edges sent, a
hidden-64 GT exported ``scatter`` (2,720 B an edge) is refused at 2 GiB from about 790,000 edges, where 1.1M
sent (770,000 kept) are within it.
Such a request is held to the limit twice: before TEDDY by its cells, its nodes and TEDDY's own
working memory (:data:`TEDDY_EDGE_BYTES` an edge sent, :func:`check_before_teddy`), and after it by the
whole sum on the edges kept (:func:`check_call_memory` with ``sent_edges``).
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


#: Peak bytes TEDDY's edge mask takes per edge it scores (:func:`gtcompress.preprocess.teddy.teddy_mask`,
#: tracemalloc over 1M edges: 124 with the per-graph ratio on a directed edge list, 80 on a symmetric one,
#: 43 with a global threshold), rounded up.
TEDDY_EDGE_BYTES = 128


def check_before_teddy(
    model: ServedModel, limits: ServerLimits, counts: np.ndarray, edge_index: np.ndarray, nodes: int
) -> None:
    """Refuse a raw request to a TEDDY model before TEDDY runs where what its call holds without edges (its
    cells, its nodes) or what TEDDY holds to sparsify it (:data:`TEDDY_EDGE_BYTES` an edge sent) is past
    ``max_attention_mib``; the call's whole sum is checked on the edges TEDDY keeps (:func:`check_call_memory`
    with ``sent_edges``), since the edges sent are not what the call holds (module docstring)."""
    edges = int(edge_index.shape[1]) if edge_index.ndim == 2 else 0
    if edges * TEDDY_EDGE_BYTES > limits.max_attention_mib * MIB:
        raise GraphTooLargeError(
            "edge_index",
            f"model '{model.name}' sparsifies each request with TEDDY before its call, which holds about "
            f"{TEDDY_EDGE_BYTES} B per edge sent, so this request's {edges:,} edges take "
            f"{_mib(edges * TEDDY_EDGE_BYTES)}, above this server's {limits.max_attention_mib:,g} MiB (send fewer "
            "edges)",
        )
    check_call_memory(model, limits, counts, edge_index[:, :0], nodes, 0)


def check_call_memory(
    model: ServedModel,
    limits: ServerLimits,
    counts: np.ndarray,
    edge_index: np.ndarray,
    nodes: int,
    edges: int,
    sent_edges: int | None = None,
) -> None:
    """Refuse a request whose call would hold more than ``max_attention_mib`` in all: its cells or
    slots (each refused alone in their own words first) and what it holds per edge and per node.
    ``sent_edges``: the edges the request came with, where TEDDY kept ``edges`` of them (the refusal says so)."""
    cost: CallBytes = model.edge_cost
    held = cost.need(nodes, edges)
    limit = limits.max_attention_mib * MIB
    cells, cells_words = check_attention(model, limits, counts, besides=held)
    slots, slots_words = check_slots(model, limits, edge_index, nodes)
    layer, layer_words = (cells, f"attention scores per layer ({cells_words})") if cells else (slots, slots_words)
    if held + layer <= limit:
        return
    per, size = cost.words(nodes, edges, sent_edges)
    holds = f"model '{model.name}' holds about {per} in one call ({cost.what}), so this request's {size} take"
    if held > limit or not layer:  # per edge and per node alone
        tensor = "edge_index" if cost.edge * edges > cost.node * nodes else "x"
        advice = "send fewer edges or smaller graphs" if tensor == "edge_index" else "send fewer or smaller graphs"
        raise GraphTooLargeError(
            tensor, f"{holds} {_mib(held)}, above this server's {limits.max_attention_mib:,g} MiB ({advice})"
        )
    tensor = "edge_index" if cost.edge * edges + slots > cost.node * nodes + cells else "x"
    raise GraphTooLargeError(
        tensor,
        f"{holds} {_mib(held)}, and its {layer_words} take {_mib(layer)} more: {_mib(held + layer)} in all, above "
        f"this server's {limits.max_attention_mib:,g} MiB (send fewer or smaller graphs)",
    )


def _mib(b: int) -> str:
    """Bytes in MiB for a refusal: two decimals below 10 MiB, where one would read as the limit itself
    (``1.0 MiB, above this server's 1 MiB``)."""
    return f"{b / MIB:,.2f} MiB" if b < 10 * MIB else f"{b / MIB:,.1f} MiB"
