"""bench/triton_answer_latency.py: a tiny run through the real tritonserver writes the JSON and PNG
with both modes side by side (no timings asserted), and a mistaken option is one ``error:`` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.triton_answer_latency as bench
from runtime.tritonserver import which_tritonserver


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
        (["--requests", "0"], "argument --requests: must be at least 1, got 0"),
        (["--nodes", "1"], "argument --nodes: must be at least 2, got 1"),
        (["--batch-nodes", "x"], "argument --batch-nodes: expected an integer, got 'x'"),
    ],
)
def test_a_mistaken_option_is_one_error_line_before_any_work(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_run(args: object) -> None:
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(bench, "run", no_run)
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


def test_an_out_that_is_a_file_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "run", lambda args: pytest.fail("the benchmark ran"))
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--out", str(tmp_path / "f")])
    assert exit_.value.code == 2
    message = f"error: argument --out: {tmp_path / 'f'} is a file; expected a folder"
    assert capsys.readouterr().err.strip().endswith(message)


@pytest.mark.skipif(
    which_tritonserver() is None, reason="nvidia-pytriton is not installed (pip install 'gtcompress[triton]')"
)
def test_a_tiny_run_measures_both_modes_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4 graphs of 20 nodes with 40 nodes a merged call: one execute of 2 calls per model and round, so
    the ``on`` model answers through its response senders and ``off`` returns the list. Both answer
    every client, alike; the JSON records what made it and the ratios are computed from its numbers."""
    argv = ["--requests", "4", "--nodes", "20", "--batch-nodes", "40", "--rounds", "2", "--out", str(tmp_path)]
    bench.main(argv)
    doc = json.loads((tmp_path / "answer_latency.json").read_text())
    assert doc["command"].endswith("bench/triton_answer_latency.py " + " ".join(argv))
    assert doc["commit"] and doc["machine"] and doc["date"][:2] == "20"
    assert doc["settings"]["requests"] == 4 and doc["settings"]["rounds"] == 2
    assert set(doc["modes"]) == {"on", "off"}
    assert doc["modes"]["on"]["answer_each_call"] is True and doc["modes"]["off"]["answer_each_call"] is False
    for name, mode in doc["modes"].items():
        assert [r["round"] for r in mode["rounds"]] == [0, 1]
        # the order alternates: on first in round 0, off first in round 1
        assert [r["position"] for r in mode["rounds"]] == ([0, 1] if name == "on" else [1, 0])
        for r in mode["rounds"]:
            assert r["answered"] == 4 and r["errors"] == [] and len(r["seconds"]) == 4
            assert all(s > 0 for s in r["seconds"])
            got = sorted(r["seconds"])
            assert (r["first"], r["last"]) == (got[0], got[-1])
            assert r["executes_by_requests"] == {"4": 1}  # every request in one execute
        for stat in ("first", "median", "last"):  # the median of 2 rounds: their mean
            assert mode[stat] == pytest.approx(sum(r[stat] for r in mode["rounds"]) / 2)
    assert doc["answers_agree"] is True
    on, off = doc["modes"]["on"], doc["modes"]["off"]
    for stat in ("first", "median", "last"):
        assert doc["ratios"][stat] == pytest.approx(off[stat] / on[stat])
    assert len(doc["ratios"]["by_round"]) == 2
    assert (tmp_path / "answer_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "off / on, first answer: " in out and "off / on, median answer: " in out
