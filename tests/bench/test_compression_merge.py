"""``bench/compression.py --merge``: per-model result files become the one table, and files that would
make it lie (a result twice, two dense models for one model, unreadable input) are refused, with
``--out`` left as it was."""

import json
import re
from pathlib import Path

import pytest

from bench.compression import _merge


def _dense(arch: str, test: float, sha: str) -> dict:
    return {
        "arch": arch,
        "dataset": "tu:NCI1",
        "method": "dense",
        "budget": 1.0,
        "flops_ratio": 1.0,
        "test": test,
        "val": 85.0,
        "drop": 0.0,
        "weights_sha256": sha,
    }


def _pruned(arch: str, method: str, seed: int, test: float, dense: float) -> dict:
    return {
        "arch": arch,
        "dataset": "tu:NCI1",
        "method": method,
        "budget": 0.5,
        "seed": seed,
        "flops_ratio": 0.5,
        "test": test,
        "val": 85.0,
        "drop": dense - test,
        "within_budget": True,
    }


def _file(path: Path, rows: list[dict], quick: bool = False) -> Path:
    path.write_text(json.dumps({"quick": quick, "machine": {"cpu": "x"}, "settings": {"seeds": [0]}, "rows": rows}))
    return path


def _model(arch: str, dense: float, gtsp: list[float], random: list[float], sha: str = "a") -> list[dict]:
    return [_dense(arch, dense, sha)] + [
        _pruned(arch, m, s, t, dense) for m, ts in (("gtsp", gtsp), ("random", random)) for s, t in enumerate(ts)
    ]


def test_rows_of_every_file_make_one_table_with_targets_and_plot(tmp_path: Path) -> None:
    a = _file(tmp_path / "gt.json", _model("gt", 80.0, [81.0, 82.0], [79.0, 80.0]))
    b = _file(tmp_path / "gps.json", _model("gps", 70.0, [69.0, 70.0], [71.0, 72.0]))
    out = tmp_path / "all.json"
    rows = _merge([a, b], out)["rows"]
    doc = json.loads(out.read_text())
    assert len(rows) == len(doc["rows"]) == 10
    assert [f["file"] for f in doc["settings"]["merged_from"]] == ["gt.json", "gps.json"]
    assert doc["command"] and doc["commit"] and doc["date"] and doc["machine"] == {"cpu": "x"}  # rows' machine
    gt, gps = doc["targets"]["gt:tu:NCI1"], doc["targets"]["gps:tu:NCI1"]
    assert gt["gtsp_minus_random"]["0.5"]["mean"] == pytest.approx(2.0)
    assert gps["gtsp_minus_random"]["0.5"]["mean"] == pytest.approx(-2.0)
    assert gt["beats_random_at_every_budget"] is True and gps["beats_random_at_every_budget"] is False
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_seeds_of_one_model_split_over_files_merge(tmp_path: Path) -> None:
    first = _model("gt", 80.0, [81.0], [79.0])
    more = [_dense("gt", 80.0, "a"), _pruned("gt", "gtsp", 1, 83.0, 80.0), _pruned("gt", "random", 1, 80.0, 80.0)]
    rows = _merge([_file(tmp_path / "a.json", first), _file(tmp_path / "b.json", more)], tmp_path / "o.json")["rows"]
    assert [r["method"] for r in rows].count("dense") == 1
    assert sorted(r.get("seed", -1) for r in rows if r["method"] == "gtsp") == [0, 1]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (_model("gt", 80.0, [81.0], [79.0]), "hold the same result for gt gtsp on tu:NCI1 at budget 0.5 seed 0"),
        ([_dense("gt", 84.0, "b")], "hold rows from two dense models for gt dense on tu:NCI1"),
    ],
)
def test_a_result_twice_or_two_dense_models_is_refused(tmp_path: Path, second: list[dict], message: str) -> None:
    a = _file(tmp_path / "a.json", _model("gt", 80.0, [81.0], [79.0]))
    b = _file(tmp_path / "b.json", second)
    out = tmp_path / "o.json"
    out.write_text("earlier")
    with pytest.raises(SystemExit, match=re.escape(f"{b} and {a} {message}")):
        _merge([a, b], out)
    assert out.read_text() == "earlier"
    assert not out.with_suffix(".png").exists()


def test_unreadable_or_foreign_files_are_named(tmp_path: Path) -> None:
    good = _file(tmp_path / "a.json", _model("gt", 80.0, [81.0], [79.0]))
    with pytest.raises(SystemExit, match=re.escape(f"cannot read {tmp_path / 'missing.json'}")):
        _merge([good, tmp_path / "missing.json"], tmp_path / "o.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match=r"cannot read .*bad\.json: Expecting"):
        _merge([good, tmp_path / "bad.json"], tmp_path / "o.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SystemExit, match=r"list\.json is not a compression result"):
        _merge([good, tmp_path / "list.json"], tmp_path / "o.json")
    broken = _file(tmp_path / "broken.json", [{"arch": "gt", "dataset": "tu:NCI1", "budget": 0.5}])
    with pytest.raises(SystemExit, match=r"broken\.json: row 0 is not a result row \(KeyError: 'method'\)"):
        _merge([good, broken], tmp_path / "o.json")
    quick = _file(tmp_path / "q.json", _model("gps", 70.0, [69.0], [71.0]), quick=True)
    with pytest.raises(SystemExit, match=re.escape(f"do not merge with full ones: {quick}")):
        _merge([good, quick], tmp_path / "o.json")
    assert not (tmp_path / "o.json").exists()


def test_the_committed_table_is_the_merge_of_its_inputs(tmp_path: Path) -> None:
    """``compression.json`` is what ``--merge bench/results/compression/inputs/*.json`` makes of the files kept
    next to it: the same rows and targets, so the inputs are complete and nothing else went into the table."""
    results = Path(__file__).resolve().parents[2] / "bench" / "results" / "compression"
    inputs = sorted((results / "inputs").glob("*.json"))
    prov = {"command": "test", "commit": "test", "machine": None, "date": "test"}
    merged = _merge(inputs, tmp_path / "compression.json", prov)
    committed = json.loads((results / "compression.json").read_text())
    assert sorted(map(json.dumps, merged["rows"])) == sorted(map(json.dumps, committed["rows"]))
    assert merged["targets"] == committed["targets"]
    assert [f["provenance"]["original_path"] for f in merged["settings"]["merged_from"]] == [
        json.loads(p.read_text())["provenance"]["original_path"] for p in inputs
    ]
