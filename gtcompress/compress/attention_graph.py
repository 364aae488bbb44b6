r"""TEDDY on *attention* edges: sparsify a full-attention model's attention graph.

GPS attends from every node to every node of its graph (:math:`L^2` pairs per graph). With
``ModelConfig.attention_topk = k`` its global attention runs instead over the set

.. math::
    \mathcal A = E \cup \{(i \to i)\} \cup \{(j \to i) : j \in \mathrm{top}_k(s, \mathrm{graph}(i))\}

(unique pairs: it is a subgraph of the complete graph the dense attention used). On the padded
layout (GPS's ``dense`` lowering, what it exports with) it runs as the dense attention with the pairs
off the graph masked: the same function as the reference sparse attention over its
:math:`|E| + (k+1) L` pairs per graph and head, at the dense attention's FLOPs, because gathers and
scatters over those pairs took 5-14x the dense attention's time on ONNX Runtime CPU. The key score
is TEDDY's degree-based node score :math:`s_j = \bar g_j / d_j`
(``"teddy"``: low-degree nodes with low-degree neighbours first) or the degree (``"degree"``:
hubs first). TEDDY's edge score factorises, :math:`s(i, j) = s_i s_j`, so every query of a graph
ranks the keys the same way and the top-k keys per query are the graph's :math:`k` top nodes —
global tokens. Everything is computed inside the model from ``edge_index`` (no pre-processing
input) by :mod:`gtcompress.nn.attention_edges`, with ops that export to ONNX; the model side lives
there because models must not import compression, and its names are re-exported here.

:func:`calibrate_attention_topk` chooses the score and the smallest :math:`k` whose graph keeps a
target share (``coverage``) of the dense model's attention probability mass on calibration
graphs — the "calibrated score" of the sparsified attention.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from gtcompress.errors import UnsupportedModelError
from gtcompress.graph import GraphBatch
from gtcompress.models.model import build_model
from gtcompress.nn.attention_edges import attention_edges, attention_mask, node_scores
from gtcompress.nn.layout import DenseLayout

__all__ = ["attention_edges", "attention_mask", "calibrate_attention_topk", "node_scores", "with_attention_topk"]


def with_attention_topk(model: nn.Module, k: int, kind: str = "teddy") -> nn.Module:
    """A copy of a GPS ``model`` whose global attention runs on the sparsified graph (same weights)."""
    check_full_attention(model)
    # replace() runs the config's checks: set in place, a bad kind ("top") was saved into a checkpoint
    # that load_checkpoint then refused
    cfg = replace(copy.deepcopy(model.config), attention_topk=int(k), attention_score=kind)  # type: ignore[attr-defined]
    out = build_model(cfg)
    out.load_state_dict(model.state_dict(), strict=True)
    out.train(model.training)
    return out


def check_full_attention(model: nn.Module) -> None:
    arch = model.config.arch  # type: ignore[attr-defined]
    if arch == "gt":
        raise UnsupportedModelError(
            "GT attention already runs over the input edges only: sparsify those with --edges instead"
        )
    if arch == "graphormer":
        raise UnsupportedModelError(
            "graphormer's attention bias needs the shortest paths of all pairs (an O(L³) input), so a sparse "
            "attention graph would not make it cheaper; attention sparsification supports gps"
        )
    if not any(layer.attn is not None for layer in model.layers):  # type: ignore[attr-defined]
        raise UnsupportedModelError("the model has no attention sublayer left to sparsify")


@torch.no_grad()
def calibrate_attention_topk(
    model: nn.Module,
    batch: GraphBatch,
    coverage: float = 0.9,
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
    kinds: tuple[str, ...] = ("teddy", "degree"),
) -> dict[str, Any]:
    """Choose ``(kind, k)``: the smallest ``k`` (then the better score) whose attention graph keeps
    ``coverage`` of the dense GPS model's attention mass on ``batch``, averaged over layers, heads
    and queries. Returns the choice and the whole table (falls back to the largest ``k``)."""
    check_full_attention(model)
    model.eval()
    captured: list[tuple[Tensor, Tensor, int]] = []
    hooks = []
    for layer in model.layers:  # type: ignore[attr-defined]
        if layer.attn is None:
            continue
        store: dict[str, Tensor] = {}

        def grab(name: str, store: dict[str, Tensor] = store, heads: int = layer.attn.heads):
            def hook(mod: nn.Module, args: Any, out: Tensor) -> None:
                store[name] = out
                if name == "k":  # [N, H·Dh] node rows (dense_nodes), or [B, L, H·Dh] already padded
                    captured.append((store["q"], out, heads))

            return hook

        hooks.append(layer.attn.q.register_forward_hook(grab("q")))
        hooks.append(layer.attn.k.register_forward_hook(grab("k")))
    try:
        model(batch)
    finally:
        for h in hooks:
            h.remove()
    bvec = batch.batch_vector
    layout = DenseLayout.from_batch(bvec, batch.num_graphs)
    valid = layout.valid
    pair_ok = valid.unsqueeze(2) & valid.unsqueeze(1)
    probs = []
    for q, kt, heads in captured:
        if q.dim() == 2:  # node rows: padded here; a token-pruned layer projects fewer rows, not all pairs
            if q.shape[0] != bvec.shape[0]:
                continue
            q, kt = layout.pad(q), layout.pad(kt)
        b, length, _ = q.shape
        if length != layout.max_nodes:  # token-pruned layer (gathered): not a full-attention layer
            continue
        qh = q.view(b, length, heads, -1).transpose(1, 2)
        kh = kt.view(b, length, heads, -1).transpose(1, 2)
        score = torch.matmul(qh, kh.transpose(-1, -2)) / qh.shape[-1] ** 0.5
        score = score.masked_fill(~valid[:, None, None, :], float("-inf"))
        p = torch.softmax(score, -1).nan_to_num(0.0)
        probs.append(p.mean(1))  # [B, L, L] averaged over heads
    if not probs:  # nothing to measure the mass on: a silent all-zero table would pick the largest k
        raise UnsupportedModelError("attention top-k calibration found no full-attention layer on the batch")
    dense = torch.stack(probs).mean(0)
    queries = valid.sum().clamp_min(1)
    table = []
    for kind in kinds:
        for k in ks:
            mask = attention_mask(batch.edge_index, bvec, layout, k, kind) & pair_ok
            kept = float((dense * mask).sum() / queries)
            pairs = int(mask.sum())
            table.append({"kind": kind, "k": k, "coverage": kept, "pairs": pairs, "dense_pairs": int(pair_ok.sum())})
    ok = [r for r in table if r["coverage"] >= coverage]
    best = min(ok, key=lambda r: (r["k"], -r["coverage"])) if ok else max(table, key=lambda r: (r["k"], r["coverage"]))
    return {"kind": best["kind"], "k": best["k"], "coverage": best["coverage"], "target": coverage, "table": table}
