"""What one call of a served model holds per edge (and, on an edge lowering, per node) of its request,
and the refusal of a request past the server's ``max_attention_mib``.

The dense and padded lowerings are bounded by their cells and slots (:mod:`runtime.request_cost`), but
models also hold tensors as long as the edge list: a GT on an edge lowering (``scatter``, ``plugin``,
a checkpoint's CSR attention on torch) gathers a query, key and value row for every edge and scatters a
message back; a GPS's local message passing with edge features (GINE) a message an edge; a dense GT's
edge bias and a Graphormer's edge encoding a row an edge. Unbounded, a request within the server's
10M-edge limit took 26 GiB on a hidden-64 GT exported ``scatter`` (2.7 KB an edge) and 12 GiB on its
checkpoint (1.2 KB), whatever ``max_attention_mib`` said. So these bytes are counted from the exported
model config (:func:`call_bytes`) and a request whose edges (and nodes, on an edge lowering) take more
than ``max_attention_mib`` gets 400 before anything runs (:func:`check_edges`).

The counts are fits to peak RSS of one call (466 calls, fresh process each, 1 thread, ONNX Runtime 1.31
and torch 2.13 CPU; hidden 16-128, 2-8 heads, 1-4 layers, 0.5-2M edges over 100-500k nodes and many
small graphs; measured over RSS before the call), rounded up: the largest measured/counted is 0.82
(scatter), 0.81 (plugin), 0.87 (torch), 0.88 (GPS's GINE), 0.86 (dense GT's edge bias), 0.83
(Graphormer). ONNX Runtime holds one layer's buffers at a time (2 to 4 layers: +1 %); torch's peak grows
with depth (+17 % from 2 to 4 layers), within the count to 4 layers. A GIN GPS (no edge features) holds
nothing per edge: its sum is a dense product per graph, counted with its cells. The padded lowering's
slots already count its edges (at most 0.81 of :func:`runtime.request_cost.slot_bytes` a slot).

The limit holds this count and the cell or slot count each, not their sum. Merged calls need no check
of their own: the batcher's soft ``max_edges`` (65,536) keeps them far below it; a request past that
runs alone, checked here. Memory per node is counted only on the edge lowerings, where it was fitted
(25-64 B a hidden channel); other models measured up to about 92 B a channel a node besides their
cells, which only ``max_nodes`` bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gtcompress.preprocess.spec import Lowering
from runtime.errors import GraphTooLargeError
from runtime.model_config import config_heads, config_hidden
from runtime.packing import MIB
from runtime.request_cost import TORCH_PLATFORM, CostedModel

if TYPE_CHECKING:
    from runtime.served import ServedModel, ServerLimits


@dataclass(frozen=True)
class CallBytes:
    """Bytes one call holds per request edge and per request node, and what holds them (for the refusal)."""

    edge: int
    node: int
    what: str

    def need(self, nodes: int, edges: int) -> int:
        return edges * self.edge + nodes * self.node

    def words(self, nodes: int, edges: int) -> tuple[str, str]:
        """``("1568 B per edge and 1536 B per node", "20,000 edges and 2,000 nodes")`` for a refusal
        (nodes named only where they are counted)."""
        per = f"{self.edge} B per edge" + (f" and {self.node} B per node" if self.node else "")
        return per, f"{edges:,} edges" + (f" and {nodes:,} nodes" if self.node else "")


def call_bytes(session: CostedModel) -> CallBytes:
    """What one call of ``session``'s model holds per edge and per node (module docstring: the counts
    and their measurements). A model file without a config counts 64 channels and 8 heads, its
    architecture and edge features read from its input spec."""
    cfg, heads = config_heads(session)
    spec = session.spec  # the input contract: what a file without a config still says of itself
    h, arch = config_hidden(session, cfg), cfg.get("arch") or getattr(spec, "arch", None)
    ef = 1 if (cfg["edge_features"] if "edge_features" in cfg else getattr(spec, "edge_attr", None)) else 0
    torch_backend = session.platform == TORCH_PLATFORM
    lowering = spec.lowering
    if arch == "gt" and heads > 0 and lowering in (Lowering.SCATTER, Lowering.PLUGIN):
        what = "its attention gathers and scatters a row per edge"
        if torch_backend:  # a checkpoint's CSR attention
            return CallBytes(16 * h + 16 * heads + 4 * ef * h + 64, 40 * h, what)
        return CallBytes(40 * h + 24 * heads + 4 * ef * h + 64, (48 if lowering is Lowering.SCATTER else 64) * h, what)
    if lowering is Lowering.PADDED and arch == "gt" and heads > 0:
        return CallBytes(0, 0, "")  # its neighbour-list slots count its edges (runtime.request_cost.slot_bytes)
    if arch == "gps":
        if not ef:
            return CallBytes(0, 0, "")  # GIN: a dense sum per graph, counted with its cells
        edge = 28 * h + 4 * h + 64 if torch_backend else 36 * h + 64
        return CallBytes(edge, 0, "its local message passing (GINE) holds a message per edge")
    if arch == "gt" and heads > 0 and lowering is Lowering.DENSE:
        if not ef:
            return CallBytes(0, 0, "")
        return CallBytes(8 * h + 32 * heads + 32, 0, "its edge bias holds a row per edge")
    if not ef:  # a Graphormer's spatial encoding is per cell; nothing attends over the edges
        return CallBytes(0, 0, "")
    return CallBytes(8 * h + 32, 0, "its edge encoder holds a row per edge")


def check_edges(model: ServedModel, limits: ServerLimits, nodes: int, edges: int) -> None:
    """Refuse a request whose ``edges`` (and ``nodes``, where counted) would take more than
    ``max_attention_mib`` in one call."""
    cost: CallBytes = model.edge_cost
    need = cost.need(nodes, edges)
    if need > limits.max_attention_mib * MIB:
        per, size = cost.words(nodes, edges)
        raise GraphTooLargeError(
            "edge_index",
            f"model '{model.name}' holds about {per} in one call ({cost.what}), so this request's {size} take "
            f"{need / MIB:,.1f} MiB, above this server's {limits.max_attention_mib:,g} MiB (send fewer edges or "
            "smaller graphs)",
        )
