"""Every name a package re-exports lazily (its ``_LAZY = {name: module}`` table) is found in the module
the table names: a module split moved ``select_plan``, ``fit_budget``, ``gate_scores`` and
``random_scores`` to ``gtcompress.compress.plan_choice`` while the table still sent them to
``budget``, so ``from gtcompress.compress import select_plan`` (and ``import *``) raised, and nothing
noticed: the import-rule tests read the table without importing it."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["gtcompress", "gtcompress.compress", "gtcompress.pipeline", "runtime", "trt_plugins"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_lazy_reexport_resolves(package: str) -> None:
    mod = importlib.import_module(package)
    table: dict[str, str] = mod._LAZY
    assert table, f"{package} has no _LAZY table"
    missing = []
    for name, source in table.items():
        try:
            getattr(mod, name)
        except (AttributeError, ImportError) as e:
            missing.append(f"{name} (from {source}: {e})")
    assert missing == []
    assert set(table) <= set(mod.__all__)


def test_the_plan_choice_names_are_reexported_from_compress() -> None:
    from gtcompress.compress import fit_budget, gate_scores, plan_choice, random_scores, select_plan

    assert (select_plan, fit_budget, gate_scores, random_scores) == (
        plan_choice.select_plan,
        plan_choice.fit_budget,
        plan_choice.gate_scores,
        plan_choice.random_scores,
    )
