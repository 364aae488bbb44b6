"""``--warmup 0`` times a cold start: one cold first call a row, not one a round.

Each round of an exported model in ``gtc profile`` is a fresh measuring process, so with no warm-up every
round would time its own cold first call at every size: three rounds, three cold calls among each row's
samples, lifting its p90/p99 with nothing saying so. So ``--warmup 0`` is one round unless told otherwise,
told otherwise it is refused (not for checkpoints alone: their rows are always warmed up), and the report says its
rows each hold one cold call."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import runtime.profile as prof
import runtime.profile_cost as profile_cost
from cli.main import app
from runtime.errors import SessionError
from runtime.measure import timings
from runtime.profile_rounds import cold_note, default_rounds

runner = CliRunner()
NOTE = (
    "warm-up 0: each exported model's row times its first call at its size, cold (the first row's is also the new "
    "session's first), so each row holds one cold call, in its max and upper percentiles; rounds: 1, as more would "
    "each time one"
)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int | None, int, int]]:
    """Every pass asked for: (threads, timed iterations, warm-up)."""
    seen: list[tuple[int | None, int, int]] = []

    def measure_model(path: str, threads: int | None, configs: Any, iterations: int, warmup: int, **kw: Any) -> None:
        seen.append((threads, iterations, warmup))
        for nodes, batch in configs:
            row = {"threads": threads, "graph_nodes": nodes, "batch_size": batch, "iterations": iterations,
                   "warmup": warmup, **timings([1.0] * iterations, [2.0] * iterations, batch)}  # fmt: skip
            row["peak_rss_mb"] = 1.0
            kw["emit"]({"kind": "result", **row, "cpus": [0], "oversubscribed": False, "providers": ["CPU"]})

    monkeypatch.setattr(prof, "measure_model", measure_model)
    monkeypatch.setattr(prof, "_model_entry", lambda label, path: {"name": label, "path": path, "results": []})
    monkeypatch.setattr(profile_cost, "check_costs", lambda *args, **kwargs: None)  # a stand-in file
    return seen


def _model(tmp_path: Path) -> list[str]:
    (tmp_path / "m.onnx").write_bytes(b"not read: the measurement is replaced")
    return [str(tmp_path / "m.onnx")]


def test_no_warm_up_is_one_round_and_says_its_first_call_is_cold(passes, tmp_path: Path) -> None:
    kw = {"graph_sizes": [8], "batch_sizes": [1], "threads": [1, 2], "isolate": False, "op_profile": False}
    report = prof.profile_models(_model(tmp_path), iterations=50, warmup=0, **kw)
    assert passes == [(1, 50, 0), (2, 50, 0)]  # one pass a thread count: one cold call a row, not three
    assert report["settings"]["rounds"] == 1 and report["settings"]["warmup"] == 0
    assert report["settings"]["notes"][-1] == NOTE
    assert [r["iterations"] for r in report["models"][0]["results"]] == [50, 50]
    passes.clear()
    warm = prof.profile_models(_model(tmp_path), iterations=50, warmup=1, **kw)  # warm: rounds as before
    assert passes == [(1, 17, 1), (2, 17, 1), (1, 17, 1), (2, 17, 1), (1, 16, 1), (2, 16, 1)]
    assert warm["settings"]["rounds"] == 3 and NOTE not in warm["settings"]["notes"]


def test_no_warm_up_with_rounds_is_refused(passes, tmp_path: Path) -> None:
    with pytest.raises(SessionError) as err:
        prof.profile_models(_model(tmp_path), iterations=6, warmup=0, rounds=3, isolate=False)
    assert str(err.value) == (
        "profile: warmup 0 with 3 rounds: each round runs in a fresh process, so each would time its own cold first "
        "call at every size: 3 cold calls in each row, not one; time a cold start in 1 round"
    )
    assert passes == []
    report = prof.profile_models(_model(tmp_path), iterations=6, warmup=0, rounds=1, isolate=False, op_profile=False,
                                 graph_sizes=[8], batch_sizes=[1], threads=[1])  # fmt: skip
    assert passes == [(1, 6, 0)] and report["settings"]["notes"][-1] == NOTE


def test_the_rules() -> None:
    assert [default_rounds(50, w) for w in (0, 1, 5)] == [1, 3, 3] and default_rounds(50) == 3
    assert cold_note(1, True, True) is None and cold_note(0, False, True) is None  # torch rows always warm up
    assert cold_note(0, True, True) == NOTE + "; torch rows (checkpoints) still make one untimed call first"


def test_gtc_profile_refuses_warmup_0_with_rounds_in_one_line(exported, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    args = ["profile", str(exported["node"].path), "--warmup", "0", "--rounds", "3", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.splitlines() == [
        "error: --warmup 0 with --rounds 3: each round runs in a fresh process, so each would time its own cold first "
        "call at every size: 3 cold calls in each row, not one; give --rounds 1 to time one cold start, or --warmup 1 "
        "or more"
    ]
    assert not out.exists()


def test_gtc_profile_warmup_0_measures_one_round_and_notes_it(exported, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    args = ["profile", str(exported["node"].path), "--warmup", "0", "--out", str(out), "--threads", "1"]
    args += ["--sizes", "8", "--batch-sizes", "1", "--iterations", "6", "--no-isolate", "--no-op-profile"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["rounds"] == 1 and report["settings"]["warmup"] == 0
    assert NOTE in report["settings"]["notes"] and "warm-up 0: each exported model's row" in res.output
    (row,) = report["models"][0]["results"]
    assert row["iterations"] == 6 and row["warmup"] == 0 and len(row["rounds_p50_ms"]) == 1


def test_the_help_says_what_warmup_0_does() -> None:
    res = runner.invoke(app, ["profile", "--help"], terminal_width=100)
    text = " ".join(res.output.replace("│", " ").split())
    assert (
        "0 times the first, cold call of each size (a cold start): in one round, as each round would time its own,"
        in text
    )
    assert "so --rounds above 1 is refused with it." in text and "1 with --warmup 0 and an exported model." in text


def test_gtc_profile_refuses_cold_rounds_before_counting_their_iterations(exported, tmp_path: Path) -> None:
    """The refusal's answer (--rounds 1) also answers the iterations one: given second, a retry met it."""
    args = ["profile", str(exported["node"].path), "--warmup", "0", "--rounds", "3", "--iterations", "4"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "prof")])
    assert res.exit_code == 2 and res.output.startswith("error: --warmup 0 with --rounds 3: each round runs")


@pytest.fixture
def ckpt(tmp_path: Path) -> str:
    from tests.runtime.conftest import tiny_gt_checkpoint

    return tiny_gt_checkpoint(tmp_path)


def test_checkpoints_alone_are_not_refused_cold_rounds(ckpt: str, tmp_path: Path) -> None:
    """A checkpoint's (torch) rows make one untimed call a round whatever --warmup says: the refusal's reason
    (a cold call timed in each round) is not theirs, and they take the rounds asked."""
    from runtime.profile_rounds import cold_rounds_refusal

    assert cold_rounds_refusal(0, 3, exported=False) is None and cold_rounds_refusal(0, 3) is not None
    rep = prof.profile_models([ckpt], graph_sizes=[8], batch_sizes=[1], threads=[1], iterations=6, warmup=0, rounds=3,
                              op_profile=False, device="cpu")  # fmt: skip
    (row,) = rep["models"][0]["results"]
    assert (rep["models"][0]["rounds"], row["iterations"], row["warmup"], row["rounds_completed"]) == (3, 6, 1, 3)
    out = tmp_path / "prof"
    args = ["profile", ckpt, "--warmup", "0", "--rounds", "3", "--iterations", "6", "--out", str(out), "--threads", "1"]
    res = runner.invoke(app, [*args, "--sizes", "8", "--batch-sizes", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "report.json").read_text())["models"][0]["results"][0]["iterations"] == 6


def test_checkpoints_alone_take_the_default_rounds_even_with_warmup_0(ckpt: str, tmp_path: Path) -> None:
    """With an exported model, --warmup 0 means one round (each would time a cold call); a checkpoint's rows
    are warmed up whatever it says, so checkpoints alone keep the default rounds, and too few iterations for
    the rounds asked are refused as for exported models."""
    rep = prof.profile_models([ckpt], graph_sizes=[8], batch_sizes=[1], threads=[1], iterations=6, warmup=0,
                              op_profile=False, device="cpu")  # fmt: skip
    (row,) = rep["models"][0]["results"]
    assert (rep["settings"]["rounds"], rep["models"][0]["rounds"], row["rounds_completed"]) == (3, 3, 3)
    need = "profile: 3 rounds need at least 6 timed iterations (2 a round), got 4"
    with pytest.raises(SessionError, match=re.escape(need)):
        prof.profile_models([ckpt], graph_sizes=[8], batch_sizes=[1], threads=[1], iterations=4, rounds=3,
                            op_profile=False, device="cpu")  # fmt: skip
    out = tmp_path / "prof"
    args = ["profile", ckpt, "--rounds", "3", "--iterations", "4", "--out", str(out), "--threads", "1"]
    res = runner.invoke(app, [*args, "--sizes", "8", "--batch-sizes", "1", "--device", "cpu"])
    assert (res.exit_code, res.output) == (
        2,
        "error: --iterations 4 is too few for --rounds 3: each round times at least 2 calls (give --iterations 6 or "
        "more, or fewer rounds)\n",
    )
    assert not out.exists()
