"""What one call of a served model costs in memory per unit of request size, read from the exported
model: bytes per padded cell of dense attention (:func:`attention_cell_bytes`) and per
neighbour-list slot of the padded lowering (:func:`slot_bytes`). :mod:`runtime.served` refuses a
request past ``max_attention_mib`` with them, and :mod:`runtime.batcher` merges no more than they
allow. The numbers are measurements on ONNX Runtime CPU, kept with the code that uses them.
"""

from __future__ import annotations

from typing import Any

from gtcompress.preprocess.spec import Lowering
from runtime.errors import SessionError
from runtime.session import GraphSession
from runtime.spec import metadata_json

#: Graphormer's per-head additions to one padded cell, in bytes: its spatial bias ``[B,L,L,H]`` and the
#: biased scores ``[B,H,L,L]`` (float32), plus, with edge features, the scattered edge bias and its sum.
GRAPHORMER_HEAD_BYTES = 8
GRAPHORMER_EDGE_HEAD_BYTES = 8
#: Graphormer's head-independent bytes per padded cell: the shortest-path bins (int64, twice while
#: updated) and the float32 adjacency, reach and product matrices of their MatMuls (about 48 B a
#: cell measured on ONNX Runtime CPU), held whatever the head count.
GRAPHORMER_DISTANCE_BYTES = 48


def attention_cell_bytes(session: GraphSession) -> int:
    """Bytes per padded cell of one layer's dense attention scores (float32, every head), for a model
    that attends densely within each graph; 0 for one that does not (edge lowerings, no heads left).
    Heads come from the exported model config; a model file without one counts 8.

    A Graphormer also holds per-head biases and its shortest-path distances for every cell, which
    outweigh the scores when few heads remain: counted at 4 B a head, a 1-head Graphormer was let
    through with a 23,000-node graph at the default 2 GiB, which needs over 30 GiB (measured 68 B a
    cell, see :data:`GRAPHORMER_DISTANCE_BYTES`)."""
    spec = session.spec
    if spec.lowering is not Lowering.DENSE and not spec.global_attention:
        return 0
    cfg, heads = _config_heads(session)
    if cfg.get("arch") == "graphormer" and heads > 0:
        per_head = 4 + GRAPHORMER_HEAD_BYTES + (GRAPHORMER_EDGE_HEAD_BYTES if cfg.get("edge_features") else 0)
        return per_head * heads + GRAPHORMER_DISTANCE_BYTES
    return 4 * heads


def _config_heads(session: GraphSession) -> tuple[dict[str, Any], int]:
    """The exported model config (empty without one) and its largest head count (8 without one)."""
    cfg = metadata_json(session.metadata, "model_config", str(session.path)) or {}
    try:  # a hand-edited entry: refused at load, where a wrong count would let requests past the memory limit
        layers = cfg.get("layers") or []
        heads = max((int(layer.get("heads", 0)) for layer in layers), default=int(cfg.get("heads", 8)))
    except (AttributeError, TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable head counts ({e})") from None
    return cfg, heads


def slot_bytes(session: GraphSession) -> int:
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
    cfg, heads = _config_heads(session)
    if heads <= 0:
        return 0
    try:
        hidden = int(cfg.get("hidden", 64))
    except (TypeError, ValueError) as e:
        raise SessionError(f"{session.path}: metadata 'model_config' has no usable hidden width ({e})") from None
    return 8 * hidden + 24 * heads * (2 if cfg.get("edge_features") else 1) + 32
