"""``gtc export --quantize int8``: the int8 file written only when its val metric holds up, measured side by
side with the float32 export's; its mistakes refused before any work; ``gtc build`` refusing the file."""

from __future__ import annotations

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


def test_an_int8_model_past_the_drop_is_not_written(tmp_path: Path, ckpt: Path, monkeypatch) -> None:
    """The evaluation is the real one; only its numbers are set, to a drop of 2 points."""
    import gtcompress.pipeline.measure as measure

    real = measure.evaluate_onnx

    def evaluate(path, ds, pcfg, teddy, split="test"):  # type: ignore[no-untyped-def]
        got = real(path, ds, pcfg, teddy, split)
        return {**got, split: 50.0 if path.name == "float32.onnx" else 48.0}

    monkeypatch.setattr(measure, "evaluate_onnx", evaluate)
    out = tmp_path / "m-int8.onnx"
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--quantize", "int8", "--max-drop", "1.5"])
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == (
        f"error: {out}: int8 quantization takes the val class_avg_acc from 50 to 48 on 8 graphs, a drop of 2.00 "
        "points, more than the 1.50 points allowed; not written"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--max-drop", "0.5", "--data-root", "."],
            "--max-drop, --data-root: set how --quantize measures the int8 model, and --quantize is not given; add "
            "--quantize int8, or leave them out",
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
