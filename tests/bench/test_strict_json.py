"""Bench results are strict JSON: a number that is not finite is ``null`` with a ``non_finite`` field
saying what it was, never Python's ``NaN``/``Infinity`` tokens, which ``jq``, ``JSON.parse`` and other
strict parsers refuse (the whole file, not the one value)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench._json import NON_FINITE, read_json, restore, strict, write_json

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _strict_loads(text: str) -> Any:
    """``json.loads`` as a strict parser reads: the non-standard constants are an error."""

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_null_with_a_reason_and_read_back(tmp_path: Path) -> None:
    doc = {
        "rows": [{"peer": "v2", "ms": math.inf, "ratio": np.float32("nan"), "x": [1.0, -math.inf, [2.0, math.nan]]}],
        "p": math.nan,
        "ok": 1.5,
    }
    path = write_json(tmp_path / "r.json", doc)
    raw = _strict_loads(path.read_text())
    assert raw == {
        "rows": [
            {
                "peer": "v2",
                "ms": None,
                "ratio": None,
                "x": [1.0, None, [2.0, None]],
                NON_FINITE: {"ms": "inf", "ratio": "nan", "x[1]": "-inf", "x[2][1]": "nan"},
            }
        ],
        "p": None,
        "ok": 1.5,
        NON_FINITE: {"p": "nan"},
    }
    back = read_json(path)
    row = back["rows"][0]
    assert row["ms"] == math.inf and math.isnan(row["ratio"]) and row["x"][1] == -math.inf
    assert math.isnan(row["x"][2][1]) and math.isnan(back["p"]) and back["ok"] == 1.5
    assert NON_FINITE not in row and NON_FINITE not in back


def test_a_rewritten_result_keeps_the_reasons_it_read_and_adds_new_ones() -> None:
    doc = {"a": None, NON_FINITE: {"a": "inf"}, "b": math.nan}
    assert strict(doc) == {"a": None, "b": None, NON_FINITE: {"a": "inf", "b": "nan"}}


def test_a_key_that_itself_ends_in_an_index_is_read_back() -> None:
    """A reason names a list item as ``key[i]``; a key that is itself ``a[1]`` was read as item 1 of ``a``
    and its number stayed ``null``."""
    doc = {"a[1]": math.inf, "a": [0.0, 1.0], "b[0]": [2.0, -math.inf], "c": [[1.0, math.nan]]}
    back = restore(strict(doc))
    assert back["a[1]"] == math.inf and back["a"] == [0.0, 1.0]
    assert back["b[0]"] == [2.0, -math.inf] and math.isnan(back["c"][0][1])


def test_a_non_finite_number_outside_any_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside any object"):
        write_json(tmp_path / "r.json", [1.0, math.inf])
    assert list(tmp_path.iterdir()) == []


def test_the_kernel_bench_saves_strict_json(tmp_path: Path) -> None:
    """A sweep whose rule failed to time keeps a variant against ``rule_ms`` inf (bench/kernel_sweep.py)."""
    from bench.kernel import Bench

    out = tmp_path / "kernel.json"
    doc = {"rows": [{"peer": "v2 rule", "error": "OutOfMemoryError"}], "tuned": {"4x16 fp32": {"rule_ms": math.inf}}}
    Bench.save(SimpleNamespace(args=SimpleNamespace(out=str(out)), doc=doc))  # type: ignore[arg-type]
    raw = _strict_loads(out.read_text())
    assert raw["tuned"]["4x16 fp32"] == {"rule_ms": None, NON_FINITE: {"rule_ms": "inf"}}


def test_a_merged_compression_result_with_one_seed_is_strict_json(tmp_path: Path) -> None:
    """One seed: the paired t-test's p-value is NaN (no spread to test against)."""
    from bench.compression import _merge

    rows = [
        {"arch": "gt", "dataset": "tu:NCI1", "method": "dense", "budget": 1.0, "flops_ratio": 1.0, "test": 80.0,
         "val": 85.0, "drop": 0.0},
        *({"arch": "gt", "dataset": "tu:NCI1", "method": m, "budget": 0.5, "seed": 0, "flops_ratio": 0.5, "test": t,
           "val": 85.0, "drop": 80.0 - t, "within_budget": True} for m, t in (("gtsp", 81.0), ("random", 79.0))),
    ]  # fmt: skip
    src = tmp_path / "gt.json"
    src.write_text(json.dumps({"quick": False, "machine": {"cpu": "x"}, "rows": rows}))
    out = tmp_path / "all.json"
    _merge([src], out)
    paired = _strict_loads(out.read_text())["targets"]["gt:tu:NCI1"]["gtsp_minus_random"]["0.5"]
    assert paired["p"] is None and paired[NON_FINITE] == {"p": "nan"}
    assert math.isnan(read_json(out)["targets"]["gt:tu:NCI1"]["gtsp_minus_random"]["0.5"]["p"])
    _merge([out], tmp_path / "again.json")  # a merged result is read back as a result


#: The only JSON a bench writes other than through bench._json: a measuring child's one line to its
#: parent (finite numbers, read by Python), not a result file.
NOT_A_RESULT = {("eval_memory.py", "dumps"), ("train_memory.py", "dumps")}


def test_every_bench_writes_its_json_through_the_strict_writer() -> None:
    found = set()
    for path in sorted(BENCH.glob("*.py")):
        if path.name == "_json.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            called = isinstance(node, ast.Attribute) and node.attr in ("dump", "dumps")
            if called and isinstance(node.value, ast.Name) and node.value.id == "json":
                found.add((path.name, node.attr))
            if isinstance(node, ast.ImportFrom) and node.module == "gtcompress.io":
                assert "write_json" not in {a.name for a in node.names}, f"{path.name}: gtcompress.io.write_json"
    assert found == NOT_A_RESULT
