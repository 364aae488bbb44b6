"""``bench/kernel_report.summarize``: the verdicts the one GPU run is read by, from rows built here.

The GPU run cannot be repeated at will, so what its rows are judged by is checked on CPU: which rows
each target reads, the ratio's direction, and that a missing row is "not measured", never guessed.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.kernel_report import TARGETS, summarize


def op(workload: str, kind: str, e: int, dtype: str, hd: str, peer: str, ms: float, **extra: Any) -> dict[str, Any]:
    return {"level": "op", "workload": workload, "kind": kind, "N": e // 10, "E": e, "dtype": dtype, "hd": hd,
            "peer": peer, "ms": ms, **extra}  # fmt: skip


def model(workload: str, e: int, peer: str, ms: float | None) -> dict[str, Any]:
    row = {"level": "model", "workload": workload, "kind": "x", "N": e // 10, "E": e, "dtype": "fp32", "hd": "4x16"}
    return {**row, "peer": peer, **({"ms": ms} if ms is not None else {"skipped": "--max-minutes 5 reached"})}


def results(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return summarize(rows, copy_gbps=4000.0)["results"]


def test_op_speed_and_skew_read_rows_of_one_shape() -> None:
    rows = [
        op("uniform E=10M", "uniform", 10_000_000, "fp32", "4x16", "ours v2", 1.0, bw_fraction=0.7),
        op("uniform E=10M", "uniform", 10_000_000, "fp32", "4x16", "PyG torch.compile", 2.5),
        op("power-law E=10M", "power-law", 10_000_000, "fp32", "4x16", "ours v2", 1.4, bw_fraction=0.5),
        op("power-law E=10M", "power-law", 10_000_000, "fp32", "4x16", "PyG torch.compile", 2.1),
        # another head shape of the same graph: never the uniform peer of a 4x16 power-law row
        op("uniform E=10M", "uniform", 10_000_000, "fp16", "8x64", "ours v2", 0.2, bw_fraction=0.8),
    ]
    res = results(rows)
    speed = {(e["workload"], e["dtype"]): (round(e["value"], 6), e["verdict"]) for e in res["op_vs_compile"]}
    assert speed == {("uniform E=10M", "fp32"): (2.5, "met"), ("power-law E=10M", "fp32"): (1.5, "MISSED")}
    assert [(e["value"], e["verdict"]) for e in res["skew"]] == [(pytest.approx(1.4), "MISSED")]
    assert [(e["value"], e["verdict"]) for e in res["bw_fp32_4x16"]] == [(0.7, "met"), (0.5, "MISSED")]
    assert [(e["value"], e["verdict"]) for e in res["bw_fp16_8x64"]] == [(0.8, "met")]


def test_model_targets_take_our_faster_way_and_skip_small_graphs() -> None:
    rows = [
        model("uniform E=1M", 1_000_000, "PyG eager", 20.0),
        model("uniform E=1M", 1_000_000, "PyG torch.compile", 3.0),
        model("uniform E=1M", 1_000_000, "ours eager", 2.5),
        model("uniform E=1M", 1_000_000, "ours torch.compile", 1.5),
        model("molecule", 64, "PyG torch.compile", 3.0),
        model("molecule", 64, "ours eager", 1.0),
    ]
    res = results(rows)
    assert [(e["ours"], e["value"], e["verdict"]) for e in res["model_vs_compile"]] == [
        ("ours torch.compile", 2.0, "met")
    ]
    assert [(e["ours"], round(e["value"], 6), e["verdict"]) for e in res["model_vs_eager"]] == [
        ("ours torch.compile", 13.333333, "met")
    ]


def test_molecule_latency_is_the_faster_replay_and_a_missing_one_is_not_guessed() -> None:
    eager = model("molecule", 64, "ours CUDA graph", 0.42)
    [entry] = results([eager, model("molecule", 64, "ours torch.compile CUDA graph", 0.21)])["molecule_ms"]
    assert (entry["ours"], entry["value"], entry["verdict"]) == ("ours torch.compile CUDA graph", 0.21, "met")
    [entry] = results([eager, model("molecule", 64, "ours torch.compile CUDA graph", None)])["molecule_ms"]
    assert (entry["ours"], entry["verdict"]) == ("ours CUDA graph", "MISSED")
    summary = summarize([model("molecule", 64, "ours eager", 0.1)], copy_gbps=4000.0)
    assert summary["results"]["molecule_ms"] == []
    assert "molecule_ms: not measured" in summary["lines"]


def test_every_target_without_rows_is_not_measured() -> None:
    lines = summarize([], copy_gbps=4000.0)["lines"]
    assert lines == ["device copy bandwidth 4000 GB/s"] + [f"{name}: not measured" for name in TARGETS]
