"""``gtc profile`` refuses a configuration whose attention memory is past the server's limit before any run:
``--sizes 100000`` on a dense model padded attention to 100,000^2 cells after minutes of LapPE, and the
OOM killer ended it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import runtime.profile
from gtcompress.preprocess.pe import PE_GRAPH_WORK, pe_bytes
from runtime.errors import SessionError
from runtime.measure import make_graphs
from runtime.packing import MIB
from runtime.profile import profile_models
from runtime.profile_cost import DEFAULT_MAX_ATTENTION_MIB, attention_need, model_file
from runtime.request_cost import attention_cell_bytes, slot_bytes
from runtime.served import ServerLimits
from runtime.session import GraphSession


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("a model was measured before the configuration was refused")


def test_the_default_limit_is_the_servers() -> None:
    assert DEFAULT_MAX_ATTENTION_MIB == ServerLimits().max_attention_mib == 2048.0


def test_a_dense_size_past_the_limit_is_refused_before_any_run(exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node model (GT, dense, 2 heads with edge features) takes 78 B a cell, as the server counts it:
    300 nodes are 6.7 MiB a layer, 200 nodes 2.98 MiB."""
    path = str(exported["node"].path)
    assert attention_cell_bytes(GraphSession(path)) == 78
    monkeypatch.setattr(runtime.profile, "_run_isolated", _must_not_run)
    monkeypatch.setattr(runtime.profile, "measure_model", _must_not_run)
    want = (
        f"profile: {path} at graph size 300 and batch size 2 needs an estimated 13.4 MiB of attention memory "
        "per layer (2 padded 300x300 attention score matrices at 78 B a cell), above the limit of 5 MiB; "
        "choose smaller --sizes or --batch-sizes, or raise --max-attention-mib"
    )
    with pytest.raises(SessionError) as e:
        profile_models([path], graph_sizes=(300, 100), batch_sizes=(2,), max_attention_mib=5)
    assert str(e.value) == want
    with pytest.raises(SessionError, match=r"at graph size 100000 and batch size 1 needs an estimated 743,866\.0 MiB"):
        profile_models([path], graph_sizes=(100_000,), batch_sizes=(1,))  # the server's default limit


def test_a_size_within_the_limit_is_measured(exported) -> None:
    rep = profile_models(
        [str(exported["node"].path)],
        graph_sizes=(200,),
        batch_sizes=(1,),
        threads=(1,),
        iterations=2,
        warmup=0,
        op_profile=False,
        isolate=False,
        max_attention_mib=5,
    )
    assert [r["graph_nodes"] for r in rep["models"][0]["results"]] == [200]


def test_padded_slots_are_counted_on_the_graphs_the_profile_builds(exported) -> None:
    """The padded lowering's estimate is the slot count of the layout the profile's own random graphs get."""
    path = str(exported["graph"].path)
    sess = GraphSession(path)
    cost = slot_bytes(sess)
    assert cost > 0
    prepared = sess.prepare(make_graphs(sess.spec, 500, 3, 4.0, 7))
    nbr = [a for name, a in prepared.inputs.items() if name.startswith("nbr_src")]
    assert nbr, sorted(prepared.inputs)
    slots = sum(int(np.prod(a.shape)) for a in nbr)
    need, what = attention_need(model_file(path), 500, 3, 4.0, 7)
    assert (need, what) == (slots * cost, f"{slots:,} neighbour-list slots at {cost} B a slot")
    with pytest.raises(SessionError, match=rf"at graph size 500 and batch size 3 needs an estimated {need / MIB:,.1f}"):
        profile_models([path], graph_sizes=(500,), batch_sizes=(3,), avg_degree=4.0, seed=7, max_attention_mib=1)


def test_an_edge_lowering_has_no_attention_memory(exported, tmp_path: Path) -> None:
    from exporters.onnx import export_onnx
    from tests.runtime.conftest import seeded_model

    cfg = exported["graph"].model.config
    out = tmp_path / "scatter.onnx"
    export_onnx(seeded_model(cfg), out, "scatter", verify_batches=1)
    assert attention_need(model_file(str(out)), 100_000, 4, 4.0, 0) == (0, "")


def test_the_cli_refuses_it_in_one_line_before_profiling(exported, tmp_path: Path, monkeypatch) -> None:
    """One line: no progress bar before it, though the refusal is profile_models' own."""
    from cli.main import app

    monkeypatch.setattr(runtime.profile, "_run_isolated", _must_not_run)
    monkeypatch.setattr(runtime.profile, "measure_model", _must_not_run)
    path = exported["node"].path
    res = CliRunner().invoke(app, ["profile", str(path), "--sizes", "100000", "--out", str(tmp_path / "p")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert " ".join(lines[0].split()) == (
        f"error: profile: {path} at graph size 100000 and batch size 1 needs an estimated 743,866.0 MiB of "
        "attention memory per layer (1 padded 100000x100000 attention score matrices at 78 B a cell), above the "
        "limit of 2,048 MiB; choose smaller --sizes or --batch-sizes, or raise --max-attention-mib"
    )
    res = CliRunner().invoke(
        app, ["profile", str(path), "--sizes", "300", "--max-attention-mib", "5", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2 and "graph size 300 and batch size 1 needs an estimated 6.7 MiB" in res.output


def test_the_cli_counts_each_size_once(exported, tmp_path: Path, monkeypatch) -> None:
    """The CLI checked every size before its progress bar and profile_models checked them all again (a
    checkpoint loaded twice for it); the one check left is the library's, which the CLI's bar waits for."""
    import runtime.profile_cost
    from cli.main import app

    checks: list[list[tuple[int, int]]] = []
    check = runtime.profile_cost.check_costs

    def counted(paths: list[str], configs: list[tuple[int, int]], *args: object) -> None:
        checks.append(list(configs))
        return check(paths, configs, *args)

    monkeypatch.setattr(runtime.profile_cost, "check_costs", counted)
    path = exported["node"].path
    argv = ["profile", str(path), "--sizes", "8,12", "--batch-sizes", "1", "--threads", "1", "--iterations", "2"]
    res = CliRunner().invoke(app, [*argv, "--warmup", "0", "--no-op-profile", "--no-isolate", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert checks == [[(8, 1), (12, 1)]]


@pytest.fixture(scope="module")
def lap_scatter(exported, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``graph`` model (LapPE k = 2) on the scatter lowering: no attention memory to bound."""
    from exporters.onnx import export_onnx
    from tests.runtime.conftest import seeded_model

    out = tmp_path_factory.mktemp("lap-scatter") / "lap.onnx"
    export_onnx(seeded_model(exported["graph"].model.config), out, "scatter", verify_batches=1)
    return str(out)


def test_positional_encodings_past_the_servers_memory_limit_are_refused_before_any_run(
    lap_scatter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--sizes 100000`` on a model with LapPE was accepted and ran for minutes in the first call's
    encodings (scipy's shift-invert LU, counted at 186 GiB as the server counts a raw request's)."""
    monkeypatch.setattr(runtime.profile, "_run_isolated", _must_not_run)
    monkeypatch.setattr(runtime.profile, "measure_model", _must_not_run)
    with pytest.raises(SessionError) as e:
        profile_models([lap_scatter], graph_sizes=(100_000,), batch_sizes=(1,))
    assert str(e.value) == (
        f"profile: {lap_scatter} at graph size 100000 and batch size 1 needs an estimated 190,754.7 MiB of memory to "
        "compute its positional encodings pe_lap, above the limit of 2,048 MiB (gtc serve's --max-inflight-mib); "
        "choose smaller --sizes or --batch-sizes, or raise --max-inflight-mib"
    )
    with pytest.raises(SessionError, match=r"at graph size 100000 and batch size 1 needs an estimated 4e\+15 steps"):
        profile_models([lap_scatter], graph_sizes=(100_000,), batch_sizes=(1,), max_inflight_mib=200_000)


def test_positional_encoding_work_past_the_servers_limit_is_refused_before_any_run(
    exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RWSE's memory stays bounded on large graphs (blocks of dense columns), its time does not: 5,000
    nodes pass the node model's attention limit and take 3 x 5000^3 steps, past the server's 1.5e11."""
    path = str(exported["node"].path)
    monkeypatch.setattr(runtime.profile, "_run_isolated", _must_not_run)
    monkeypatch.setattr(runtime.profile, "measure_model", _must_not_run)
    with pytest.raises(SessionError) as e:
        profile_models([path], graph_sizes=(5000, 100), batch_sizes=(2, 1))
    assert str(e.value) == (
        f"profile: {path} at graph size 5000 and batch size 1 needs an estimated 3.75e+11 steps of work for its "
        "positional encodings pe_rwse, above the limit of 1.5e+11 (gtc serve's --max-pe-work); choose smaller "
        "--sizes or --batch-sizes, or raise --max-pe-work"
    )


def test_a_graphormers_distances_count_as_work(exported) -> None:
    """A Graphormer computes ``max_spd`` products of each padded row inside the model, on every call."""
    from runtime.profile_cost import ModelFile, pe_need

    spec = exported["node"].spec  # RWSE k = 4, not packed
    cfg = {"arch": "graphormer", "heads": 2, "max_spd": 3}
    model = ModelFile("g.onnx", spec, {"model_config": json.dumps(cfg)}, "onnxruntime_onnx")
    need = pe_need(model, 1000, 2, 4.0)
    assert need.work == 3 * 2 * 1000**3 + 2 * (3 * 1000**3) + 2 * PE_GRAPH_WORK["rwse"]
    assert (
        need.worked
        == "positional encodings pe_rwse and shortest-path distances (3 products of 2 padded 1000x1000 matrices)"
    )
    assert need.bytes == pe_bytes("rwse", np.array([1000, 1000]), np.array([4000, 4000]), 4) > 0


def test_the_cli_refuses_encodings_past_the_limit_in_one_line(lap_scatter: str, tmp_path: Path, monkeypatch) -> None:
    from cli.main import app

    monkeypatch.setattr(runtime.profile, "_run_isolated", _must_not_run)
    monkeypatch.setattr(runtime.profile, "measure_model", _must_not_run)
    res = CliRunner().invoke(
        app, ["profile", lap_scatter, "--sizes", "2000", "--max-inflight-mib", "50", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and " ".join(lines[0].split()) == (
        f"error: profile: {lap_scatter} at graph size 2000 and batch size 1 needs an estimated 91.9 MiB of memory "
        "to compute its positional encodings pe_lap, above the limit of 50 MiB (gtc serve's --max-inflight-mib); "
        "choose smaller --sizes or --batch-sizes, or raise --max-inflight-mib"
    ), res.output
    res = CliRunner().invoke(
        app, ["profile", lap_scatter, "--sizes", "2000", "--max-pe-work", "1e9", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "needs an estimated 8.004e+09 steps of work" in res.output, res.output
