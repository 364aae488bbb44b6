"""Profiling: report schema, positive and ordered numbers, per-op breakdown, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import SessionError
from runtime.profile import SCHEMA, machine_info, profile_models, validate_report, write_report
from runtime.profile_ops import _is_attention


@pytest.fixture(scope="module")
def report(exported) -> dict:
    events: list[tuple[int, int]] = []
    rep = profile_models(
        [exported["node"].path, exported["teddy"].path],
        graph_sizes=(8, 24),
        batch_sizes=(1, 4),
        threads=(1, 2),
        iterations=4,
        warmup=1,
        op_iterations=3,
        names=["dense", "teddy"],
        progress=lambda done, total, what: events.append((done, total)),
    )
    rep["_events"] = events
    return rep


def test_schema_and_numbers(report) -> None:
    events = report.pop("_events")
    validate_report(report)
    assert report["schema"] == SCHEMA
    assert events[-1][0] == events[-1][1] and events[0] == (0, events[-1][1]) and events[1][0] == 1
    assert [m["name"] for m in report["models"]] == ["dense", "teddy"]
    assert report["models"][1]["teddy"]["edges"] == 0.3
    for m in report["models"]:
        assert m["providers"] == ["CPUExecutionProvider"] and m["lowering"] == "dense"
        assert len(m["results"]) == 2 * 2 * 2
        for r in m["results"]:
            lat = r["latency_ms"]
            assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert lat["mean"] > 0 and lat["std"] >= 0 and r["graphs_per_s"] > 0 and r["peak_rss_mb"] > 0
            assert 0 <= r["preprocess_share"] <= 1 and len(r["samples_ms"]) == 4
            assert r["preprocess_ms"]["mean"] > 0 and r["model_ms"]["mean"] > 0
            assert r["nodes"] == r["graph_nodes"] * r["batch_size"]
            assert r["cpus"] is None or len(r["cpus"]) == min(r["threads"], machine_info()["usable_cores"])
        ops = m["ops"]
        assert ops["available"] and ops["threads"] == 1 and ops["kernel_ms_per_run"] > 0 and ops["profiled_run_ms"] > 0
        assert abs(sum(o["share"] for o in ops["by_op_type"]) - 1.0) < 1e-6
        assert 0 < ops["attention_share"] < 1 and ops["attention_method"] == "scope"
    mi = report["machine"]
    assert mi["onnxruntime"] and mi["logical_cores"] >= 1 and "CPUExecutionProvider" in mi["onnxruntime_providers"]


def test_write_report(report, tmp_path: Path) -> None:
    report.pop("_events", None)
    paths = write_report(report, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["latency_distribution.png", "latency_vs_size.png", "models.png", "op_breakdown.png", "report.json"]
    for p in paths:
        assert p.stat().st_size > 1000
    validate_report(json.loads((tmp_path / "out" / "report.json").read_text()))


def test_a_report_killed_while_plotting_leaves_the_old_one_whole(report, tmp_path: Path, monkeypatch) -> None:
    """All five files are renamed into place once all are rendered, report.json last: a run that dies
    on the third plot leaves the previous report.json and *every* PNG as they were, and no temp file.
    (The first two plots of the new numbers used to be renamed in already, beside the old report.json.)"""
    import copy

    from matplotlib.figure import Figure

    report.pop("_events", None)
    out = tmp_path / "out"
    write_report(report, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    savefig = Figure.savefig

    def dies_third(self, fname, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            Path(fname).write_bytes(b"half a png")
            raise KeyboardInterrupt
        return savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", dies_third)
    changed = copy.deepcopy({**report, "created": "later"})
    for m in changed["models"]:  # other numbers, so that new plots differ from the old ones
        for r in m["results"]:
            r["latency_ms"] = {k: 10 * v for k, v in r["latency_ms"].items()}
            r["samples_ms"] = [10 * v for v in r["samples_ms"]]
    with pytest.raises(KeyboardInterrupt):
        write_report(changed, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.setattr(Figure, "savefig", savefig)
    write_report(changed, out)  # the same call, not interrupted, does change the plots
    assert (out / "latency_vs_size.png").read_bytes() != before["latency_vs_size.png"]


def test_a_report_interrupted_into_a_new_folder_leaves_no_folder(report, tmp_path: Path, monkeypatch) -> None:
    """``gtc profile --out new/`` stopped by Ctrl-C while plotting left ``new/`` behind, empty: the
    folders ``write_report`` made are removed again (one already there is kept)."""
    from matplotlib.figure import Figure

    report.pop("_events", None)

    def interrupted(self, fname, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(report, tmp_path / "new" / "out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        write_report(report, tmp_path / "kept")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_in_process_and_errors(exported) -> None:
    rep = profile_models(
        [exported["graph"].path],
        graph_sizes=(6,),
        batch_sizes=(2,),
        threads=(1,),
        iterations=3,
        warmup=0,
        op_profile=False,
        isolate=False,
    )
    validate_report(rep)
    assert rep["models"][0]["results"][0]["graph_nodes"] == 6 and "ops" not in rep["models"][0]
    with pytest.raises(SessionError, match="at least 2 iterations"):
        profile_models([exported["graph"].path], iterations=1)
    with pytest.raises(SessionError, match="does not exist"):
        profile_models(["missing.onnx"])
    with pytest.raises(SessionError, match=r"profile: thread counts \[1, 2, 1\] repeat a value"):
        profile_models([exported["graph"].path], threads=(1, 2, 1))  # was measured twice, rows duplicated
    with pytest.raises(SessionError, match=r"names \['a'\] must be 2 distinct non-empty labels, one per model"):
        profile_models([exported["graph"].path, exported["node"].path], names=["a"])  # was zip()'s ValueError
    with pytest.raises(SessionError, match="distinct non-empty"):
        profile_models([exported["graph"].path, exported["node"].path], names=["a", "a"])


def test_attention_heuristic() -> None:
    layer = ": T/model.layers.0: gtcompress.models.layers.GTLayer"
    assert _is_attention("node_matmul", "MatMul", layer + "/matmul: aten.matmul.default")
    assert _is_attention("node_MatMul_54", "MatMul", layer + "/model.layers.0.attn.q: Linear/linear_2: aten.linear")
    assert not _is_attention("node_MatMul_9", "MatMul", layer + "/model.layers.0.ffn: FFN/linear: aten.linear")
    assert not _is_attention("node_add", "Add", layer + "/add_75: aten.add.Tensor")
    assert not _is_attention("node_linear", "Gemm", ": T/model.node_encoder: FeatureEncoder")
    assert _is_attention("SparseGraphAttention_3", "Exp", "")


def test_models_png_draws_no_bar_for_a_configuration_not_measured(tmp_path: Path, monkeypatch) -> None:
    """An ONNX file (1 and 2 threads) beside a CUDA checkpoint (threads null): each model's missing
    groups were drawn as bars of 0.00 ms, which read as instant."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    drawn: dict[str, list[float]] = {}
    bar = Axes.bar

    def spy(self, x, height, *args, label=None, **kwargs):
        if label in ("dense.onnx", "ckpt") and isinstance(height, list):  # models.png's grouped bars
            drawn[label] = list(height)
        return bar(self, x, height, *args, label=label, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)

    def res(threads: int | None, ms: float) -> dict:
        lat = {"mean": ms, "std": 0.1, "min": ms, "p50": ms, "p90": ms, "p99": ms, "max": ms}
        return {"threads": threads, "graph_nodes": 32, "batch_size": 1, "latency_ms": lat, "graphs_per_s": 1e3 / ms,
                "peak_rss_mb": 100.0, "samples_ms": [ms] * 5, "preprocess_share": 0.2}  # fmt: skip

    rep = {
        "schema": SCHEMA,
        "created": "2026-12-05T00:00:00Z",
        "machine": {},
        "settings": {"graph_sizes": [32], "batch_sizes": [1], "threads": [1, 2], "iterations": 5, "warmup": 1},
        "models": [
            {"name": "dense.onnx", "path": "a", "device": "cpu", "results": [res(1, 4.0), res(2, 3.0)], "ops": None},
            {"name": "ckpt", "path": "b", "device": "cuda:0", "results": [res(None, 1.0)], "ops": None},
        ],
    }
    write_report(rep, tmp_path / "out")
    nan = float("nan")
    assert str(drawn["dense.onnx"]) == str([4.0, 3.0, nan]) and str(drawn["ckpt"]) == str([nan, nan, 1.0])


def test_model_call_histogram_resolves_milliseconds() -> None:
    """gtc_model_call_seconds had Prometheus's default buckets, which start at 5 ms: every 1-4 ms call
    fell into the first bucket and its quantiles were meaningless."""
    from prometheus_client import generate_latest

    from runtime.metrics import Metrics

    m = Metrics()
    m.model_seconds.labels("g").observe(0.0015)
    text = generate_latest(m.registry).decode()
    assert 'gtc_model_call_seconds_bucket{le="0.001",model="g"} 0.0' in text
    assert 'gtc_model_call_seconds_bucket{le="0.002",model="g"} 1.0' in text


def test_a_child_whose_parent_stopped_reading_ends_quietly(monkeypatch) -> None:
    """Ctrl-C reaches the measuring child too, and the parent stops reading its events: the child's
    next write broke the pipe, and the user saw a KeyboardInterrupt + BrokenPipeError traceback
    under the parent's ``interrupted`` line. Now it ends without raising. Run here, in pytest's own
    process, so what the child arms for a real process is kept out of it: the stop watch (a thread that
    would end pytest 10 s after a Ctrl-C) and its SIGTERM handler."""
    import io
    import os
    import signal

    import runtime.profile as prof

    monkeypatch.setattr("runtime.children.exit_if_stop_is_not_heard", lambda grace_s: None)
    sigterm = signal.getsignal(signal.SIGTERM)

    class Broken(io.StringIO):
        def fileno(self) -> int:
            return self.fd

        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    read, write = os.pipe()
    os.close(read)
    broken = Broken()
    broken.fd = write
    try:
        for failure in (KeyboardInterrupt(), SessionError("no such provider")):

            def measure(emit, failure=failure, **kwargs) -> None:
                raise failure

            monkeypatch.setattr(prof, "measure_model", measure)
            monkeypatch.setattr("sys.stdin", io.StringIO("{}"))
            monkeypatch.setattr("sys.stdout", broken)
            prof._child_main()  # neither KeyboardInterrupt nor BrokenPipeError
    finally:
        os.close(write)
        signal.signal(signal.SIGTERM, sigterm)


def test_an_error_in_the_child_is_one_error_without_a_traceback(exported, capfd) -> None:
    """The parent raised on the child's error event and closed the pipe while the child still wrote
    ``done``: a BrokenPipeError traceback (most runs) printed before ``error: …``."""
    for _ in range(3):  # the child's write raced the parent's close
        with pytest.raises(SessionError, match="bogus"):
            profile_models(
                [exported["graph"].path],
                graph_sizes=(4,),
                batch_sizes=(1,),
                threads=(1,),
                iterations=2,
                warmup=0,
                op_profile=False,
                providers=["bogus"],
            )
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_op_breakdown_draws_no_bar_for_a_model_without_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """op_breakdown.png drew a torch checkpoint (and every model under --no-op-profile) as one full
    bar of 'other': 100 % of a kernel time nobody measured, next to the ONNX model's real shares."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    bars: list[tuple[float, float, str | None]] = []
    texts: list[tuple[float, str]] = []
    barh, text = Axes.barh, Axes.text

    def spy_barh(self, y, width, *args, label=None, **kwargs):
        bars.append((float(y), float(width), label))
        return barh(self, y, width, *args, label=label, **kwargs)

    def spy_text(self, x, y, s, *args, **kwargs):
        texts.append((float(y), str(s)))
        return text(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "barh", spy_barh)
    monkeypatch.setattr(Axes, "text", spy_text)
    lat = {"mean": 1.0, "std": 0.1, "min": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0}
    res = {"threads": 1, "graph_nodes": 32, "batch_size": 1, "latency_ms": lat, "graphs_per_s": 1e3,
           "peak_rss_mb": 100.0, "samples_ms": [1.0] * 3, "preprocess_share": 0.2}  # fmt: skip
    ops = {"by_op_type": [{"op_type": "MatMul", "share": 0.75}, {"op_type": "Add", "share": 0.25}],
           "attention_share": 0.5}  # fmt: skip
    rep = {
        "schema": SCHEMA,
        "created": "2026-12-05T00:00:00Z",
        "machine": {},
        "settings": {"graph_sizes": [32], "batch_sizes": [1], "threads": [1], "iterations": 3, "warmup": 1},
        "models": [
            {"name": "gt.onnx", "path": "a", "backend": "onnxruntime", "results": [res], "ops": ops},
            {"name": "gt", "path": "b", "backend": "torch", "results": [res], "ops": None},
        ],
    }
    write_report(rep, tmp_path / "out")
    assert [(y, w) for y, w, _ in bars if w > 0] == [(0.0, 0.75), (0.0, 0.25)]  # the ONNX row only
    assert all(y == 0.0 for y, _, _ in bars)
    assert (1.0, "no per-op breakdown: a checkpoint runs with torch (ONNX Runtime's profiler only)") in texts


def test_a_directory_given_through_a_symlink_is_named_by_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directories were named by their resolved path (to read "." as the directory's own name), which
    also followed symbolic links: gtc serve runs/best (-> gt-2024) served the model as 'gt-2024', so
    requests to /v2/models/best got 404, and gtc profile labelled it 'gt-2024' (before, 'best')."""
    from runtime.profile_labels import model_labels as _labels
    from runtime.served import default_model_name

    (tmp_path / "gt-2024").mkdir()
    (tmp_path / "best").symlink_to("gt-2024")
    assert default_model_name(tmp_path / "best") == "best"
    assert _labels([str(tmp_path / "best"), str(tmp_path / "gt-2024")]) == ["best", "gt-2024"]
    monkeypatch.chdir(tmp_path / "gt-2024")
    assert default_model_name(".") == "gt-2024"  # "." is still the directory's own name
    assert default_model_name("../best") == "best"


def test_an_isolated_rows_peak_rss_is_its_own_process_not_the_profilers(exported) -> None:
    """``ru_maxrss`` survives fork/exec on Linux: each measurement child reported the profiler's own
    high-water mark (torch imported for checkpoint rows, or anything else it held) as its peak RSS,
    so every ONNX row read the same ~300 MB whatever the model. A 600 MB ballast in this process
    must not show up in the child's rows."""
    import numpy as np

    from runtime.measure import peak_rss_mb

    if not Path("/proc/self/status").is_file():
        pytest.skip("VmHWM is Linux's")
    ballast = np.ones(600 * 2**20 // 8)  # touched: resident
    assert peak_rss_mb() > 600
    rep = profile_models(
        [exported["node"].path], graph_sizes=(8,), batch_sizes=(1,), threads=(1,), iterations=2, warmup=0,
        op_profile=False,
    )  # fmt: skip
    del ballast
    row = rep["models"][0]["results"][0]
    assert 0 < row["model_rss_mb"] <= row["peak_rss_mb"] < 400  # an interpreter, numpy, ONNX Runtime, a tiny model


def test_model_onnx_files_are_named_by_the_folder_that_tells_them_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``runs/dense/model.onnx`` and ``runs/scatter/model.onnx`` were both named by their grandparent
    (``runs``, as in a Triton repository ``repo/<model>/<version>/model.onnx``) and came out as
    ``runs.onnx#0``/``runs.onnx#1``, with ``#2`` even on a checkpoint whose name was unique; a bare
    ``model.onnx`` in the current directory was named ``""``."""
    from runtime.profile_labels import model_labels as _labels

    for d in ("runs/dense", "runs/scatter", "repo/gt/1", "repo/gt/2", "runs/ckpt", "x/1", "y/x/1", "z/x/1"):
        (tmp_path / d).mkdir(parents=True)
    for f in ("runs/dense/model.onnx", "runs/scatter/model.onnx", "repo/gt/1/model.onnx", "repo/gt/2/model.plan"):
        (tmp_path / f).write_bytes(b"")
    runs = tmp_path / "runs"
    assert _labels([str(runs / "dense/model.onnx"), str(runs / "scatter/model.onnx"), str(runs / "ckpt")]) == [
        "dense",
        "scatter",
        "ckpt",
    ]
    assert _labels([str(tmp_path / "repo/gt/1/model.onnx"), str(tmp_path / "repo/gt/2/model.plan")]) == [
        "gt.onnx",
        "gt.plan",
    ]
    assert _labels([str(tmp_path / "x/1/model.onnx"), str(tmp_path / "y/x/1/model.onnx"), str(runs / "ckpt")]) == [
        f"{tmp_path.name}/x.onnx",  # the folder above the model directory tells them apart
        "y/x.onnx",
        "runs/ckpt/",
    ]
    assert _labels([str(tmp_path / "y/x/1/model.onnx"), str(tmp_path / "z/x/1/model.onnx")]) == ["y/x.onnx", "z/x.onnx"]
    # two versions of one Triton model were gt.onnx#0 / gt.onnx#1, saying neither version
    (tmp_path / "repo/gt/2/model.onnx").write_bytes(b"")
    versions = [str(tmp_path / "repo/gt/1/model.onnx"), str(tmp_path / "repo/gt/2/model.onnx")]
    assert _labels(versions) == ["gt/1/model.onnx", "gt/2/model.onnx"]
    clash = [str(tmp_path / "x/1/model.onnx"), str(tmp_path / "x/1/model.onnx"), str(runs / "ckpt")]
    assert _labels(clash) == ["x.onnx#0", "x.onnx#1", "ckpt/"]  # numbered: only the two that clash
    monkeypatch.chdir(runs / "dense")
    assert _labels(["model.onnx"]) == ["dense"]


def test_rows_measured_in_the_calling_process_say_whose_memory_they_report(exported) -> None:
    """With isolate=False a row's peak RSS is the calling process's high-water mark: 300 MB the caller
    held showed up as the model's peak RSS (90 MB alone, 390 MB after), and nothing said so; the note
    is in report.json and printed under the tables (so are the torch rows' notes, once JSON-only)."""
    from rich.console import Console

    from runtime.profile import NOT_ISOLATED_NOTE
    from runtime.profile_report import report_tables

    kw = {"graph_sizes": (8,), "batch_sizes": (1,), "threads": (1,), "iterations": 2, "op_profile": False}
    rep = profile_models([exported["node"].path], isolate=False, **kw)
    assert rep["settings"]["notes"] == [NOT_ISOLATED_NOTE]
    console = Console(record=True, width=400)
    for t in report_tables(rep):
        console.print(t)
    assert f"note: {NOT_ISOLATED_NOTE}" in console.export_text()
    assert profile_models([exported["node"].path], isolate=True, **kw)["settings"]["notes"] == []


def test_the_per_op_table_says_its_milliseconds_are_the_profilers(tmp_path: Path) -> None:
    """The per-op ms/run are timed under ONNX Runtime's profiler, which slows every node: for the
    tiny dense GT they summed to 0.65 ms against a 0.35 ms model call in the latency rows (the whole
    profiled run 1.1 ms), and nothing said so. The breakdown keeps the profiled run's mean, and the
    table's caption puts it beside the row's unprofiled model time."""
    from rich.console import Console

    from runtime.profile_ops import op_breakdown
    from runtime.profile_report import report_tables

    def run(ts: int, dur: int) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def kernel(ts: int, dur: int) -> dict:
        return {"cat": "Node", "name": "n_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": "MatMul"}}

    events = [run(0, 5000), kernel(10, 4000), run(6000, 1000), kernel(6010, 600), run(8000, 1400), kernel(8010, 800)]
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(events))
    ops = op_breakdown(str(prof), str(tmp_path / "none.onnx"))
    assert ops["runs"] == 2 and ops["kernel_ms_per_run"] == pytest.approx(0.7)
    assert ops["profiled_run_ms"] == pytest.approx(1.2)  # the first (warm-up) run left out, as for the kernels
    ops.update({"threads": 1, "graph_nodes": 8, "batch_size": 4, "available": True})
    lat = {"mean": 1.0, "std": 0.1, "min": 0.9, "p50": 1.0, "p90": 1.1, "p99": 1.2, "max": 1.2}
    row = {"threads": 1, "graph_nodes": 8, "batch_size": 4, "latency_ms": lat, "graphs_per_s": 4000.0,
           "peak_rss_mb": 90.0, "model_ms": {**lat, "mean": 0.35}, "preprocess_share": 0.6}  # fmt: skip
    rep = {"machine": {"cpu": "x", "usable_cores": 2, "logical_cores": 2, "memory_gib": 1, "os": "L", "python": "3",
                       "onnxruntime": "1"}, "settings": {"notes": [], "iterations": 50},
           "models": [{"name": "dense", "results": [row], "ops": ops}]}  # fmt: skip
    console = Console(record=True, width=400)
    for t in report_tables(rep):
        console.print(t)
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert (
        "ms/run under ONNX Runtime's profiler: a run took 1.200 ms there, 0.350 ms unprofiled (model call, mean); "
        "read the shares, not the milliseconds"
    ) in text
    # how many samples the percentiles rest on; calls per run, not over the profiled runs (2 MatMul for 1 node)
    assert "dense (None, None, ?) · 50 timed calls a row" in text
    assert "┃ calls/run ┃" in text and "│ MatMul │ 0.700 │ 100.0% │ 1 │" in text


@pytest.mark.parametrize("latencies", [(32.0, 45.0), (20.0, 90.0), (1.2, 24.0), (0.3, 900.0)])
def test_latency_vs_size_numbers_its_y_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, latencies) -> None:
    """latency_vs_size.png turned minor ticks off on its log axes, so matplotlib labelled only powers of
    ten: latencies within one decade (the usual case) left the y axis without a single number, and
    1.2 to 24 ms had one. Every panel now has at least two labelled ticks inside its view, written as
    plain milliseconds (matplotlib's own labels are mathtext powers, '$\\mathdefault{10^{1}}$')."""
    import matplotlib

    matplotlib.use("Agg")
    import runtime.profile_report as profile_report

    labelled: list[list[str]] = []
    save = profile_report._save

    def spy(fig, path: Path, staged) -> None:
        if path.name == "latency_vs_size.png":
            fig.canvas.draw()
            for ax in fig.axes:
                lo, hi = ax.get_ylim()
                ticks = ax.yaxis.get_ticklabels(which="both")
                labelled.append([t.get_text() for t in ticks if t.get_text() and lo <= t.get_position()[1] <= hi])
        save(fig, path, staged)

    monkeypatch.setattr(profile_report, "_save", spy)

    def res(nodes: int, ms: float) -> dict:
        lat = {
            "mean": ms,
            "std": 0.1,
            "min": ms * 0.98,
            "p50": ms,
            "p90": ms * 1.02,
            "p99": ms * 1.03,
            "max": ms * 1.05,
        }
        return {"threads": 1, "graph_nodes": nodes, "batch_size": 1, "latency_ms": lat, "graphs_per_s": 1e3 / ms,
                "peak_rss_mb": 100.0, "samples_ms": [ms] * 3, "preprocess_share": 0.2}  # fmt: skip

    rep = {
        "schema": SCHEMA,
        "created": "2026-12-06T00:00:00Z",
        "machine": {},
        "settings": {"graph_sizes": [32, 512], "batch_sizes": [1], "threads": [1], "iterations": 3, "warmup": 1},
        "models": [{"name": "gt.onnx", "path": "a", "results": [res(32, latencies[0]), res(512, latencies[1])]}],
    }
    write_report(rep, tmp_path / "out")
    assert len(labelled) == 1 and len(labelled[0]) >= 2, labelled
    assert all(float(t.replace("\N{MINUS SIGN}", "-")) > 0 for t in labelled[0]), labelled


def test_configurations_run_smallest_first_and_are_reported_in_the_order_given(
    exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row's peak RSS is the process's high-water mark so far: with sizes given largest first, the small
    rows read what the large ones had left (337 MB against 86 MB measured first). They are measured smallest
    first (nodes x batch) now, and still reported in the order given."""
    import runtime.profile as profile

    measured: list[tuple[int, int]] = []
    real = profile.time_session

    def spy(sess, graphs, iterations, warmup):  # type: ignore[no-untyped-def]
        measured.append((graphs[0].x.shape[0], len(graphs)))
        return real(sess, graphs, iterations, warmup)

    monkeypatch.setattr(profile, "time_session", spy)
    rep = profile_models(
        [exported["node"].path], graph_sizes=(24, 8), batch_sizes=(4, 1), threads=(1,), iterations=2, warmup=0,
        op_profile=False, isolate=False,
    )  # fmt: skip
    assert measured == [(8, 1), (24, 1), (8, 4), (24, 4)]
    rows = rep["models"][0]["results"]
    assert [(r["graph_nodes"], r["batch_size"]) for r in rows] == [(24, 4), (24, 1), (8, 4), (8, 1)]
