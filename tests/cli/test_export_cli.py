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


def test_triton_options_the_native_variant_cannot_use_are_refused_and_instances_kept(tmp_path: Path) -> None:
    """A model that needs no pre-processing (no PE, scatter lowering) gets the native variant under
    --triton-backend auto. Its --triton-max-batch 8 was ignored without a word (max_batch_size 0
    written) and so was --triton-instances 3 (count 1 written)."""
    ckpt = tmp_path / "ckpt"
    train = ["train", "--data", "cluster", "--size", "12,8,8", "--hidden", "8", "--layers", "1", "--heads", "2"]
    res = runner.invoke(app, [*train, "--epochs", "1", "--pe", "none", "--out", str(ckpt)])
    assert res.exit_code == 0, res.output
    repo, onnx_file = tmp_path / "repo", tmp_path / "m.onnx"
    export = ["export", str(ckpt), "--out", str(onnx_file), "--attention", "scatter", "--triton-repo", str(repo)]
    res = runner.invoke(app, [*export, "--triton-max-batch", "8", "--triton-instances", "3"])
    assert res.exit_code == 2, res.output
    assert " ".join(res.output.split()).endswith(
        "error: --triton-max-batch: sets the python variant's batching and threads, and --triton-backend auto chose "
        "the native variant (this model needs no pre-processing), which has neither (Triton does not batch a graph "
        f"union: max_batch_size 0); add --triton-backend python, or leave it out (the ONNX file {onnx_file} is "
        "written)"
    )
    assert onnx_file.is_file() and not repo.exists()
    res = runner.invoke(app, [*export, "--triton-instances", "3"])
    assert res.exit_code == 0, res.output
    text = (repo / "ckpt" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in text and "max_batch_size: 0" in text
    assert "instance_group [\n  {\n    kind: KIND_CPU\n    count: 3\n  }\n]" in text


def test_the_triton_model_is_named_as_gtc_serve_names_the_same_checkpoint_path(tmp_path: Path) -> None:
    """``gtc export runs/gt/config.json --triton-repo R`` wrote the model ``config.json`` (served at
    /v2/models/config.json), and ``runs/best``, a link to ``runs/gt-2024``, the model ``gt-2024``: gtc serve
    of either path answers as ``gt`` and ``best``, and a client switching servers got 404."""
    from runtime.served import default_model_name

    ckpt = tmp_path / "gt"
    args = ["--size", "20,8,8", "--hidden", "16", "--layers", "1", "--heads", "2", "--epochs", "1"]
    res = runner.invoke(app, ["train", "--data", "cluster", *args, "--out", str(ckpt)])
    assert res.exit_code == 0, res.output
    (tmp_path / "best").symlink_to(ckpt, target_is_directory=True)
    for given, want in ((ckpt / "config.json", "gt"), (tmp_path / "best", "best")):
        repo = tmp_path / f"repo-{want}"
        res = runner.invoke(
            app, ["export", str(given), "--out", str(tmp_path / f"{want}.onnx"), "--triton-repo", str(repo)]
        )
        assert res.exit_code == 0, res.output
        assert [p.name for p in repo.iterdir()] == [want] == [default_model_name(given)]


def test_export_and_serve_name_a_checkpoint_folder_by_one_rule(tmp_path: Path, monkeypatch) -> None:
    """gtc export replaced a default name's odd characters with '_' while gtc serve refused it: 'my model+v2'
    was the Triton model my_model_v2 and no served model at all, 'ü-net' became '_-net', and 'my model v2'
    exported next to it replaced the same my_model_v2 without a word. Both now take a default name as it is
    or refuse it the same way, with a name to give, and serve the name either is given."""
    import shutil

    import runtime.server

    served: list[str] = []
    monkeypatch.setattr(runtime.server, "serve", lambda session, name, **kw: served.append(name))
    ckpt = tmp_path / "gt-v1.2"
    args = ["--size", "12,6,6", "--hidden", "8", "--layers", "1", "--heads", "2", "--epochs", "1", "--pe", "none"]
    res = runner.invoke(app, ["train", "--data", "cluster", *args, "--out", str(ckpt)])
    assert res.exit_code == 0, res.output
    for folder in ("my model+v2", "ü-net"):
        shutil.copytree(ckpt, tmp_path / folder)

    def export_serve(path: Path, *name: str) -> tuple[list[str], str, str]:
        repo = tmp_path / "repo"
        shutil.rmtree(repo, ignore_errors=True)
        export = ["export", str(path), "--out", str(tmp_path / "m.onnx"), "--attention", "scatter"]
        exported = runner.invoke(app, [*export, "--triton-repo", str(repo), *name])
        serve = runner.invoke(app, ["serve", str(path), "--host", "127.0.0.1", "--port", "0", *name])
        names = sorted(p.name for p in repo.iterdir()) if repo.exists() else []
        return names, " ".join(exported.output.split()), " ".join(serve.output.split())

    names, _, _ = export_serve(ckpt)
    assert names == served == ["gt-v1.2"]
    for folder, suggested in (("my model+v2", "my_model_v2"), ("ü-net", "u-net")):
        served.clear()
        names, exported, serve = export_serve(tmp_path / folder)
        refusal = (
            f"error: --name not given, and the default model name {folder!r} (from {tmp_path / folder}) has "
            f"characters other than letters, digits, '_', '-' and '.'; give a name with --name, e.g. --name {suggested}"
        )
        assert (names, served, exported, serve) == ([], [], refusal, refusal)
        names, _, _ = export_serve(tmp_path / folder, "--name", suggested)
        assert names == served == [suggested]
