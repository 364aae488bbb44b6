r"""The discrete choice: which heads, FFN units and sublayers a pruned model keeps to meet a FLOP
budget, given ranking scores (the gates' or random ones) and the calibrated
:class:`~gtcompress.compress.budget.CostModel`.

**Discrete choice.** After training, :func:`select_plan` ranks units (heads, FFN units, whole
sublayers) by their gates' log open-probability and closes the weakest until the cost model says
the budget is met, then re-opens the strongest closed ones that still fit — so the plan sits just
below the target. :func:`fit_budget` materialises that plan, *measures* it, corrects the model's
offset by the difference and repeats, so the returned model meets the budget measured, within
the tolerance, or a :class:`BudgetError` says why it cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gtcompress.compress.budget import BudgetError, CostModel
from gtcompress.compress.gates import GateSet
from gtcompress.compress.materialise import LayerPlan, Plan, materialise
from gtcompress.cost import count_flops
from gtcompress.graph import GraphBatch
from gtcompress.models.model import GraphModel

__all__ = ["ALLOCATIONS", "BudgetFit", "Scores", "fit_budget", "gate_scores", "random_scores", "select_plan"]


@dataclass
class Scores:
    """Ranking scores (higher = keep) per layer; missing entries count as 0."""

    head: dict[int, np.ndarray] = field(default_factory=dict)
    attn: dict[int, float] = field(default_factory=dict)
    unit: dict[int, np.ndarray] = field(default_factory=dict)
    ffn: dict[int, float] = field(default_factory=dict)


def gate_scores(gates: GateSet) -> Scores:
    """Log open-probabilities of the gates."""
    s = Scores()
    per_unit = {"heads": s.head, "ffn": s.unit}  # one score per head / FFN unit
    per_sublayer = {"attn": s.attn, "ffn_layer": s.ffn}  # one score per whole sublayer
    for i in range(gates.num_layers):
        for kind, scores in per_unit.items():
            if (lp := gates.log_prob_open(kind, i)) is not None:
                scores[i] = lp.numpy().astype(np.float64)
        for kind, scores in per_sublayer.items():
            if (lp := gates.log_prob_open(kind, i)) is not None:
                scores[i] = float(lp)
    return s


def random_scores(cost: CostModel, seed: int) -> Scores:
    """Uniformly random ranking (the random-pruning baseline)."""
    rng = np.random.default_rng(seed)
    s = Scores()
    for i, (h, f) in enumerate(zip(cost.heads, cost.widths, strict=True)):
        if h:
            s.head[i], s.attn[i] = rng.random(h), float(rng.random())
        if f:
            s.unit[i], s.ffn[i] = rng.random(f), float(rng.random())
    return s


@dataclass
class _Unit:
    kind: str  # head | unit (one head / FFN unit) | attn | ffn (a whole sublayer)
    layer: int
    index: int
    score: float


def _units(cost: CostModel, scores: Scores, axes: tuple[str, ...]) -> list[_Unit]:
    out: list[_Unit] = []
    for i, (h, f) in enumerate(zip(cost.heads, cost.widths, strict=True)):
        la = scores.attn.get(i, 0.0) if "layers" in axes else 0.0
        lf = scores.ffn.get(i, 0.0) if "layers" in axes else 0.0
        if h:
            if "heads" in axes:
                hs = scores.head.get(i, np.zeros(h))
                out += [_Unit("head", i, j, float(hs[j]) + la) for j in range(h)]
            elif "layers" in axes:
                out.append(_Unit("attn", i, -1, la))
        if f:
            if "ffn" in axes:
                us = scores.unit.get(i, np.zeros(f))
                out += [_Unit("unit", i, j, float(us[j]) + lf) for j in range(f)]
            elif "layers" in axes:
                out.append(_Unit("ffn", i, -1, lf))
    return out


class _State:
    """Kept heads / units per layer with incremental cost."""

    def __init__(self, cost: CostModel, axes: tuple[str, ...]) -> None:
        self.cm, self.axes = cost, axes
        self.heads = [set(range(h)) for h in cost.heads]
        self.units = [set(range(f)) for f in cost.widths]
        self.cost = cost.cost(self.plan())

    def plan(self, token_keep: list[float] | None = None) -> Plan:
        tk = token_keep or self.cm.token_keep or [1.0] * len(self.heads)
        return Plan(
            [
                LayerPlan(sorted(h), sorted(u), tk[i] if h else 1.0)
                for i, (h, u) in enumerate(zip(self.heads, self.units, strict=True))
            ]
        )

    def _members(self, u: _Unit) -> tuple[set[int], list[int], float, float]:
        i = u.layer
        if u.kind in ("head", "attn"):
            allm = list(range(self.cm.heads[i])) if u.kind == "attn" else [u.index]
            return self.heads[i], allm, self.cm.head[i], self.cm.attn_fixed[i]
        allm = list(range(self.cm.widths[i])) if u.kind == "ffn" else [u.index]
        return self.units[i], allm, self.cm.unit[i], self.cm.ffn_fixed[i]

    def removable(self, u: _Unit) -> bool:
        kept, members, _, _ = self._members(u)
        if not all(m in kept for m in members):
            return False
        if u.kind in ("head", "unit") and "layers" not in self.axes:
            return len(kept) > 1  # without the layers axis a sublayer keeps one unit
        return True

    def _attends_elsewhere(self, layer: int) -> bool:
        return any(h for j, h in enumerate(self.heads) if j != layer)

    def _delta(self, u: _Unit, whole: bool) -> float:
        """Cost of ``u``'s members, plus its sublayer's fixed cost when ``whole`` (the sublayer closes
        or opens with it), plus ``attn_any`` when that is the model's last (or first) attention."""
        _, members, per, fixed = self._members(u)
        d = per * len(members)
        if whole:
            d += fixed
            if u.kind in ("head", "attn") and not self._attends_elsewhere(u.layer):
                d += self.cm.attn_any
        return d

    def delta_remove(self, u: _Unit) -> float:
        kept, members, _, _ = self._members(u)
        return self._delta(u, len(kept) == len(members))

    def delta_add(self, u: _Unit) -> float:
        kept, _, _, _ = self._members(u)
        return self._delta(u, not kept)

    def remove(self, u: _Unit) -> None:
        kept, members, _, _ = self._members(u)
        self.cost -= self.delta_remove(u)
        kept.difference_update(members)

    def add(self, u: _Unit) -> None:
        kept, members, _, _ = self._members(u)
        self.cost += self.delta_add(u)
        kept.update(members)


#: How a FLOP target is split between axes (:func:`select_plan`).
ALLOCATIONS = ("uniform", "global")


def _uniform_plan(cost: CostModel, scores: Scores, axes: tuple[str, ...], budget: float, floor: float) -> Plan | None:
    """The plan within ``budget`` that keeps the most nearly equal fractions of all heads and of all
    FFN units (each axis ranked by ``scores`` across layers), or None if none fits.

    A head count whose plan keeps every FFN unit and still costs less than ``floor`` is passed over:
    its units are spent, so the plan cannot come nearer the budget, and fit_budget would refuse it
    after mask training (GT, 8 heads of 0.105 each, target 0.83: 6 heads and every unit balanced best
    but cost 0.789, while 7 heads and 27 of 64 units cost 0.83). Every other head count's plan lies
    within one FFN unit of the budget, as near as the units allow."""

    def plan_at(heads: int | None, units: int | None) -> Plan:
        keep = {}
        if heads is not None:
            keep["heads"] = heads / n_heads
        if units is not None:
            keep["ffn"] = units / n_units
        return select_plan(cost, scores, axes, axis_keep=keep, clamp=True)  # the search asks for 0 too

    n_heads, n_units = sum(cost.heads), sum(cost.widths)
    head_counts: list[int | None] = list(range(n_heads, 0, -1)) if "heads" in axes and n_heads else [None]
    best: tuple[float, int | None, int] | None = None  # (imbalance, heads, units)
    for k in head_counts:
        if "ffn" not in axes or not n_units:
            plan = plan_at(k, None)
            if cost.cost(plan) <= budget:
                return plan
            continue
        lo, hi = 0, n_units  # the most FFN units that fit next to k heads
        if cost.cost(plan_at(k, lo)) > budget:
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost.cost(plan_at(k, mid)) <= budget else (lo, mid - 1)
        if lo == n_units and cost.cost(plan_at(k, lo)) < floor:
            continue
        gap = abs((k / n_heads if k is not None else 1.0) - lo / n_units)
        if best is None or gap < best[0]:
            best = (gap, k, lo)
    return None if best is None else plan_at(best[1], best[2])


def select_plan(
    cost: CostModel,
    scores: Scores,
    axes: tuple[str, ...],
    target: float | None = None,
    axis_keep: dict[str, float] | None = None,
    slack: float = 0.01,
    allocation: str = "global",
    clamp: bool = False,
) -> Plan:
    """The discrete plan: meet ``target`` (fraction of ``cost.dense``) from below, within
    ``slack`` (relative) where the units allow — or keep the given fraction per axis (``axis_keep``:
    heads / ffn / layers).

    ``allocation="global"`` closes units weakest first across axes, passing over one whose removal
    would fall below the window for smaller ones; ``"uniform"`` keeps about the same fraction of the
    heads as of the FFN units, each axis ranked by ``scores`` across layers, among the plans that
    come as near the target as the units allow (else it is the global choice; see
    :func:`gtcompress.compress.prune.default_allocation` for which suits which model).

    Every per-axis fraction holds at once: the layers ratio is applied first, passing over sublayers
    whose units a heads or ffn ratio still needs, and the unit ratios then count what it took and
    empty no further sublayer. A per-axis fraction the axes cannot reach (each sublayer keeps one
    unit without the layers axis, or each one the layers ratio keeps) is a :class:`BudgetError`;
    ``clamp`` keeps what they allow instead (the uniform search)."""
    if target is not None and allocation == "uniform":
        plan = _uniform_plan(cost, scores, axes, target * cost.dense, target * cost.dense * (1.0 - slack))
        if plan is not None:
            return plan
    state = _State(cost, axes)
    units = _units(cost, scores, axes)
    if target is not None:
        budget = target * cost.dense
        floor = budget * (1.0 - slack)
        order = sorted(range(len(units)), key=lambda k: units[k].score)
        removed: list[int] = []
        skipped: list[int] = []
        for k in order:  # weakest first; a unit whose removal would overshoot the window waits
            if state.cost <= budget:
                break
            if not state.removable(units[k]):
                continue
            if state.cost - state.delta_remove(units[k]) >= floor:
                state.remove(units[k])
                removed.append(k)
            else:
                skipped.append(k)
        for k in skipped:  # still above: overshoot with the weakest waiting units
            if state.cost <= budget:
                break
            if state.removable(units[k]):
                state.remove(units[k])
                removed.append(k)
        if state.cost > budget * (1 + 1e-9):
            raise BudgetError(
                f"target {target:.3f} of the FLOPs is out of reach with axes {','.join(axes)}: the least "
                f"reachable is {cost.min_cost(axes) / cost.dense:.3f} (add axes or raise the target)"
            )
        for k in sorted(removed, key=lambda k: -units[k].score):  # re-open the strongest that fit
            if state.cost + state.delta_add(units[k]) <= budget:
                state.add(units[k])
        return state.plan()
    keep = axis_keep or {}
    totals = {"heads": sum(cost.heads), "ffn": sum(cost.widths)}
    want = {axis: _keep_count(keep[axis], n) for axis, n in totals.items() if axis in keep}
    if not clamp:
        for axis in want:
            _refuse_no_op(axis, keep[axis], want[axis], totals[axis])
    if "layers" in keep:  # first, so the unit ratios below count what the dropped sublayers took with them
        _drop_sublayers(state, cost, scores, keep, want, clamp)
    for axis, kind in (("heads", "head"), ("ffn", "unit")):
        if axis not in keep or axis not in axes:
            continue
        kept_sets = state.heads if axis == "heads" else state.units
        n_drop = sum(len(s) for s in kept_sets) - want[axis]
        for u in sorted((u for u in units if u.kind == kind), key=lambda u: u.score):
            if n_drop <= 0:
                break
            # with a layers ratio the sublayers kept are fixed: a unit pass must not empty one more
            if state.removable(u) and ("layers" not in keep or len(kept_sets[u.layer]) > 1):
                state.remove(u)
                n_drop -= 1
        if n_drop > 0 and not clamp:  # every sublayer kept holds one unit
            least = n_drop + want[axis]
            total = totals[axis]
            why = (
                f"one per sublayer that --keep layers={keep['layers']:g} keeps (lower it or raise the ratio)"
                if "layers" in keep
                else "one per sublayer without the layers axis (add layers or raise the ratio)"
            )
            raise BudgetError(
                f"keep {axis}={keep[axis]:g} is out of reach with axes {','.join(axes)}: at least {least} of "
                f"{total} ({least / total:.3f}) stay, {why}"
            )
    state.cost = cost.cost(state.plan())
    return state.plan()


def _keep_count(ratio: float, n: int) -> int:
    """Units a per-axis ratio keeps of ``n``: rounded half up, but at least one for a positive ratio
    (as tokens keep one node per graph). ``--keep`` refuses 0, yet ``layers=0.05`` of 8 sublayers
    rounded to 0 and removed every one, leaving encoders and head only, with exit 0. Only the
    uniform search asks for 0 (an axis emptied), and gets it."""
    k = math.floor(ratio * n + 0.5)
    return max(k, 1) if ratio > 0 and n > 0 else k


def _refuse_no_op(axis: str, ratio: float, kept: int, n: int) -> None:
    """Refuse a per-axis ratio below 1 that keeps every unit of its axis: ``--keep heads=0.5`` on a
    model with one head (or ``heads=0.9`` of 4, the nearest count being 4) wrote a "pruned"
    checkpoint identical to its input with exit 0, and the user shipped it as the smaller model."""
    if ratio >= 1.0 or kept < n:
        return
    noun = {"heads": "head", "ffn": "FFN unit", "layers": "sublayer"}[axis]
    if n <= 1:
        why = f"the model has one {noun} and a ratio keeps at least one; leave {axis} out of --keep"
    else:
        why = (
            f"it keeps all {n} {noun}s, the nearest count to {ratio:g} x {n}; a ratio below "
            f"{(n - 0.5) / n:.4g} removes one, or leave {axis} out of --keep"
        )
    raise BudgetError(f"keep {axis}={ratio:g} removes nothing: {why}")


def _drop_sublayers(
    state: _State, cost: CostModel, scores: Scores, keep: dict[str, float], want: dict[str, int], clamp: bool
) -> None:
    """Remove the weakest sublayers until ``keep["layers"]`` of them stay, passing over one whose heads
    (FFN units) the ``want``-ed count of a heads (ffn) ratio still needs: dropping sublayers and then
    units independently kept fewer heads than ``--keep heads`` asked, or fewer sublayers than
    ``--keep layers`` (the unit pass emptied more of them)."""
    subs = [(i, "attn", scores.attn.get(i, 0.0)) for i, h in enumerate(cost.heads) if h]
    subs += [(i, "ffn", scores.ffn.get(i, 0.0)) for i, f in enumerate(cost.widths) if f]
    n_keep = _keep_count(keep["layers"], len(subs))
    if not clamp:
        _refuse_no_op("layers", keep["layers"], n_keep, len(subs))
    n_drop = len(subs) - n_keep
    for i, kind, _ in sorted(subs, key=lambda t: t[2]):
        if n_drop <= 0:
            break
        axis, sets = ("heads", state.heads) if kind == "attn" else ("ffn", state.units)
        if axis in want and sum(len(s) for s in sets) - len(sets[i]) < want[axis]:
            continue
        sets[i].clear()
        n_drop -= 1
    if n_drop > 0 and not clamp:
        raise BudgetError(
            f"keep layers={keep['layers']:g} cannot be met together with "
            f"{', '.join(f'{a}={keep[a]:g}' for a in want)}: the sublayers left to remove hold the heads or FFN "
            "units those ratios keep (lower a unit ratio or raise the layers ratio)"
        )


@dataclass
class BudgetFit:
    plan: Plan
    model: GraphModel
    flops: float
    ratio: float
    iterations: int
    predicted_ratio: float


def fit_budget(
    model: GraphModel,
    scores: Scores,
    cost: CostModel,
    batch: GraphBatch,
    axes: tuple[str, ...],
    target: float,
    tolerance: float = 0.03,
    max_iter: int = 6,
    allocation: str = "global",
) -> BudgetFit:
    """Select, materialise and *measure* until the measured FLOP ratio is within ``tolerance``
    (relative) of ``target``; the cost model's offset absorbs any measured difference."""
    cm = CostModel(**{**cost.to_dict()})
    best: BudgetFit | None = None
    for it in range(1, max_iter + 1):
        plan = select_plan(cm, scores, axes, target=target, allocation=allocation)
        small = materialise(model, plan)
        flops = float(count_flops(small, batch)[0])
        ratio = flops / cm.dense
        fit = BudgetFit(plan, small, flops, ratio, it, cm.cost(plan) / cm.dense)
        if best is None or abs(ratio - target) < abs(best.ratio - target):
            best = fit
        if abs(ratio / target - 1.0) <= tolerance / 3:
            break
        cm.base += flops - cm.cost(plan)
    assert best is not None
    if abs(best.ratio / target - 1.0) > tolerance:
        finer = " or ".join(f"'{a}'" for a in ("ffn", "tokens") if a not in axes)  # not one already given
        raise BudgetError(
            f"could not meet the target {target:.3f} within ±{tolerance:.0%}: measured {best.ratio:.3f} "
            f"(the units of axes {','.join(axes)} are too coarse; add {finer} or choose another target)"
        )
    return best
