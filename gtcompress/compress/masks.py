"""Attach a :class:`~gtcompress.compress.gates.GateSet` to a plain model through forward hooks.

The model classes stay mask-free: gating lives in hooks that :meth:`GateHandle.remove` takes off
again, and in the gate set, which is not a submodule of the model (its parameters are optimised
next to the model's, its state is saved apart). Per layer ``l``:

* heads — a forward *pre*-hook on ``attn.o`` multiplies head ``h``'s slice of the concatenated
  head outputs by :math:`z^{head}_{l,h}` (what slicing the head out of ``o`` computes when 0);
* attention sublayer — a forward hook on ``attn.o`` multiplies its output by :math:`z^{attn}_l`,
  and by 0 when every head gate is 0 (a sublayer without heads is removed, bias included);
* FFN units — a pre-hook on ``ffn.lin2`` multiplies hidden unit ``j`` by :math:`z^{ffn}_{l,j}`;
* FFN sublayer — a forward hook on ``ffn`` multiplies its output by :math:`z^{ffn\\,layer}_l`
  (and by 0 when every unit gate is 0);
* tokens — the layer's own :class:`~gtcompress.compress.tokens.TokenSelector` switches to
  straight-through Gumbel top-k while training.

A forward pre-hook on the model draws fresh gate values once per forward (training) or fixes
them to the discrete plan (eval): with gates exactly 0/1 and deterministic top-k, the gated model
in eval mode computes what :func:`~gtcompress.compress.materialise.materialise` builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from gtcompress.compress.gates import GateSet
from gtcompress.compress.materialise import Plan
from gtcompress.errors import UnsupportedModelError
from gtcompress.models.layers import GTLayer
from gtcompress.preprocess.spec import Lowering

__all__ = ["GateHandle", "attach_gates", "plan_values"]


def plan_values(gates: GateSet, plan: Plan) -> dict[tuple[str, int], Tensor]:
    """The 0/1 gate values that realise ``plan``."""
    out: dict[tuple[str, int], Tensor] = {}
    for i, lp in enumerate(plan.layers):
        key = str(i)
        if key in gates.heads:
            z = torch.zeros(gates.head_counts[i])
            z[lp.heads] = 1.0
            out[("heads", i)] = z
        if key in gates.attn_layer:
            out[("attn", i)] = torch.ones(1) if lp.heads else torch.zeros(1)
        if key in gates.ffn:
            z = torch.zeros(gates.ffn_widths[i])
            z[lp.ffn] = 1.0
            out[("ffn", i)] = z
        if key in gates.ffn_layer:
            out[("ffn_layer", i)] = torch.ones(1) if lp.ffn else torch.zeros(1)
    return out


class GateHandle:
    """Hooks of one attachment; :meth:`remove` restores the plain model."""

    def __init__(self, model: nn.Module, gates: GateSet, handles: list[Any], selectors: list[nn.Module]) -> None:
        self.model, self.gates, self._handles, self._selectors = model, gates, handles, selectors

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for sel in self._selectors:
            sel.gumbel = False  # type: ignore[assignment]
        self._selectors = []

    def __enter__(self) -> GateHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach_gates(
    model: nn.Module,
    gates: GateSet,
    eval_plan: Callable[[], Plan | None] | None = None,
    gumbel_tokens: bool = True,
) -> GateHandle:
    """Register the gating hooks on ``model`` (see module docstring).

    ``eval_plan`` is asked for the discrete plan at every eval-mode forward (``None`` → each gate
    open iff its open probability exceeds 1/2)."""
    handles: list[Any] = []

    def before_forward(module: nn.Module, args: Any) -> None:
        gates.train(module.training)
        if not module.training:
            plan = eval_plan() if eval_plan is not None else None
            gates.fixed = plan_values(gates, plan) if plan is not None else None
        gates.refresh()

    handles.append(model.register_forward_pre_hook(before_forward))

    def not_padded(module: nn.Module, args: tuple[Any, ...]) -> None:
        if len(args) > 1 and getattr(args[1], "lowering", None) is Lowering.PADDED:
            raise UnsupportedModelError(
                "pruning gates need the scatter, dense or plugin lowering: the padded one folds the output "
                "projection the head gates act on into its own matmuls"
            )

    for i, layer in enumerate(model.layers):  # type: ignore[attr-defined]
        if layer.attn is not None:
            dh = layer.attn.head_dim
            if isinstance(layer, GTLayer) and layer.tokens is None:  # the one layer that runs attn.padded
                handles.append(layer.register_forward_pre_hook(not_padded))

            def head_pre(mod: nn.Module, args: tuple[Tensor, ...], i: int = i, dh: int = dh) -> Any:
                z = gates.value("heads", i)
                if z is None:
                    return None
                x = args[0]
                return (x * z.to(x.dtype).repeat_interleave(dh),)

            def attn_out(mod: nn.Module, args: Any, out: Tensor, i: int = i) -> Tensor:
                return out * _sublayer_factor(gates.value("attn", i), gates.value("heads", i), out)

            handles.append(layer.attn.o.register_forward_pre_hook(head_pre))
            handles.append(layer.attn.o.register_forward_hook(attn_out))
        if layer.ffn is not None:

            def unit_pre(mod: nn.Module, args: tuple[Tensor, ...], i: int = i) -> Any:
                z = gates.value("ffn", i)
                if z is None:
                    return None
                return (args[0] * z.to(args[0].dtype),)

            def ffn_out(mod: nn.Module, args: Any, out: Tensor, i: int = i) -> Tensor:
                return out * _sublayer_factor(gates.value("ffn_layer", i), gates.value("ffn", i), out)

            handles.append(layer.ffn.lin2.register_forward_pre_hook(unit_pre))
            handles.append(layer.ffn.register_forward_hook(ffn_out))

    selectors = [layer.tokens for layer in model.layers if getattr(layer, "tokens", None) is not None]  # type: ignore[attr-defined]
    if gumbel_tokens:
        for sel in selectors:
            sel.gumbel = True
    return GateHandle(model, gates, handles, selectors)


def _sublayer_factor(layer_z: Tensor | None, unit_z: Tensor | None, like: Tensor) -> Tensor:
    f = torch.ones((), dtype=like.dtype, device=like.device)
    if layer_z is not None:
        f = f * layer_z.to(like.dtype).reshape(())
    if unit_z is not None:
        f = f * (unit_z.detach() != 0).any().to(like.dtype)
    return f
