"""``gtc profile`` and ``gtc serve`` through typer (a local app with the commands registered)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import profile_cmd, runtime_cmds
from tests.runtime.conftest import start_gtc_serve

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    profile_cmd.register(app)
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
    assert "vs node: its p50 / the model's" in res.output  # graph against node, side by side
    assert report["settings"]["rounds"] == 1  # 3 iterations: not asked for, as many rounds as give two calls


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "missing.onnx"], "model file does not exist"),
        (["profile", "{node}", "--threads", "1,x"], "--threads: expected comma-separated positive integers"),
        (["profile", "{node}", "--sizes", "0"], "--sizes: expected"),
        # each measured twice: duplicate rows in report.json and a latency line doubling back on itself
        (["profile", "{node}", "--threads", "1,2,1"], "--threads: 1 given more than once in '1,2,1'"),
        (["profile", "{node}", "--sizes", "8, 8,16"], "--sizes: 8 given more than once in '8, 8,16'"),
        (["profile", "{node}", "--batch-sizes", "4,4"], "--batch-sizes: 4 given more than once in '4,4'"),
        (["profile", "{node}", "--names", "a,b"], "--names: 2 labels for 1 models"),
        (
            ["profile", "{node}", "--iterations", "5", "--rounds", "3"],
            "error: --iterations 5 is too few for --rounds 3: each round times at least 2 calls (give --iterations 6 "
            "or more, or fewer rounds)",
        ),
        # were accepted: two models both called "a" in every table and plot, or a table titled "(gt, …)"
        (["profile", "{node}", "{node}", "--names", "a,a"], "--names 'a,a': each model needs its own non-empty label"),
        (["profile", "{node}", "{node}", "--names", "a,"], "--names 'a,': each model needs its own non-empty label"),
        (["serve", "missing.onnx"], "model file does not exist"),
        (["serve", "{node}", "--name", "bad name"], "--name: model name 'bad name': use letters"),
        (["serve", "{node}", "--providers", "nope"], "execution provider 'nope' is not available"),
    ],
)
def test_errors_are_one_line(app, exported, args: list[str], message: str, tmp_path: Path) -> None:
    args = [a.replace("{node}", str(exported["node"].path)) for a in args]
    if args[0] == "profile":  # a mistake not caught measures: a small run, into tmp_path
        small = {"--sizes": "8", "--batch-sizes": "1", "--threads": "1", "--iterations": "2", "--warmup": "1"}
        args += [*(x for k, v in small.items() if k not in args for x in (k, v)), "--no-op-profile"]
        args += ["--out", str(tmp_path / "prof")]
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
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--max-body-mib", "2", "--port", "0"])
    assert res.exit_code == 0, res.output
    assert seen["limits"].max_body_bytes == 2 * 1024 * 1024  # type: ignore[attr-defined]
    assert f"on http://127.0.0.1:{seen['port']} " in res.output and seen["port"] != 0  # the port bound
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--max-body-mib", "0"])
    assert res.exit_code == 2 and "--max-body-mib" in res.output


def test_serve_passes_the_inflight_limit_and_refuses_one_below_the_body_limit(
    app, exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-inflight-mib bounds all requests together (503 past it: tests/runtime/test_server_limits.py)."""
    import runtime.server

    seen: dict[str, object] = {}
    monkeypatch.setattr(runtime.server, "serve", lambda *a, **kw: seen.update(kw))
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--max-inflight-mib", "1024", "--port", "0"])
    assert res.exit_code == 0, res.output
    assert seen["limits"].inflight_bytes == 1024 * 1024 * 1024  # type: ignore[attr-defined]
    monkeypatch.setattr(runtime.server, "serve", _must_not_run)
    path = str(exported["node"].path)
    res = runner.invoke(app, ["serve", path, "--max-inflight-mib", "64", "--max-body-mib", "128"])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == (
        "error: --max-inflight-mib 64 is below --max-body-mib 128: a request of the largest allowed size would "
        "always get 503"
    )


def test_serve_passes_the_body_timeout(app, exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """--body-timeout-s reaches ServerLimits (the 408 is tests/runtime/test_server_limits.py); the
    default is the library's, and no timeout at all is no setting."""
    import runtime.server
    from runtime.served import ServerLimits

    seen: dict[str, object] = {}
    monkeypatch.setattr(runtime.server, "serve", lambda *a, **kw: seen.update(kw))
    path = str(exported["node"].path)
    res = runner.invoke(app, ["serve", path, "--body-timeout-s", "2.5", "--port", "0"])
    assert res.exit_code == 0, res.output
    assert seen["limits"].body_timeout_s == 2.5  # type: ignore[attr-defined]
    res = runner.invoke(app, ["serve", path, "--port", "0"])
    assert res.exit_code == 0, res.output
    assert seen["limits"].body_timeout_s == ServerLimits().body_timeout_s == 60.0  # type: ignore[attr-defined]
    res = runner.invoke(app, ["serve", path, "--body-timeout-s", "0"])
    assert res.exit_code == 2 and "--body-timeout-s" in res.output


def test_serve_refuses_a_batching_delay_the_batcher_cannot_wait(app, exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-delay-ms inf was accepted, and the batcher's worker died on the first burst of requests."""
    import typer

    import runtime.server
    from runtime.packing import MAX_DELAY_MS

    monkeypatch.setattr(runtime.server, "serve", _must_not_run)
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--max-delay-ms", "inf"])
    assert res.exit_code == 2 and "--max-delay-ms" in res.output and "Traceback" not in res.output
    # the option's bound (its callback's) is the batcher's
    command = typer.main.get_command(app).commands["serve"]
    ctx = command.make_context("serve", [str(exported["node"].path)])
    option = next(p for p in command.params if p.name == "max_delay_ms")
    assert option.process_value(ctx, MAX_DELAY_MS) == MAX_DELAY_MS
    with pytest.raises(typer.BadParameter, match=f"is not a finite number from 0 to {MAX_DELAY_MS:g}$"):
        option.process_value(ctx, MAX_DELAY_MS * 1.001)


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("reached before the mistake was reported")


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in output and "serving" not in output, output
    return " ".join(lines[0].split())


def test_serve_refuses_a_bad_log_level_before_anything(app, exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn raised KeyError('bogus') after the "serving" banner."""
    import runtime.server

    monkeypatch.setattr(runtime.server, "serve", _must_not_run)
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--log-level", "bogus"])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == (
        "error: --log-level 'bogus': expected one of critical, error, warning, info, debug, trace"
    )


def test_serve_on_a_port_in_use_is_one_line_before_the_banner(app, exported, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn printed its own error and exited 3 after the "serving" banner."""
    import socket

    import runtime.server

    monkeypatch.setattr(runtime.server, "serve", _must_not_run)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = runner.invoke(app, ["serve", str(exported["node"].path), "--port", str(port)])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_serve_on_a_host_that_does_not_resolve_is_one_line(app, exported, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import runtime.server

    def no_such_host(*args: object, **kwargs: object) -> None:  # DNS, without the network
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(runtime.server, "serve", _must_not_run)
    monkeypatch.setattr(runtime.server.socket, "getaddrinfo", no_such_host)
    res = runner.invoke(app, ["serve", str(exported["node"].path), "--host", "no-such-host.invalid"])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == (
        "error: cannot listen on no-such-host.invalid:8000: the host does not resolve (Name or service not known)"
    )


def test_profile_refuses_an_out_below_a_file_before_profiling(
    app, exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole profile ran, then writing the report failed."""
    import runtime.profile

    monkeypatch.setattr(runtime.profile, "profile_models", _must_not_run)
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = runner.invoke(app, ["profile", str(exported["node"].path), "--out", str(blocker / "sub" / "prof")])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == (
        f"error: --out {blocker / 'sub' / 'prof'}: {blocker} is a file, not a directory"
    )


@pytest.mark.parametrize(
    "option",
    [
        "--max-body-mib",
        "--max-inflight-mib",
        "--max-delay-ms",
        "--max-attention-mib",
        "--max-pe-work",
        "--body-timeout-s",
    ],
)
def test_serve_refuses_an_infinite_limit_before_anything(app, exported, option: str, monkeypatch) -> None:
    """``min=`` lets ``inf`` through: --max-body-mib inf was an OverflowError traceback (int(inf)
    bytes) after the "serving" banner; an infinite delay or attention budget is no setting either."""
    import runtime.server
    from cli.main import app as gtc  # the one-line errors of the real app

    monkeypatch.setattr(runtime.server, "serve", _must_not_run)
    res = runner.invoke(gtc, ["serve", str(exported["node"].path), option, "inf", "--port", "0"])
    assert res.exit_code == 2
    line = _one_error_line(res.output)
    assert line.startswith(f"error: Invalid value for '{option}': "), line


def test_serve_body_limit_beyond_a_byte_count_is_the_largest_one(app, exported, monkeypatch) -> None:
    """--max-body-mib 1e306 is finite, but not in bytes (x 2**20 overflows to inf): the OverflowError
    traceback came after the banner; such a limit is the largest byte count, i.e. no limit."""
    import sys

    import runtime.server

    seen: dict[str, object] = {}
    monkeypatch.setattr(runtime.server, "serve", lambda *a, **kw: seen.update(kw))
    big = ["--max-body-mib", "1e306", "--max-inflight-mib", "1e306"]
    res = runner.invoke(app, ["serve", str(exported["node"].path), *big, "--port", "0"])
    assert res.exit_code == 0, res.output
    assert seen["limits"].max_body_bytes == sys.maxsize  # type: ignore[attr-defined]
    assert seen["limits"].inflight_bytes == sys.maxsize  # type: ignore[attr-defined]


def test_serve_passes_its_pe_work_limit_to_the_server(app, exported, monkeypatch) -> None:
    """--max-pe-work is the server's ServerLimits.max_pe_work; left out, the library's default."""
    import runtime.server
    from runtime.served import ServerLimits

    seen: dict[str, object] = {}
    monkeypatch.setattr(runtime.server, "serve", lambda *a, **kw: seen.update(kw))
    for extra, want in (([], ServerLimits().max_pe_work), (["--max-pe-work", "1e13"], 1e13)):
        res = runner.invoke(app, ["serve", str(exported["node"].path), *extra, "--port", "0"])
        assert res.exit_code == 0, res.output
        assert seen["limits"].max_pe_work == want  # type: ignore[attr-defined]


def test_serve_threads_reach_torch_for_a_checkpoint_and_its_help_says_so(
    app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threads said 'ONNX Runtime intra-op threads', but for a checkpoint on the CPU it sets torch's
    intra-op pool (torch.set_num_threads, for the whole process)."""
    import torch

    import runtime.server
    from gtcompress.checkpoint import save_checkpoint
    from gtcompress.data.base import FeatureSpec
    from gtcompress.models import ModelConfig, build_model

    ckpt = save_checkpoint(
        tmp_path / "gt",
        build_model(ModelConfig(arch="gt", node_features=FeatureSpec("float", 3), out_dim=2, hidden=8, heads=2)),
    )
    monkeypatch.setattr(runtime.server, "serve", lambda *a, **kw: None)
    before = torch.get_num_threads()
    try:
        res = runner.invoke(app, ["serve", str(ckpt), "--device", "cpu", "--threads", "1", "--port", "0"])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    (threads,) = (p for p in serve.params if p.name == "threads")
    assert "torch's for a checkpoint on the CPU" in threads.help


def test_profile_refuses_a_provider_this_onnxruntime_lacks_before_profiling(
    app, exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was refused only once the progress bar had opened and the first model was loading."""
    import onnxruntime as ort

    import runtime.profile

    monkeypatch.setattr(runtime.profile, "profile_models", _must_not_run)
    res = runner.invoke(app, ["profile", str(exported["node"].path), "--providers", "bogus", "--out", str(tmp_path)])
    assert res.exit_code == 2
    available = ", ".join(ort.get_available_providers())
    want = f"error: execution provider 'bogus' is not available here; available: {available}"
    assert _one_error_line(res.output) == want


def test_serve_stops_on_sigterm_and_exits_0(exported) -> None:
    """Containers and systemd stop a service with SIGTERM: uvicorn drained and then raised the signal again,
    so ``gtc serve`` was killed by it (exit status 143, as if it had failed to stop). A real process, as
    a service manager runs it."""
    import signal

    proc, _ = start_gtc_serve(exported["node"].path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "interrupted" not in err


def test_serve_stops_on_sigterm_while_loading_its_model_and_exits_0(exported) -> None:
    """A SIGTERM before uvicorn takes the signal over (the model still loading: a large one, a GPU
    starting) got Python's default action: ``gtc serve`` was killed outright, exit status 143, as if it
    had failed. It stops as asked: no banner, one line, exit 0. The signal is sent by the process to
    itself once its model has loaded, so the moment is exact rather than raced."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        import runtime.session

        class StillLoading(runtime.session.GraphSession):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(120)  # loading on: what comes next is the signal's doing

        runtime.session.GraphSession = StillLoading
        from cli.main import app
        app(["serve", {str(exported["node"].path)!r}, "--port", "0"], prog_name="gtc")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "stopped (SIGTERM)\n")
