"""Import a trained PyTorch Geometric GPS model (``torch_geometric.nn.GPSConv`` layers) into our
:class:`~gtcompress.models.model.GPS`, so that PyG-trained models can be compressed and exported.

Our GPS computes the same function as PyG's ``GPSConv`` stack (``norm1(x + MPNN(x)) +
norm2(x + MHA(x))``, then ``norm3(out + MLP(out))``) with exportable ops, so the import is a weight
copy: the config is inferred from the PyG modules, our model is built with
:func:`~gtcompress.models.build_model`, and the weights are mapped by name and loaded with
``load_state_dict(strict=True)`` so that a missed or extra tensor fails loudly. Any pattern we
cannot reproduce exactly raises :class:`~gtcompress.errors.UnsupportedModelError` naming the module
(qualified name and type) and what was expected, rather than importing something that merely
looks right. One concept, the mapping of PyG's modules onto our config and weights, hence one module
longer than most; the checks of the import as a whole are in :mod:`gtcompress.models.from_pyg_checks`.

The canonical source is PyG's ``examples/graph_gps.py``::

    x = cat(node_emb(x), pe_lin(pe_norm(pe)))  # or node_emb(x) + pe_lin(...) if widths say so
    edge_attr = edge_emb(edge_attr)
    for conv in convs: x = conv(x, edge_index, batch, edge_attr=edge_attr)
    return mlp(global_add_pool(x, batch))

The model's ``forward`` cannot be run symbolically, so these facts are *assumed* and must hold: the
node encoding comes first in the concatenation, every layer receives the same encoded edge features,
and the head follows the readout. What the code visibly does beyond that order (an activation or
``reversed`` call of its own, a weightless module it holds) is refused unless ``example=`` checks the
import (:func:`~gtcompress.models.from_pyg_checks.check_placed`), and a forward with the signature of
PyG's example, or one taking the batch object, is run on made-up graphs and the import compared with it
(:mod:`gtcompress.models.from_pyg_selfcheck`). The readout itself is not assumed: a graph-level model's
pooling lives in ``forward`` (``global_add_pool`` vs ``global_mean_pool`` differ by a factor of the
graph size, ``global_max_pool`` by more), so it is read from a pooling module when the model has one
(``SumAggregation``, ``MeanAggregation``, ``MaxAggregation``), from the one PyG pool function the
forward's code calls (:mod:`gtcompress.models.from_pyg_readout`), taken from ``readout=`` (which must
agree with either), or found by running the three on ``example=``;
without any of these the import refuses rather than guess. ``example=`` also checks whatever
``readout`` says: an import that differs from the PyG model on it by more than
:data:`EXAMPLE_TOLERANCE` is refused, naming the difference. Nor is the kind of positional
encoding assumed (a transform outside the model computes it, and a deployment computes the
model's kind for a graph sent without one): ``pe_kind=`` or ``example=``'s batch says it
(:mod:`gtcompress.models.from_pyg_pe`).

``GINEConv(edge_dim=k)`` owns a per-layer edge ``Linear(k, channels)``; it maps to
``ModelConfig.gine_edge_dim = channels`` with the edge encoding zero-padded from ``k`` to
``channels`` (the padded columns meet zero weights), so the import round-trips through checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gtcompress.data.base import FeatureSpec
from gtcompress.errors import UnsupportedModelError
from gtcompress.models.config import ModelConfig
from gtcompress.models.from_pyg_checks import (
    check_covered,
    check_made_up,
    check_no_hooks,
    check_not_ignored,
    check_placed,
    example_diff,
    mismatch,
)
from gtcompress.models.from_pyg_parts import Part, is_a, path_of, refusal, require, sub, under
from gtcompress.models.from_pyg_pe import PE_KINDS, dtype_tolerance, pe_kind_for
from gtcompress.models.from_pyg_readout import ForwardPools, read_forward, settle_readout
from gtcompress.models.model import GPS, build_model
from gtcompress.nn.blocks import head_widths

__all__ = ["EXAMPLE_TOLERANCE", "from_pyg"]

#: Largest |difference| between the PyG model and its import on ``example=`` (eval mode, float32), relative to
#: the largest |output| where that is above 1: absolute, an exact import of a model whose outputs reach 500 was
#: refused (float32 noise of 1.4e-4). A half-precision model is held to a few of its dtype's steps instead
#: (:func:`~gtcompress.models.from_pyg_pe.dtype_tolerance`).
EXAMPLE_TOLERANCE = 1e-4

#: A submodule: a (dotted) attribute path in the model, the module itself, ``None`` to
#: auto-detect it, or ``False`` to say the model has none.
Spec = str | nn.Module | Literal[False] | None

# Attribute names recognised by auto-detection (PyG's example first).
_NODE_NAMES = (
    "node_emb",
    "node_encoder",
    "node_lin",
    "atom_encoder",
    "atom_emb",
    "x_emb",
    "lin_in",
    "input_lin",
)
_PE_NAMES = ("pe_lin", "pe_encoder", "pe_proj", "pe_emb")
_PE_NORM_NAMES = ("pe_norm", "pe_bn")
_EDGE_NAMES = ("edge_emb", "edge_encoder", "edge_lin", "bond_encoder", "edge_embedding")
_HEAD_NAMES = ("mlp", "head", "pred_head", "predictor", "classifier", "lin_out", "post_mp", "decoder")
_CONVS_NAMES = ("convs", "layers", "gps_layers", "blocks")

_BN_EPS = 1e-5  # what our make_norm("batch") / PEEncoder build
_POOLS = ("sum", "mean", "max")  # the readouts, in the order example= tries them (PyG's global_*_pool)


# ---------------------------------------------------------------- leaf converters
def _linear_types() -> tuple[type, ...]:
    from torch.nn.modules.linear import NonDynamicallyQuantizableLinear  # MultiheadAttention's out_proj
    from torch_geometric.nn.dense.linear import Linear as PygLinear

    return (nn.Linear, NonDynamicallyQuantizableLinear, PygLinear)


def _is_linear(m: nn.Module) -> bool:
    return is_a(m, *_linear_types())


def _linear(m: nn.Module, path: str, in_f: int | None = None, out_f: int | None = None) -> dict[str, Tensor]:
    """``weight``/``bias`` of a torch or PyG Linear; a missing bias becomes zeros (same function)."""
    require(m, path, _linear_types(), "torch.nn.Linear or torch_geometric.nn.Linear")
    w = m.weight
    if isinstance(w, nn.parameter.UninitializedParameter):
        raise refusal(path, m, "an initialised (non-lazy) Linear; run one forward pass first")
    out_w, in_w = w.shape
    if (in_f is not None and in_w != in_f) or (out_f is not None and out_w != out_f):
        raise refusal(
            path,
            m,
            f"Linear({in_f if in_f is not None else '*'}, {out_f if out_f is not None else '*'}), "
            f"got Linear({in_w}, {out_w})",
        )
    b = m.bias if m.bias is not None else w.new_zeros(out_w)
    return {"weight": w.detach(), "bias": b.detach()}


def _batchnorm(m: nn.Module, path: str, dim: int) -> dict[str, Tensor]:
    """State of a ``BatchNorm1d`` (or PyG's ``BatchNorm`` wrapper around one at ``.module``)."""
    from torch_geometric.nn.norm import BatchNorm as PygBatchNorm

    require(m, path, (nn.BatchNorm1d, PygBatchNorm), "torch.nn.BatchNorm1d or torch_geometric.nn.BatchNorm")
    bn = m.module if isinstance(m, PygBatchNorm) else m
    require(bn, path, (nn.BatchNorm1d,), "torch.nn.BatchNorm1d or torch_geometric.nn.BatchNorm")
    if bn.num_features != dim:
        raise refusal(path, m, f"BatchNorm over {dim} features, got {bn.num_features}")
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise refusal(path, m, "track_running_stats=True (without running statistics eval mode uses batch statistics)")
    if bn.eps != _BN_EPS:
        raise refusal(path, m, f"eps={_BN_EPS} (our BatchNorm's), got eps={bn.eps}")
    weight = bn.weight.detach() if bn.weight is not None else bn.running_mean.new_ones(dim)
    bias = bn.bias.detach() if bn.bias is not None else bn.running_mean.new_zeros(dim)
    nbt = bn.num_batches_tracked if bn.num_batches_tracked is not None else torch.tensor(0)
    return {
        "weight": weight,
        "bias": bias,
        "running_mean": bn.running_mean.detach(),
        "running_var": bn.running_var.detach(),
        "num_batches_tracked": nbt.detach(),
    }


def _identity_linear(in_f: int, out_f: int) -> dict[str, Tensor]:
    """``x -> [x, 0]``: stands in for an absent encoder (exact: products with 0/1 are exact)."""
    return {"weight": torch.eye(out_f, in_f), "bias": torch.zeros(out_f)}


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    """Zero-pad dim 0 to ``rows`` (an encoder output narrower than ``hidden``)."""
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))]) if t.shape[0] < rows else t


@dataclass
class _Encoder:
    spec: FeatureSpec
    width: int  # output width of the PyG module
    state: dict[str, Tensor]  # keys relative to our FeatureEncoder, at width `width`


def _feature_encoder(part: Part | None, role: str, identity_width: int) -> _Encoder:
    """A node/edge encoder: Embedding (categorical), Linear (float), OGB-style list of Embeddings
    summed per column, or none (identity on ``identity_width`` float features), which an ``nn.Identity``
    held as the encoder also says."""
    if part is None or is_a(part.module, nn.Identity):
        return _Encoder(
            FeatureSpec("float", identity_width),
            identity_width,
            {f"linear.{k}": v for k, v in _identity_linear(identity_width, identity_width).items()},
        )
    m, path = part.module, part.path
    if isinstance(m, nn.Embedding):
        require(m, path, (nn.Embedding,), "torch.nn.Embedding")
        if m.max_norm is not None:
            raise refusal(path, m, "an Embedding without max_norm (it rescales rows in forward)")
        return _Encoder(
            FeatureSpec("categorical", 1, [m.num_embeddings]),
            m.embedding_dim,
            {"embeddings.0.weight": m.weight.detach()},
        )
    if _is_linear(m):
        st = _linear(m, path)
        out_w, in_w = st["weight"].shape
        return _Encoder(FeatureSpec("float", in_w), out_w, {f"linear.{k}": v for k, v in st.items()})
    embs = getattr(m, "atom_embedding_list", None) or getattr(m, "bond_embedding_list", None)
    if isinstance(embs, nn.ModuleList) and len(embs) and all(is_a(e, nn.Embedding) for e in embs):
        widths = {e.embedding_dim for e in embs}
        if len(widths) != 1 or any(e.max_norm is not None for e in embs):
            raise refusal(path, m, "embeddings of one width without max_norm")
        return _Encoder(
            FeatureSpec("categorical", len(embs), [e.num_embeddings for e in embs]),
            widths.pop(),
            {f"embeddings.{i}.weight": e.weight.detach() for i, e in enumerate(embs)},
        )
    raise refusal(path, m, f"a {role} encoder: torch.nn.Embedding, torch.nn.Linear or an OGB Atom/BondEncoder")


def _head(part: Part | None, hidden: int) -> tuple[list[int], int, dict[str, Tensor]]:
    """(hidden widths, out_dim, state) for a Linear/ReLU alternation, as
    :func:`~gtcompress.nn.blocks.mlp_head` builds, with ``Dropout`` anywhere in it left out (the
    identity in eval mode); no head is an identity Linear."""
    if part is None:
        return [], hidden, {f"0.{k}": v for k, v in _identity_linear(hidden, hidden).items()}
    m, path = part.module, part.path
    seq = isinstance(m, nn.Sequential)
    named = [(f"{path}.{i}" if seq else path, x) for i, x in enumerate(m if seq else [m])]
    kept = [(p, x) for p, x in named if type(x) is not nn.Dropout]
    mods = [x for _, x in kept]
    ok = len(mods) % 2 == 1 and all(_is_linear(x) if i % 2 == 0 else type(x) is nn.ReLU for i, x in enumerate(mods))
    if not ok:
        got = ", ".join(type(x).__name__ for _, x in named)
        raise refusal(path, m, f"a head of Linear, ReLU, Linear, ..., Linear, with Dropout anywhere (got {got})")
    state: dict[str, Tensor] = {}
    width, widths = hidden, []
    for j in range(0, len(kept), 2):
        st = _linear(kept[j][1], kept[j][0], width)
        state.update({f"{j}.{k}": v for k, v in st.items()})
        width = st["weight"].shape[0]
        widths.append(width)
    return widths[:-1], width, state


# ---------------------------------------------------------------- GPSConv
@dataclass
class _LayerInfo:
    heads: int
    ffn_dim: int
    dropout: float
    attn_dropout: float
    local: str  # "gine", "gin" or "none"
    norm: str  # "batch" or "none"
    edge_lin_in: int  # GINE's `lin` input width (edge_dim); 0 = no lin
    state: dict[str, Tensor]  # keys relative to our GPSLayer


def _convert_gin(conv: nn.Module, path: str, c: int) -> tuple[str, int, dict[str, Tensor]]:
    from torch_geometric.nn import GINConv, GINEConv
    from torch_geometric.nn.aggr import SumAggregation

    if not isinstance(conv, GINConv | GINEConv):
        raise refusal(path, conv, "GINEConv, GINConv or None as GPSConv's local conv")
    require(conv, path, (GINConv, GINEConv), "GINEConv" if isinstance(conv, GINEConv) else "GINConv")
    if type(conv.aggr_module) is not SumAggregation or conv.flow != "source_to_target":
        raise refusal(
            path,
            conv,
            f"sum aggregation, flow='source_to_target' (got aggr={conv.aggr!r}, flow={conv.flow!r})",
        )
    mlp = conv.nn
    mods = list(mlp) if isinstance(mlp, nn.Sequential) else []
    if not (len(mods) == 3 and _is_linear(mods[0]) and type(mods[1]) is nn.ReLU and _is_linear(mods[2])):
        got = ", ".join(type(x).__name__ for x in mods) if mods else type(mlp).__name__
        raise refusal(f"{path}.nn", mlp, f"Sequential(Linear({c}, {c}), ReLU, Linear({c}, {c})) (got {got})")
    state = {f"nn.0.{k}": v for k, v in _linear(mods[0], f"{path}.nn.0", c, c).items()}
    state |= {f"nn.2.{k}": v for k, v in _linear(mods[2], f"{path}.nn.2", c, c).items()}
    state["eps"] = conv.eps.detach().reshape(1)  # train_eps: a Parameter in PyG, copied by value
    lin_in = 0
    if isinstance(conv, GINEConv):
        if conv.lin is not None:
            st = _linear(conv.lin, f"{path}.lin", None, c)
            lin_in = st["weight"].shape[1]
            if lin_in > c:
                raise refusal(
                    f"{path}.lin",
                    conv.lin,
                    f"edge_dim <= channels={c} (edge features are carried at width {c})",
                )
            state |= {
                "lin.weight": torch.cat([st["weight"], st["weight"].new_zeros(c, c - lin_in)], 1),
                "lin.bias": st["bias"],
            }
        return "gine", lin_in, state
    return "gin", 0, state


def _convert_attn(attn: nn.Module, path: str, c: int) -> tuple[int, float, dict[str, Tensor]]:
    require(attn, path, (nn.MultiheadAttention,), "torch.nn.MultiheadAttention (GPSConv attn_type='multihead')")
    heads = attn.num_heads
    if heads <= 0 or c % heads:
        raise refusal(path, attn, f"a number of heads dividing channels={c}, got heads={heads}")
    if attn.bias_k is not None or attn.bias_v is not None or attn.add_zero_attn:
        raise refusal(path, attn, "add_bias_kv=False and add_zero_attn=False")
    if attn.kdim != c or attn.vdim != c or not attn.batch_first:
        raise refusal(path, attn, f"kdim=vdim=embed_dim={c} and batch_first=True")
    if attn._qkv_same_embed_dim:
        q, k, v = attn.in_proj_weight.detach().chunk(3, 0)
    else:
        q, k, v = (getattr(attn, f"{n}_proj_weight").detach() for n in "qkv")
    b = attn.in_proj_bias.detach() if attn.in_proj_bias is not None else q.new_zeros(3 * c)
    bq, bk, bv = b.chunk(3)
    o = _linear(attn.out_proj, f"{path}.out_proj", c, c)
    state = {
        "q.weight": q,
        "q.bias": bq,
        "k.weight": k,
        "k.bias": bk,
        "v.weight": v,
        "v.bias": bv,
        "o.weight": o["weight"],
        "o.bias": o["bias"],
    }
    return heads, float(attn.dropout), state


def _convert_layer(layer: nn.Module, path: str, c: int) -> _LayerInfo:
    from torch_geometric.nn import GPSConv

    require(layer, path, (GPSConv,), "torch_geometric.nn.GPSConv")
    if layer.channels != c:
        raise refusal(path, layer, f"channels={c} like the first layer, got {layer.channels}")
    heads, attn_dropout, attn_state = _convert_attn(layer.attn, sub(path, "attn"), c)
    state = {f"attn.{k}": v for k, v in attn_state.items()}

    mlp = layer.mlp
    mods = list(mlp) if isinstance(mlp, nn.Sequential) else []
    if len(mods) == 5 and type(mods[1]) is not nn.ReLU:
        raise refusal(sub(path, "mlp.1"), mods[1], "ReLU (GPSConv act='relu')")
    if not (
        len(mods) == 5
        and _is_linear(mods[0])
        and isinstance(mods[2], nn.Dropout)
        and _is_linear(mods[3])
        and isinstance(mods[4], nn.Dropout)
    ):
        raise refusal(sub(path, "mlp"), mlp, "GPSConv's Sequential(Linear, ReLU, Dropout, Linear, Dropout)")
    lin1 = _linear(mods[0], sub(path, "mlp.0"), c, None)
    ffn = lin1["weight"].shape[0]
    lin2 = _linear(mods[3], sub(path, "mlp.3"), ffn, c)
    state |= {f"ffn.lin1.{k}": v for k, v in lin1.items()} | {f"ffn.lin2.{k}": v for k, v in lin2.items()}
    dropout = float(layer.dropout)
    if mods[2].p != dropout or mods[4].p != dropout:
        raise refusal(sub(path, "mlp"), mlp, f"dropout p={dropout} (GPSConv's dropout) in both Dropouts")

    norms = [layer.norm1, layer.norm2, layer.norm3]
    if all(n is None for n in norms):
        norm = "none"
    elif any(n is None for n in norms):
        raise refusal(path, layer, "norm1, norm2, norm3 all set or all None")
    else:
        from torch_geometric.nn.norm import BatchNorm as PygBatchNorm

        norm = "batch"
        for i, (ours, n) in enumerate(zip(("norm_local", "norm_attn", "norm_ffn"), norms, strict=True), 1):
            if not isinstance(n, PygBatchNorm | nn.BatchNorm1d):  # (a subclass is refused by _batchnorm)
                raise refusal(sub(path, f"norm{i}"), n, "GPSConv norm='batch_norm' or None")
            state |= {f"{ours}.{k}": v for k, v in _batchnorm(n, sub(path, f"norm{i}"), c).items()}

    if layer.conv is None:
        local, edge_lin_in = "none", 0
        state = {k: v for k, v in state.items() if not k.startswith("norm_local.")}  # norm1 is unused
    else:
        local, edge_lin_in, conv_state = _convert_gin(layer.conv, sub(path, "conv"), c)
        state |= {f"local.{k}": v for k, v in conv_state.items()}
    return _LayerInfo(heads, ffn, dropout, attn_dropout, local, norm, edge_lin_in, state)


# ---------------------------------------------------------------- locating submodules


def _resolve(
    root: nn.Module, spec: Spec, role: str, names: Sequence[str], auto: bool, ignore: Sequence[str] = ()
) -> Part | None:
    if spec is False:
        return None
    if isinstance(spec, str):
        try:
            return Part(root.get_submodule(spec), spec, True)
        except AttributeError:
            raise UnsupportedModelError(f"{role}={spec!r}: {type(root).__name__} has no submodule {spec!r}") from None
    if isinstance(spec, nn.Module):
        path = path_of(root, spec)
        return Part(spec, path if path is not None else f"<{role}>", path is not None)
    if spec is not None:
        raise TypeError(f"{role} must be an attribute name, a module, None or False; got {type(spec).__name__}")
    if not auto:
        return None
    children = dict(root.named_children())
    for name in names:
        if name in children and not under(name, ignore):
            return Part(children[name], name, True)
    return None


def _resolve_convs(
    root: nn.Module, spec: str | nn.Module | Sequence[str | nn.Module] | None, ignore: Sequence[str] = ()
) -> list[Part]:
    from torch_geometric.nn import GPSConv

    def members(part: Part) -> list[Part]:
        m = part.module
        if isinstance(m, GPSConv):
            return [part]
        kids = list(m.named_children())
        if isinstance(m, nn.ModuleList | nn.Sequential):
            pre = f"{part.path}." if part.path else ""
            return [Part(k, f"{pre}{n}", part.in_root) for n, k in kids]
        if kids and all(isinstance(k, GPSConv) for _, k in kids):
            # a module of its own: its forward may call them in any order, not the registration order
            raise UnsupportedModelError(
                f"{part.path or '<model>'} ({type(m).__name__}): its GPSConv layers "
                f"{', '.join(n for n, _ in kids)} are not in a ModuleList/Sequential, so their call order "
                "is unknown; pass convs=[...] in call order"
            )
        raise refusal(part.path or "<model>", m, "a GPSConv or a ModuleList/Sequential of GPSConv")

    if spec is None:
        for name in _CONVS_NAMES:  # the example's attribute name first
            child = dict(root.named_children()).get(name)
            if child is not None and not under(name, ignore) and any(isinstance(m, GPSConv) for m in child.modules()):
                return members(Part(child, name, True))
        found = [(n, m) for n, m in root.named_modules() if isinstance(m, GPSConv) and not (n and under(n, ignore))]
        if not found:
            # a GT of PyG's TransformerConv layers is the likeliest other model: say that it is not read
            gt = any(type(m).__name__ == "TransformerConv" for m in root.modules())
            also = "; it holds TransformerConv layers, and a TransformerConv GT is not importable" if gt else ""
            raise refusal("<model>", root, f"a model containing torch_geometric.nn.GPSConv layers{also}")
        parents = {n.rpartition(".")[0] for n, _ in found}
        if len(parents) == 1:
            parent = parents.pop()
            if parent or isinstance(root, nn.ModuleList | nn.Sequential | GPSConv):
                return members(Part(root.get_submodule(parent), parent, True))
        raise UnsupportedModelError(
            f"{type(root).__name__}: GPSConv layers at {', '.join(n for n, _ in found)} are not in one "
            "ModuleList/Sequential, so their call order is unknown; pass convs=[...] in call order"
        )
    if isinstance(spec, str | nn.Module):
        part = _resolve(root, spec, "convs", (), False)
        assert part is not None
        return members(part)
    out: list[Part] = []
    for s in spec:
        part = _resolve(root, s, "convs", (), False)
        assert part is not None
        out.extend(members(part))
    return out


def _uncompiled(model: nn.Module) -> tuple[nn.Module, Callable[[Any], Any]]:
    """``model`` with every ``torch.compile`` wrapper in it replaced by the module it wraps (its forward
    runs that module's, on the same weights), and the same replacement for a keyword's modules.

    A wrapper hides its module under ``_orig_mod``, where no part is looked for: a compiled example
    model was refused as "don't know the role of _orig_mod.node_emb, ...", a compiled layer or head
    as "convs.0 (OptimizedModule): expected torch_geometric.nn.GPSConv". A module holding a wrapper
    is replaced by a shallow copy holding the unwrapped one (the user's model is not changed; the
    weights are the same tensors); a module holding none is itself, so a keyword's module is still
    found in the model by identity. A module held in two places is replaced by one copy."""
    from torch._dynamo.eval_frame import OptimizedModule

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (a PyG model, or torch.compile of one), got {type(model).__name__}"
            + (
                " (torch.compile of an already compiled module gives its compiled forward: pass the module)"
                if callable(model)
                else ""
            )
        )
    done: dict[int, nn.Module] = {}

    def plain(m: nn.Module) -> nn.Module:
        if id(m) in done:
            return done[id(m)]
        inner = m
        while isinstance(inner, OptimizedModule):
            inner = inner._orig_mod
        kids = {n: None if k is None else plain(k) for n, k in inner._modules.items()}
        out = inner
        if any(kids[n] is not k for n, k in inner._modules.items()):
            out = copy.copy(inner)
            out.__dict__["_modules"] = kids
        done[id(m)] = done[id(inner)] = out
        return out

    def spec(s: Any) -> Any:
        if isinstance(s, nn.Module):
            return plain(s)
        if isinstance(s, list | tuple):
            return type(s)(spec(x) for x in s)
        return s

    return plain(model), spec


# ---------------------------------------------------------------- entry point
def from_pyg(
    model: nn.Module,
    *,
    convs: str | nn.Module | Sequence[str | nn.Module] | None = None,
    node_encoder: Spec = None,
    pe_encoder: Spec = None,
    pe_norm: Spec = None,
    edge_encoder: Spec = None,
    head: Spec = None,
    readout: str | None = None,
    pe_kind: str | None = None,
    task_level: str = "graph",
    ignore: Sequence[str] = (),
    example: tuple[Any, Tensor] | None = None,
) -> GPS:
    """Convert a PyG model made of ``GPSConv`` layers into our :class:`GPS` with the same outputs.

    ``model`` is a whole model (submodules found by the attribute names of PyG's
    ``examples/graph_gps.py``: ``node_emb``, ``pe_lin``, ``pe_norm``, ``edge_emb``, ``convs``,
    ``mlp``, and a few common alternatives) or a bare ``ModuleList``/``Sequential`` of ``GPSConv``
    (then encoders and head are only what the keywords pass). Each keyword takes an attribute path,
    a module, ``None`` (auto-detect) or ``False`` (the model has none: the input is taken as is).
    A ``torch.compile`` wrapper, of the model or of any part, is read as the module it wraps.

    * ``node_encoder``: ``Embedding`` (categorical ``x``), ``Linear`` (float ``x``), OGB
      ``AtomEncoder``-like, or none (float ``x`` already ``channels - pe_dim`` wide).
    * ``pe_encoder`` (a ``Linear(k, p)``, or ``Sequential(BatchNorm1d(k), Linear(k, p))``) and
      ``pe_norm`` (``BatchNorm1d(k)``): the PE of kind ``pe_kind`` (``"rwse"``/``"lap"``) is
      concatenated after the node encoding when ``p < channels``, added when ``p == channels``.
    * ``pe_kind``: the transform the PE encoder was trained on, ``"rwse"`` (``AddRandomWalkPE``)
      or ``"lap"`` (``AddLaplacianEigenvectorPE``); required with a PE encoder unless ``example``'s
      encoding says it (named by its attribute, or RWSE as the runtime computes it), and checked
      against that encoding (:func:`~gtcompress.models.from_pyg_pe.pe_kind_for`).
    * ``edge_encoder``: as ``node_encoder`` for ``edge_attr`` (used by GINE layers only).
    * ``head``: ``Linear`` / ``ReLU`` alternation of any widths (our ``mlp_head``), applied after the
      readout when ``task_level="graph"``. ``Dropout`` in it is the identity in eval mode and is left
      out: fine-tuning the import (``gtc prune``'s, say) trains its head without that dropout.
    * ``readout``: ``"sum"`` (``global_add_pool``), ``"mean"`` (``global_mean_pool``) or ``"max"``
      (``global_max_pool``). Required for a graph-level model unless the model holds a
      ``SumAggregation``/``MeanAggregation``/``MaxAggregation`` module, or its forward calls exactly
      one of those three functions and no other reducer (``scatter``, ``index_add_``, ...), directly,
      in a method of the model or in a function of its module (then ``readout`` must agree), or
      ``example`` is given (then each is tried, those the forward calls first, and a ``readout`` that
      disagrees with the forward is checked rather than refused). A forward calling several of them takes
      a ``readout`` among those. The calls are read from the bytecode's names, not run: a pooling written
      by hand (``x.sum(0)``) is not seen, and ``example`` is what checks it.
    * ``example``: ``(batch, expected)``, a PyG ``Batch`` and the PyG model's own output on it in
      eval mode (``forward``'s signature is yours, so you run it). The import is run on ``batch``
      (PE from ``batch.pe`` or PyG's PE attribute names) and refused if it differs by more than
      :data:`EXAMPLE_TOLERANCE` of ``max(1, max |output|)`` (a few steps of a half-precision dtype). An
      output without the trailing axis of width 1 (a forward ending in ``.view(-1)``) is compared as is;
      another shape than the import's is refused, naming both.
    * ``ignore``: attribute paths of modules the forward does not use: never auto-detected, and
      refused when named by a keyword or inside the layers the import runs.

    The result is in the source model's train/eval mode, dtype and device. Training-only settings
    (BatchNorm momentum, ``train_eps`` trainability, Embedding ``padding_idx``) are not carried.
    """
    from torch_geometric.nn import GPSConv

    if task_level not in ("graph", "node"):
        raise ValueError(f"task_level must be 'graph' or 'node', got {task_level!r}")
    if readout is not None and readout not in _POOLS:
        raise ValueError(f"readout must be 'sum', 'mean' or 'max', got {readout!r}")
    if pe_kind is not None and pe_kind not in PE_KINDS:
        raise ValueError(f"pe_kind must be 'rwse' or 'lap', got {pe_kind!r}")

    model, plain = _uncompiled(model)
    convs, node_encoder, pe_encoder, pe_norm, edge_encoder, head = map(
        plain, (convs, node_encoder, pe_encoder, pe_norm, edge_encoder, head)
    )
    layers = _resolve_convs(model, convs, ignore)
    check_not_ignored("convs", layers, ignore)
    if not layers:
        raise refusal("<convs>", model, "at least one GPSConv")
    first = layers[0].module
    if not isinstance(first, GPSConv):
        raise refusal(layers[0].path, first, "torch_geometric.nn.GPSConv")
    c = int(first.channels)
    infos = [_convert_layer(p.module, p.path, c) for p in layers]
    for attr in ("heads", "ffn_dim", "dropout", "attn_dropout", "local", "norm", "edge_lin_in"):
        ref = getattr(infos[0], attr)
        for p, info in zip(layers, infos, strict=True):
            if getattr(info, attr) != ref:
                names = {"local": "local conv kind", "edge_lin_in": "GINE edge_dim", "ffn_dim": "MLP width"}
                what = names.get(attr, attr)
                raise refusal(
                    p.path,
                    p.module,
                    f"the same {what} in every layer ({ref!r} in {layers[0].path}), got {getattr(info, attr)!r}",
                )
    info0 = infos[0]

    # Encoders and head: auto-detected only on a whole model, never inside a bare layer list.
    auto = not (isinstance(model, nn.ModuleList | nn.Sequential | GPSConv))
    node_p = _resolve(model, node_encoder, "node_encoder", _NODE_NAMES, auto, ignore)
    pe_p = _resolve(model, pe_encoder, "pe_encoder", _PE_NAMES, auto, ignore)
    pe_norm_p = _resolve(model, pe_norm, "pe_norm", _PE_NORM_NAMES, auto, ignore)
    edge_p = _resolve(model, edge_encoder, "edge_encoder", _EDGE_NAMES, auto, ignore)
    head_p = _resolve(model, head, "head", _HEAD_NAMES, auto, ignore)
    pool_p, pooled = _pooling(model, ignore) if auto else (None, None)
    for role, part in (
        ("node_encoder", node_p),
        ("pe_encoder", pe_p),
        ("pe_norm", pe_norm_p),
        ("edge_encoder", edge_p),
        ("head", head_p),
        ("pooling", pool_p),
    ):
        check_not_ignored(role, [part] if part is not None else [], ignore)
    parts = [*layers, *(p for p in (node_p, pe_p, pe_norm_p, edge_p, head_p, pool_p) if p is not None)]
    check_covered(model, parts, ignore)
    check_no_hooks(model, parts)

    # Positional encoding: Linear(k, p), optionally after BatchNorm1d(k).
    pe: dict[str, int] = {}
    pe_dim, pe_state = 0, {}
    pe_lin_p = pe_p
    if pe_p is not None and isinstance(pe_p.module, nn.Sequential):
        mods = list(pe_p.module)
        if len(mods) == 2 and pe_norm_p is None:
            pe_norm_p = Part(mods[0], f"{pe_p.path}.0", pe_p.in_root)
            mods = mods[1:]
        if len(mods) != 1:
            raise refusal(pe_p.path, pe_p.module, "Linear(k, p) or Sequential(BatchNorm1d(k), Linear(k, p))")
        pe_lin_p = Part(mods[0], f"{pe_p.path}.{len(pe_p.module) - 1}", pe_p.in_root)
    if pe_lin_p is not None:
        st = _linear(pe_lin_p.module, pe_lin_p.path)
        p_out, k = st["weight"].shape
        if p_out > c:
            raise refusal(pe_lin_p.path, pe_lin_p.module, f"a PE projection at most channels={c} wide, got {p_out}")
        pe_kind = pe_kind_for(pe_kind, example, k, pe_lin_p.path)
        pe = {pe_kind: k}
        pe_dim = 0 if p_out == c else p_out
        pe_state = {f"pe_encoders.{pe_kind}.lin.{n}": v for n, v in st.items()}
        if pe_norm_p is not None:
            bn = _batchnorm(pe_norm_p.module, pe_norm_p.path, k)
            pe_state |= {f"pe_encoders.{pe_kind}.norm.{n}": v for n, v in bn.items()}
    elif pe_norm_p is not None:
        raise refusal(pe_norm_p.path, pe_norm_p.module, "a PE BatchNorm together with a PE Linear (pe_encoder=)")

    node_width = c - pe_dim
    node = _feature_encoder(node_p, "node", node_width)
    if node.width != node_width:
        how = f"channels={c} - PE width {pe_dim}" if pe_dim else f"channels={c}"
        assert node_p is not None
        raise refusal(node_p.path, node_p.module, f"node encoding width {node_width} ({how}), got {node.width}")

    edge: _Encoder | None = None
    if info0.local == "gine":
        edge_width = info0.edge_lin_in or c
        edge = _feature_encoder(edge_p, "edge", edge_width)
        if edge.width != edge_width:
            assert edge_p is not None
            via = f"GINEConv edge_dim={edge_width}" if info0.edge_lin_in else f"channels={c}"
            raise refusal(edge_p.path, edge_p.module, f"edge encoding width {edge_width} ({via}), got {edge.width}")
    # (an edge encoder next to GIN layers is dead code in PyG: GINConv takes no edge_attr)

    hidden_widths, out_dim, head_state = _head(head_p, c)
    head_layers = len(hidden_widths) + 1
    # the halving head (every model gtcompress trains) leaves head_widths empty: its config.json is as before
    explicit = [] if hidden_widths == head_widths(c, head_layers) else hidden_widths

    held = (pooled, f"{pool_p.path} ({type(pool_p.module).__name__})") if pool_p is not None and pooled else None
    code = read_forward(model) if auto else ForwardPools(type(model).__name__)
    if example is None:
        check_placed(model, code, parts, ignore)
    candidates = settle_readout(task_level, readout, held, code, example is not None)
    ref = next((t for t in first.parameters() if t.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    tolerance = dtype_tolerance(EXAMPLE_TOLERANCE, dtype)  # example='s, in the model's dtype
    device = ref.device if ref is not None else torch.device("cpu")
    state: dict[str, Tensor] = {f"node_encoder.{k}": v for k, v in node.state.items()}
    if edge is not None:
        # An edge encoding narrower than channels (GINE edge_dim) is zero-padded; `lin` ignores the pad.
        state |= {
            f"edge_encoder.{k}": _pad_rows(v, c) if k.startswith("linear") else _pad_rows(v.T, c).T
            for k, v in edge.state.items()
        }
    state |= pe_state
    for i, info in enumerate(infos):
        state |= {f"layers.{i}.{k}": v for k, v in info.state.items()}
    state |= {f"head.{k}": v for k, v in head_state.items()}

    diffs: dict[str, float] = {}
    for pool in candidates:
        cfg = ModelConfig(
            arch="gps",
            node_features=node.spec,
            out_dim=out_dim,
            task_level=task_level,
            edge_features=edge.spec if edge is not None else None,
            hidden=c,
            num_layers=len(layers),
            heads=info0.heads,
            head_dim=c // info0.heads,
            ffn_dim=info0.ffn_dim,
            dropout=info0.dropout,
            attn_dropout=info0.attn_dropout,
            norm=info0.norm,
            local_conv=info0.local,
            pe=pe,
            pe_dim=pe_dim,
            pe_norm=pe_norm_p is not None,
            readout=pool,
            head_layers=head_layers,
            head_widths=explicit,
            gine_edge_dim=c if info0.edge_lin_in else 0,
        )
        ours = build_model(cfg)
        assert isinstance(ours, GPS)
        ours.to(device=device, dtype=dtype)
        ours.load_state_dict(state, strict=True)  # a missed or extra tensor is a mapping bug: fail loudly
        ours.train(model.training)
        if example is None:
            check_made_up(model, ours, node.spec, edge.spec if edge is not None else None, pe_kind, tolerance)
            return ours
        diffs[pool] = example_diff(ours, example, pe_kind or "rwse")  # (no PE encoder: no kind used)
        if diffs[pool] <= tolerance:
            return ours
    raise UnsupportedModelError(mismatch(type(model).__name__, diffs, readout, pooled or code.settled(), tolerance))


def _pooling(model: nn.Module, ignore: Sequence[str] = ()) -> tuple[Part | None, str | None]:
    """A pooling module held by the model (``SumAggregation`` -> ``"sum"``, ``MeanAggregation`` ->
    ``"mean"``, ``MaxAggregation`` -> ``"max"``), found by type among its direct children. Any other
    aggregation held there is refused whatever its name: only ``pool``/``readout``/... were, so a
    ``SoftmaxAggregation`` at ``graph_pool`` would import as the ``readout=`` passed."""
    from torch_geometric.nn import aggr

    kinds = {aggr.SumAggregation: "sum", aggr.MeanAggregation: "mean", aggr.MaxAggregation: "max"}
    for name, mod in model.named_children():
        if under(name, ignore):
            continue
        kind = next((k for cls, k in kinds.items() if type(mod) is cls), None)
        if kind is not None:
            return Part(mod, name, True), kind
        if isinstance(mod, aggr.Aggregation):  # held by the model itself: its readout, whatever its name
            raise refusal(
                name,
                mod,
                "a SumAggregation, MeanAggregation or MaxAggregation readout (global_add_pool / "
                "global_mean_pool / global_max_pool), or ignore=[...] if the forward does not use it",
            )
    return None, None
