"""``gtc export --quantize int8``: the int8 file written only when its val metric holds up, measured side by
side with the float32 export's; its mistakes refused before any work; ``gtc build`` refusing the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from exporters.onnx import read_metadata
from exporters.quantize import QUANT_KEY

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quantize") / "ckpt"
    train = ["train", "--data", "cluster", "--size", "20,8,8", "--hidden", "16", "--layers", "1", "--heads", "2"]
    res = runner.invoke(app, [*train, "--epochs", "1", "--pe", "none", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_an_int8_export_is_measured_against_float32_and_goes_into_the_triton_repository(
    tmp_path: Path, ckpt: Path
) -> None:
    out, repo = tmp_path / "m-int8.onnx", tmp_path / "repo"
    res = runner.invoke(
        app, ["export", str(ckpt), "--out", str(out), "--quantize", "int8", "--triton-repo", str(repo), "--name", "q"]
    )
    assert res.exit_code == 0, res.output
    text = _one_line(res.output)
    assert "int8 vs float32 on 8 val graphs: a drop of " in text and "(allowed: 1.00 points)" in text
    assert "(not kept)" in text and "class_avg_acc" in text
    assert read_metadata(out)[QUANT_KEY].startswith('{"scheme": "int8"')
    assert (repo / "q" / "1" / "model.onnx").read_bytes() == out.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "m-int8.onnx", "repo"]  # no float32 file left

    from gtcompress.preprocess.random_graphs import random_graph
    from runtime.session import GraphSession

    session = GraphSession(out, threads=1)
    g = random_graph(np.random.default_rng(0), 30, 90, session.spec.x, session.spec.edge_attr)
    (answer,) = session.run([g])
    assert answer.shape == (30, 6) and np.isfinite(answer).all()

    res = runner.invoke(app, ["build", str(out), "--out", str(tmp_path / "m.plan")])
    assert res.exit_code == 2
    assert _one_line(res.output) == (
        f"error: {out}: is quantized for ONNX Runtime (int8 with per-call activation ranges), which TensorRT cannot "
        "read; build the float32 export (gtc export without --quantize), with --fp16 for half precision"
    )


def _set_metric(monkeypatch, metric, reference: float = 50.0) -> list[str]:  # type: ignore[no-untyped-def]
    """The evaluation is the real one; only its numbers are set: ``metric(int8 blocks)`` for an int8 file
    (the blocks it stores in int8, read from the file), ``reference`` for the float32 one. The blocks seen,
    in order."""
    import gtcompress.pipeline.measure as measure
    from exporters.quantize import product_blocks

    real = measure.evaluate_onnx
    seen: list[str] = []

    def evaluate(path, ds, pcfg, teddy, split="test"):  # type: ignore[no-untyped-def]
        got = real(path, ds, pcfg, teddy, split)
        entry = read_metadata(path).get(QUANT_KEY)
        if entry is None:
            seen.extend(product_blocks(path))
            return {**got, split: reference}
        kept = json.loads(entry).get("float32_blocks", [])
        return {**got, split: metric([b for b in seen if b not in kept])}

    monkeypatch.setattr(measure, "evaluate_onnx", evaluate)
    return seen


@pytest.mark.parametrize(
    ("mixed", "tried"),
    [
        (["--no-mixed"], ""),
        ([], "; keeping float32 up to 2 of its 3 blocks, the most costly first, drops 2.00 points at best"),
    ],
)
def test_an_int8_model_past_the_drop_is_not_written(
    tmp_path: Path, ckpt: Path, monkeypatch, mixed: list[str], tried: str
) -> None:
    """A drop of 2 points whatever is kept float32: refused, with what the search tried where it did."""
    _set_metric(monkeypatch, lambda int8: 48.0)
    out = tmp_path / "m-int8.onnx"
    args = ["export", str(ckpt), "--out", str(out), "--quantize", "int8", "--max-drop", "1.5", *mixed]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == (
        f"error: {out}: int8 quantization takes the val class_avg_acc from 50 to 48 on 8 graphs, a drop of 2.00 "
        f"points, more than the 1.50 points allowed{tried}; not written"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_an_undefined_float32_metric_is_refused_before_any_int8_file(tmp_path: Path, ckpt: Path, monkeypatch) -> None:
    """Against a float32 metric that is undefined (NaN) no drop can be measured: refused as such at once,
    not after the search's 2k - 1 evaluations as "a drop of nan points, more than the 1.00 points allowed"."""
    import exporters.quantize

    made: list[Path] = []
    real = exporters.quantize.quantize_int8
    monkeypatch.setattr(
        exporters.quantize, "quantize_int8", lambda src, dst, **kw: made.append(dst) or real(src, dst, **kw)
    )
    _set_metric(monkeypatch, lambda int8: 48.0, reference=float("nan"))
    out = tmp_path / "m-int8.onnx"
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--quantize", "int8"])
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == (
        f"error: {out}: the val class_avg_acc of the float32 export is undefined (NaN) on 8 graphs (a NaN output "
        "leaves any metric undefined), so what int8 costs cannot be measured; not written"
    )
    assert made == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_block_that_int8_costs_most_is_kept_float32_and_the_rest_written_in_int8(
    tmp_path: Path, ckpt: Path, monkeypatch
) -> None:
    """int8 FFN costs 1.6 points, the others 0.2 each: within 1 point once the FFN is float32, found after
    one evaluation of each block; the file runs, records the block, and the table says so."""
    seen = _set_metric(monkeypatch, lambda int8: 50.0 - sum(1.6 if b == "layers.0.ffn" else 0.2 for b in int8))
    out = tmp_path / "m-int8.onnx"
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--quantize", "int8"])
    assert res.exit_code == 0, res.output
    assert seen == ["layers.0.attn", "layers.0.ffn", "head"]  # this checkpoint's blocks
    text = _one_line(res.output)
    assert "int8, mixed" in text and "a drop of 0.40 points (allowed: 1.00 points)" in text
    assert "kept float32, the blocks int8 cost most: layers.0.ffn (1 of 3 blocks; 4 int8 files evaluated)" in text
    assert json.loads(read_metadata(out)[QUANT_KEY])["float32_blocks"] == ["layers.0.ffn"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "m-int8.onnx"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--max-drop", "0.5", "--data-root", "."],
            "--max-drop, --data-root: set how --quantize measures the int8 model, and --quantize is not given; add "
            "--quantize int8, or leave them out",
        ),
        (
            ["--no-mixed"],
            "--mixed/--no-mixed: sets how --quantize measures the int8 model, and --quantize is not given; add "
            "--quantize int8, or leave it out",
        ),
        (["--quantize", "int4"], "--quantize 'int4': expected int8"),
        (
            ["--quantize", "int8", "--attention", "plugin"],
            "--quantize int8 --attention plugin: the plugin lowering is for TensorRT, which reads no ONNX Runtime "
            "int8 operators; choose another --attention",
        ),
        (["--quantize", "int8", "--max-drop", "nan"], "--max-drop nan: expected a finite number >= 0"),
        (["--quantize", "int8", "--max-drop", "-1"], "--max-drop -1: expected a finite number >= 0"),
    ],
)
def test_quantize_mistakes_are_refused_before_the_checkpoint_loads(
    tmp_path: Path, args: list[str], message: str
) -> None:
    res = runner.invoke(app, ["export", str(tmp_path / "no-checkpoint"), "--out", str(tmp_path / "m.onnx"), *args])
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == f"error: {message}"
