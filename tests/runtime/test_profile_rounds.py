"""``gtc profile`` times the models in turn, in rounds, and compares them with the first.

Measured one after the other, a second model could run in a slow spell of the machine the first
escaped, and the table read a speed-up nobody made. The measurement is replaced here by one whose
samples are chosen, so what is tested is the order the runs are asked for, how rounds merge, which
rows are flagged, and the comparison and tables made of them."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

import runtime.profile as prof
import runtime.profile_cost as profile_cost
from runtime.errors import SessionError
from runtime.measure import timings
from runtime.profile_report import compare_models, report_tables
from runtime.profile_rounds import default_rounds, merge_rounds, split_iterations, unsteady_note
from tests.runtime.conftest import stand_in_entry, stand_in_files


def _row(threads: int | None, nodes: int, batch: int, prep: list[float], model: list[float]) -> dict[str, Any]:
    return {
        "threads": threads,
        "graph_nodes": nodes,
        "batch_size": batch,
        "iterations": len(prep),
        "warmup": 1,
        **timings(prep, model, batch),
        "peak_rss_mb": 100.0 + len(prep),
        "model_rss_mb": 50.0 + len(prep),
    }


def test_iterations_are_shared_out_and_each_round_gets_two() -> None:
    assert split_iterations(50, 3) == [17, 17, 16]
    assert split_iterations(6, 3) == [2, 2, 2]
    assert split_iterations(7, 1) == [7]
    with pytest.raises(SessionError) as e:
        split_iterations(5, 3)
    assert str(e.value) == "profile: 3 rounds need at least 6 timed iterations (2 a round), got 5"
    # not asked for: as many rounds as give two calls each, up to three
    assert [default_rounds(n) for n in (2, 3, 4, 5, 6, 50)] == [1, 1, 2, 2, 3, 3]


def test_rounds_merge_into_one_row_over_every_sample() -> None:
    a = _row(1, 32, 4, [1.0, 1.0, 1.0], [2.0, 2.0, 3.0])
    b = _row(1, 32, 4, [1.0, 2.0], [4.0, 4.0])
    m = merge_rounds([a, b])
    total = [3.0, 3.0, 4.0, 5.0, 6.0]
    assert m["samples_ms"] == total and m["iterations"] == 5
    assert m["latency_ms"]["p50"] == 4.0 and m["latency_ms"]["p90"] == pytest.approx(np.percentile(total, 90))
    assert m["model_ms"]["p50"] == 3.0 and m["preprocess_ms"]["max"] == 2.0
    assert m["preprocess_share"] == pytest.approx(6 / 21)
    assert m["graphs_per_s"] == pytest.approx(4 / (21 / 5 / 1e3))
    assert m["peak_rss_mb"] == 103.0 and m["model_rss_mb"] == 53.0  # the highest any round's process reached
    assert m["rounds_p50_ms"] == [3.0, 5.5] and m["rounds_spread"] == pytest.approx(5.5 / 3)
    assert m["rounds_unsteady"]  # 5.5 ms is above every call of the 3 ms round
    one = merge_rounds([a])
    assert one["latency_ms"] == a["latency_ms"] and one["rounds_spread"] == 1.0 and not one["rounds_unsteady"]


def test_a_torch_rows_rounds_keep_the_highest_round_of_its_gpu_fields() -> None:
    """Each round of a checkpoint loads it afresh, so its CUDA graphs are captured and held again a round: the
    merged row says what one round captured and held (summed over rounds, the captures read as more graphs
    than were ever held), and the highest round's GPU peak."""
    gpu = {"peak_gpu_mb": 40.0, "cuda_graphs_captured": 2, "cuda_graphs_held": 2, "cuda_graphs_replayed": True}
    a = {**_row(None, 32, 4, [1.0, 1.0], [2.0, 2.0]), **gpu}
    b = {**_row(None, 32, 4, [1.0, 1.0], [2.0, 2.0]), **gpu, "peak_gpu_mb": 41.5}
    m = merge_rounds([a, b])
    assert (m["peak_gpu_mb"], m["cuda_graphs_captured"], m["cuda_graphs_held"]) == (41.5, 2, 2)
    cpu = merge_rounds([_row(1, 32, 4, [1.0, 1.0], [2.0, 2.0])] * 2)
    assert "peak_gpu_mb" not in cpu and "cuda_graphs_captured" not in cpu


def test_jitter_of_a_few_calls_is_not_a_slow_round() -> None:
    """The pipeline's sub-millisecond rows of three calls a round had p50s 1.35x apart (0.49, 0.66, 0.51
    ms) from jitter alone, and were flagged: a round is slow where its p50 is above all the fastest
    round's calls."""
    jitter = [_row(1, 32, 1, [0.0] * 3, ms) for ms in ([0.49, 0.45, 0.70], [0.66, 0.40, 0.70], [0.51, 0.50, 0.52])]
    m = merge_rounds(jitter)
    assert m["rounds_spread"] == pytest.approx(0.66 / 0.49) and not m["rounds_unsteady"]
    spell = [_row(1, 32, 1, [0.0] * 3, ms) for ms in ([12.4, 12.3, 13.0], [24.2, 12.9, 25.0])]
    assert merge_rounds(spell)["rounds_unsteady"]
    assert unsteady_note([{"name": "m", "results": [m]}]) is None


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None, int, Any]]:
    """Every measurement asked for, (model, threads, iterations, op config); ``slow.onnx``'s second
    round at one thread takes twice as long, a slow spell of the machine."""
    calls: list[tuple[str, int | None, int, Any]] = []

    def measure_model(path: str, threads: int | None, configs: Any, iterations: int, **kwargs: Any) -> None:
        name = Path(path).name
        calls.append((name, threads, iterations, kwargs["op_config"]))
        spell = 2.0 if name == "slow.onnx" and threads == 1 and sum(c[0] == name for c in calls) == 3 else 1.0
        base = {"fast.onnx": 1.0, "slow.onnx": 2.0}[name]
        for nodes, batch in configs:
            prep = [1.0] * iterations
            model = [base * spell * nodes / 32] * iterations
            row = _row(threads, nodes, batch, prep, model)
            kwargs["emit"]({"kind": "result", **row, "cpus": [0], "oversubscribed": False, "providers": ["CPU"]})

    monkeypatch.setattr(prof, "measure_model", measure_model)
    monkeypatch.setattr(prof, "_model_entry", stand_in_entry)
    monkeypatch.setattr(profile_cost, "check_costs", lambda *args, **kwargs: None)  # stand-in files
    return calls


def test_the_models_take_turns_round_after_round(runs, tmp_path: Path) -> None:
    report = prof.profile_models(
        stand_in_files(tmp_path, "slow.onnx", "fast.onnx"),
        graph_sizes=[32, 64],
        batch_sizes=[1],
        threads=[1, 2],
        iterations=5,
        rounds=2,
        isolate=False,
        op_profile=False,
    )
    # a thread count at a time, every model, then the next round: not all of slow's runs, then fast's
    assert [(name, t, n) for name, t, n, _ in runs] == [
        ("slow.onnx", 1, 3),
        ("fast.onnx", 1, 3),
        ("slow.onnx", 2, 3),
        ("fast.onnx", 2, 3),
        ("slow.onnx", 1, 2),
        ("fast.onnx", 1, 2),
        ("slow.onnx", 2, 2),
        ("fast.onnx", 2, 2),
    ]
    assert report["settings"]["rounds"] == 2 and report["settings"]["iterations"] == 5
    slow, fast = report["models"]
    assert [(r["threads"], r["graph_nodes"], r["iterations"]) for r in slow["results"]] == [
        (1, 32, 5),
        (1, 64, 5),
        (2, 32, 5),
        (2, 64, 5),
    ]
    spelled = slow["results"][0]
    assert spelled["samples_ms"] == [3.0] * 3 + [5.0] * 2 and spelled["rounds_p50_ms"] == [3.0, 5.0]
    assert fast["results"][0]["rounds_spread"] == 1.0
    note = next(n for n in report["settings"]["notes"] if n.startswith("rows marked !"))
    assert "slow · 1T · 32×1 1.67x (3, 5 ms); slow · 1T · 64×1 1.80x (5, 9 ms)" in note
    assert "fast ·" not in note and "2T" not in note

    # fast against slow, whole call and model call alone
    cmp = report["comparison"]
    assert cmp["baseline"] == "slow"
    first = cmp["rows"][0]
    assert (first["model"], first["threads"], first["graph_nodes"]) == ("fast", 1, 32)
    assert first["p50_ms"] == 2.0 and first["baseline_p50_ms"] == 3.0 and first["speedup"] == pytest.approx(1.5)
    assert first["model_speedup"] == pytest.approx(2.0)  # the model call: 2 ms against 1 (slow's p50 of 2,2,2,4,4)
    assert [(r["threads"], r["graph_nodes"]) for r in cmp["rows"]] == [(1, 32), (1, 64), (2, 32), (2, 64)]


def test_a_profile_of_one_round_flags_nothing(runs, tmp_path: Path) -> None:
    report = prof.profile_models(
        stand_in_files(tmp_path, "slow.onnx"), graph_sizes=[32], batch_sizes=[1], threads=[1], iterations=4, rounds=1,
        isolate=False, op_profile=False,
    )  # fmt: skip
    assert len(runs) == 1 and report["settings"]["rounds"] == 1
    assert unsteady_note(report["models"]) is None and report["comparison"] is None


def test_the_op_profile_runs_once_in_the_first_round(runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof.profile_models(
        stand_in_files(tmp_path, "fast.onnx"), graph_sizes=[32, 64, 128], batch_sizes=[1, 4], threads=[2, 1],
        iterations=9, isolate=False,
    )  # fmt: skip
    # not asked for: three rounds of 3; the breakdown at the middle size and largest batch, first thread count
    assert [(t, n, op) for _, t, n, op in runs] == [
        (2, 3, (64, 4)),
        (1, 3, None),
        (2, 3, None),
        (1, 3, None),
        (2, 3, None),
        (1, 3, None),
    ]


def test_a_gpu_row_is_compared_with_every_thread_count() -> None:
    def model(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "results": rows}

    cpu = model("cpu", [_row(1, 32, 1, [1.0] * 2, [9.0] * 2), _row(2, 32, 1, [1.0] * 2, [5.0] * 2)])
    gpu = model("gpu", [_row(None, 32, 1, [1.0] * 2, [1.0] * 2), _row(None, 64, 1, [1.0] * 2, [1.0] * 2)])
    cmp = compare_models([cpu, gpu])
    assert cmp is not None
    assert [(r["threads"], r["baseline_threads"], r["speedup"], r["model_speedup"]) for r in cmp["rows"]] == [
        (None, 1, 5.0, 9.0),
        (None, 2, 3.0, 5.0),
    ]  # 64 nodes: the first model has no such row
    assert compare_models([cpu]) is None


def test_the_tables_fit_80_columns_without_folding_a_number(runs, tmp_path: Path) -> None:
    """At 80 columns (a terminal's default, and rich's off one) every value is read whole: the table
    had ten columns and folded 1871.2 graphs/s onto two lines as '1871.' and '2'."""
    report = prof.profile_models(
        stand_in_files(tmp_path, "slow.onnx", "fast.onnx"), graph_sizes=[32, 1024], batch_sizes=[1, 16],
        threads=[1, 16], iterations=4, rounds=2, isolate=False, op_profile=False, names=["dense-model", "pruned-model"],
    )  # fmt: skip
    console = Console(file=io.StringIO(), width=80, color_system=None)
    for t in report_tables(report)[1:4]:  # the two latency tables and the comparison
        console.print(t)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    body = [line for line in text.splitlines() if line.startswith("│")]
    assert len(body) == 8 + 8 + 8  # one line a row: nothing folded
    assert all(len(line) <= 80 for line in text.splitlines())
    slow_row = body[0].split("│")[1:-1]
    assert [c.strip() for c in slow_row] == ["1", "32×1!", "4.000", "5.000", "5.000", "3.000", "25", "250.0", "102"]
    assert re.search(r"│ pruned-model │ +1 │ +32×1 │ +2\.000 │ +2\.00x │ +1\.000 │ +3\.00x │", text)
    assert "16*" not in text  # not oversubscribed: the stand-in says so


def test_a_model_given_twice_is_measured_as_two(runs, tmp_path: Path) -> None:
    """An A/A run, which shows what the noise alone reads: keyed by path, the two collapsed into one entry
    measured once a round, reported twice under the second name and compared with itself."""
    (slow,) = stand_in_files(tmp_path, "slow.onnx")
    ticks: list[tuple[int, int]] = []
    report = prof.profile_models(
        [slow, slow], graph_sizes=[32], batch_sizes=[1], threads=[1], iterations=4, rounds=2, isolate=False,
        op_profile=False, names=["a", "b"], progress=lambda done, total, what: ticks.append((done, total)),
    )  # fmt: skip
    assert [(name, n) for name, _, n, _ in runs] == [("slow.onnx", 2)] * 4  # both, in both rounds
    a, b = report["models"]
    assert (a["name"], b["name"]) == ("a", "b") and a is not b and len(a["results"]) == len(b["results"]) == 1
    assert [r["model"] for r in report["comparison"]["rows"]] == ["b"]
    assert ticks[-1] == (4, 4) and [t[0] for t in ticks[1:-1]] == [1, 2, 3, 4]
