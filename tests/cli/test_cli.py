import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GTCOMPRESS_CACHE", str(tmp_path / "cache"))


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_commands_with_examples() -> None:
    res = _run("--help")
    assert res.exit_code == 0
    for cmd in ("train", "eval", "info", "data", "pipeline"):
        assert cmd in res.output
    assert "Example" in _run("train", "--help").output


def test_generate_train_eval_info(tmp_path: Path) -> None:
    res = _run("data", "generate", "cluster", "--size", "30,10,10", "--seed", "3")
    assert res.exit_code == 0, res.output
    assert "train" in res.output and "30" in res.output

    ckpt = tmp_path / "ckpt"
    res = _run(
        "train",
        "--data",
        "cluster",
        "--size",
        "30,10,10",
        "--arch",
        "gps",
        "--hidden",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--epochs",
        "2",
        "--pe",
        "rwse:4",
        "--out",
        str(ckpt),
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["model"]["arch"] == "gps" and meta["model"]["pe"] == {"rwse": 4}
    assert meta["dataset"]["name"] == "cluster" and len(meta["history"]) == 2

    res = _run("eval", str(ckpt), "--split", "val")
    assert res.exit_code == 0, res.output
    assert "class_avg_acc" in res.output

    res = _run("info", str(ckpt))
    assert res.exit_code == 0, res.output
    assert "gps" in res.output and "rwse:4" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("data", "generate", "mnist"), "unknown generated dataset 'mnist'"),
        (("data", "generate", "cluster", "--size", "big"), "size must be 'small', 'full'"),
        (("train", "--data", "nope", "--epochs", "1"), "nope"),
        (("train", "--pe", "lap8", "--epochs", "1"), "--pe: expected entries like 'lap:8'"),
        (("train", "--arch", "bert", "--size", "10,5,5", "--epochs", "1"), "unknown arch 'bert'"),
        (("eval", "/nonexistent/ckpt"), "checkpoint directory does not exist"),
        (("info", "/tmp"), "config.json: missing"),
        (("train", "--data", "tu:NOPE", "--data-root", "/tmp", "--epochs", "1"), "NOPE"),
        (("pipeline", "--set", "prune.budget=0.5"), "unknown key prune.budget"),
        (("pipeline", "--config", "/nonexistent.yaml"), "config file not found"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    res = _run(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("load", "busy"), [(0.1, False), (0.8, True), (3.0, True)])
def test_passive_openmp_only_on_a_busy_machine(monkeypatch, load: float, busy: bool) -> None:
    import cli

    monkeypatch.setattr(cli.os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert cli._busy_machine() is busy


def test_train_may_overwrite_a_checkpoint_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    """--out naming an existing checkpoint replaces it (as it always has); no ``.ckpt.old-PID`` or
    temporary directory is left next to it."""
    runs = tmp_path / "runs"
    args = ["train", "--size", "10,5,5", "--hidden", "16", "--layers", "1", "--heads", "2", "--epochs", "1"]
    for seed in ("0", "1"):
        res = _run(*args, "--seed", seed, "--out", str(runs / "ckpt"))
        assert res.exit_code == 0, res.output
    assert [p.name for p in runs.iterdir()] == ["ckpt"]
    assert json.loads((runs / "ckpt" / "config.json").read_text())["train"]["seed"] == 1


@pytest.mark.parametrize(("args", "listed"), [((), "pipeline"), (("data",), "generate")])
def test_no_arguments_still_print_the_help(args: tuple[str, ...], listed: str) -> None:
    """The one-line usage errors (cli.common.OneLineErrorsGroup) leave click's "no arguments: help" alone."""
    res = _run(*args)
    assert "Usage:" in res.output and listed in res.output
    assert "error:" not in res.output


def test_os_errors_naming_a_file_are_one_line_others_are_bugs() -> None:
    """Permission denied, not a directory, disk full on a named file: the user's to fix, one line.
    An OSError without a file name stays a traceback: nothing tells the user what to fix."""
    import typer

    from cli.common import user_errors

    mini = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @mini.command()
    @user_errors
    def write(named: bool = True) -> None:
        raise PermissionError(13, "Permission denied", "/srv/models/m.onnx") if named else OSError(5, "I/O error")

    res = runner.invoke(mini, [])
    assert res.exit_code == 2 and res.stderr == "error: /srv/models/m.onnx: Permission denied\n"
    res = runner.invoke(mini, ["--no-named"])
    assert res.exit_code == 1 and isinstance(res.exception, OSError)
