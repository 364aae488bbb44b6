r"""Hard-concrete (L0) gates (Louizos, Welling & Kingma 2018), as CoFi pruning uses them.

A gate with parameter :math:`\log\alpha` samples, during training,

.. math::
    u \sim \mathcal U(0, 1), \quad
    s = \sigma\!\Big(\frac{\log u - \log(1-u) + \log\alpha}{\beta}\Big), \quad
    z = \min\!\big(1, \max(0,\; s(\zeta - \gamma) + \gamma)\big)

with :math:`\beta = 2/3, \gamma = -0.1, \zeta = 1.1`: the stretched-and-clipped sigmoid puts
finite mass on exactly 0 and exactly 1 and is differentiable in :math:`\log\alpha` in between.
The probability that a gate is open (non-zero), which the expected cost uses, is

.. math::
    P(z \neq 0) = \sigma\big(\log\alpha - \beta \log(-\gamma/\zeta)\big).

In eval mode a gate is exactly 0 or 1: open iff :math:`P(z \neq 0) > 1/2` — unless a discrete
plan (chosen to meet the budget, :mod:`gtcompress.compress.budget`) overrides it.

:class:`GateSet` holds the gates of one model on the four GTSP axes named in :data:`AXES`
(``tokens`` has no gate: its keep ratio is set directly and its scorer lives in the model).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gtcompress.errors import ConfigError

__all__ = ["AXES", "GateSet", "HardConcrete", "parse_axes"]

AXES = ("tokens", "heads", "layers", "ffn", "weights")


def parse_axes(text: str | list[str] | tuple[str, ...], allow_auto: bool = False) -> tuple[str, ...]:
    """``"tokens,heads"`` → ``("tokens", "heads")``; unknown names raise :class:`ConfigError`.
    With ``allow_auto``, ``"auto"`` stays in the result for the caller to expand once it knows the model."""
    items = [a.strip().lower() for a in (text.split(",") if isinstance(text, str) else text)]
    items = [a for a in items if a]
    known = (*AXES, "auto") if allow_auto else AXES
    bad = [a for a in items if a not in known]
    if bad:
        raise ConfigError(f"unknown axis {', '.join(map(repr, bad))}; expected some of {', '.join(known)}")
    if not items:
        raise ConfigError(f"no compression axis given; expected some of {', '.join(AXES)}")
    return tuple(dict.fromkeys(items))


class HardConcrete(nn.Module):
    """``n`` independent hard-concrete gates."""

    def __init__(
        self, n: int, init_prob: float = 0.95, beta: float = 2.0 / 3.0, gamma: float = -0.1, zeta: float = 1.1
    ) -> None:
        super().__init__()
        self.n, self.beta, self.gamma, self.zeta = n, beta, gamma, zeta
        self._shift = beta * math.log(-gamma / zeta)
        # log α such that P(open) = init_prob, plus a little noise to break ties
        init = math.log(init_prob / (1.0 - init_prob)) + self._shift
        self.log_alpha = nn.Parameter(torch.full((n,), init) + 0.01 * torch.randn(n))

    def extra_repr(self) -> str:
        return f"n={self.n}"

    def prob_open(self) -> Tensor:
        """``P(z ≠ 0)`` per gate (differentiable)."""
        return torch.sigmoid(self.log_alpha - self._shift)

    def sample(self) -> Tensor:
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic(self) -> Tensor:
        """Exactly 0/1: open iff ``P(z ≠ 0) > 1/2``."""
        return (self.log_alpha.detach() > self._shift).to(self.log_alpha.dtype)

    def forward(self) -> Tensor:
        return self.sample() if self.training else self.deterministic()


class GateSet(nn.Module):
    """Gates of one model: per layer a head gate vector, an attention-sublayer gate, an FFN channel
    gate vector and an FFN-sublayer gate (each only when its axis is enabled and the sublayer
    exists). :meth:`refresh` draws (training) or fixes (eval) the values one forward uses."""

    def __init__(self, heads: list[int], ffn_widths: list[int], axes: tuple[str, ...], init_prob: float = 0.95):
        super().__init__()
        self.axes = tuple(axes)
        self.head_counts, self.ffn_widths = list(heads), list(ffn_widths)
        self.heads = nn.ModuleDict()
        self.attn_layer = nn.ModuleDict()
        self.ffn = nn.ModuleDict()
        self.ffn_layer = nn.ModuleDict()
        for i, (h, f) in enumerate(zip(heads, ffn_widths, strict=True)):
            key = str(i)
            if h > 0 and "heads" in axes:
                self.heads[key] = HardConcrete(h, init_prob)
            if h > 0 and "layers" in axes:
                self.attn_layer[key] = HardConcrete(1, init_prob)
            if f > 0 and "ffn" in axes:
                self.ffn[key] = HardConcrete(f, init_prob)
            if f > 0 and "layers" in axes:
                self.ffn_layer[key] = HardConcrete(1, init_prob)
        self.current: dict[tuple[str, int], Tensor] = {}
        self.fixed: dict[tuple[str, int], Tensor] | None = None  # discrete values used in eval mode
        self.probe: dict[tuple[str, int], Tensor] | None = None  # values to differentiate (importance)

    @classmethod
    def for_model(cls, model: nn.Module, axes: tuple[str, ...], init_prob: float = 0.95) -> GateSet:
        layers = model.layers  # type: ignore[attr-defined]
        heads = [lay.attn.heads if lay.attn is not None else 0 for lay in layers]
        widths = [lay.ffn.lin1.out_features if lay.ffn is not None else 0 for lay in layers]
        return cls(heads, widths, axes, init_prob)

    @property
    def num_layers(self) -> int:
        return len(self.head_counts)

    def groups(self) -> dict[str, nn.ModuleDict]:
        return {"heads": self.heads, "attn": self.attn_layer, "ffn": self.ffn, "ffn_layer": self.ffn_layer}

    def refresh(self) -> None:
        """Values for the next forward: samples in training, the fixed plan (or 0/1 thresholds) in eval."""
        self.current = {}
        for kind, group in self.groups().items():
            for key, gate in group.items():
                idx = (kind, int(key))
                if self.probe is not None and idx in self.probe:
                    self.current[idx] = self.probe[idx]
                elif not self.training and self.fixed is not None and idx in self.fixed:
                    self.current[idx] = self.fixed[idx].to(gate.log_alpha.dtype)
                else:
                    self.current[idx] = gate()

    def value(self, kind: str, layer: int) -> Tensor | None:
        return self.current.get((kind, layer))

    def prob_open(self, kind: str, layer: int) -> Tensor | None:
        group, key = self.groups()[kind], str(layer)
        return group[key].prob_open() if key in group else None

    @torch.no_grad()
    def init_from_importance(self, importance: dict[tuple[str, int], Tensor], spread: float = 1.0) -> None:
        """Shift the ``log α`` of head and FFN-unit gates by ``spread`` × the standardised *rank* of
        their importance within their layer, so each layer's ranking starts from the importance
        order while every gate stays likely open. How much each layer keeps (and whether whole
        sublayers go) is left to the budget term and training: raw importances of different layers
        are not comparable, and ranking them globally strips whole sublayers."""
        for (kind, layer), imp in importance.items():
            if kind not in ("heads", "ffn") or imp.numel() < 2:
                continue
            ranks = torch.argsort(torch.argsort(imp.reshape(-1).double(), stable=True)).double()
            z = (ranks - ranks.mean()) / ranks.std()
            gate = self.groups()[kind][str(layer)]
            gate.log_alpha.add_(spread * z.to(gate.log_alpha.dtype))

    def log_prob_open(self, kind: str, layer: int) -> Tensor | None:
        p = self.prob_open(kind, layer)
        return None if p is None else torch.log(p.detach().clamp_min(1e-12))
