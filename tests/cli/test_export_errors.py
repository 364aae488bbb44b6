"""``gtc export`` on the cases the reliability issue reported: ``--out`` an existing directory, and a GPS
whose global attention ``gtc sparsify --attention-topk`` sparsified (exported, and refused for the other
lowerings with what the model really uses). Checkpoints are saved straight from built models (no
training); only one test exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from cli.main import app
from gtcompress.checkpoint import save_checkpoint
from gtcompress.compress.attention_graph import with_attention_topk
from gtcompress.data.base import FeatureSpec
from gtcompress.models import ModelConfig, build_model

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _checkpoint(root: Path, arch: str, topk: int = 0) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch, node_features=FeatureSpec("categorical", 1, [4]), out_dim=2, hidden=16, heads=2, num_layers=1
    )
    model = build_model(cfg).eval()
    if topk:
        model = with_attention_topk(model, topk).eval()
    return save_checkpoint(root / f"{arch}-{topk}", model, {})


def _error_line(res: Result) -> str:
    """The one ``error: …`` line on stderr, after checking nothing else was printed and the exit code is 2."""
    assert res.exit_code == 2, res.output
    assert ANSI.sub("", res.stdout) == ""
    lines = ANSI.sub("", res.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0].removeprefix("error: ")


def test_out_an_existing_directory_is_one_error_line(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "gt")
    out = tmp_path / "exports"
    out.mkdir()
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out)], prog_name="gtc")
    assert _error_line(res) == f"--out {out}: is a directory; give the ONNX file to write, e.g. {out}/model.onnx"
    assert list(out.iterdir()) == []
    below_a_file = tmp_path / "notes.txt"
    below_a_file.write_text("")
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(below_a_file / "m.onnx")], prog_name="gtc")
    assert _error_line(res) == f"--out {below_a_file}/m.onnx: {below_a_file} is a file, not a directory"


def test_paths_that_cannot_be_written_are_refused_before_the_export(tmp_path: Path, monkeypatch) -> None:
    """A read-only folder for --out, or a --triton-repo below a file or in a read-only folder, was found
    by the final write, after the whole export (and for --triton-repo after the ONNX file was written):
    'error: ro/.x.onnx.PID-RANDOM.tmp: Permission denied', naming a temp file. Now one line at once."""
    import os

    import exporters.onnx

    ckpt = _checkpoint(tmp_path, "gt")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: not (Path(p) == read_only and mode & os.W_OK) and access(p, mode))

    def no_export(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("exported before the paths were checked")

    monkeypatch.setattr(exporters.onnx, "export_onnx", no_export)
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(read_only / "m.onnx")], prog_name="gtc")
    assert _error_line(res) == f"--out {read_only}/m.onnx: {read_only} is not writable"
    out = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--triton-repo", str(read_only)], prog_name="gtc")
    assert _error_line(res) == f"--triton-repo {read_only}: {read_only} is not writable"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    repo = a_file / "triton"
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--triton-repo", str(repo)], prog_name="gtc")
    assert _error_line(res) == f"--triton-repo {repo}: {a_file} is a file, not a directory"
    assert not out.exists() and list(read_only.iterdir()) == []


@pytest.mark.parametrize("lowering", ["scatter", "padded", "plugin"])
def test_refusals_say_what_a_sparsified_gps_uses(tmp_path: Path, lowering: str) -> None:
    ckpt = _checkpoint(tmp_path, "gps", topk=3)
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--attention", lowering])
    assert _error_line(res) == (
        "gps with attention_topk=3 attends over a sparsified attention graph (input edges, self-loops and each "
        "graph's top-3 nodes by teddy score) that it builds inside the model on the per-graph padded layout: only "
        f"the 'dense' lowering applies; got {lowering!r}"
    )
    assert not (tmp_path / "m.onnx").exists()


def test_sparsified_gps_exports_verified(tmp_path: Path) -> None:
    """Was: exit 1, ``DispatchError: No ONNX function found for aten.sort.stable``."""
    ckpt = _checkpoint(tmp_path, "gps", topk=2)
    out = tmp_path / "gps.onnx"
    res = runner.invoke(app, ["export", str(ckpt), "--out", str(out)], prog_name="gtc")
    assert res.exit_code == 0, res.output
    assert out.is_file() and "dense" in res.stdout


def test_a_file_where_the_triton_model_directory_goes_is_kept(tmp_path: Path) -> None:
    """``REPO/NAME`` is replaced whole; a file of the user's there was deleted without a word. It is
    refused before the export, and the file stays."""
    ckpt = _checkpoint(tmp_path, "gt")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "gt").write_text("my notes")
    args = ["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--triton-repo", str(repo), "--name", "gt"]
    res = runner.invoke(app, args, prog_name="gtc")
    assert _error_line(res) == f"{repo}/gt: exists and is a file, not a Triton model directory; refusing to replace it"
    assert (repo / "gt").read_text() == "my notes" and not (tmp_path / "m.onnx").exists()


def test_a_checkpoint_where_the_triton_model_directory_goes_is_not_turned_into_a_model(tmp_path: Path) -> None:
    """``gtc export runs/gt-0 --triton-repo runs`` names the model after the checkpoint folder, which is
    already there: it became a model directory holding the checkpoint's files beside config.pbtxt. A
    directory with files but no config.pbtxt or version folder is refused; an empty one is filled."""
    ckpt = _checkpoint(tmp_path, "gt")
    before = sorted(p.name for p in ckpt.iterdir())
    args = ["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--triton-repo", str(tmp_path)]
    res = runner.invoke(app, args, prog_name="gtc")
    assert _error_line(res) == (
        f"{ckpt}: exists and is not a Triton model directory (no config.pbtxt or version folder; it holds "
        "config.json, model.safetensors); refusing to write a model into it: choose another model name or repository"
    )
    assert sorted(p.name for p in ckpt.iterdir()) == before and not (tmp_path / "m.onnx").exists()
    (tmp_path / "repo" / "gt").mkdir(parents=True)  # made beforehand, empty: the model's to take
    args = ["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--triton-repo", str(tmp_path / "repo")]
    res = runner.invoke(app, [*args, "--name", "gt"], prog_name="gtc")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "repo" / "gt" / "config.pbtxt").is_file()


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_out_a_file_of_the_checkpoint_being_exported_is_refused(tmp_path: Path, name: str) -> None:
    """``--out CKPT/model.safetensors`` wrote the ONNX file over the weights it was exported from (exit 0):
    the checkpoint no longer loaded. Refused before the checkpoint is loaded, through a link too."""
    ckpt = _checkpoint(tmp_path, "gt")
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    (tmp_path / "link").symlink_to(ckpt)
    for out, source in ((ckpt / name, ckpt), (tmp_path / "link" / name, ckpt), (ckpt / name, ckpt / "config.json")):
        res = runner.invoke(app, ["export", str(source), "--out", str(out)], prog_name="gtc")
        assert _error_line(res) == (
            f"--out {out}: is the {name} of the checkpoint being exported; give the ONNX file another name, e.g. "
            f"{out.with_name('model.onnx')}"
        )
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before


def test_a_folder_named_with_a_non_ascii_digit_is_no_triton_version_folder(tmp_path: Path) -> None:
    """``str.isdigit()`` takes '²': a folder of the user's holding only a '²' folder passed for a Triton model
    (whose versions are ASCII integers) and would have been replaced whole by the export."""
    from exporters.triton_repo import check_model_dir
    from gtcompress.errors import ConfigError

    (tmp_path / "model" / "²").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"exists and is not a Triton model directory .*it holds ²\)"):
        check_model_dir(tmp_path / "model")
    (tmp_path / "model" / "1").mkdir()
    check_model_dir(tmp_path / "model")  # a version folder: a model of an earlier export, to replace
