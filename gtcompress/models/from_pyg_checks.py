"""The checks of an import as a whole (part of :func:`~gtcompress.models.from_pyg.from_pyg`): every weight
belongs to a converted part, no part is one ``ignore=`` names, no module runs a hook the copy would drop,
the forward does nothing visible beyond the supported order, and the import answers as the PyG model on
``example=`` or, without it, on made-up graphs (:mod:`gtcompress.models.from_pyg_selfcheck`). Each
refusal names the module and what to do; the import refuses rather than guess."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gtcompress.data.base import FeatureSpec
from gtcompress.errors import UnsupportedModelError
from gtcompress.models.from_pyg_parts import Part, refusal, sub, under
from gtcompress.models.from_pyg_readout import ForwardPools
from gtcompress.models.from_pyg_selfcheck import made_up_example
from gtcompress.models.model import GPS

__all__ = [
    "check_covered",
    "check_made_up",
    "check_no_hooks",
    "check_not_ignored",
    "check_placed",
    "example_diff",
    "mismatch",
]


def check_not_ignored(role: str, parts: Sequence[Part], ignore: Sequence[str]) -> None:
    """``ignore=`` says the forward does not use a module; a module the import runs cannot be one.
    Auto-detection skips ignored paths, so this catches a part named explicitly, a layer of an
    auto-detected list, or an ignored piece inside a converted part: importing it anyway used to
    contradict the user silently (``ignore=["pe_norm"]`` still normalised the PE, 0.18 off)."""
    for part in parts:
        if not part.in_root:
            continue
        for q in ignore:
            if part.path == "" or under(part.path, [q]) or q.startswith(part.path + "."):
                instead = (
                    "pass convs=[...] naming only the layers the forward calls"
                    if role == "convs"
                    else f"pass {role}=False if the forward does not use it"
                )
                what = "a layer" if role == "convs" else f"the {role}"
                raise UnsupportedModelError(
                    f"ignore={q!r}: {part.path or '<model>'} ({type(part.module).__name__}) is {what} the "
                    f"import runs, so it cannot be ignored; {instead}"
                )


def check_covered(root: nn.Module, parts: list[Part], ignore: Sequence[str]) -> None:
    """Every parameter and buffer of the model must belong to a converted part (or be ignored):
    a module we do not know the role of may change the output, so we refuse to guess."""
    claimed = [p.path for p in parts if p.in_root] + list(ignore)
    if "" in claimed:
        return
    unclaimed: dict[str, nn.Module] = {}
    for name in root.state_dict():
        if any(name == p or name.startswith(p + ".") for p in claimed):
            continue
        # name the outermost module holding this tensor that holds nothing claimed
        atoms = name.split(".")
        for i in range(1, len(atoms) + 1):
            prefix = ".".join(atoms[:i])
            if not any(p.startswith(prefix + ".") for p in claimed):
                break
        owner = prefix if i < len(atoms) else ".".join(atoms[:-1])
        unclaimed.setdefault(owner or name, root.get_submodule(owner) if owner else root)
    if unclaimed:
        desc = ", ".join(f"{n} ({type(m).__name__})" for n, m in unclaimed.items())
        raise UnsupportedModelError(
            f"{type(root).__name__}: don't know the role of {desc}; expected only GPSConv layers, "
            "node/PE/edge encoders and a head — name them with convs=, node_encoder=, pe_encoder=, "
            "pe_norm=, edge_encoder=, head=, or pass ignore=[...] for modules the forward does not use"
        )


def check_placed(root: nn.Module, code: ForwardPools, parts: list[Part], ignore: Sequence[str]) -> None:
    """Without ``example=``, refuse what the forward visibly does beyond the supported order, which the
    import (a copy of the modules; the forward is not run) would drop without a word: a call of an
    activation of its own (``F.relu`` between layers: outputs off by 4.7) or of ``reversed`` (layers in
    reverse order: off by 0.5), and a module of the model's own without weights (``self.act = nn.ReLU()``),
    which no weight check sees. Dropout is the identity in eval mode and passes."""
    fix = "pass example=(batch, output) to check the import on the model's own output"
    if code.unplaced:
        calls = ", ".join(f"{n} (in {w})" for n, w in code.unplaced.items())
        raise UnsupportedModelError(
            f"{code.owner}'s forward calls {calls}, which the import cannot place: it copies the modules and does "
            "not run the forward, whose order it takes as encoders -> GPSConv layers -> pooling -> head with "
            f"activations inside those modules; {fix}"
        )
    claimed = [p.path for p in parts if p.in_root]
    for name, m in root.named_children():
        if under(name, ignore) or any(c == name or c.startswith(name + ".") for c in claimed):
            continue
        if isinstance(m, nn.Dropout | nn.AlphaDropout | nn.FeatureAlphaDropout) or any(
            True for _ in itertools.chain(m.parameters(), m.buffers())
        ):
            continue  # dropout: the identity in eval; weights: check_covered has named them
        raise refusal(
            name,
            m,
            "a module the import knows the place of (GPSConv layers, encoders, pooling, head): it holds no "
            "weights, so the forward may apply it anywhere; pass ignore=[...] naming it if the forward does not "
            f"use it, or {fix}",
        )


def check_made_up(
    model: nn.Module, ours: GPS, node: FeatureSpec, edge: FeatureSpec | None, pe_kind: str | None, tolerance: float
) -> None:
    """Without ``example=``, run ``model``'s forward on made-up graphs where its signature is PyG's example's or
    one batch object's (:mod:`gtcompress.models.from_pyg_selfcheck`) and refuse an import that answers them
    otherwise."""
    cfg = ours.config
    pe = (pe_kind or "rwse", next(iter(cfg.pe.values()))) if cfg.pe else None
    made_up = made_up_example(model, node, edge, pe, cfg.task_level, cfg.out_dim)
    if made_up is None:
        return
    diff = example_diff(ours, made_up, pe[0] if pe else "rwse")
    if not diff <= tolerance:
        raise UnsupportedModelError(
            f"{type(model).__name__}: the import differs from the PyG model on graphs from_pyg made up and ran "
            f"through {type(model).__name__}.forward (max |diff| {diff:.3g}, over max(1, max |output|); tolerance "
            f"{tolerance:.3g}); likely cause: a forward in another order than encoders -> GPSConv layers -> "
            "pooling -> head (the encoding concatenated before the node embedding, the head before the pooling, "
            "edge features other than the encoded ones); pass example=(batch, output) to check it on your own batch"
        )


def check_no_hooks(root: nn.Module, parts: list[Part]) -> None:
    """Refuse a model, or a module of a part the import copies, with forward (pre-)hooks: the copy takes
    parameters, not what hooks compute. ``torch.nn.utils.prune`` and the old ``weight_norm`` keep the
    weight forward uses in a pre-hook, recomputed only at the next forward, so a pruned model loaded
    with ``load_state_dict`` (or stepped by an optimiser) imported its stale ``.weight`` without a word,
    its outputs off by 0.006 to 2.3; a hook that scales an output was dropped the same way."""
    seen: set[int] = set()
    where = [("", root, False)] + [(p.path, p.module, True) for p in parts]
    for base, top, recurse in where:
        mods = list(top.named_modules()) if recurse else [("", top)]
        for name, m in mods:
            if id(m) in seen:
                continue
            seen.add(id(m))
            if any(isinstance(t, nn.parameter.UninitializedParameter) for t in m.parameters(recurse=False)):
                continue  # a lazy module's own init hook: the part's converter says what to do ("run one forward")
            hooks = [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]
            if hooks:
                kinds = ", ".join(sorted({getattr(h, "__name__", None) or type(h).__name__ for h in hooks}))
                raise refusal(
                    sub(base, name) if name else base,
                    m,
                    f"no forward hooks, got {len(hooks)} ({kinds}): the import copies parameters and runs no "
                    "hook; remove them first (torch.nn.utils.prune.remove(module, 'weight'), "
                    "torch.nn.utils.remove_weight_norm(module), or the handle's remove())",
                )


def example_diff(ours: GPS, example: tuple[Any, Tensor], pe_kind: str) -> float:
    """max |ours(batch) - expected| in eval mode, over max(1, max |expected|). An ``expected`` without the
    import's trailing ``out_dim=1`` axis is compared as is; any other shape is refused, naming both shapes."""
    from gtcompress.graph import GraphBatch

    batch, expected = example
    gb = GraphBatch.from_pyg(batch)
    if ours.config.pe and pe_kind not in gb.pe and getattr(batch, "pe", None) is not None:
        gb.pe = {**gb.pe, pe_kind: batch.pe}
    was_training = ours.training
    ours.eval()
    with torch.no_grad():
        got = ours(gb)
    ours.train(was_training)
    if got.shape[-1:] == (1,) and expected.shape == got.shape[:-1]:
        got = got.squeeze(-1)  # a forward ending in .view(-1) / .squeeze(-1): the same values
    if got.shape != expected.shape:
        # Not a difference of values: reported as one, it read "max |diff| inf ... likely cause: a
        # forward that does more than ...", blaming a model that imports fine for a shape.
        per = "graph" if ours.config.task_level == "graph" else "node"
        raise UnsupportedModelError(
            f"example=: the expected output has shape {list(expected.shape)}, the import's output on the "
            f"batch has shape {list(got.shape)} (one row per {per}, out_dim={ours.config.out_dim} columns); "
            "pass the PyG model's own output on the same batch (and task_level='node' for a node-level model)"
        )
    got, want = got.float(), expected.float()
    return float((got - want).abs().max() / want.abs().max().clamp(min=1.0))


def mismatch(name: str, diffs: dict[str, float], readout: str | None, pooled: str | None, tolerance: float) -> str:
    tried = ", ".join(f"readout={k!r}: max |diff| {v:.3g}" for k, v in diffs.items())
    if readout is not None or pooled is not None:
        cause = (
            "the pooling (the forward may pool with another function than the readout given) or a forward that "
            "does more than encoders -> GPSConv layers -> pooling -> head"
        )
    else:
        cause = "a forward that does more than encoders -> GPSConv layers -> sum/mean/max pooling -> head"
    return (
        f"{name}: the import differs from the PyG model on example= ({tried}, over max(1, max |output|); "
        f"tolerance {tolerance:.3g}); likely cause: {cause}. Was the PyG model's output taken in eval mode?"
    )
