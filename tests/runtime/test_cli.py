"""``gtc profile`` and ``gtc serve`` through typer (a local app with the commands registered)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import runtime_cmds

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    runtime_cmds.register(app)
    return app


def test_profile_command(app, exported, tmp_path: Path) -> None:
    out = tmp_path / "prof"
    args = ["profile", str(exported["node"].path), str(exported["graph"].path), "--out", str(out)]
    args += ["--threads", "1", "--sizes", "8,16", "--batch-sizes", "2", "--iterations", "3", "--warmup", "1"]
    res = runner.invoke(app, [*args, "--names", "node,graph", "--no-isolate"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["node", "graph"]
    assert (out / "latency_vs_size.png").is_file() and "p99" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "missing.onnx"], "model file does not exist"),
        (["profile", "{node}", "--threads", "1,x"], "--threads: expected comma-separated positive integers"),
        (["profile", "{node}", "--sizes", "0"], "--sizes: expected"),
        (["profile", "{node}", "--names", "a,b"], "--names: 2 labels for 1 models"),
        (["serve", "missing.onnx"], "model file does not exist"),
        (["serve", "{node}", "--name", "bad name"], "--name 'bad name'"),
        (["serve", "{node}", "--providers", "nope"], "execution provider 'nope' is not available"),
    ],
)
def test_errors_are_one_line(app, exported, args: list[str], message: str) -> None:
    args = [a.replace("{node}", str(exported["node"].path)) for a in args]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("command", ["profile", "serve"])
def test_help_has_an_example(app, command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and f"Example: gtc {command}" in res.output


def test_serve_passes_the_body_limit(app, exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-body-mib reaches the server's ServerLimits (the 413 behaviour is tests/runtime/test_server_limits.py)."""
    import runtime.server

    seen: dict[str, object] = {}
    monkeypatch.setattr(runtime.server, "serve", lambda *a, **kw: seen.update(kw))
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--max-body-mib", "2"])
    assert res.exit_code == 0, res.output
    assert seen["limits"].max_body_bytes == 2 * 1024 * 1024  # type: ignore[attr-defined]
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--max-body-mib", "0"])
    assert res.exit_code == 2 and "--max-body-mib" in res.output
