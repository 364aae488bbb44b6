"""bench/train.py: the result file holds the full table at every write, however far the run got."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import train


def _fake_fit(spec: object, arch: str, model_kw: dict, cfg: object, **kwargs: object) -> SimpleNamespace:
    """A finished run for GT, a Ctrl-C during GPS's."""
    if arch == "gps":
        raise KeyboardInterrupt
    metrics = {
        "metric": "accuracy",
        "test": 0.5,
        "val": 0.6,
        "params": 10,
        "epochs_run": 1,
        "best_epoch": 0,
        "train_time_s": 1.0,
    }
    return SimpleNamespace(
        meta={"metrics": metrics},
        dataset=SimpleNamespace(splits={"train": [0] * 3, "val": [0], "test": [0]}),
        model=SimpleNamespace(config=SimpleNamespace(to_dict=lambda: {"arch": arch})),
    )


def _fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset folders the runs name (fit is faked, so empty ones do): a clone outside the project's
    folder has no ../shared/data, and the run refuses to start without them."""
    for name in ("TU", "ogb", "ogbg_molhiv"):
        (tmp_path / "data" / name).mkdir(parents=True)
    monkeypatch.setenv("GTCOMPRESS_DATA", str(tmp_path / "data"))


def test_a_run_stopped_part_way_keeps_the_earlier_rows_it_did_not_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The selected runs' earlier rows were dropped before any training and the file rewritten after every
    row: ``--only gt:tu:NCI1 gps:tu:NCI1`` stopped after GT's row left a table without GPS's earlier row."""
    out = tmp_path / "train.json"
    old_rows = [
        {"arch": "gt", "dataset": "tu:NCI1", "test": 1.0, "published": None},
        {"arch": "gps", "dataset": "tu:NCI1", "test": 2.0, "published": None},
        {"arch": "gt", "dataset": "cluster", "test": 3.0, "published": 73.2},
    ]
    out.write_text(json.dumps({"command": "earlier", "commit": "c0", "date": "d0", "runs": old_rows}))
    monkeypatch.setenv("GTC_COMMIT", "c1")
    monkeypatch.setattr(train, "fit", _fake_fit)
    _fake_data(tmp_path, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train.main(["--only", "gt:tu:NCI1", "gps:tu:NCI1", "--minutes", "0.01", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert [(r["arch"], r["dataset"], r["test"]) for r in doc["runs"]] == [
        ("gt", "tu:NCI1", 50.0),
        ("gps", "tu:NCI1", 2.0),
        ("gt", "cluster", 3.0),
    ]
    assert doc["commit"] == "c1"
    assert doc["earlier_runs"] == [{"command": "earlier", "commit": "c0", "date": "d0"}]
    assert out.with_suffix(".png").is_file()  # the plot of the same rows


def test_a_run_that_redoes_every_row_records_no_earlier_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The earlier run is named only while one of its rows is still in the table."""
    out = tmp_path / "train.json"
    old_rows = [{"arch": "gt", "dataset": "tu:NCI1", "test": 1.0, "published": None}]
    out.write_text(json.dumps({"command": "earlier", "commit": "c0", "date": "d0", "runs": old_rows}))
    monkeypatch.setenv("GTC_COMMIT", "c1")
    monkeypatch.setattr(train, "fit", _fake_fit)
    _fake_data(tmp_path, monkeypatch)
    train.main(["--only", "gt:tu:NCI1", "--minutes", "0.01", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert [(r["arch"], r["dataset"], r["test"]) for r in doc["runs"]] == [("gt", "tu:NCI1", 50.0)]
    assert "earlier_runs" not in doc
