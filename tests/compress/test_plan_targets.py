"""Targets the units can reach are met, and those they cannot are refused naming the reason, on
synthetic cost models (no model is trained or measured)."""

import pytest

from gtcompress.compress.budget import BudgetError, CostModel
from gtcompress.compress.plan_choice import random_scores, select_plan
from gtcompress.compress.prune import PruneConfig
from gtcompress.compress.prune_run import check_feasible


@pytest.mark.parametrize("target", [0.83, 0.95])
def test_uniform_allocation_meets_a_target_the_units_reach(target: float) -> None:
    """GT's default allocation picked the plan whose heads and FFN fractions were nearest, even when it
    kept every FFN unit and still cost far below the target: 6 of 8 heads and all units (0.789) for
    0.83, which fit_budget then refused after mask training, while 7 heads and 27 of 64 units cost 0.83.
    The pre-check, the global allocation and this one now agree that such a target is met."""
    cm = CostModel(
        dense=1.0,
        base=0.0165,
        head=[0.105, 0.105],
        attn_fixed=[0.0, 0.0],
        unit=[0.0022, 0.0022],
        ffn_fixed=[0.0, 0.0],
        heads=[4, 4],
        widths=[32, 32],
    )
    axes = ("heads", "ffn")
    check_feasible(cm, PruneConfig(target_flops=target, axes=axes), target)  # the pre-check lets it through
    for seed in range(3):
        for allocation in ("uniform", "global"):
            plan = select_plan(cm, random_scores(cm, seed), axes, target=target, allocation=allocation)
            assert target * 0.99 <= cm.cost(plan) <= target, (seed, allocation)


def test_a_target_above_what_token_pruning_alone_leaves_names_the_token_ratio() -> None:
    """Every plan costs at most the one keeping every unit, so with ``--token-keep 0.5`` at 0.46 of the
    FLOPs a target of 0.8 is out of reach whatever the unit axes do. The coarse-units check ran first
    and said the units were too coarse and to add 'heads' or 'ffn' (which cannot help); the
    message naming the token ratio was never reached."""
    cm = CostModel(
        dense=1.0,
        base=0.1,
        head=[0.05],
        attn_fixed=[0.0],
        unit=[0.02],
        ffn_fixed=[0.0],
        heads=[4],
        widths=[8],
        token_keep=[0.5],
    )
    cfg = PruneConfig(target_flops=0.8, axes="tokens,layers", token_keep=0.5)
    with pytest.raises(BudgetError) as err:
        check_feasible(cm, cfg, 0.8)
    assert str(err.value) == (
        "token pruning alone (keep 0.5) already gives 0.460 of the FLOPs, below the target 0.800; "
        "raise --token-keep or lower --target-flops"
    )
