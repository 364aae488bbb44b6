"""bench/serve.py: a mistaken option is one ``error:`` line and exit 2 before any server starts, the
plot is renamed into place, and SIGTERM stops the servers the run started."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
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
        # runtime.errors.SessionError traceback from make_pool
        (["--model", "no/such/gt.onnx"], "argument --model: no such file: no/such/gt.onnx"),
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


#: Runs ``bench.serve.main`` with its servers replaced by sleeping child processes and sends the run SIGTERM
#: once they are up (where the real run waits for them to get ready); the children's PIDs go to argv[2].
_SIGTERM_DRIVER = """
import multiprocessing as mp, os, signal, sys, time
import bench.serve as serve

def sleeper(path, port, batching, args):
    proc = mp.get_context("spawn").Process(target=time.sleep, args=(600,))
    proc.start()
    with open(sys.argv[2], "a") as f:
        print(proc.pid, file=f)
    return proc

def terminated(port, timeout=120.0):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the signal arrives here

serve.make_pool = lambda path, count, seed, raw=False: ([], [], None)
serve.start_gtc = sleeper
serve.wait_ready = terminated
serve.main(["--model", sys.argv[3], "--out", sys.argv[1]])
"""


def test_sigterm_stops_the_servers_it_started(tmp_path: Path) -> None:
    """Python's default SIGTERM ended the run at once, skipping ``run``'s ``finally``: both ``gtc serve``
    processes went on serving with no parent (found after ``kill -TERM`` of a reduced run), and nothing
    was written."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out, pid_file, log, model = tmp_path / "out", tmp_path / "pids", tmp_path / "log", tmp_path / "gt.onnx"
    model.write_bytes(b"")  # never loaded: make_pool is replaced
    with log.open("w") as f:  # not a pipe: a child left running would hold it open
        code = subprocess.run(
            [sys.executable, "-c", _SIGTERM_DRIVER, str(out), str(pid_file), str(model)],
            cwd=root,
            env=env,
            stdout=f,
            stderr=f,
        ).returncode
    pids = [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []
    try:
        assert len(pids) == 2, log.read_text()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
        assert code == 128 + 15, log.read_text()
        assert not out.exists()
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_the_median_run_of_an_even_count_is_the_slower_middle_one() -> None:
    """reps[len // 2] took the faster of the two middle runs: every even --repeats flattered the target."""
    runs = [{"throughput_rps": v, "i": i} for i, v in enumerate([40.0, 10.0, 30.0, 20.0])]
    assert serve.median_run(runs)["throughput_rps"] == 20.0
    assert serve.median_run(runs[:3])["throughput_rps"] == 30.0
    assert serve.median_run(runs[:1])["throughput_rps"] == 40.0
