"""A ``gtc profile`` whose measurement fails in part reports what the rest measured, and says what failed.

A failed pass (ONNX Runtime out of memory at a size, a crashed measuring process) raised at once, and
the minutes of rows measured before it, and the models after it, were lost. The measurement is replaced
here by one that fails where chosen (``measure_model``, as test_profile_rounds replaces it), except where
a real measuring process is the point."""

from __future__ import annotations

import io
import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import runtime.profile as prof
import runtime.profile_cost as profile_cost
from runtime.errors import SessionError
from runtime.measure import timings
from runtime.profile_failures import PassFailed, ProfileIncomplete, failure_line
from runtime.profile_report import report_tables
from tests.runtime.conftest import stand_in_entry, stand_in_files

OOM = "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer of size 1073741824"


def _row(threads: int | None, nodes: int, batch: int, ms: float, iterations: int) -> dict[str, Any]:
    prep, model = [0.5] * iterations, [ms] * iterations
    return {"threads": threads, "graph_nodes": nodes, "batch_size": batch, "iterations": iterations, "warmup": 1,
            **timings(prep, model, batch), "peak_rss_mb": 100.0, "model_rss_mb": 50.0}  # fmt: skip


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None, int]]:
    """Every pass asked for, (model, threads, round); ``big.onnx`` fails at 64 nodes in its second round
    at one thread (an out-of-memory there), ``dead.onnx`` before any row of any pass."""
    seen: list[tuple[str, int | None, int]] = []

    def measure_model(path: str, threads: int | None, configs: Any, iterations: int, **kwargs: Any) -> None:
        name = Path(path).name
        round_ = 1 + sum(c[:2] == (name, threads) for c in seen)
        seen.append((name, threads, round_))
        if name == "dead.onnx":
            raise RuntimeError("the model's library crashed")
        for nodes, batch in configs:
            if name == "big.onnx" and threads == 1 and round_ == 2 and nodes == 64:
                raise SessionError(OOM)
            row = _row(threads, nodes, batch, {"small.onnx": 1.0, "big.onnx": 2.0}[name] * nodes / 32, iterations)
            kwargs["emit"]({"kind": "result", **row, "cpus": [0], "oversubscribed": False, "providers": ["CPU"]})

    monkeypatch.setattr(prof, "measure_model", measure_model)
    monkeypatch.setattr(prof, "_model_entry", stand_in_entry)
    monkeypatch.setattr(profile_cost, "check_costs", lambda *args, **kwargs: None)  # stand-in files
    return seen


def _profile(paths: list[str], **kwargs: Any) -> tuple[ProfileIncomplete, list[dict[str, Any]], list[tuple[int, int]]]:
    heard: list[dict[str, Any]] = []
    ticks: list[tuple[int, int]] = []
    with pytest.raises(ProfileIncomplete) as info:
        prof.profile_models(
            paths, graph_sizes=[32, 64], batch_sizes=[1], threads=[1, 2], iterations=6, rounds=3, isolate=False,
            on_failure=heard.append, progress=lambda d, t, w: ticks.append((d, t)), **{"op_profile": False, **kwargs},
        )  # fmt: skip
    return info.value, heard, ticks


def test_a_pass_failing_in_a_later_round_keeps_every_row_measured(calls, tmp_path: Path) -> None:
    err, heard, ticks = _profile(stand_in_files(tmp_path, "small.onnx", "big.onnx", "dead.onnx"))
    report = err.report
    small, big, dead = report["models"]
    # the other models' passes went on, round after round; the failed pass's later rounds did not run
    assert [c for c in calls if c[0] == "small.onnx"] == [("small.onnx", t, r) for r in (1, 2, 3) for t in (1, 2)]
    assert [c for c in calls if c[0] == "big.onnx"] == [("big.onnx", 1, 1), ("big.onnx", 2, 1), ("big.onnx", 1, 2),
                                                        ("big.onnx", 2, 2), ("big.onnx", 2, 3)]  # fmt: skip
    assert [c for c in calls if c[0] == "dead.onnx"] == [("dead.onnx", 1, 1), ("dead.onnx", 2, 1)]
    assert [(r["threads"], r["graph_nodes"], r["rounds_completed"], r["iterations"]) for r in small["results"]] == [
        (1, 32, 3, 6), (1, 64, 3, 6), (2, 32, 3, 6), (2, 64, 3, 6)]  # fmt: skip
    # big at one thread: 32 nodes in rounds 1 and 2 (measured before the failure), 64 nodes in round 1 only
    assert [(r["threads"], r["graph_nodes"], r["rounds_completed"], r["iterations"]) for r in big["results"]] == [
        (1, 32, 2, 4), (1, 64, 1, 2), (2, 32, 3, 6), (2, 64, 3, 6)]  # fmt: skip
    assert dead["results"] == [] and big["rounds"] == small["rounds"] == 3
    assert report["failed"] == [
        {"model": "dead", "path": str(tmp_path / "dead.onnx"), "threads": 1, "round": 1, "rounds": 3,
         "not_measured": [{"graph_nodes": 32, "batch_size": 1}, {"graph_nodes": 64, "batch_size": 1}],
         "op_profile": False, "error": "RuntimeError: the model's library crashed"},
        {"model": "dead", "path": str(tmp_path / "dead.onnx"), "threads": 2, "round": 1, "rounds": 3,
         "not_measured": [{"graph_nodes": 32, "batch_size": 1}, {"graph_nodes": 64, "batch_size": 1}],
         "op_profile": False, "error": "RuntimeError: the model's library crashed"},
        {"model": "big", "path": str(tmp_path / "big.onnx"), "threads": 1, "round": 2, "rounds": 3,
         "not_measured": [{"graph_nodes": 64, "batch_size": 1}], "op_profile": False, "error": OOM},
    ]  # in the order they failed  # fmt: skip
    assert heard == report["failed"]  # as each failed, not only at the end
    assert failure_line(report["failed"][2]) == f"big · 1T · round 2/3: 64×1 not measured (nor in later rounds): {OOM}"
    assert str(err) == (
        f"profile: 3 measurements failed: profiling {tmp_path / 'dead.onnx'} with 1 thread: RuntimeError: the "
        f"model's library crashed; profiling {tmp_path / 'dead.onnx'} with 2 threads: RuntimeError: the model's "
        f"library crashed; profiling {tmp_path / 'big.onnx'} with 1 thread: {OOM}"
    )
    assert err.measured and isinstance(err, SessionError)
    note = next(n for n in report["settings"]["notes"] if n.startswith("rows marked ~"))
    assert "big · 1T · 32×1 (2 of 3 rounds, 4 calls); big · 1T · 64×1 (1 of 3 rounds, 2 calls)." in note
    assert "2T" not in note and "small" not in note
    # the steps of the passes not run are taken off the bar: it ends full, not stuck at 20 of 36
    assert ticks[0] == (0, 3 * 2 * 2 * 3) and ticks[-1][0] == ticks[-1][1] == 12 + 9
    # no comparison silently made of partial rows: the short ones are marked, the failed models named
    cmp = report["comparison"]
    assert cmp["failed_models"] == ["big", "dead"]
    assert [(u["model"], u["threads"], u["graph_nodes"]) for u in cmp["unmeasured"]] == [
        ("dead", 1, 32), ("dead", 1, 64), ("dead", 2, 32), ("dead", 2, 64)]  # fmt: skip
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(next(t for t in report_tables(report) if str(getattr(t, "title", "")).startswith("vs small")))
    assert " ".join(console.file.getvalue().split()).endswith(  # type: ignore[attr-defined]
        "~ a side measured in fewer rounds than asked (a pass failed); not compared, measured in no round (a pass "
        "failed): dead · 1T · 32×1, dead · 1T · 64×1, dead · 2T · 32×1, dead · 2T · 64×1"
    )
    assert [(r["model"], r["threads"], r["graph_nodes"], r["partial"]) for r in cmp["rows"]] == [
        ("big", 1, 32, True), ("big", 1, 64, True), ("big", 2, 32, False), ("big", 2, 64, False)]  # fmt: skip


def test_the_tables_mark_short_rows_and_name_the_failures(calls, tmp_path: Path) -> None:
    err, _, _ = _profile(stand_in_files(tmp_path, "small.onnx", "big.onnx"))
    console = Console(file=io.StringIO(), width=200, color_system=None)
    for t in report_tables(err.report):
        console.print(t)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "~ fewer rounds than asked (a pass failed): see the note below" in text
    assert "big (gt, dense, CPU) · 6 timed calls a row in 3 rounds" in text  # as asked; its short rows marked ~
    assert re.search(r"│ +1 │ +32×1~ │", text) and re.search(r"│ +1 │ +64×1~ │", text)
    assert not re.search(r"│ +2 │ +32×1~ │", text)
    read = " ".join(text.split())
    assert "~ a side measured in fewer rounds than asked (a pass failed) note:" in read  # nothing unmeasured
    assert text.rstrip().endswith(f"failed: big · 1T · round 2/3: 64×1 not measured (nor in later rounds): {OOM}")


def test_a_failed_op_profile_keeps_its_pass_and_its_rounds(calls, tmp_path: Path, monkeypatch) -> None:
    measure = prof.measure_model

    def broken_op_profile(*args: Any, **kwargs: Any) -> None:
        measure(*args, **kwargs)
        if kwargs["op_config"] is not None:
            raise SessionError("profiler: no trace written")

    monkeypatch.setattr(prof, "measure_model", broken_op_profile)
    err, _, _ = _profile(stand_in_files(tmp_path, "small.onnx"), op_profile=True)
    (f,) = err.report["failed"]
    assert (f["threads"], f["round"], f["not_measured"], f["op_profile"]) == (1, 1, [], True)
    assert (
        failure_line(f)
        == "small · 1T · round 1/3: per-op profile failed (its rows were measured): profiler: no trace written"
    )
    assert len(calls) == 6 and all(r["rounds_completed"] == 3 for r in err.report["models"][0]["results"])
    assert err.report["models"][0]["ops"] is None


def test_nothing_measured_is_still_one_error(calls, tmp_path: Path) -> None:
    err, _, _ = _profile(stand_in_files(tmp_path, "dead.onnx"))
    assert not err.measured and len(err.report["failed"]) == 2


def test_a_measuring_process_killed_says_by_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The out-of-memory killer's SIGKILL read "died (exit code -9)": the signal is named."""
    import sys

    killer = tmp_path / "python"
    killer.write_text("#!/bin/sh\nkill -9 $$\n")
    killer.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(killer))
    kwargs = {"path": "m.onnx", "threads": 1}
    with pytest.raises(PassFailed) as info:
        prof._run_isolated(kwargs, lambda event: None)
    assert str(info.value) == f"profiling process for m.onnx died (exit code -{signal.SIGKILL.value}, SIGKILL)"
    assert info.value.detail == "the measuring process died (exit code -9, SIGKILL)"


def test_gtc_profile_writes_the_partial_report_and_exits_1(exported, tmp_path: Path, monkeypatch) -> None:
    """Two real models, measured in this process; the second one's second round fails."""
    from cli.main import app

    measure, seen = prof.measure_model, []

    def second_round_fails(path: str, *args: Any, **kwargs: Any) -> None:
        seen.append(path)
        if path == str(exported["graph"].path) and seen.count(path) == 2:
            raise SessionError(OOM)
        measure(path, *args, **kwargs)

    monkeypatch.setattr(prof, "measure_model", second_round_fails)
    out = tmp_path / "prof"
    args = ["profile", str(exported["node"].path), str(exported["graph"].path), "--out", str(out), "--threads", "1"]
    args += ["--sizes", "8", "--batch-sizes", "2", "--iterations", "4", "--rounds", "2", "--warmup", "1"]
    res = CliRunner().invoke(app, [*args, "--names", "node,graph", "--no-isolate", "--no-op-profile"])
    assert res.exit_code == 1, res.output
    output = " ".join(res.output.split())  # as read, whatever the width the lines were folded to
    line = f"failed: graph · 1T · round 2/2: 8×2 not measured: {OOM}"
    assert output.count(line) == 2  # when it failed, and under the tables
    assert (
        output.endswith(
            'error: 1 measurement failed (named above and in report.json\'s "failed"); the report holds the rows '
            "measured without them"
        )
        and "Traceback" not in res.output
    )
    report = json.loads((out / "report.json").read_text())
    node, graph = report["models"]
    assert [r["rounds_completed"] for r in node["results"]] == [2] and [r["iterations"] for r in node["results"]] == [4]
    assert [r["rounds_completed"] for r in graph["results"]] == [1] and graph["results"][0]["iterations"] == 2
    assert [(f["model"], f["threads"], f["round"], f["error"]) for f in report["failed"]] == [("graph", 1, 2, OOM)]
    assert report["comparison"]["rows"][0]["partial"] is True
    assert sorted(p.name for p in out.iterdir()) == [
        "latency_distribution.png", "latency_vs_size.png", "models.png", "op_breakdown.png", "report.json"]  # fmt: skip


def test_a_torch_row_failing_keeps_the_checkpoints_other_rows(tmp_path: Path, monkeypatch) -> None:
    """A checkpoint's passes take their turns in the rounds, in the profiler's process: a size that fails there
    (CUDA out of memory) ends that thread count's pass and its later rounds, as a failed pass of an exported
    model ends; the other thread count's passes go on, round after round."""
    import torch

    from runtime.profile_torch import CheckpointProfiler
    from tests.runtime.conftest import tiny_gt_checkpoint

    ckpt = tiny_gt_checkpoint(tmp_path)
    measure = CheckpointProfiler._measure
    passes: list[tuple[int | None, int]] = []  # (threads, graph nodes) of every size a pass began

    def oom_at_16_on_one_thread(self: Any, sess: Any, threads: int | None, nodes: int, batch: int, n: int) -> Any:
        passes.append((threads, nodes))
        if (threads, nodes) == (1, 16):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return measure(self, sess, threads, nodes, batch, n)

    monkeypatch.setattr(CheckpointProfiler, "_measure", oom_at_16_on_one_thread)
    heard: list[dict[str, Any]] = []
    ticks: list[tuple[int, int]] = []
    with pytest.raises(ProfileIncomplete) as info:
        prof.profile_models([ckpt], graph_sizes=[8, 16, 32], batch_sizes=[1], threads=[1, 2], iterations=4, rounds=2,
                            warmup=0, op_profile=False, device="cpu", on_failure=heard.append,
                            progress=lambda d, t, w: ticks.append((d, t)))  # fmt: skip
    (model,) = info.value.report["models"]
    rows = [(r["threads"], r["graph_nodes"], r["rounds_completed"], r["iterations"]) for r in model["results"]]
    assert rows == [(1, 8, 1, 2), (2, 8, 2, 4), (2, 16, 2, 4), (2, 32, 2, 4)]
    assert passes == [(1, 8), (1, 16), (2, 8), (2, 16), (2, 32), (2, 8), (2, 16), (2, 32)]  # no 1-thread round 2
    (f,) = heard
    error = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert (f["model"], f["threads"], f["round"], f["rounds"], f["error"]) == ("gt-ckpt", 1, 1, 2, error)
    assert [(s["graph_nodes"], s["batch_size"]) for s in f["not_measured"]] == [(16, 1), (32, 1)]
    assert str(info.value) == f"profile: 1 measurement failed: profiling {ckpt} with 1 thread: {error}"
    assert failure_line(f) == f"gt-ckpt · 1T · round 1/2: 16×1, 32×1 not measured (nor in later rounds): {error}"
    # 12 steps asked (2 thread counts, 3 sizes, 2 rounds); the 2 sizes and the round 1 thread cannot make, taken off
    assert ticks[0] == (0, 12) and ticks[2] == (1, 7) and ticks[-1] == (7, 7)


def test_a_pass_failing_after_its_rows_is_not_called_an_op_profile(tmp_path: Path, monkeypatch) -> None:
    """Every size measured, then the pass fails (the process's teardown): its rows are kept, and with no per-op
    profile asked (or one already given) the failure is the pass's, not a per-op profile's."""
    ops_given: list[bool] = []

    def measure_model(path: str, threads: int | None, configs: Any, iterations: int, **kwargs: Any) -> None:
        for nodes, batch in configs:
            row = _row(threads, nodes, batch, 1.0, iterations)
            kwargs["emit"]({"kind": "result", **row, "cpus": [0], "oversubscribed": False, "providers": ["CPU"]})
        if kwargs["op_config"] is not None and ops_given[0]:
            kwargs["emit"]({"kind": "ops", "ops": []})
        raise RuntimeError("crash at teardown")

    monkeypatch.setattr(prof, "measure_model", measure_model)
    monkeypatch.setattr(prof, "_model_entry", lambda label, path: {"name": label, "path": path, "results": []})
    monkeypatch.setattr(profile_cost, "check_costs", lambda *args, **kwargs: None)
    ticks: list[tuple[int, int]] = []
    for op_profile, given in ((False, False), (True, True), (True, False)):
        ops_given[:], ticks[:] = [given], []
        with pytest.raises(ProfileIncomplete) as info:
            prof.profile_models(stand_in_files(tmp_path, "a.onnx"), graph_sizes=[32], batch_sizes=[1], threads=[1],
                                iterations=4, rounds=2, isolate=False, op_profile=op_profile,
                                progress=lambda d, t, w: ticks.append((d, t)))  # fmt: skip
        f1, f2 = info.value.report["failed"]
        pending = op_profile and not given  # the per-op profile asked, and not given before the failure
        assert (f1["op_profile"], f1["not_measured"], f2["op_profile"]) == (pending, [], False)
        first = "per-op profile failed (its rows were measured)" if pending else "failed after its rows were measured"
        assert [failure_line(f) for f in (f1, f2)] == [
            f"a · 1T · round 1/2: {first}: RuntimeError: crash at teardown",
            "a · 1T · round 2/2: failed after its rows were measured: RuntimeError: crash at teardown",
        ]
        assert info.value.report["models"][0]["results"][0]["rounds_completed"] == 2
        steps = 2 + (op_profile and given)  # a round's row each, and the per-op profile where it was given
        assert ticks[-1] == (steps, steps)


def _fake_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """The measuring process replaced by a shell script printing ``script``'s lines (no Python: no torch)."""
    import sys

    child = tmp_path / "python"
    child.write_text("#!/bin/sh\n" + script)
    child.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(child))


RESULT = '{"kind": "result", "graph_nodes": 8}'


def test_a_native_librarys_print_on_the_event_stream_is_skipped(tmp_path: Path, monkeypatch) -> None:
    """A native library writes to fd 1, the child's event stream, which sys.stdout's swap cannot redirect: a
    line that is no event (not JSON, JSON but no object, an event after a print without its newline) is
    skipped, not a JSONDecodeError that lost every row measured."""
    _fake_child(tmp_path, monkeypatch, (
        "echo 'plugin: loaded libfoo.so'\necho 1\n"
        f"printf '%s\\n' 'no newline:{RESULT}'\nprintf '%s\\n' '{RESULT}'\necho '{{\"kind\": \"done\"}}'\n"
    ))  # fmt: skip
    heard: list[dict[str, Any]] = []
    prof._run_isolated({"path": "m.onnx", "threads": 1}, heard.append)
    assert heard == [json.loads(RESULT), json.loads(RESULT)]


def test_a_death_names_what_the_process_printed_last(tmp_path: Path, monkeypatch) -> None:
    _fake_child(tmp_path, monkeypatch, f"echo a\necho b\nprintf '%s\\n' '{RESULT}'\necho c\necho 'd: fatal'\nexit 3\n")
    heard: list[dict[str, Any]] = []
    with pytest.raises(PassFailed) as info:
        prof._run_isolated({"path": "m.onnx", "threads": 1}, heard.append)
    assert str(info.value) == "profiling process for m.onnx died (exit code 3); its last output: b | c | d: fatal"
    assert info.value.detail == "the measuring process died (exit code 3); its last output: b | c | d: fatal"
    assert heard == [json.loads(RESULT)]


def test_a_process_that_does_not_exit_is_killed_and_its_pass_failed(tmp_path: Path, monkeypatch) -> None:
    """Hung after its last event (a native library's teardown): killed, and a PassFailed, not a TimeoutExpired
    that lost every row measured."""
    _fake_child(tmp_path, monkeypatch, f"printf '%s\\n' '{RESULT}'\necho '{{\"kind\": \"done\"}}'\nexec sleep 600\n")
    monkeypatch.setattr(prof, "EXIT_WAIT_S", 0.5)
    heard: list[dict[str, Any]] = []
    with pytest.raises(PassFailed) as info:
        prof._run_isolated({"path": "m.onnx", "threads": 2}, heard.append)
    error = "the measuring process did not exit within 0.5 s of its last event: killed"
    assert (str(info.value), info.value.detail) == (f"profiling m.onnx with 2 threads: {error}", error)
    assert heard == [json.loads(RESULT)]


def test_gtc_profile_with_nothing_measured_ends_on_one_short_line(exported, tmp_path: Path, monkeypatch) -> None:
    """Each failure is named as it happens; the last line counts them, not repeats them."""
    from cli.main import app

    def dead(*args: Any, **kwargs: Any) -> None:
        raise SessionError(OOM)

    monkeypatch.setattr(prof, "measure_model", dead)
    out = tmp_path / "prof"
    args = ["profile", str(exported["node"].path), "--out", str(out), "--threads", "1,2", "--sizes", "8"]
    res = CliRunner().invoke(app, [*args, "--batch-sizes", "1", "--iterations", "2", "--no-isolate", "--no-op-profile"])
    assert res.exit_code == 1, res.output
    output = " ".join(res.output.split())  # as read, whatever the width the lines were folded to
    assert output.startswith(f"failed: node · 1T: 8×1 not measured: {OOM} failed: node · 2T: 8×1 not measured: {OOM}")
    assert output.endswith("error: 2 measurements failed (named above); no row was measured, so no report was written")
    assert output.count(OOM) == 2 and not out.exists()
    assert "done, 2 failed" in output  # the bar's last words: its steps (0/0) are those left to make
