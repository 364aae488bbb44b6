"""bench/export.py's ``linearity``: time ratios per 10x edges pair only sizes measured in the same run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

from bench import export


def _row(edges: int, ms: float, run: str | None) -> dict:
    return {
        "workload": f"sparse-{edges}",
        "arch": "gt",
        "lowering": "scatter",
        "edges": edges,
        "ort_total_ms": ms,
        "pyg_eager_ms": ms,
        "speedup_vs_pyg": 1.0,
        "run": run,
    }


def test_sizes_of_one_run_are_paired_and_sizes_of_two_runs_are_not() -> None:
    rows = [_row(1_000, 1.0, "a"), _row(10_000, 12.0, "a"), _row(100_000, 300.0, "b"), _row(1_000_000, 1e4, None)]
    assert export._linearity(rows) == {"scatter: 1000->10000 edges": 12.0}


def test_a_partial_run_does_not_pair_its_rows_with_the_rows_it_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``--workloads sparse-1000``, the file held that run's sparse-1000 rows beside an earlier run's
    sparse-10000 rows, and ``linearity`` reported their ratio (here 1000 / (new sparse-1000 time)) as if the
    lowering scaled that way, though the two sizes were measured on other commits or machine loads.

    The same run (GT's four exports, the slowest part of a bench test) shows that the models go with it:
    they were exported into a ``tempfile.mkdtemp`` folder that nothing removed, and every run left one
    ``gtc-bench-export-*`` folder of ONNX files in /tmp (3 MB for GT's four lowerings)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(export, "LAYERS", 1)  # the rows and the folder are the point, not the depth (30 -> 19 s)
    out = tmp_path / "export.json"
    old = [{**_row(1_000, 1.0, None), "lowering": low} for low in ("scatter", "padded", "plugin", "dense")] + [
        {**_row(10_000, 1000.0, None), "lowering": low} for low in ("scatter", "padded", "plugin", "dense")
    ]
    for r in old:
        del r["run"]  # a file written before rows named their run
    out.write_text(json.dumps({"command": "earlier run", "date": "2026-01-01T00:00:00Z", "rows": old}))
    threads = torch.get_num_threads()
    try:
        export.main(
            [
                "--quick",
                "--repeat",
                "1",
                "--threads",
                "1",
                "--only",
                "gt",
                "--workloads",
                "sparse-1000",
                "--out",
                str(out),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["linearity"] == {}
    runs = {(r["workload"], r["run"]) for r in result["rows"]}
    assert ("sparse-10000", "2026-01-01T00:00:00Z") in runs
    assert {run for w, run in runs if w == "sparse-1000"} == {result["date"]}
    lowerings = [r["lowering"] for r in result["rows"] if r["workload"] == "sparse-1000"]
    assert lowerings == ["scatter", "padded", "dense", "plugin"]
    assert list(scratch.glob("gtc-bench-export-*")) == []
