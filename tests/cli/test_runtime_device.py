"""``gtc profile``/``gtc serve`` with ``--device``/``--cuda-graphs``: checkpoints on torch, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from exporters.onnx import export_onnx
from gtcompress.checkpoint import save_checkpoint
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig, build_model

runner = CliRunner()
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny graph-level GT checkpoint and its ONNX export."""
    root = tmp_path_factory.mktemp("device-cli")
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="gt",
        node_features=FeatureSpec("float", 3),
        out_dim=2,
        hidden=16,
        heads=2,
        num_layers=1,
        task_level="graph",
    )
    model = build_model(cfg).eval()
    ckpt = save_checkpoint(root / "gt-ckpt", model)
    onnx_file = export_onnx(model, root / "gt.onnx", "dense", verify_batches=1).path
    return {"ckpt": ckpt, "onnx": onnx_file}


def _invoke(args: list[str], models: dict[str, Path]):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [a.format(**{k: str(v) for k, v in models.items()}) for a in args])


def _error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return " ".join(lines[0].split())


NO_CUDA = "device 'cuda': no CUDA device is visible to torch ("
ERRORS = [
    (
        ["serve", "{ckpt}", "--device", "cpu", "--cuda-graphs"],
        "error: --cuda-graphs needs --device cuda (CUDA graphs replay on a GPU only); got --device cpu",
    ),
    (
        ["profile", "{ckpt}", "--cuda-graphs"],
        "error: --cuda-graphs needs --device cuda (CUDA graphs replay on a GPU only); got no --device",
    ),
    (
        ["serve", "{onnx}", "--device", "cuda"],
        "error: --device cuda: {onnx} is an exported model, which runs on ONNX Runtime or TensorRT; --device takes "
        "a checkpoint directory (for ONNX Runtime on a GPU use --providers cuda)",
    ),
    (
        ["profile", "{onnx}", "--device", "cuda"],
        "error: --device cuda: {onnx} is an exported model, which runs on ONNX Runtime or TensorRT; --device takes "
        "a checkpoint directory (for ONNX Runtime on a GPU use --providers cuda)",
    ),
    (["serve", "{ckpt}", "--device", "gpu"], "error: device 'gpu': expected cpu, cuda or cuda:N"),
    (
        ["serve", "{ckpt}", "--providers", "cpu"],
        "error: {ckpt}: providers apply to ONNX Runtime; a checkpoint runs with torch (device=)",
    ),
]


@pytest.mark.parametrize(("args", "message"), ERRORS)
def test_device_mistakes_are_one_line(models, args: list[str], message: str) -> None:
    res = _invoke(args, models)
    assert res.exit_code == 2, res.output
    assert _error_line(res.output) == message.format(**{k: str(v) for k, v in models.items()})


@pytest.mark.parametrize("missing", ["fastapi", "httptools"])
def test_serve_without_the_serve_extra_is_one_line(models, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    """The HTTP stack is optional (GPU images often lack fastapi): the command says which extra to install.
    httptools is part of it: without it uvicorn ran its h11 protocol, and the server served with none of
    runtime.http_head's bounds on slow clients (head time, answers not taken, the shutdown cut-off)."""
    import importlib.util
    import sys

    # The message names the first module of the extra that fails to import: where another one is really
    # absent (the GPU image has no fastapi), the one hidden here cannot be the one named.
    for other in ("fastapi", "uvicorn", "httptools"):
        if other != missing and importlib.util.find_spec(other) is None:
            pytest.skip(f"{other} is not installed here, so the message would name it instead of {missing}")
    monkeypatch.setitem(sys.modules, missing, None)  # import it -> ModuleNotFoundError
    for module in ("runtime.server", "runtime.uvicorn_run"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    res = _invoke(["serve", "{onnx}"], models)
    assert res.exit_code == 2, res.output
    assert _error_line(res.output) == (
        f"error: gtc serve needs the 'serve' extra (fastapi, uvicorn, httptools; {missing} is missing): "
        "python3 -m pip install -e '.[serve]'"
    )


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("command", ["serve", "profile"])
def test_no_cuda_is_one_line(models, command: str) -> None:
    res = _invoke(
        [command, "{ckpt}", "--device", "cuda", "--out", "unused"]
        if command == "profile"
        else [command, "{ckpt}", "--device", "cuda"],
        models,
    )
    assert res.exit_code == 2, res.output
    line = _error_line(res.output)
    assert line.startswith("error: " + NO_CUDA) and line.endswith(")")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_missing_gpu_index_is_one_line(models) -> None:
    res = _invoke(["serve", "{ckpt}", "--device", "cuda:99"], models)
    assert res.exit_code == 2, res.output
    assert _error_line(res.output).startswith("error: device 'cuda:99': torch sees ")


def _profile(models: dict[str, Path], out: Path, *extra: str):  # type: ignore[no-untyped-def]
    args = ["profile", "{onnx}", "{ckpt}", "--out", str(out), "--threads", "1", "--sizes", "8,16"]
    args += ["--batch-sizes", "2", "--iterations", "3", "--warmup", "1", "--no-isolate", "--no-op-profile", *extra]
    return _invoke(args, models)


def test_profile_checkpoint_on_cpu_next_to_onnx(models, tmp_path: Path) -> None:
    res = _profile(models, tmp_path / "prof", "--device", "cpu")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "prof" / "report.json").read_text())
    ort, tch = report["models"]
    assert (ort["backend"], ort["device"]) == ("onnxruntime", "cpu") and len(ort["results"]) == 2
    assert (tch["name"], tch["backend"], tch["device"]) == ("gt-ckpt", "torch", "cpu") and len(tch["results"]) == 2
    assert "torch:cpu" in res.output and "CPUExecutionProvider" in res.output


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_profile_on_cuda_with_cuda_graphs(models, tmp_path: Path) -> None:
    res = _profile(models, tmp_path / "prof", "--device", "cuda", "--cuda-graphs")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "prof" / "report.json").read_text())
    ort, tch = report["models"]
    assert ort["providers"] == ["CPUExecutionProvider"] and tch["device"].startswith("cuda")
    assert [r["threads"] for r in tch["results"]] == [None, None] and report["settings"]["notes"]
    assert "torch:cuda:0 (cuda graphs)" in res.output


def test_a_directory_that_is_no_model_is_not_called_an_exported_one(models, tmp_path: Path) -> None:
    """gtc serve runs/gt --device cpu, with runs/gt lacking its config.json (a typo'd path, a training
    still writing it), said "runs/gt is an exported model, which runs on ONNX Runtime or TensorRT":
    every existing non-checkpoint path was taken for an exported model. Such a directory now reaches
    the checkpoint loader, which names the missing file; a Triton model directory is still refused."""
    from exporters.triton_repo import write_model_repository
    from runtime.session import GraphSession

    empty = tmp_path / "gt"
    empty.mkdir()
    res = runner.invoke(app, ["serve", str(empty), "--device", "cpu"])
    assert res.exit_code == 2, res.output
    assert _error_line(res.output) == (
        f"error: cannot load checkpoint: {empty}/config.json: missing (a checkpoint is a directory with "
        "config.json and model.safetensors)"
    )
    spec = GraphSession(models["onnx"]).spec
    repo_model = write_model_repository(tmp_path / "repo", "gt_demo", models["onnx"], spec)
    res = runner.invoke(app, ["serve", str(repo_model), "--device", "cpu"])
    assert res.exit_code == 2 and f"{repo_model} is an exported model" in _error_line(res.output)


def test_providers_for_checkpoints_only_is_one_line(models, tmp_path: Path) -> None:
    """--providers names ONNX Runtime providers; with only checkpoints nothing runs on ONNX Runtime, and
    'gtc profile CKPT --providers cuda' measured torch on the CPU without a word, its report.json saying
    'providers: [cuda]' (gtc serve refuses the same mistake)."""
    from runtime.errors import SessionError
    from runtime.profile import profile_models

    out = tmp_path / "prof"
    small = ["--sizes", "8", "--batch-sizes", "1", "--threads", "1", "--iterations", "2", "--no-op-profile"]
    res = _invoke(["profile", "{ckpt}", "--providers", "cuda", *small, "--out", str(out)], models)
    assert res.exit_code == 2, res.output
    assert _error_line(res.output) == (
        "error: --providers cuda: applies to exported models (ONNX Runtime); every model given is a checkpoint "
        "directory, which runs with torch: use --device cuda (or cpu) instead"
    )
    assert not out.exists()
    with pytest.raises(SessionError, match=r"^profile: providers apply to exported models \(ONNX Runtime\)"):
        profile_models([models["ckpt"]], providers=["CPUExecutionProvider"], op_profile=False)
