"""How to slice: turn a discrete pruning plan into a plain, smaller model of the same class.

A :class:`Plan` lists, per layer, the attention heads and FFN hidden units that stay and the
token keep ratio. :func:`materialise` returns ``build_model(smaller_config)`` loaded with the sliced
weights — no mask, gate or hook survives, and the result saves, loads and exports as any model:

* **heads** — rows ``h·Dh … (h+1)·Dh`` of ``q``/``k``/``v`` (weights and biases), the same columns
  of ``o``, and the per-head score biases (``edge_bias`` rows, ``spd_bias`` columns). Heads are
  independent up to ``o``, so slicing is exact. Torch-Pruning cannot do this (it shrinks
  ``nn.MultiheadAttention``'s ``embed_dim`` but does not remove heads), so it is done here;
* **FFN hidden units** — Torch-Pruning's dependency graph on the FFN finds the coupled slices
  (``lin1`` output rows and bias, ``lin2`` input columns) and its pruning functions cut them;
* **sublayers** — a plan with no head (no unit) removes the attention (FFN) sublayer;
  ``LayerSpec.heads`` (``ffn_dim``) becomes 0 and the module is gone. A pre-LN (graphormer) layer
  left with neither sublayer is the identity and is dropped from ``config.layers``; post-norm layers
  (GT, GPS) keep their norms (an affine map in eval mode), so they stay as ``LayerSpec(0, 0)``. What
  only a removed sublayer read goes with it: a pre-LN layer's norm before it, and the edge encoder once
  no head is left to read it in GT or Graphormer (the smaller config does not build them);
* **tokens** — ``LayerSpec.token_keep``; the layer keeps its node scorer and selects per graph at
  inference (:mod:`gtcompress.compress.tokens`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from gtcompress.models.config import LayerSpec, ModelConfig
from gtcompress.models.model import GraphModel, build_model, without_unread_weights

__all__ = ["LayerPlan", "Plan", "full_plan", "materialise", "plain_copy", "with_token_keep"]


@dataclass
class LayerPlan:
    heads: list[int] = field(default_factory=list)  # kept head indices (empty: attention removed)
    ffn: list[int] = field(default_factory=list)  # kept FFN hidden units (empty: FFN removed)
    token_keep: float = 1.0


@dataclass
class Plan:
    layers: list[LayerPlan]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls([LayerPlan(**lp) for lp in d["layers"]])

    def summary(self, model: GraphModel) -> dict[str, Any]:
        """What the plan removes from ``model``: head / unit indices per layer, removed sublayers."""
        out: dict[str, Any] = {"heads_removed": {}, "ffn_units_removed": {}, "attention_removed": [], "ffn_removed": []}
        for i, (lp, layer) in enumerate(zip(self.layers, model.layers, strict=True)):
            if layer.attn is not None:
                gone = sorted(set(range(layer.attn.heads)) - set(lp.heads))
                if gone:
                    out["heads_removed"][str(i)] = gone
                if not lp.heads:
                    out["attention_removed"].append(i)
            if layer.ffn is not None:
                gone = sorted(set(range(layer.ffn.lin1.out_features)) - set(lp.ffn))
                if gone:
                    out["ffn_units_removed"][str(i)] = gone
                if not lp.ffn:
                    out["ffn_removed"].append(i)
        out["token_keep"] = [lp.token_keep for lp in self.layers]
        return out


def full_plan(model: GraphModel) -> Plan:
    """The plan that keeps everything (token ratios as the model has them)."""
    return Plan(
        [
            LayerPlan(
                list(range(layer.attn.heads)) if layer.attn is not None else [],
                list(range(layer.ffn.lin1.out_features)) if layer.ffn is not None else [],
                layer.spec.token_keep if layer.attn is not None else 1.0,
            )
            for layer in model.layers
        ]
    )


def plain_copy(model: GraphModel) -> GraphModel:
    """A fresh model of the same config with the same weights and no hooks attached."""
    fresh = build_model(copy.deepcopy(model.config))
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.train(model.training)
    return fresh


def with_token_keep(model: GraphModel, ratio: float | list[float], seed: int = 0) -> GraphModel:
    """A copy of ``model`` whose attention layers prune tokens at ``ratio`` (one or per layer).

    Existing scorers keep their weights; new ones are initialised from ``seed``."""
    ratios = ratio if isinstance(ratio, list) else [ratio] * model.config.num_layers
    cfg = copy.deepcopy(model.config)
    cfg.layers = [
        replace(s, token_keep=float(r) if s.heads > 0 else 1.0) for s, r in zip(cfg.layers, ratios, strict=True)
    ]
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    out = build_model(cfg)
    torch.random.set_rng_state(gen_state)
    own = model.state_dict()
    state = out.state_dict()
    state.update({k: v for k, v in own.items() if k in state})
    out.load_state_dict(state, strict=True)
    out.train(model.training)
    return out


def _slice_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w.index_select(0, rows)
        b = b.index_select(0, rows) if b is not None else None
    if cols is not None:
        w = w.index_select(1, cols)
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def _slice_heads(attn: nn.Module, heads: list[int]) -> None:
    dh = attn.head_dim
    idx = torch.tensor([h * dh + j for h in heads for j in range(dh)], dtype=torch.long)
    hidx = torch.tensor(heads, dtype=torch.long)
    attn.q = _slice_linear(attn.q, rows=idx)
    attn.k = _slice_linear(attn.k, rows=idx)
    attn.v = _slice_linear(attn.v, rows=idx)
    attn.o = _slice_linear(attn.o, cols=idx)
    if attn.edge_bias is not None:
        attn.edge_bias = _slice_linear(attn.edge_bias, rows=hidx)
    if attn.spd_bias is not None:
        old = attn.spd_bias
        new = nn.Embedding(old.num_embeddings, len(heads))
        with torch.no_grad():
            new.weight.copy_(old.weight.detach().index_select(1, hidx))
        attn.spd_bias = new
    attn.heads = len(heads)


def _prune_ffn(ffn: nn.Module, keep: list[int]) -> None:
    """Remove the FFN hidden units not in ``keep`` through Torch-Pruning's dependency graph."""
    import torch_pruning as tp

    width = ffn.lin1.out_features
    remove = sorted(set(range(width)) - set(keep))
    if not remove:
        return
    example = torch.zeros(2, ffn.lin1.in_features)
    dg = tp.DependencyGraph().build_dependency(ffn, example_inputs=example, verbose=False)
    group = dg.get_pruning_group(ffn.lin1, tp.prune_linear_out_channels, idxs=remove)
    group.prune()
    if ffn.lin1.out_features != len(keep) or ffn.lin2.in_features != len(keep):  # pragma: no cover
        raise RuntimeError("torch-pruning did not slice the FFN as planned")


def _check_plan(model: GraphModel, plan: Plan) -> None:
    if len(plan.layers) != len(model.layers):
        raise ValueError(f"plan has {len(plan.layers)} layers, model has {len(model.layers)}")
    for i, (lp, layer) in enumerate(zip(plan.layers, model.layers, strict=True)):
        h = layer.attn.heads if layer.attn is not None else 0
        f = layer.ffn.lin1.out_features if layer.ffn is not None else 0
        if any(not 0 <= x < h for x in lp.heads) or len(set(lp.heads)) != len(lp.heads):
            raise ValueError(f"layer {i}: head indices {lp.heads} invalid for {h} heads")
        if any(not 0 <= x < f for x in lp.ffn) or len(set(lp.ffn)) != len(lp.ffn):
            raise ValueError(f"layer {i}: FFN unit indices invalid for width {f}")
        if not 0.0 < lp.token_keep <= 1.0:
            raise ValueError(f"layer {i}: token_keep must lie in (0, 1], got {lp.token_keep}")


def materialise(model: GraphModel, plan: Plan, drop_identity_layers: bool = True) -> GraphModel:
    """A plain model of the same class with a smaller config and sliced weights (see module doc).

    The input model is not modified; hooks attached to it (gates) are not carried over."""
    _check_plan(model, plan)
    work = plain_copy(model)
    arch = work.config.arch
    specs: list[LayerSpec] = []
    keep_layers: list[int] = []
    for i, (lp, layer) in enumerate(zip(plan.layers, work.layers, strict=True)):
        if layer.attn is not None:
            if not lp.heads:
                layer.attn = None
            elif sorted(lp.heads) != list(range(layer.attn.heads)):
                _slice_heads(layer.attn, sorted(lp.heads))
        heads = layer.attn.heads if layer.attn is not None else 0
        token_keep = lp.token_keep if heads > 0 else 1.0
        if heads == 0 or token_keep >= 1.0:
            layer.tokens = None
        elif layer.tokens is None:
            # a new scorer would be random (and differ per call): the tokens kept would be noise
            raise ValueError(
                f"plan layer {i} keeps {token_keep} of the tokens but the model's layer {i} has no token "
                "scorer: attach one with with_token_keep(model, ratio, seed) and train it before materialising"
            )
        else:
            layer.tokens.keep_ratio = token_keep
        if layer.ffn is not None:
            if not lp.ffn:
                layer.ffn = None
            else:
                _prune_ffn(layer.ffn, lp.ffn)
        width = layer.ffn.lin1.out_features if layer.ffn is not None else 0
        spec = LayerSpec(heads, width, token_keep)
        layer.spec = spec
        if drop_identity_layers and arch == "graphormer" and heads == 0 and width == 0:
            continue
        specs.append(spec)
        keep_layers.append(i)
    if not specs:  # keep one (identity) layer so the config stays explicit
        specs, keep_layers = [LayerSpec(0, 0, 1.0)], [0]
    work.layers = nn.ModuleList(work.layers[i] for i in keep_layers)
    cfg: ModelConfig = copy.deepcopy(work.config)
    cfg.layers = specs
    cfg.num_layers = len(specs)
    out = build_model(cfg)
    # the smaller config leaves out what nothing reads any more (a pre-LN norm before a removed
    # sublayer, an edge encoder no attention head reads): their weights stay behind
    out.load_state_dict(without_unread_weights(out, work.state_dict()), strict=True)
    out.train(model.training)
    return out
