"""The pipeline's export and int8 stages on one small GT. Each int8 file is set against its float32 export on
the val split as a deployment runs both (TEDDY applied); the fewest blocks are kept float32 that bring it
within ``export.quantize_max_drop``, the closest file where none does (the report says so); a changed bound
measures the file anew, and a changed profile batch exports anew where the auto lowering reads it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from exporters.onnx import read_metadata
from exporters.quantize import QUANT_KEY
from gtcompress.pipeline import load_config
from gtcompress.pipeline.cache import StageCache
from gtcompress.pipeline.context import ModelArtifact, OnnxArtifact, RunContext

pytestmark = pytest.mark.usefixtures("module_cache")

SIZE = "20,8,8"
#: the checkpoint's blocks (the search's order: the file's), each one's share of a 2-point int8 drop
COST = {"layers.0.attn": 0.2, "layers.0.ffn": 1.6, "head": 0.2}
TEDDY = {"edges": 0.3, "per_graph": True}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> OnnxArtifact:
    """A one-layer GT trained on CLUSTER and exported float32, as the pipeline's export stage leaves them;
    its model marked as taking TEDDY's edges (the stage applies what the artifact says)."""
    from typer.testing import CliRunner

    from cli.main import app
    from exporters.onnx import export_onnx
    from gtcompress.checkpoint import load_checkpoint

    root = tmp_path_factory.mktemp("int8")
    ckpt = root / "models" / "gt-dense"
    train = ["train", "--data", "cluster", "--size", SIZE, "--hidden", "16", "--layers", "1", "--heads", "2"]
    res = CliRunner().invoke(app, [*train, "--epochs", "1", "--pe", "none", "--out", str(ckpt)])
    assert res.exit_code == 0, res.output
    model, _ = load_checkpoint(ckpt)
    path = export_onnx(model, root / "onnx" / "gt-dense-auto.onnx", "auto", verify_batches=1).path
    m = ModelArtifact("gt-dense", ckpt, "k", "gt", "dense", 1.0, TEDDY)
    return OnnxArtifact(m, "auto", "dense", path, 1e-6)


def _ctx(out: Path, logs: list[str], *overrides: str) -> RunContext:
    config = load_config(None, [f"data.size={SIZE}", "profile.batch_graphs=4", "export.verify_batches=1", *overrides])
    return RunContext(config, out, StageCache(out, logs.append), "data")


def _set_metric(monkeypatch, cost: dict[str, float], reference: float = 50.0) -> list[Any]:  # type: ignore[no-untyped-def]
    """The evaluation is the real one; only its numbers are set: ``reference`` for the float32 file, 50 less
    the cost of each block an int8 file stores in int8. The TEDDY settings each evaluation was given, in order."""
    import gtcompress.pipeline.measure as measure

    real = measure.evaluate_onnx
    given: list[Any] = []

    def evaluate(path, ds, pcfg, teddy, split="test"):  # type: ignore[no-untyped-def]
        given.append(teddy)
        got = real(path, ds, pcfg, teddy, split)
        entry = read_metadata(path).get(QUANT_KEY)
        kept = [] if entry is None else json.loads(entry).get("float32_blocks", [])
        if entry is None:
            return {**got, split: reference}
        return {**got, split: 50.0 - sum(c for b, c in cost.items() if b not in kept)}

    monkeypatch.setattr(measure, "evaluate_onnx", evaluate)
    return given


def test_the_block_int8_costs_most_is_kept_float32_and_a_changed_bound_is_a_new_file(
    tmp_path: Path, export: OnnxArtifact, monkeypatch
) -> None:
    from gtcompress.pipeline.deploy_stages import _quantize

    given = _set_metric(monkeypatch, COST)
    logs: list[str] = []
    q = _quantize(_ctx(tmp_path, logs), export, "int8")
    assert q.path == export.path.with_name("gt-dense-auto-int8.onnx") and q.label == "gt-dense-int8"
    assert {k: v for k, v in q.quantized.items() if k != "stage"} == {
        "val_float32": 50.0,
        "val_int8": pytest.approx(49.6),
        "val_drop": pytest.approx(0.4),
        "max_drop": 1.0,
        "within": True,
        "float32_blocks": ["layers.0.ffn"],
        "blocks": 3,
        "evaluations": 4,  # every block in int8, then each kept float32 alone
    }
    assert json.loads(read_metadata(q.path)[QUANT_KEY])["float32_blocks"] == ["layers.0.ffn"]
    assert given == [TEDDY] * 5  # the float32 file and four int8 ones, each on TEDDY's graphs
    assert "[dim]  int8 file 4 of at most 5: head float32[/]" in logs

    again = _quantize(_ctx(tmp_path, logs), export, "int8")
    assert logs[-1] == "[dim]✓ quantize:gt-dense:auto:int8 (cached)[/]" and again.key == q.key
    looser = _quantize(_ctx(tmp_path, logs, "export.quantize_max_drop=2.5"), export, "int8")
    assert looser.quantized["float32_blocks"] == [] and looser.quantized["evaluations"] == 1
    assert looser.key != q.key  # its test metric and latency are measured anew, not read from q's stages
    assert QUANT_KEY in read_metadata(looser.path) and "float32_blocks" not in read_metadata(looser.path)[QUANT_KEY]

    text = _markdown([q, looser])  # the search's note for the file it made mixed, none for the other
    assert text.count("| gt-dense-int8 |") == 2 and text.count("`gt-dense-int8`") == 1  # two rows, one note
    assert (
        "`gt-dense-int8` keeps `layers.0.ffn` float32 (1 of its 3 blocks), the fewest that bring it within "
        "`export.quantize_max_drop` of its float32 file on the val split: 0.40 points below it (4 int8 files "
        "evaluated)."
    ) in text.splitlines()


@pytest.mark.parametrize(
    ("overrides", "kept", "drop", "evaluations"),
    [
        ([], ["layers.0.attn", "layers.0.ffn"], 0.2, 5),  # the search's closest: two blocks float32
        (["export.mixed=false"], [], 2.0, 1),  # no search: every block in int8
    ],
)
def test_where_no_file_is_within_the_closest_is_kept_and_the_report_says_so(
    tmp_path: Path, export: OnnxArtifact, monkeypatch, overrides: list[str], kept: list[str], drop: float,
    evaluations: int,
) -> None:  # fmt: skip
    from gtcompress.pipeline.deploy_stages import _quantize

    _set_metric(monkeypatch, COST)
    ctx = _ctx(tmp_path, [], "export.quantize_max_drop=0.1", *overrides)
    q = _quantize(ctx, export, "int8")
    assert q.quantized["within"] is False and q.quantized["float32_blocks"] == kept
    assert q.quantized["val_drop"] == pytest.approx(drop) and q.quantized["evaluations"] == evaluations
    assert json.loads(read_metadata(q.path)[QUANT_KEY]).get("float32_blocks", []) == kept

    lines = _markdown([q]).splitlines()
    closest = "keeping `layers.0.attn`, `layers.0.ffn` float32" if kept else "every block in int8"
    assert (
        "`gt-dense-int8`: no int8 file came within `export.quantize_max_drop` (0.10 points) of its float32 file on "
        f"the val split; the row is the closest, {closest}, {drop:.2f} points below it ({evaluations} int8 "
        f"file{'s' if evaluations > 1 else ''} evaluated)."
    ) in lines


def _markdown(files: list[OnnxArtifact]) -> str:
    """report.md of a row per int8 file (the cells its table reads beside what the stage measured)."""
    from gtcompress.pipeline.report import markdown

    cells = {"arch": "gt", "method": "dense", "lowering": "dense", "test": 50.0, "latency_ms_p50": 1.0}
    cells |= {"prep_ms_p50": 0.1, "max_abs_err": 0.1, "file_mb": 0.1, "threads": 1, "graphs_per_batch": 4}
    rows = [{**cells, "model": q.label, "metric": "class_avg_acc", "quantized": dict(q.quantized)} for q in files]
    return markdown(
        {"config": {"data": {"name": "cluster", "size": SIZE}}, "rows": rows, "tensorrt": "n/a", "machine": {}}
    )


def test_against_an_undefined_float32_metric_nothing_is_searched(
    tmp_path: Path, export: OnnxArtifact, monkeypatch
) -> None:
    """A val split where the float32 file's metric is undefined (ROC-AUC of one class, a NaN output) gives
    every int8 file an undefined drop: the search would evaluate 2k - 1 files for nothing. The row is the
    file with every block in int8, measured once, and report.md says why it was not searched."""
    from gtcompress.pipeline.deploy_stages import _quantize

    _set_metric(monkeypatch, COST, reference=float("nan"))
    q = _quantize(_ctx(tmp_path, []), export, "int8")
    assert q.quantized["within"] is False and q.quantized["float32_blocks"] == []
    assert q.quantized["evaluations"] == 1 and math.isnan(q.quantized["val_drop"])
    assert (
        "`gt-dense-int8`: the val class_avg_acc of its float32 file is undefined (NaN: a NaN output leaves any "
        "metric undefined), so no int8 drop was measured or searched: every block in int8."
    ) in _markdown([q]).splitlines()


def test_an_auto_export_is_made_anew_for_another_profile_batch(tmp_path: Path, export: OnnxArtifact) -> None:
    """The auto lowering's rule reads a batch of ``profile.batch_graphs`` val graphs: another size may pick
    another lowering, so it is a new export, not the cached file of the old rule's pick."""
    from gtcompress.pipeline.deploy_stages import _export

    logs: list[str] = []
    _export(_ctx(tmp_path, logs), export.model, "auto", 1)
    _export(_ctx(tmp_path, logs), export.model, "auto", 1)
    assert logs[-1] == "[dim]✓ export:gt-dense:auto (cached)[/]"
    _export(_ctx(tmp_path, logs, "profile.batch_graphs=8"), export.model, "auto", 1)
    assert logs[-1].startswith("[green]✓ export:gt-dense:auto[/]")
