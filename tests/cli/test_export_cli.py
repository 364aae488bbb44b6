from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "cache"))


def test_export_auto_with_triton_repo_then_build_without_tensorrt(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            "cluster",
            "--size",
            "20,8,8",
            "--hidden",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
            "--epochs",
            "1",
            "--out",
            str(ckpt),
        ],
    )
    assert res.exit_code == 0, res.output
    onnx_file = tmp_path / "m.onnx"
    res = runner.invoke(
        app,
        ["export", str(ckpt), "--out", str(onnx_file), "--triton-repo", str(tmp_path / "repo"), "--name", "gt_demo"],
    )
    assert res.exit_code == 0, res.output
    assert "dense" in res.output  # auto on SBM-size graphs
    assert (tmp_path / "repo" / "gt_demo" / "1" / "model.onnx").is_file()
    res = runner.invoke(app, ["build", str(onnx_file), "--out", str(tmp_path / "m.plan")])
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert res.exit_code == 2
        assert "TensorRT is not installed" in res.output and "gtcompress[tensorrt]" in res.output
        assert not (tmp_path / "m.plan").exists()


def test_export_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", str(tmp_path / "none")])
    assert res.exit_code == 2 and "checkpoint directory does not exist" in res.output
