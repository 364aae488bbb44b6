"""``bench/prep.py``: this tree's LapPE set against a revision's, batch by batch, with their bits compared."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import prep


def test_a_run_against_a_revision_writes_its_rows_and_plot(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lap.json"
    args = ["--against", "HEAD", "--workloads", "cluster", "--batches", "1", "--rounds", "1", "--size", "20,8,8"]
    prep.main([*args, "--out", str(out)])
    doc = json.loads(out.read_text())
    assert doc["against"] == "HEAD" and doc["rounds"] == 1 and {"command", "commit", "machine", "date"} <= set(doc)
    (row,) = doc["rows"]
    # CLUSTER's 8 test graphs in one batch (of up to 32): the union's node count, k = 8 as GraphGPS trains it
    from gtcompress.train.recipe import DataSpec

    nodes = sum(g.num_nodes for g in DataSpec("cluster", None, "20,8,8", 0).load({})["test"])
    assert row["workload"] == "cluster" and row["batches"] == 1 and row["k"] == 8 and row["nodes_per_batch"] == nodes
    assert row["identical"] is True and row["ms_this"] > 0 and row["ms_against"] > 0
    assert row["speedup"] == pytest.approx(row["ms_against"] / row["ms_this"])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "identical: True" in capsys.readouterr().out


def test_outputs_that_differ_are_reported_as_such() -> None:
    ei, ptr = np.array([[0, 1, 1, 2], [1, 0, 2, 1]]), np.array([0, 3])
    ours = SimpleNamespace(laplacian_pe=lambda e, p, k: np.zeros((3, k), np.float32))
    theirs = SimpleNamespace(laplacian_pe=lambda e, p, k: np.full((3, k), 1e-7, np.float32))
    assert prep.time_pair(ours, theirs, [(ei, ptr)], 2, 1)["identical"] is False
    assert prep.time_pair(ours, ours, [(ei, ptr)], 2, 1)["identical"] is True


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--against", "no-such-rev"],
            "--against no-such-rev: cannot read its gtcompress/preprocess/pe.py: fatal: invalid object name "
            "'no-such-rev'.",
        ),
        (["--against", "HEAD", "--workloads", "zinc"], "--workloads: 'zinc' not among cluster, pattern, nci1"),
    ],
)
def test_a_revision_or_workload_it_cannot_use_is_one_error_line(tmp_path: Path, capsys, args, said) -> None:
    with pytest.raises(SystemExit) as e:
        prep.main([*args, "--out", str(tmp_path / "lap.json")])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"bench/prep.py: error: {said}"
    assert not (tmp_path / "lap.json").exists()
