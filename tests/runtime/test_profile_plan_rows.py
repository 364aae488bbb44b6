"""``gtc profile`` measures a TensorRT engine once per configuration: thread counts do not apply to it.

Measured per ``--threads`` count, a ``.plan`` got the same measurement as many times, rows that differ
only by a thread count that changed nothing. TensorRT cannot run here, so the measurement itself is
replaced; what is tested is which runs :func:`runtime.profile.profile_models` asks for and the rows,
notes, progress and table it makes of them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import runtime.profile as prof
import runtime.profile_cost as profile_cost
from runtime.profile_report import report_tables

LATENCY = {"mean": 1.0, "std": 0.1, "min": 0.9, "p50": 1.0, "p90": 1.1, "p99": 1.2, "max": 1.3}


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None, Any]]:
    """The (model, threads, op config) of every measurement asked for, each answered with one row per
    configuration (and an unavailable op breakdown, as a TensorRT session gives)."""
    calls: list[tuple[str, int | None, Any]] = []

    def measure_model(path: str, threads: int | None, configs: Any, *args: Any, emit: Any, **kwargs: Any) -> None:
        op_config = kwargs.get("op_config", args[6] if len(args) > 6 else None)
        calls.append((Path(path).name, threads, op_config))
        for nodes, batch in configs:
            emit(
                {
                    "kind": "result",
                    "threads": threads,
                    "graph_nodes": nodes,
                    "batch_size": batch,
                    "latency_ms": LATENCY,
                    "iterations": kwargs["iterations"],
                    "graphs_per_s": 100.0,
                    "peak_rss_mb": 200.0,
                    "oversubscribed": False,
                    "providers": ["TensorrtExecution"] if threads is None else ["CPUExecutionProvider"],
                }
            )
        if op_config is not None:
            emit({"kind": "ops", "threads": threads, "graph_nodes": op_config[0], "batch_size": op_config[1]})

    def model_entry(label: str, path: str) -> dict[str, Any]:
        return {"name": label, "path": path, "arch": "gt", "lowering": "dense", "providers": None, "results": []}

    monkeypatch.setattr(prof, "measure_model", measure_model)
    monkeypatch.setattr(prof, "_model_entry", model_entry)
    # the files are stand-ins, not models: the attention-memory check before the runs would read them
    monkeypatch.setattr(profile_cost, "check_costs", lambda *args, **kwargs: None)
    return calls


def _files(tmp_path: Path, *names: str) -> list[str]:
    for n in names:
        (tmp_path / n).write_bytes(b"not read: the measurement is replaced")
    return [str(tmp_path / n) for n in names]


def test_a_plan_is_measured_once_per_size_and_an_onnx_file_per_thread_count(measured, tmp_path: Path) -> None:
    ticks: list[tuple[int, int, str]] = []
    report = prof.profile_models(
        _files(tmp_path, "gt.plan", "gt.onnx"),
        graph_sizes=[32, 128],
        batch_sizes=[1, 16],
        threads=[1, 2, 4],
        isolate=False,
        progress=lambda done, total, what: ticks.append((done, total, what)),
        rounds=1,  # the rounds' own test: tests/runtime/test_profile_rounds.py
    )
    assert measured == [
        ("gt.plan", None, (128, 16)),
        ("gt.onnx", 1, (128, 16)),
        ("gt.onnx", 2, None),
        ("gt.onnx", 4, None),
    ]
    plan, onnx = report["models"]
    sizes = [(32, 1), (32, 16), (128, 1), (128, 16)]
    assert [(r["threads"], r["graph_nodes"], r["batch_size"]) for r in plan["results"]] == [(None, *c) for c in sizes]
    assert [(r["threads"], r["graph_nodes"], r["batch_size"]) for r in onnx["results"]] == [
        (t, *c) for t in (1, 2, 4) for c in sizes
    ]
    assert prof.TENSORRT_NOTE in report["settings"]["notes"]
    # the progress bar counts what runs: 4 rows + the op breakdown for the plan, 3 × 4 + 1 for the ONNX file
    assert ticks[0] == (0, 18, "profiling") and ticks[-1] == (18, 18, "done")
    assert [t[0] for t in ticks[1:-1]] == list(range(1, 19))
    assert ticks[1][2] == "gt.plan · TensorRT" and ticks[6][2] == "gt.onnx · 1 thread"

    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(report_tables(report)[1])
    rows = [line for line in console.file.getvalue().splitlines() if line.startswith("│")]  # type: ignore[attr-defined]
    assert [line.split("│")[1].strip() for line in rows] == ["–"] * 4


def test_onnx_files_alone_get_no_tensorrt_note(measured, tmp_path: Path) -> None:
    report = prof.profile_models(
        _files(tmp_path, "gt.onnx"),
        graph_sizes=[32],
        batch_sizes=[1],
        threads=[1, 2],
        isolate=False,
        op_profile=False,
        rounds=1,
    )
    assert [c[1] for c in measured] == [1, 2]
    assert prof.TENSORRT_NOTE not in report["settings"]["notes"]


def test_thread_runs() -> None:
    assert prof.thread_runs("repo/gt/1/model.plan", [1, 2, 4]) == [None]
    assert prof.thread_runs("gt.engine", [2]) == [None]
    assert prof.thread_runs("gt.onnx", [1, 2, 4]) == [1, 2, 4]
