"""Options the work would ignore or could not honour are refused before it starts, as one ``error:``
line and exit code 2: a ``--data-root`` for a generated dataset (it reads no files, so it was silently
ignored), and an ``--out`` nothing can be written to (found only by the final write, after the
training, export or profiling it was to hold)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from gtcompress.checkpoint import save_checkpoint
from gtcompress.train.loop import TrainConfig
from gtcompress.train.recipe import DataSpec, fit

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLUSTER checkpoint (1 epoch on 12 graphs); its dataset records a root, as ``gtc train
    --data cluster --data-root DIR`` recorded one before it was refused."""
    root = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GTCOMPRESS_CACHE", str(root / "cache"))
        res = fit(
            DataSpec("cluster", root=str(root / "ignored"), size="12,6,6", seed=0),
            "gt",
            {"hidden": 16, "num_layers": 1, "heads": 2, "pe": {"rwse": 4}},
            TrainConfig(epochs=1, batch_size=6),
            show_progress=False,
        )
    return save_checkpoint(root / "ckpt", res.model, res.meta)


@pytest.fixture(autouse=True)
def _cache(ckpt: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import gtcompress.pipeline

    monkeypatch.setenv("GTCOMPRESS_CACHE", str(ckpt.parent / "cache"))
    monkeypatch.chdir(tmp_path)  # a command that wrongly went on would write its default --out here

    def no_run(config, out, log=None):  # type: ignore[no-untyped-def]
        config.check()  # what run_pipeline does first; then its ten minutes of stages, not wanted here
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(gtcompress.pipeline, "run_pipeline", no_run)


def _error_line(res: Result) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0].removeprefix("error: ")


def _invoke(args: str, **paths: Path) -> Result:
    return runner.invoke(app, args.format(**paths).split(), prog_name="gtc")


GENERATED = "is a generated dataset and reads no files; leave {opt} out (it says where the files of tu:NAME, " + (
    "ogb:NAME and molhiv are)"
)


@pytest.mark.parametrize(
    ("args", "dataset"),
    [
        ("train --data cluster --data-root {data} --size 12,6,6 --epochs 1 --out {out}", "cluster"),
        ("train --data CSL --data-root {data} --epochs 1 --out {out}", "CSL"),
        ("eval {ckpt} --data-root {data}", "cluster"),
        ("sparsify {ckpt} --edges 0.3 --data-root {data} --out {out}", "cluster"),
        ("prune {ckpt} --target-flops 0.5 --data-root {data} --out {out}", "cluster"),
        ("pipeline --data-root {data} --out {out}", "cluster"),
        ("pipeline --checkpoint {ckpt} --data-root {data} --out {out}", "cluster"),
    ],
)
def test_a_data_root_for_a_generated_dataset_is_refused(args: str, dataset: str, ckpt: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "my-copy", tmp_path / "out"
    data.mkdir()
    line = _error_line(_invoke(args, ckpt=ckpt, data=data, out=out))
    assert line == f"--data-root {data}: {dataset} " + GENERATED.format(opt="--data-root")
    assert not out.exists()


def test_the_pipelines_data_root_key_is_refused_for_a_generated_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = _error_line(
        _invoke("pipeline --set data.root={data} --set data.name=pattern --out {out}", data=tmp_path, out=out)
    )
    assert line == f"data.root {tmp_path}: pattern " + GENERATED.format(opt="data.root")
    assert not out.exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ("--set data.name=csl", "csl has a fixed size (150 graphs); use size 'small' or 'full'"),
        (
            "--set data.name=tu:NCI1 --set data.root={data}",
            "tu:NCI1: explicit split sizes are only supported for generated datasets and molhiv; TU datasets keep "
            "their own split (leave the size out)",
        ),
    ],
)
def test_split_counts_for_a_dataset_of_fixed_size_are_refused_before_the_first_stage(
    sets: str, message: str, tmp_path: Path
) -> None:
    """``data.size=TRAIN,VAL,TEST`` with csl (150 graphs) or a TU/OGB dataset (their own split) was refused by
    the first stage that loaded the data, after the run's folder was made."""
    out = tmp_path / "out"
    line = _error_line(_invoke(f"pipeline {sets} --set data.size=10,5,5 --out {{out}}", data=tmp_path, out=out))
    assert line == message
    assert not out.exists()


def test_a_root_an_older_checkpoint_recorded_for_a_generated_dataset_is_dropped(ckpt: Path) -> None:
    """Refusing it would refuse the checkpoint itself, for a root that never played a part."""
    from cli.pipeline import _with_checkpoint_data
    from gtcompress.checkpoint import read_checkpoint_meta

    assert read_checkpoint_meta(ckpt)["dataset"]["root"] is not None
    cfg = _with_checkpoint_data(None, [f"train.checkpoint={ckpt}"])
    assert cfg["data"]["root"] is None and cfg["data"]["name"] == "cluster"
    cfg.check()


def test_a_data_root_for_a_file_based_dataset_is_still_read(tmp_path: Path) -> None:
    line = _error_line(
        _invoke("train --data tu:NOPE --data-root {data} --epochs 1 --out {out}", data=tmp_path, out=tmp_path / "o")
    )
    assert line.startswith(f"TU dataset folder not found: {tmp_path}/NOPE")


NOWHERE = Path("/proc/gtc-nowhere")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    ("args", "option", "path"),
    [
        ("train --size 12,6,6 --epochs 1 --out {nowhere}/model.pt", "--out", "model.pt"),
        ("sparsify {ckpt} --edges 0.3 --out {nowhere}/s", "--out", "s"),
        ("prune {ckpt} --target-flops 0.5 --out {nowhere}/p", "--out", "p"),
        ("export {ckpt} --out {nowhere}/m.onnx", "--out", "m.onnx"),
        ("build {ckpt}/missing.onnx --out {nowhere}/m.plan", "--out", "m.plan"),
        ("build {ckpt}/missing.onnx --out m.plan --timing-cache {nowhere}/t.cache", "--timing-cache", "t.cache"),
        ("profile {ckpt} --sizes 8 --batch-sizes 1 --threads 1 --out {nowhere}/prof", "--out", "prof"),
        ("pipeline --out {nowhere}/run", "--out", "run"),
    ],
)
def test_an_out_in_a_directory_that_takes_no_file_is_refused_before_the_work(
    args: str, option: str, path: str, ckpt: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``/proc`` takes no new file, even from root, to whom ``os.access`` says yes for every directory:
    answered yes here for everyone, so that the check that decides is the one root meets. Before, a
    command ran its minutes of work and then failed on the final write (train: "/proc/...: No such file
    or directory" after training). The line names what cannot be created where: "/proc is not writable"
    would contradict both the permission and the system's reason."""
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: True if Path(p) == Path("/proc") else access(p, mode, **kw))
    line = _error_line(_invoke(args, ckpt=ckpt, nowhere=NOWHERE))
    assert line == (
        f"{option} {NOWHERE}/{path}: {NOWHERE.name} cannot be created in /proc "
        "(the system refused a new folder there: No such file or directory)"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_writability_probe_leaves_nothing_and_creates_no_part_of_the_path(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from gtcompress.io import unwritable_reason

    assert unwritable_reason(tmp_path / "a" / "b" / "model.onnx") is None
    assert list(tmp_path.iterdir()) == []

    def refused(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    assert unwritable_reason(tmp_path / "a" / "m.onnx") == (
        f"a cannot be created in {tmp_path} (the system refused a new folder there: Permission denied)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a directory without write permission")
def test_an_out_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    line = _error_line(_invoke("train --size 12,6,6 --epochs 1 --out {out}", out=read_only / "run"))
    assert line == f"--out {read_only}/run: {read_only} is not writable"


@pytest.mark.parametrize(
    "args",
    ["profile {ckpt} --sizes 8 --batch-sizes 1 --threads 1 --out {out}", "pipeline --out {out}"],
)
def test_an_existing_out_folder_that_takes_no_file_is_refused_before_the_work(
    args: str, ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """profile and pipeline write into ``--out``, and a resumed pipeline's folder exists: asking its
    parent passed, and the command failed at its last write, after the work."""
    import tempfile

    out = tmp_path / "run"
    out.mkdir()
    mkdtemp = tempfile.mkdtemp

    def refused_in_out(*a, **kw):  # type: ignore[no-untyped-def]
        if Path(kw.get("dir") or "") == out:
            raise PermissionError(13, "Permission denied")
        return mkdtemp(*a, **kw)

    monkeypatch.setattr(tempfile, "mkdtemp", refused_in_out)
    line = _error_line(_invoke(args, ckpt=ckpt, out=out))
    assert line == (
        f"--out {out}: nothing can be created in {out} (the system refused a new folder there: Permission denied)"
    )
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "option"),
    [
        ("train --size 12,6,6 --epochs 1", "--out"),
        ("train --data tu:MUTAG --epochs 1", "--data-root"),
        ("eval {ckpt}", "--data-root"),
        ("sparsify {ckpt} --edges 0.3", "--out"),
        ("prune {ckpt} --target-flops 0.5", "--data-root"),
        ("export {ckpt}", "--out"),
        ("export {ckpt} --out m.onnx", "--triton-repo"),
        ("build {ckpt}/missing.onnx", "--out"),
        ("build {ckpt}/missing.onnx --out m.plan", "--timing-cache"),
        ("pipeline", "--out"),
        ("pipeline", "--config"),
        ("pipeline", "--checkpoint"),
        ("pipeline", "--data-root"),
        ("tritonserver {ckpt}", "--log"),
        ("profile {ckpt}", "--out"),
    ],
)
def test_an_empty_path_option_is_refused(args: str, option: str, ckpt: Path, tmp_path: Path) -> None:
    """typer reads ``''`` as ``.``: ``--out "$OUT"`` with ``$OUT`` unset wrote into the current directory
    (the pipeline's run, a Triton repository), and an empty ``--data-root`` read it."""
    res = runner.invoke(app, [*args.format(ckpt=ckpt).split(), option, ""], prog_name="gtc")
    command = args.split()[0]
    assert _error_line(res) == (
        f"Invalid value for '{option}': empty; expected a path (an empty one would be read as ., the current "
        f"directory) (see 'gtc {command} --help')"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ("info", "checkpoint"),
        ("eval", "checkpoint"),
        ("sparsify --edges 0.3 --out o", "checkpoint"),
        ("prune --target-flops 0.5 --out o", "checkpoint"),
        ("export --out m.onnx", "checkpoint"),
        ("build --out m.plan", "onnx_file"),
        ("serve", "model"),
        ("profile {ckpt}", "models"),
        ("tritonserver", "repository"),
    ],
)
def test_an_empty_path_argument_is_refused(args: str, name: str, ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    """An empty argument read as ``.`` too: ``gtc info ''`` said "config.json: missing", ``gtc serve ''``
    that "." held no model version, for a path the user never gave."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [*args.format(ckpt=ckpt).split(), ""], prog_name="gtc")
    assert _error_line(res) == (
        f"Invalid value for '{name}': empty; expected a path (an empty one would be read as ., the current "
        f"directory) (see 'gtc {args.split()[0]} --help')"
    )
    assert list(tmp_path.iterdir()) == []
