r"""How much, when: a cost model calibrated by measurement, the Lagrangian, the discrete choice.

**Cost model.** With per-layer head counts :math:`H_l` and FFN widths :math:`F_l`, the measured
FLOPs of a (materialised) model on a fixed reference batch are exactly

.. math::
    C = C_0 + \sum_l [H_l > 0]\,(a^{fix}_l + H_l\, a_l) + \sum_l [F_l > 0]\,(b^{fix}_l + F_l\, b_l)

because q/k/v/o and the attention itself are linear in the number of heads, the FFN is linear in
its width, and nothing else changes (:math:`a^{fix}` is the token scorer; at a fixed token keep
ratio) — except what every attention sublayer needs and none computes once all are gone (a
Graphormer's shortest paths), :math:`C_{any}`, subtracted from a plan that keeps no attention.
:meth:`CostModel.calibrate` *measures* the coefficients with
:func:`gtcompress.cost.count_flops` on materialised variants (one sublayer removed, one head / half
the units kept), so the model agrees with measurement by construction. Its expectation under the
gates' open probabilities (head ``h`` open with :math:`p_{l,h}`, sublayer with :math:`\pi_l`),

.. math::
    \mathbb E[C] = C_0 + \sum_l \pi_l\big((1 - \textstyle\prod_h (1-p_{l,h}))\, a^{fix}_l
    + a_l \sum_h p_{l,h}\big) + (\text{same for the FFN}),

is differentiable in the gate parameters.

**Lagrangian** (CoFi, Xia et al. 2022): with :math:`c = \mathbb E[C]/C_{dense}` and target
:math:`t`, the loss :math:`\lambda_1 (c - t) + \lambda_2 (c - t)^2` is minimised by the model and
gates and *maximised* by the multipliers, which drives :math:`c` to :math:`t`.

The discrete choice the budget is met with is :mod:`gtcompress.compress.plan_choice`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gtcompress.compress.gates import GateSet
from gtcompress.compress.materialise import LayerPlan, Plan, full_plan, materialise
from gtcompress.cost import count_flops
from gtcompress.errors import GTCompressError
from gtcompress.graph import GraphBatch
from gtcompress.models.model import GraphModel

__all__ = ["BudgetError", "CostModel", "Lagrangian"]


class BudgetError(GTCompressError):
    """The requested budget cannot be met with the chosen axes."""


@dataclass
class CostModel:
    dense: float  # FLOPs of the uncompressed model on the reference batch (the 100 %)
    base: float  # FLOPs no enabled axis can remove
    head: list[float]  # per head of layer l
    attn_fixed: list[float]  # while layer l has attention (token scorer)
    unit: list[float]  # per FFN hidden unit of layer l
    ffn_fixed: list[float]
    heads: list[int]
    widths: list[int]
    token_keep: list[float] = field(default_factory=list)
    # FLOPs spent only while some layer still attends: a Graphormer's shortest paths, which neither the
    # model nor its export computes once every attention sublayer is gone. Part of ``base`` otherwise.
    attn_any: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cost(self, plan: Plan) -> float:
        c = self.base
        attends = False
        for i, lp in enumerate(plan.layers):
            if lp.heads and self.heads[i]:
                c += self.attn_fixed[i] + len(lp.heads) * self.head[i]
                attends = True
            if lp.ffn and self.widths[i]:
                c += self.ffn_fixed[i] + len(lp.ffn) * self.unit[i]
        return c if attends else c - self.attn_any

    def expected(self, gates: GateSet) -> Tensor:
        """Differentiable expected FLOPs under the gates' open probabilities."""
        total = torch.tensor(self.base, dtype=torch.float64)
        none_attends = torch.ones((), dtype=torch.float64)
        for i in range(len(self.heads)):
            if self.heads[i]:
                ph = gates.prob_open("heads", i)
                ph = ph.double() if ph is not None else torch.ones(self.heads[i], dtype=torch.float64)
                pa = gates.prob_open("attn", i)
                pa = pa.double().reshape(()) if pa is not None else torch.ones((), dtype=torch.float64)
                any_open = 1.0 - torch.prod(1.0 - ph)
                total = total + pa * (any_open * self.attn_fixed[i] + self.head[i] * ph.sum())
                none_attends = none_attends * (1.0 - pa * any_open)
            if self.widths[i]:
                pu = gates.prob_open("ffn", i)
                pu = pu.double() if pu is not None else torch.ones(self.widths[i], dtype=torch.float64)
                pf = gates.prob_open("ffn_layer", i)
                pf = pf.double().reshape(()) if pf is not None else torch.ones((), dtype=torch.float64)
                any_open = 1.0 - torch.prod(1.0 - pu)
                total = total + pf * (any_open * self.ffn_fixed[i] + self.unit[i] * pu.sum())
        if self.attn_any:
            total = total - self.attn_any * none_attends
        return total

    def min_cost(self, axes: tuple[str, ...]) -> float:
        """The least cost reachable with ``axes`` (a sublayer keeps one unit unless ``layers``)."""
        lp = []
        for i in range(len(self.heads)):
            h = self.heads[i]
            f = self.widths[i]
            heads = [] if "layers" in axes else (list(range(1 if "heads" in axes else h)) if h else [])
            units = [] if "layers" in axes else (list(range(1 if "ffn" in axes else f)) if f else [])
            lp.append(LayerPlan(heads, units))
        return self.cost(Plan(lp))

    def nearest_reachable(
        self, axes: tuple[str, ...], lo: float, hi: float
    ) -> tuple[float | None, float | None] | None:
        """Whether some plan on ``axes`` costs within ``[lo, hi]`` (FLOPs), without enumerating plans:
        None if one does, else the nearest reachable costs below and above (None: none that side).

        A plan's cost is a sum over sublayers, each kept whole, with some of its units (heads / ffn
        axes) or removed (layers axis), so the reachable costs are the sums of one option per
        sublayer. They are built sublayer by sublayer as sorted intervals, joining
        costs less than ``hi - lo`` apart: a window that wide meets such an interval only if it
        holds one of its costs, so the answer is exact, and the list stays short (sublayers'
        many-unit options and the 2^n subsets of whole sublayers collapse into a few intervals).

        With :attr:`attn_any` (a Graphormer's shortest paths) and the layers axis, a plan that keeps
        no attention costs that much less than the sum: such plans are summed apart from those that
        keep some, which are split by their first attending layer (so each sum is exact)."""
        gap = max(hi - lo, 0.0)

        def merged(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
            out: list[tuple[float, float]] = []
            for a, b in sorted(points):
                if out and a - out[-1][1] <= gap:
                    out[-1] = (out[-1][0], max(out[-1][1], b))
                else:
                    out.append((a, b))
            return out

        def options(
            n: int, per: float, fixed: float, unit_axis: str, kept: bool | None = None
        ) -> list[tuple[float, float]]:
            """A sublayer's costs: kept with its units (``kept`` True), removed (False), or either as
            the axes allow (None)."""
            if kept is False:
                return [(0.0, 0.0)]
            counts = range(1, n + 1) if unit_axis in axes else [n]
            opts = [(fixed + k * per, fixed + k * per) for k in counts]
            return merged(opts + ([(0.0, 0.0)] if "layers" in axes and kept is None else []))

        def sums_from(base: float, attn: Callable[[int], bool | None]) -> list[tuple[float, float]]:
            sums = [(base, base)]
            for i in range(len(self.heads)):
                if self.heads[i]:
                    opts = options(self.heads[i], self.head[i], self.attn_fixed[i], "heads", attn(i))
                    sums = merged([(a + c, b + d) for a, b in sums for c, d in opts])
                if self.widths[i]:
                    opts = options(self.widths[i], self.unit[i], self.ffn_fixed[i], "ffn")
                    sums = merged([(a + c, b + d) for a, b in sums for c, d in opts])
            return sums

        attending = [i for i, h in enumerate(self.heads) if h]
        if self.attn_any and "layers" in axes and attending:
            sums = sums_from(self.base - self.attn_any, lambda i: False)  # no attention left
            for first in attending:  # the first layer that keeps its attention
                sums += sums_from(self.base, lambda i, f=first: None if i > f else i == f)
            sums = merged(sums)
        else:
            sums = sums_from(self.base, lambda i: None)
        if any(a <= hi and b >= lo for a, b in sums):
            return None
        below = [b for _, b in sums if b < lo]
        above = [a for a, _ in sums if a > hi]
        return (max(below) if below else None), (min(above) if above else None)

    @classmethod
    def calibrate(cls, model: GraphModel, batch: GraphBatch, dense_flops: float | None = None) -> CostModel:
        """Measure the coefficients on ``batch`` (see module docstring). ``dense_flops`` is the
        100 % (default: ``model``'s own FLOPs)."""
        full = full_plan(model)

        def measure(plan: Plan) -> float:
            return float(count_flops(materialise(model, plan, drop_identity_layers=False), batch)[0])

        c_full = float(count_flops(model, batch)[0])
        n = len(full.layers)
        heads = [len(lp.heads) for lp in full.layers]
        widths = [len(lp.ffn) for lp in full.layers]
        head, afix, unit, ffix = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n

        def variant(i: int, heads_keep: list[int] | None = None, ffn_keep: list[int] | None = None) -> Plan:
            layers = [LayerPlan(list(lp.heads), list(lp.ffn), lp.token_keep) for lp in full.layers]
            if heads_keep is not None:
                layers[i].heads = heads_keep
            if ffn_keep is not None:
                layers[i].ffn = ffn_keep
            return Plan(layers)

        for i in range(n):
            if heads[i]:
                c_none = measure(variant(i, heads_keep=[]))
                if heads[i] > 1:
                    c_one = measure(variant(i, heads_keep=[0]))
                    head[i] = (c_full - c_one) / (heads[i] - 1)
                else:
                    head[i] = c_full - c_none
                afix[i] = c_full - c_none - heads[i] * head[i]
            if widths[i]:
                c_none = measure(variant(i, ffn_keep=[]))
                half = max(1, widths[i] // 2)
                if widths[i] > 1:
                    c_half = measure(variant(i, ffn_keep=list(range(half))))
                    unit[i] = (c_full - c_half) / (widths[i] - half)
                else:
                    unit[i] = c_full - c_none
                ffix[i] = c_full - c_none - widths[i] * unit[i]
        removable = sum(afix[i] + heads[i] * head[i] for i in range(n) if heads[i])
        # With one attention sublayer its removal measured everything attention costs; with several,
        # removing them all also drops what any one of them needs (a Graphormer's shortest paths).
        attn_any = 0.0
        if sum(1 for h in heads if h) > 1:
            rng = torch.random.get_rng_state()  # materialising draws initial weights: the run's stream stays
            bare = measure(Plan([LayerPlan([], list(lp.ffn), lp.token_keep) for lp in full.layers]))
            torch.random.set_rng_state(rng)
            attn_any = (c_full - removable) - bare
            if abs(attn_any) <= 1e-9 * c_full:  # linear (GT, GPS): rounding only
                attn_any = 0.0
        removable += sum(ffix[i] + widths[i] * unit[i] for i in range(n) if widths[i])
        return cls(
            dense=float(dense_flops) if dense_flops is not None else c_full,
            base=c_full - removable,
            head=head,
            attn_fixed=afix,
            unit=unit,
            ffn_fixed=ffix,
            heads=heads,
            widths=widths,
            token_keep=[lp.token_keep for lp in full.layers],
            attn_any=attn_any,
        )


class Lagrangian(nn.Module):
    r"""``λ1 (c − t) + λ2 (c − t)²`` with multipliers trained by gradient *ascent* (put them in an
    optimiser group with ``maximize=True``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def forward(self, c: Tensor, t: float) -> Tensor:
        gap = c - t
        return self.lambda1 * gap + self.lambda2 * gap * gap
