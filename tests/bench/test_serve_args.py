"""bench/serve.py: a mistaken option is one ``error:`` line and exit 2 before any server starts, and
the plot is renamed into place."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.serve as serve


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # --repeats 0 ran every server, then crashed with IndexError when picking the median run
        (["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        # 0 clients sent nothing and wrote a result of 0 requests over the last one, exit 0
        (["--clients", "16,0"], "argument --clients: must be at least 1, got 0"),
        (["--clients", "a"], "argument --clients: expected an integer, got 'a'"),
        (["--requests", "0"], "argument --requests: must be at least 1, got 0"),
        (["--pool", "0"], "argument --pool: must be at least 1, got 0"),
        (["--time-limit", "0"], "argument --time-limit: must be a positive number of seconds, got 0"),
        (["--max-delay-ms", "-1"], "argument --max-delay-ms: must be a finite number of milliseconds >= 0, got -1.0"),
    ],
)
def test_a_mistaken_option_is_one_error_line_before_any_work(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_run(args: object) -> None:
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(serve, "run", no_run)
    with pytest.raises(SystemExit) as exit_:
        serve.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"error: {message}")


def test_a_plot_killed_while_saving_leaves_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """savefig wrote straight to the .png: Ctrl-C while saving left half a PNG beside the new JSON."""
    from matplotlib.figure import Figure

    row = {"throughput_rps": 100.0, "latency_ms": {"p50": 1.0, "p99": 2.0}}
    report = {
        "settings": {"clients": [2], "targets": ["a", "b"], "reduced": True, "server": "gtc"},
        "results": [{**row, "clients": 2, "target": "a"}, {**row, "clients": 2, "target": "b"}],
    }
    path = tmp_path / "serve.png"
    serve.plot(report, path)
    before = path.read_bytes()

    def dies(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
        Path(str(fname)).write_bytes(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", dies)
    with pytest.raises(KeyboardInterrupt):
        serve.plot(report, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["serve.png"]
