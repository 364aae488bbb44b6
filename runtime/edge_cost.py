"""What one call of a served model holds per edge and per node of its request, besides its dense
attention's cells and the ``padded`` lowering's neighbour-list slots (:mod:`runtime.request_cost`); the
server holds their sum to its ``max_attention_mib`` (:mod:`runtime.call_memory`).

Per edge: a GT on an edge lowering (``scatter``, ``plugin``, a checkpoint's CSR attention on torch)
gathers a query, key and value row for every edge and scatters a message back; a GPS's local message
passing with edge features (GINE) a message an edge; a dense GT's edge bias and a Graphormer's edge
encoding a row an edge. Unbounded, a request within the server's 10M-edge limit took 26 GiB on a
hidden-64 GT exported ``scatter`` (2.7 KB an edge) and 12 GiB on its checkpoint (1.2 KB). Fitted to
peak RSS of one call (466 calls, fresh process each, 1 thread, ONNX Runtime 1.31 and torch 2.13 CPU;
hidden 16-128, 2-8 heads, 1-4 layers, 0.5-2M edges over 100-500k nodes and many small graphs; measured
over RSS before the call), rounded up: the largest measured/counted is 0.82 (scatter), 0.81 (plugin),
0.87 (torch), 0.88 (GPS's GINE), 0.86 (dense GT's edge bias), 0.83 (Graphormer). ONNX Runtime holds one
layer's buffers at a time (2 to 4 layers: +1 %); torch's peak grows with depth (+17 % from 2 to 4
layers), within the count to 4 layers. A GIN GPS holds nothing per edge (its sum is a dense product
per graph, counted with its cells), nor does the padded lowering beyond its slots.

Per node: every model holds its layers' activations, a hidden-wide row a node several times over
(inputs, attention output, feed-forward, normalisation): a GT on an edge lowering 48 (``scatter``) or 64
(``plugin``) B a hidden channel, 40 on torch, fitted with its edges. The others (:data:`NODE_BYTES`)
are counted because nothing else bounds them but ``max_nodes``, and many small graphs have few cells:
100,000 graphs of 10 nodes to a hidden-64 GPS hold about 5 GiB. Their counts are fitted to peak RSS of
one request's ``prepare`` and call (132 calls, fresh process each, 1 thread, ONNX Runtime 1.31 and torch
2.13 CPU; hidden 16/32/64/128, 2-8 heads, 1-4 layers, with and without edge features; 20,000 graphs of 8 nodes
with 16 or 32 edges each, 400 graphs of 100 nodes and 800 edges; over RSS before ``prepare``) less
their cells, slots and edges as counted, rounded up so that the largest measured/counted of the whole
sum is at most 0.86 (the residual a node of 8-node graphs, without edge features, in brackets: with
them, and on 100-node graphs, the edge and cell counts' own margins take most of it): GPS 80 B a channel
+ 768 on ONNX Runtime (largest 0.86; 73-83 B a channel at 2 and 4 layers, 37 at one, 95 on 100-node
graphs at hidden 16) and 72 + 512 on torch (0.83; 33-69); Graphormer 64 + 1024 (0.82; 41-61) and
40 + 256 on torch (0.79; 25-35); GT on the dense lowering 64 + 128 (0.81; 21-51) and on the padded
lowering 120 + 128 (0.83; up to 96 beyond its slots). Not measured, counted as
their kind: a GPS sparsified by ``--attention-topk``, a token-pruned GT on torch (dense), a model
whose heads were all pruned (no attention; a GT counted as a dense one).
"""

from __future__ import annotations

from dataclasses import dataclass

from gtcompress.preprocess.spec import Lowering
from runtime.model_config import config_heads, config_hidden
from runtime.request_cost import TORCH_PLATFORM, CostedModel


@dataclass(frozen=True)
class CallBytes:
    """Bytes one call holds per request edge and per request node, and what holds them (for the refusal)."""

    edge: int
    node: int
    what: str

    def need(self, nodes: int, edges: int) -> int:
        return edges * self.edge + nodes * self.node

    def words(self, nodes: int, edges: int, sent_edges: int | None = None) -> tuple[str, str]:
        """``("1568 B per edge and 1536 B per node", "20,000 edges and 2,000 nodes")`` for a refusal
        (edges and nodes named only where they are counted); ``sent_edges``: the edges the request came
        with, where TEDDY kept ``edges`` of them (``"14,060 edges (what TEDDY kept of the 20,000 sent)"``)."""
        parts = [(b, what, n) for b, what, n in ((self.edge, "edge", edges), (self.node, "node", nodes)) if b]
        kept = f" (what TEDDY kept of the {sent_edges:,} sent)" if sent_edges not in (None, edges) else ""
        sizes = [f"{n:,} {w}s" + (kept if w == "edge" else "") for _, w, n in parts]
        return " and ".join(f"{b} B per {w}" for b, w, _ in parts), " and ".join(sizes)


#: What a call holds per node besides its cells, slots and edges, by model kind: bytes a hidden channel
#: and a constant (module docstring: the measurements). A GT on an edge lowering is counted with its edges.
NODE_BYTES = {
    "gps": (80, 768),
    "gps torch": (72, 512),
    "graphormer": (64, 1024),
    "graphormer torch": (40, 256),
    "gt": (64, 128),  # dense lowering, or every head pruned away
    "gt padded": (120, 128),
}
_ROWS = "its layers' activations a row per node"


def node_bytes(arch: str | None, lowering: Lowering, torch_backend: bool, hidden: int, heads: int) -> int:
    """Bytes one call holds per node of a model not on an edge lowering (:data:`NODE_BYTES`); the largest
    count for an architecture no config or input spec names. A GT with no head left builds no neighbour
    lists, whatever its lowering: it counts as a dense one."""
    if arch not in ("gps", "graphormer", "gt"):
        return max(a * hidden + b for a, b in NODE_BYTES.values())
    key = f"{arch} torch" if torch_backend and arch != "gt" else arch
    a, b = NODE_BYTES["gt padded" if arch == "gt" and lowering is Lowering.PADDED and heads > 0 else key]
    return a * hidden + b


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
    node = node_bytes(arch, lowering, torch_backend, h, heads)
    if lowering is Lowering.PADDED and arch == "gt" and heads > 0:
        return CallBytes(0, node, _ROWS)  # its neighbour-list slots count its edges (runtime.request_cost.slot_bytes)
    if arch == "gps":
        if not ef:
            return CallBytes(0, node, _ROWS)  # GIN: a dense sum per graph, counted with its cells
        edge = 28 * h + 4 * h + 64 if torch_backend else 36 * h + 64
        return CallBytes(edge, node, f"its local message passing (GINE) holds a message per edge, {_ROWS}")
    if arch == "gt" and heads > 0 and lowering is Lowering.DENSE:
        if not ef:
            return CallBytes(0, node, _ROWS)
        return CallBytes(8 * h + 32 * heads + 32, node, f"its edge bias holds a row per edge, {_ROWS}")
    if not ef:  # a Graphormer's spatial encoding is per cell; nothing attends over the edges
        return CallBytes(0, node, _ROWS)
    return CallBytes(8 * h + 32, node, f"its edge encoder holds a row per edge, {_ROWS}")
