"""Every bench result records what made it: ``bench/_common.py:provenance()`` (command, commit, machine,
date), the runs whose rows a partial run keeps, and the stamped copy of a pipeline report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import _common
from bench.pipeline_copy import FILES, copy_report


def test_provenance_records_command_commit_machine_and_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTC_COMMIT", "abc123")
    prov = _common.provenance(["bench/train.py", "--only", "gt:tu:NCI1", "--out", "a b.json"])
    assert list(prov) == ["command", "commit", "machine", "date"]
    assert prov["command"] == f"{Path(sys.executable).name} bench/train.py --only gt:tu:NCI1 --out 'a b.json'"
    assert prov["commit"] == "abc123"
    assert {"cpu", "logical_cores", "python", "torch", "torch_threads"} <= prov["machine"].keys()
    assert len(prov["date"]) == 20 and prov["date"].endswith("Z")


def test_the_commit_comes_from_git_without_gtc_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GTC_COMMIT", raising=False)
    commit = _common.git_commit()
    assert commit == "unknown" or len(commit.removesuffix("+dirty")) == 40


def _git(cwd: Path, *args: str) -> str:
    import subprocess

    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@x", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_a_copy_inside_another_repository_records_no_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the tree without .git (git archive, an unpacked sdist) under another repository recorded
    that repository's HEAD (+dirty for the copy itself) as the commit measured."""
    monkeypatch.delenv("GTC_COMMIT", raising=False)
    outer = tmp_path / "outer"
    (outer / "vendor" / "gtc").mkdir(parents=True)
    _git(outer, "init", "-q")
    (outer / "a").write_text("x")
    _git(outer, "add", "a")
    _git(outer, "commit", "-qm", "outer")
    monkeypatch.setattr(_common, "ROOT", outer / "vendor" / "gtc")
    assert _common.git_commit() == "unknown"
    monkeypatch.setattr(_common, "ROOT", outer)  # the checkout itself still records its commit
    assert _common.git_commit() == _git(outer, "rev-parse", "HEAD")


def test_earlier_runs_chain_oldest_first() -> None:
    first = {"command": "python bench/export.py", "commit": "a", "date": "d1", "machine": {}, "rows": []}
    second = {"command": "python bench/export.py --only gt", "commit": "b", "date": "d2", "rows": []}
    second["earlier_runs"] = _common.earlier_runs(first)
    assert [r["commit"] for r in _common.earlier_runs(second)] == ["a", "b"]
    reconstructed = {"provenance": {"reconstructed": True, "commit": "c", "command": None}, "rows": []}
    assert _common.earlier_runs(reconstructed) == [reconstructed["provenance"]]
    assert _common.earlier_runs({}) == [] and _common.earlier_runs(None) == []


def test_a_pipeline_report_is_copied_in_its_layout_and_stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTC_COMMIT", "abc123")
    run, out = tmp_path / "run", tmp_path / "out"
    for f in FILES:
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        (run / f).write_text(json.dumps({"machine": {"cpu": "x"}, "rows": []}) if f.endswith(".json") else f)
    copy_report(run, out, "gtc pipeline")
    report = json.loads((out / "report.json").read_text())
    assert list(report)[:3] == ["command", "commit", "date"] and report["commit"] == "abc123"
    assert report["machine"] == {"cpu": "x"}
    assert (out / "profile" / "op_breakdown.png").read_text() == "profile/op_breakdown.png"
    (run / "pareto.png").unlink()
    with pytest.raises(SystemExit, match=r"no pareto\.png"):
        copy_report(run, out, "gtc pipeline")


def test_a_copy_that_fails_part_way_leaves_the_previous_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """shutil.copyfile wrote each file in place, report.json second: a copy failing on a plot (a full
    disk, Ctrl-C) left a truncated PNG in bench/results/pipeline and the new run's report.json over the
    old run's plots."""
    import shutil

    import bench.pipeline_copy as pc

    monkeypatch.setenv("GTC_COMMIT", "abc123")
    run, out = tmp_path / "run", tmp_path / "out"
    for f in FILES:
        (run / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (run / f).write_text(json.dumps({"rows": ["new"]}) if f.endswith(".json") else f"new {f}")
        (out / f).write_text(json.dumps({"rows": ["old"]}) if f.endswith(".json") else f"old {f}")
    real = shutil.copyfile

    def fails_half_way(src: Path, dst: Path) -> None:
        if Path(src).name == "latency_vs_size.png":
            Path(dst).write_text("ne")  # the first bytes of the new file, then the disk is full
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(pc.shutil, "copyfile", fails_half_way)
    with pytest.raises(OSError, match="No space left"):
        copy_report(run, out, "gtc pipeline")
    assert (out / "profile" / "latency_vs_size.png").read_text() == "old profile/latency_vs_size.png"
    assert json.loads((out / "report.json").read_text()) == {"rows": ["old"]}
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(Path(f).name for f in FILES)
    monkeypatch.setattr(pc.shutil, "copyfile", real)
    copy_report(run, out, "gtc pipeline")
    assert (out / "profile" / "latency_vs_size.png").read_text() == "new profile/latency_vs_size.png"
    assert json.loads((out / "report.json").read_text())["rows"] == ["new"]


def test_set_threads_records_the_count_the_run_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """provenance() runs first (before the run writes anything); the thread count set after it was
    not in the record: a --threads 1 run said torch's default."""
    import torch

    monkeypatch.setenv("GTC_COMMIT", "abc123")
    before = torch.get_num_threads()
    try:
        prov = _common.provenance(["bench/train.py"])
        _common.set_threads(prov, 1)
        assert prov["machine"]["torch_threads"] == 1 == torch.get_num_threads()
        _common.set_threads(prov, 0)  # 0: torch's default, left as it is
        assert prov["machine"]["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_a_run_folder_without_the_report_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench/pipeline_copy.py --run runs/typo`` was SystemExit(message): exit 1, no ``error:`` prefix."""
    from bench import pipeline_copy

    with pytest.raises(SystemExit) as exit_:
        pipeline_copy.main(["--run", str(tmp_path / "typo"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"error: {tmp_path / 'typo'}: no {', '.join(FILES)} (run gtc pipeline first)")
    assert list(tmp_path.iterdir()) == []
