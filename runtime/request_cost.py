"""What one call of a served model costs per unit of request size, read from the exported model, and
the refusal of a request that would cost more than the server's limits.

Memory: bytes per padded cell of dense attention (:func:`attention_cell_bytes`) and per
neighbour-list slot of the padded lowering (:func:`slot_bytes`), held to ``max_attention_mib``
(:func:`check_attention`, :func:`check_slots`) with what a call holds per edge and per node, as one
sum (:mod:`runtime.call_memory`, which :mod:`runtime.packing` also counts for a merged call).
Time: the positional encodings the server computes and a Graphormer's shortest-path distances
(:func:`distance_hops`), held to ``max_pe_work`` (:func:`check_work`). The encodings' working memory
(:func:`pe_memory`) is charged against ``max_inflight_mib`` with the request's body
(:func:`check_pe_memory`, :mod:`runtime.server`), and so is encoding its answer (:func:`answer_bytes`,
:func:`check_answer`). The numbers are measurements on ONNX Runtime CPU, kept with the code that uses
them. Every check runs before the
work it bounds, so a refused request costs nothing but its validation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph
from gtcompress.preprocess.layouts import degree_histogram, node_counts, padded_rows, padded_slots
from gtcompress.preprocess.pe import pe_bytes, pe_work
from gtcompress.preprocess.spec import InputSpec, Lowering
from runtime.errors import GraphTooLargeError, SessionError
from runtime.model_config import config_heads, config_hidden
from runtime.packing import MIB

if TYPE_CHECKING:  # served.py imports this module: the types only, for the checks' signatures
    from runtime.served import ServedModel, ServerLimits


class CostedModel(Protocol):
    """What the per-unit costs read of a model: a loaded :class:`runtime.session.GraphSession`, or a model
    file's metadata alone (:class:`runtime.profile_cost.ModelFile`), so that ``gtc profile`` counts a
    configuration as the server counts a request without loading the model first."""

    @property
    def path(self) -> Path | str: ...

    @property
    def spec(self) -> InputSpec: ...

    @property
    def metadata(self) -> dict[str, str]: ...

    @property
    def platform(self) -> str: ...


#: Graphormer's per-head additions to one padded cell, in bytes: its spatial bias ``[B,L,L,H]`` and the
#: biased scores ``[B,H,L,L]`` (float32), plus, with edge features, the scattered edge bias and its sum.
#: Set from peak RSS over cells of one 1,000-2,000-node call on ONNX Runtime CPU (4 layers, hidden 32):
#: 50 / 80 / 169 B a cell at 1 / 4 / 8 heads without edge features, 60 / 134 / 270 with them (more heads
#: grow ONNX Runtime's arena in larger steps, so the bytes a head rise with the heads); counted here
#: 68 / 128 / 208 and 80 / 176 / 304 (8 B and 8 B a head before, which 4 and 8 heads outgrew).
GRAPHORMER_HEAD_BYTES = 16
GRAPHORMER_EDGE_HEAD_BYTES = 12
#: Graphormer's head-independent bytes per padded cell: the shortest-path bins and the float32
#: adjacency, reach and product matrices of their MatMuls (about 48 B a cell measured on ONNX Runtime
#: CPU when the bins were int64 and set by a Where a hop; the int32 bins counted by a float32 sum since
#: lowered the whole call's peak, bench/HISTORY.md), held whatever the head count.
GRAPHORMER_DISTANCE_BYTES = 48
#: GT on the ``dense`` lowering, bytes a head per padded cell: its scores and their softmax (float32),
#: alive together; measured 8.4 B a head.
GT_HEAD_BYTES = 10
#: ... plus, with edge features, each layer's dense edge bias ``[rows, H, L, L]`` (float32, a cell a head),
#: the log-sum-exp of its edges' biases per (dst, src) pair, whose running maximum and sum of exponentials
#: are kept per edge (``[E, H]``). Measured 20 B a head more for one layer and 38 for two or more while
#: those tables and the logarithm were per cell (the next layer's bias built beside the last one's); a
#: call's peak is 31-38 % lower since (bench/HISTORY.md), and the counts are kept as an upper bound.
GT_EDGE_HEAD_BYTES = 20
GT_EDGE_HEAD_BYTES_LAYERS = 38
#: ... plus the layer-shared ``log(count)`` bias ``[rows, 1, L, L]`` and the edge counts it is made
#: from (float32 each), and each layer's mask of that bias (boolean and float32: the softmax lifts
#: masked scores and zeroes their weights, ``dense_attention(lift_masked=True)``), whatever the heads:
#: measured 9 B before the mask, 14.5-15.1 B with it (without edge features, 1 head, 1,500-2,500 nodes:
#: 22.5 B a cell in all).
GT_CELL_BYTES = 18
#: ... plus, token-pruned (``token_keep < 1``), the bias narrowed to the kept tokens and its int64 indices,
#: a cell and, with edge features (a per-head bias), a head: peak RSS over cells on ONNX Runtime CPU (1,500
#: and 2,500 nodes, keep 0.5-0.95) was 35.3 B at 1 head (counted 28 before), with edge features 62.2 /
#: 116.2 / 247.9 / 482.5 B at 1 / 2 / 4 / 8 heads (counted 66 / 114 / 210 / 402 before).
GT_TOKEN_CELL_BYTES = 10
GT_TOKEN_EDGE_HEAD_BYTES = 10
#: GPS (any other dense attention), bytes a head per padded cell: its scores and their softmax,
#: float32. Peak RSS over cells for one 3,000-node graph (1 thread, 1 to 3 layers, with and without
#: GINE) was 4.4-4.9 B a head on ONNX Runtime CPU (counted 4 before, up to 1.24x under; 6 leaves room
#: for the call's other buffers, which weigh more on smaller graphs) ...
GPS_HEAD_BYTES = 6
#: ... and 8.1-8.4 B a head from a checkpoint on the torch backend (CPU), whose eager softmax and
#: padded-row zeroing each allocate a new score-sized tensor where ONNX Runtime reuses buffers: counted
#: at 4 B a head, it took 2.1x what the limit let through (measured 16.4 B a cell at 2 heads, 65 at 8;
#: 20.5 a cell at 2 heads on 1,500 and 2,000 nodes, where the other buffers weigh more).
GPS_TORCH_HEAD_BYTES = 12
#: GPS sparsified by ``gtc sparsify --attention-topk`` (``attention_topk > 0``), exported since its
#: attention runs as the padded attention with its graph as a mask: the scores, the masked scores and
#: their softmax a head (the dense GPS folds its key padding into the score MatMul, this bias cannot
#: be), plus, whatever the heads, the ``[B, 1, L, L]`` bias and the mask's construction (edge counts,
#: the float32 top-k ranks, booleans). Peak RSS over cells on ONNX Runtime CPU (one 3,000-node graph,
#: 1 thread, 2 layers) was 24.4 B at 1 head, 39 at 4, 87.5 at 8 (the dense GPS: 9.2, 16, 38.8);
#: counted as 6 B a head, an 8-head one took 1.8x what the limit let through. Files exported before
#: (attention over the listed pairs) measured 25.2 B a cell at 4 heads: within this count too. Remeasured
#: by the test's script on 1,000-3,000 nodes: 24.3-26.0 B at 1 head, 87.1-88.4 at 8; the head-independent
#: part is counted with room over the allocator's run-to-run spread.
GPS_TOPK_HEAD_BYTES = 10
GPS_TOPK_CELL_BYTES = 22
#: ... and on the torch backend, bytes a head and a cell: its peak RSS is not one number but modes, run to
#: run, of one call of one process (not explained; the dense GPS's is one): 23-45 B a cell at 1 head on
#: 1,000-3,000 nodes and 79 / 105 / 137 / 169 / 173 at 8 heads on 1,000 (14 runs; counted 40 and 124 before).
GPS_TOPK_TORCH_HEAD_BYTES = 19
GPS_TOPK_TORCH_CELL_BYTES = 30
#: The platform a checkpoint is served with (:attr:`runtime.torch_backend.TorchBackend.platform`).
TORCH_PLATFORM = "pytorch_libtorch"


def attention_cell_bytes(session: CostedModel) -> int:
    """Peak bytes per padded cell of one call's dense attention, for a model that attends densely within
    each graph; 0 for one that does not (edge lowerings, no heads left). Heads come from the exported
    model config; a model file without one counts 8.

    The float32 scores alone are 4 B a head, but the scores are not all a call holds per cell, and
    the limit is there to keep the server out of memory. A Graphormer also holds per-head biases and
    its shortest-path distances for every cell, which outweigh the scores when few heads remain:
    counted at 4 B a head, a 1-head Graphormer was let through with a 23,000-node graph at the
    default 2 GiB, which needs over 30 GiB (measured 68 B a cell, see :data:`GRAPHORMER_DISTANCE_BYTES`).
    A GT on the ``dense`` lowering holds the softmax beside the scores, its shared ``log(count)``
    bias and, with edge features, a dense per-head edge bias a layer (:data:`GT_HEAD_BYTES` and
    after): peak RSS over cells on ONNX Runtime CPU (one 3,000-node graph, 1 thread) was 17.5 B a cell
    at 1 head, 76 at 8 heads, 27 / 53 / 108 / 228 at 1 / 2 / 4 / 8 heads with edge features (one
    layer) and 86 / 94 / 185 at 2 heads 2 and 3 layers and 4 heads 4 layers. Counted at 4 B a head, an
    8-head GT with edge features let a request through at the default 2 GiB that takes 14 GiB, and the
    batcher merged calls of 1.7 GiB under its 256 MiB. GPS holds its scores and their softmax, counted
    per backend (:data:`GPS_HEAD_BYTES`, :data:`GPS_TORCH_HEAD_BYTES`): the same checkpoint takes
    nearly twice the memory on torch as exported to ONNX Runtime. A GPS sparsified by
    ``--attention-topk`` runs the same padded attention with its graph as a mask, which costs more a
    cell (:data:`GPS_TOPK_HEAD_BYTES` and after)."""
    spec = session.spec
    if spec.lowering is not Lowering.DENSE and not spec.global_attention:
        return 0
    cfg, heads = config_heads(session)
    if cfg.get("arch") == "graphormer" and heads > 0:
        per_head = 4 + GRAPHORMER_HEAD_BYTES + (GRAPHORMER_EDGE_HEAD_BYTES if cfg.get("edge_features") else 0)
        return per_head * heads + GRAPHORMER_DISTANCE_BYTES
    if cfg.get("arch") == "gt" and heads > 0:
        per_head, per_cell = GT_HEAD_BYTES, GT_CELL_BYTES
        if cfg.get("edge_features"):
            per_head += GT_EDGE_HEAD_BYTES_LAYERS if _attention_layers(session, cfg) > 1 else GT_EDGE_HEAD_BYTES
        if _token_pruned(session, cfg):
            per_cell += GT_TOKEN_CELL_BYTES
            per_head += GT_TOKEN_EDGE_HEAD_BYTES if cfg.get("edge_features") else 0
        return per_head * heads + per_cell
    torch_backend = session.platform == TORCH_PLATFORM
    if cfg.get("arch") == "gps" and _attention_topk(session, cfg) > 0 and heads > 0:
        if torch_backend:
            return GPS_TOPK_TORCH_HEAD_BYTES * heads + GPS_TOPK_TORCH_CELL_BYTES
        return GPS_TOPK_HEAD_BYTES * heads + GPS_TOPK_CELL_BYTES
    return (GPS_TORCH_HEAD_BYTES if torch_backend else GPS_HEAD_BYTES) * heads


def _attention_topk(session: CostedModel, cfg: dict[str, Any]) -> int:
    """The exported model config's ``attention_topk`` (0 without one): a sparsified GPS holds more a cell."""
    try:
        return int(cfg.get("attention_topk", 0) or 0)
    except (TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable attention_topk ({e})") from None


def _attention_layers(session: CostedModel, cfg: dict[str, Any]) -> int:
    """Layers of the exported model config that attend (heads left; :func:`config_heads` has checked
    the ``layers`` entries), or its ``num_layers`` where it lists none."""
    layers = cfg.get("layers") or []
    if layers:
        return sum(1 for layer in layers if int(layer.get("heads", 0)) > 0)
    try:
        return int(cfg.get("num_layers", 1))
    except (TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable num_layers ({e})") from None


def _token_pruned(session: CostedModel, cfg: dict[str, Any]) -> bool:
    """Whether a layer of the exported model config that attends keeps only part of its tokens."""
    try:  # a hand-edited entry: refused at load, as config_heads does
        return any(
            int(x.get("heads", 0)) > 0 and float(x.get("token_keep", 1.0)) < 1.0 for x in cfg.get("layers") or []
        )
    except (AttributeError, TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable token_keep ({e})") from None


def distance_hops(session: CostedModel) -> int:
    """The hops of a Graphormer's shortest-path bins (``max_spd``): each is a MatMul of the padded
    ``[rows, L, L]`` adjacency, ``L^3`` multiply-adds a row, computed inside the model on every call
    (:func:`gtcompress.models.model.shortest_path_bins`), so its time grows with the cube of the largest
    graph while its memory, bounded by ``max_attention_mib``, grows with the square. 0 for any other
    model and for a Graphormer whose attention was pruned away (it computes no bins)."""
    cfg, heads = config_heads(session)
    if cfg.get("arch") != "graphormer" or heads <= 0:
        return 0
    try:
        return max(int(cfg.get("max_spd", 8)), 0)
    except (TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable max_spd ({e})") from None


def slot_bytes(session: CostedModel) -> int:
    """Peak bytes per neighbour-list slot of one call of a model on the ``padded`` lowering; 0 for
    another lowering or no heads left. Each slot gathers a hidden-wide row of ``h`` shared by keys
    and values, and its score, mask and weights per head; the layout's int64 source and edge ids and
    its mask come on top.

    Measured on ONNX Runtime CPU (1 thread, 2-layer GT exported ``padded``, heavy-tailed graphs of
    0.2M-1.2M slots, peak RSS over the slots): hidden 64 / 4 heads 626-696 B a slot, 32 / 8 heads
    445 B, 16 / 2 heads 191-213 B, 64 / 4 heads with edge features 720-785 B. A least-squares fit is
    8 B per hidden channel (two float32 ``[R, K, C]`` copies) + 20 B a head (+ about 20 more with
    edge biases) + 18 B; counted here with a margin as ``8 C + 24 H (+ 24 H) + 32``.
    A model file without a config counts 64 channels and 8 heads."""
    if session.spec.lowering is not Lowering.PADDED:
        return 0
    cfg, heads = config_heads(session)
    if heads <= 0:
        return 0
    return 8 * config_hidden(session, cfg) + 24 * heads * (2 if cfg.get("edge_features") else 1) + 32


def check_slots(model: ServedModel, limits: ServerLimits, edge_index: np.ndarray, n: int) -> tuple[int, str]:
    """Refuse a request whose neighbour lists would take more than ``max_attention_mib``, counted from
    its in-degree histogram before TEDDY, PE or the layout run (building the layout alone of a
    heavy-tailed 1M-node graph took 1.45 GiB). Edge ids outside ``[0, n)`` are left to
    :func:`validate_graph`, which names them. Returns their bytes and what they are, in words, for the
    check of the call's sum (:mod:`runtime.call_memory`)."""
    cost = model.batch.slot_bytes
    dst = edge_index[1] if edge_index.ndim == 2 and edge_index.shape[0] == 2 else None
    if not cost or dst is None or (dst.size and (int(dst.min()) < 0 or int(dst.max()) >= n)):
        return 0, ""
    vals, counts = degree_histogram(dst, n)
    buckets = model.batch.slot_buckets
    slots = padded_slots(vals, counts, buckets)
    need = slots * cost
    if need > limits.max_attention_mib * MIB:
        top = int(vals[-1]) if vals.size else 0
        lists = f"{buckets} degree buckets" if buckets else "one list"
        raise GraphTooLargeError(
            "edge_index",
            f"model '{model.name}' pads each node's incoming edges to its degree bucket's largest in-degree "
            f"({lists}), so this request's {n} nodes and {dst.size} edges (largest in-degree {top}) take "
            f"{slots:,} neighbour-list slots, {need / MIB:,.1f} MiB at {cost} B a slot, above this server's "
            f"{limits.max_attention_mib:,g} MiB (send smaller graphs, or fewer high in-degree nodes)",
        )
    return need, f"{slots:,} neighbour-list slots at {cost} B a slot"


def attention_bytes(cell: int, counts: np.ndarray, *, packed: bool, limit: float = 0.0) -> tuple[int, int]:
    """``(bytes, rows)`` of one layer's dense attention for graphs of ``counts`` nodes at ``cell`` bytes a
    padded cell (:func:`attention_cell_bytes`): ``rows`` rows of the largest graph's square. One row a
    graph is an upper bound when small graphs share rows (``packed``, GT): they are packed, as the layout
    will pack them, only where that bound exceeds ``limit`` bytes, since packing costs O(graphs) and
    the few requests the bound would refuse are the only ones it can change."""
    graphs = int(counts.shape[0])
    largest = int(counts.max()) if graphs else 0
    rows = graphs
    need = rows * largest**2 * cell
    if need > limit and packed:
        rows = padded_rows(counts, pack=True)
        need = rows * largest**2 * cell
    return need, rows


def check_attention(model: ServedModel, limits: ServerLimits, counts: np.ndarray, besides: int = 0) -> tuple[int, str]:
    """Refuse a request whose dense attention scores (graphs of ``counts`` nodes, each padded to the
    largest) would take more than ``max_attention_mib`` a layer. Returns their bytes and their layout, in
    words, for the check of the call's sum with the ``besides`` bytes it holds otherwise (small graphs
    are packed into rows where the sum needs it: :func:`attention_bytes`)."""
    cell = model.batch.attention_cell_bytes
    if not cell:
        return 0, ""
    graphs = int(counts.shape[0])
    at = int(np.argmax(counts))
    largest = int(counts[at])
    limit = limits.max_attention_mib * MIB - besides
    need, rows = attention_bytes(cell, counts, packed=model.session.spec.packed, limit=limit)
    layout = f"padded to {largest} nodes" if rows == graphs else f"packed into {rows} rows of {largest} slots"
    if need > limits.max_attention_mib * MIB:
        alone = largest**2 * cell <= limits.max_attention_mib * MIB
        advice = f"send graph {at} in a request of its own" if alone and graphs > 1 else "send smaller graphs"
        raise GraphTooLargeError(
            "x",
            f"graph {at} has {largest} nodes; model '{model.name}' attends densely within each graph, so this "
            f"request's {graphs} graph(s) {layout} need {need / MIB:,.1f} MiB of attention "
            f"scores per layer, above this server's {limits.max_attention_mib:,g} MiB ({advice})",
        )
    return need, f"{graphs} graph(s) {layout} at {cell} B a cell"


def check_work(
    model: ServedModel,
    limits: ServerLimits,
    inputs: dict[str, np.ndarray],
    counts: np.ndarray,
    *,
    raw_only: bool = False,
    full: bool = False,
) -> None:
    """Refuse a request whose positional encodings (those a raw request does not carry) and, for a
    Graphormer, shortest-path distances would cost more than :attr:`ServerLimits.max_pe_work`, before
    TEDDY or the encodings run (both may compute them).

    The distances are computed inside the model whatever the request carries: ``max_spd`` MatMuls of
    each padded row, cubic in the largest graph (:func:`runtime.request_cost.distance_hops`). Bounded
    only through their memory, a 1-head Graphormer took about 27 s a request at the default limits.

    ``raw_only`` (Triton's Python-backend model, whose configuration declares the raw inputs and the
    optional ``pe_*`` only): the error suggests the graphs' own encodings (where TEDDY would not
    recompute them) and the model's ``gtcompress_max_pe_work`` parameter, not a pre-processed request,
    which Triton would refuse as unknown inputs."""
    carried = {name[3:] for name in inputs if name.startswith("pe_")}
    kinds = {} if full else computed_pe(model, carried, teddy=True)
    hops = model.distance_hops
    if not kinds and not hops:
        return
    graphs = int(counts.shape[0])
    at = int(np.argmax(counts))
    largest = int(counts[at])
    work = sum(pe_work(kind, counts, k) for kind, k in kinds.items())
    rows = (padded_rows(counts, pack=True) if model.session.spec.packed else graphs) if hops else 0
    spd = float(hops) * rows * float(largest) ** 3
    if work + spd <= limits.max_pe_work:
        return
    raise_knob = (
        "raise the model's gtcompress_max_pe_work parameter in its config.pbtxt"
        if raw_only
        else "start the server with a larger --max-pe-work"
    )
    if spd > limits.max_pe_work or not work:  # the encodings sent by the client would not be enough
        raise GraphTooLargeError(
            "x",
            f"model '{model.name}' computes its shortest-path distances inside the model, {hops} products of "
            f"{rows} padded {largest}x{largest} matrices for this request's {graphs} graph(s) (the largest, "
            f"graph {at}), {spd:.4g} steps of work, above this server's max_pe_work {limits.max_pe_work:.4g}; "
            f"send fewer or smaller graphs, or {raise_knob}",
        )
    names = ", ".join(f"pe_{kind}" for kind in kinds)
    other = (
        _own_pe_or(model, kinds, raise_knob)
        if raw_only
        else f"or {names} computed by the client with every model input (a pre-processed request, as "
        "runtime.client.make_inputs builds it)"
    )
    distances = f" (and the model's shortest-path distances {spd:.4g} more)" if spd else ""
    raise GraphTooLargeError(
        "x",
        f"computing {names} for this request's {graphs} graph(s) (the largest, graph {at}, has "
        f"{largest} nodes) takes {work:.4g} steps of work{distances}, above this server's max_pe_work "
        f"{limits.max_pe_work:.4g}; send fewer or smaller graphs, {other}",
    )


#: A request whose encodings :func:`pe_memory` counts at more than this is encoded in a worker thread of
#: its own with the bytes charged to its lease (:mod:`runtime.server`), even when its body is small
#: enough to be decoded on the event loop and encoded in the batcher with the others' (as one call for
#: the whole batch): a 64 KiB body holds a 2,000-node graph, whose LapPE takes 78 MiB. Below it the
#: encodings run where they did, uncharged and without a second thread hop: 32 CLUSTER graphs' RWSE
#: (190 nodes, 4,000 edges each, k = 16) counts 7.7 MiB, a batch of 128 molecules' RWSE and LapPE 2.1
#: MiB. What goes uncharged is bounded all the same: the batcher encodes one graph at a time, and the
#: event loop's default executor runs a few threads (``min(32, cores + 4)``).
INLINE_PE_BYTES = 16 * MIB


def computed_pe(model: ServedModel, carried: Collection[str], *, teddy: bool) -> dict[str, int]:
    """``{kind: width}`` of the encodings the server computes for a request carrying the kinds ``carried``:
    those it lacks and, when TEDDY is still to run on it (``teddy``, for a model with TEDDY), those
    TEDDY recomputes on the sparsified graph whatever the request carries (:func:`runtime.graphs.apply_teddy`).
    Counting a carried kind as free there let a request to the Triton python variant, which may carry
    its graphs' ``pe_*``, have them computed past ``max_pe_work`` and ``max_inflight_mib``."""
    stale = _teddy_recomputes(model) if teddy else set()
    return {kind: k for kind, k in model.session.spec.pe.items() if kind not in carried or kind in stale}


def _teddy_recomputes(model: ServedModel) -> set[str]:
    """The PE kinds TEDDY computes again on the sparsified graph (none for a model without TEDDY)."""
    cfg = model.session.model.teddy
    if cfg is None:
        return set()
    return set(model.session.spec.pe) if cfg.recompute_pe is None else set(cfg.recompute_pe)


def _own_pe_or(model: ServedModel, kinds: Mapping[str, int], raise_knob: str) -> str:
    """The end of a refusal's advice to a Triton python-variant client: the graphs' own encodings of
    ``kinds``, where TEDDY would not compute them again anyway, or else the model's parameter."""
    stale = _teddy_recomputes(model)
    own = [f"pe_{kind}" for kind in kinds if kind not in stale]
    return f"the graphs' own {', '.join(own)} with them, or {raise_knob}" if own else f"or {raise_knob}"


def pe_memory(model: ServedModel, g: NumpyGraph, num_graphs: int, *, teddy: bool = False) -> int:
    """Bytes the positional encodings the server still computes for ``g`` (those it does not carry, and
    those TEDDY recomputes: :func:`computed_pe`) take while computed and held
    (:func:`~gtcompress.preprocess.pe.pe_bytes`, summed over kinds); 0 for none. ``teddy``: TEDDY is
    still to run on ``g`` (its edges may drop before an encoding)."""
    kinds = computed_pe(model, g.pe, teddy=teddy)
    if not kinds:
        return 0
    counts = node_counts(g.batch, g.num_nodes, num_graphs)
    src = g.edge_index[0]
    if g.batch is None or num_graphs <= 1:
        edges = np.array([src.shape[0]], dtype=np.int64)
    else:
        edges = np.bincount(g.batch[src], minlength=num_graphs)
    return sum(pe_bytes(kind, counts, edges, k, fewer_edges=teddy) for kind, k in kinds.items())


def check_pe_memory(
    model: ServedModel,
    limits: ServerLimits,
    g: NumpyGraph,
    need: int,
    held: int,
    *,
    raw_only: bool = False,
    teddy: bool = False,
) -> None:
    """Refuse (400) a request whose encodings' ``need`` bytes and the ``held`` bytes of its body and
    decoded arrays together exceed the
    server's whole in-flight budget (:attr:`ServerLimits.inflight_bytes`): no wait would let it through.
    Within the budget but past what other requests leave, the lease refuses it with a 503 instead.

    ``raw_only`` (Triton's Python-backend model, which takes raw graphs and their own encodings and
    holds one request's encodings at a time): the budget is its ``gtcompress_max_inflight_mib``
    parameter, and the error names that parameter rather than ``gtc serve``'s option or a
    pre-processed request, whose inputs Triton would refuse. ``teddy`` as for :func:`pe_memory`."""
    budget = limits.inflight_bytes
    if need + held <= budget:
        return
    kinds = computed_pe(model, g.pe, teddy=teddy)
    names = ", ".join(f"pe_{kind}" for kind in kinds)
    if raw_only:
        knob = "raise the model's gtcompress_max_inflight_mib parameter in its config.pbtxt"
        raise GraphTooLargeError(
            "x",
            f"computing {names} for this request's graphs takes about {need:,} bytes of memory, which with its "
            f"{held:,} bytes of arrays is more than model '{model.name}''s budget of {budget:,} bytes a request "
            f"(gtcompress_max_inflight_mib {limits.max_inflight_mib:g}); send fewer or smaller graphs, "
            + _own_pe_or(model, kinds, knob),
        )
    raise GraphTooLargeError(
        "x",
        f"computing {names} for this request's graphs takes about {need:,} bytes of memory, which with its "
        f"{held:,} bytes of body and arrays is more than this server's in-flight budget of {budget:,} bytes "
        f"(--max-inflight-mib {limits.max_inflight_mib:g}); send fewer or smaller graphs, {names} computed by "
        "the client with every model input (a pre-processed request), or start the server with a larger "
        "--max-inflight-mib",
    )


#: What encoding an answer holds at its peak, in bytes a value (:func:`runtime.protocol.encode_infer_response`):
#: as JSON a Python float and its list slot (32), the text (about 20), and rounding: 52 measured (peak RSS,
#: float32 outputs of 300,000 x 3 and 10,000 x 100); as binary data the raw bytes and the body they are
#: joined into (8 for float32). Once encoded, an answer is charged its body's bytes until the client has
#: taken them (:mod:`runtime.server`).
JSON_ANSWER_VALUE_BYTES = 64
BINARY_ANSWER_VALUE_BYTES = 8


def answer_bytes(model: ServedModel, binary: bool, nodes: int, num_graphs: int) -> int:
    """Bytes encoding the answer to a request of ``nodes`` nodes in ``num_graphs`` graphs takes, before
    the model runs: one row a node (node-level) or a graph, of the output's width."""
    width = 1
    for d in model.session.get_outputs()[0].shape[1:]:
        width *= max(int(d), 1)
    rows = nodes if model.session.node_level else num_graphs
    return rows * width * (BINARY_ANSWER_VALUE_BYTES if binary else JSON_ANSWER_VALUE_BYTES)


def check_answer(model: ServedModel, limits: ServerLimits, need: int, held: int, *, binary: bool) -> None:
    """Refuse (400) a request whose answer's ``need`` bytes and the ``held`` bytes of its body and
    arrays together exceed the server's whole in-flight budget: no wait would let it through (past
    what other requests leave, the lease refuses it with a 503 instead)."""
    budget = limits.inflight_bytes
    if need + held <= budget:
        return
    hint = "" if binary else ", or ask for binary output (output parameter binary_data, 8x smaller)"
    raise GraphTooLargeError(
        "x",
        f"encoding the answer of model '{model.name}' to this request takes about {need:,} bytes of memory, which "
        f"with its {held:,} bytes of body and arrays is more than this server's in-flight budget of {budget:,} "
        f"bytes (--max-inflight-mib {limits.max_inflight_mib:g}); send fewer nodes{hint}, or start the server "
        "with a larger --max-inflight-mib",
    )
