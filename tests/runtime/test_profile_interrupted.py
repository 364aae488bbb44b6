"""Profiling's reports when a run is cut short: a full disk, a kill while plotting, a killed parent."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from runtime.profile import profile_models, write_report


@pytest.fixture(scope="module")
def report(exported) -> dict:
    """A real report to write (one model, one size: what is written matters here, not the numbers)."""
    return profile_models(
        [exported["node"].path],
        graph_sizes=(8,),
        batch_sizes=(1,),
        threads=(1,),
        iterations=2,
        warmup=1,
        op_iterations=2,
    )


def test_a_full_disk_while_plotting_names_the_plot(report, tmp_path: Path, monkeypatch) -> None:
    """savefig writes a PNG through a file object, so a full disk raised an OSError naming no file,
    which ``gtc profile``'s ``user_errors`` printed as a traceback after all the measuring; the error
    names the plot being written now, and no temp file (nor the empty folder) is left."""
    import errno

    from matplotlib.figure import Figure

    report.pop("_events", None)
    out = tmp_path / "out"
    calls = {"n": 0}
    savefig = Figure.savefig

    def full_on_second(self, fname, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(fname).write_bytes(b"half a png")
            raise OSError(errno.ENOSPC, "No space left on device")
        return savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", full_on_second)
    with pytest.raises(OSError) as info:
        write_report(report, out)
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(out / "latency_distribution.png"))
    assert not out.exists()  # no temp left, and the folder this report made is gone with them


def test_the_temps_of_a_report_killed_while_plotting_are_removed_by_the_next(report, tmp_path: Path) -> None:
    """A ``gtc profile`` killed while plotting (SIGTERM from ``timeout``, the OOM killer) cannot remove
    its temp; named ``.NAME.PID.tmp`` it stayed in ``--out`` for good. The next report removes it."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    report.pop("_events", None)
    out = tmp_path / "out"
    (tmp_path / "report.json").write_text(json.dumps(report))
    code = textwrap.dedent(
        f"""
        import json, os, signal
        from pathlib import Path
        from matplotlib.figure import Figure
        from runtime.profile_report import write_report

        def killed(self, fname, *args, **kwargs):
            Path(fname).write_bytes(b"half a png")
            os.kill(os.getpid(), signal.SIGKILL)

        Figure.savefig = killed
        write_report(json.loads(Path({str(tmp_path / "report.json")!r}).read_text()), {str(out)!r})
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (left,) = out.iterdir()
    assert left.name.startswith(".latency_vs_size.png.") and left.name.endswith(".tmp")
    then = time.time() - 3600  # written before this process started, as by an earlier run
    os.utime(left, (then, then))
    write_report(report, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "latency_distribution.png",
        "latency_vs_size.png",
        "models.png",
        "op_breakdown.png",
        "report.json",
    ]


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie nobody reaps in a container counts as ended)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_profile_takes_its_measuring_process_with_it(exported, tmp_path: Path) -> None:
    """``kill PID`` (a scheduler's SIGTERM, the OOM killer's SIGKILL) of ``gtc profile`` reaches the
    parent alone: its isolated measuring child went on, orphaned, until its next event, a minute and
    more, on a core the next run's timings then shared. It ends with its parent now."""
    import os
    import signal
    import subprocess
    import textwrap
    import time

    code = textwrap.dedent(
        f"""
        import subprocess

        real = subprocess.Popen

        class Spy(real):  # the measuring child's PID, for the test (not other commands', e.g. uname's)
            def __init__(self, args, *rest, **kwargs):
                super().__init__(args, *rest, **kwargs)
                if "_child_main" in str(args):
                    print(self.pid, flush=True)

        subprocess.Popen = Spy
        from runtime.profile import profile_models

        profile_models(
            [{str(exported["node"].path)!r}], graph_sizes=(512,), batch_sizes=(8,), threads=(1,),
            iterations=10_000_000, warmup=0, op_profile=False,
        )
        """
    )
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    try:
        time.sleep(1.0)  # the child is measuring now
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child)
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("stopped", ["parent", "child"])
def test_a_profile_stopped_during_its_op_profile_leaves_no_temporary_folder(
    exported, tmp_path: Path, stopped: str
) -> None:
    """The measuring child gets SIGTERM when ``gtc profile`` is stopped (``kill PID``): Python's default
    ended it outright, inside the op profile, and its ``gtc-ortprof-*`` folder (ONNX Runtime's trace)
    stayed in the temp directory for good. It is removed now. A child stopped on its own still tells
    its parent it was terminated (143), rather than an exit code 0 the parent calls a death."""
    import os
    import signal
    import subprocess
    import time

    import psutil

    temp = tmp_path / "temp"  # the child's TMPDIR: its folder is found here, apart from other runs'
    temp.mkdir()
    code = (
        "from runtime.profile import profile_models\n"
        f"profile_models([{str(exported['node'].path)!r}], graph_sizes=(8,), batch_sizes=(1,), threads=(1,),\n"
        "               iterations=2, warmup=0, op_iterations=10_000_000)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "TMPDIR": str(temp)}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(temp.glob("gtc-ortprof-*/*")) and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(temp.glob("gtc-ortprof-*/*")), "the op profile did not start"
        if stopped == "parent":
            parent.send_signal(signal.SIGTERM)
        else:
            (child,) = psutil.Process(parent.pid).children()
            child.send_signal(signal.SIGTERM)
        parent.wait(30)
        if stopped == "child":
            assert parent.returncode == 1
            assert parent.stderr is not None
            assert f"profiling process for {exported['node'].path} died (exit code 143)" in parent.stderr.read()
        deadline = time.monotonic() + 30
        while list(temp.glob("gtc-ortprof-*")) and time.monotonic() < deadline:  # the child cleans up as it ends
            time.sleep(0.1)
        assert list(temp.glob("gtc-ortprof-*")) == []  # (other libraries' files there are theirs)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.parametrize("when", ["during its clean-up", "as it exits"])
def test_a_second_sigterm_neither_interrupts_the_measuring_childs_clean_up_nor_prints_a_traceback(
    tmp_path: Path, when: str
) -> None:
    """``timeout gtc profile`` or ``kill -- -PGID`` sends SIGTERM to the whole group: the child gets one
    from the kill and a second one when its parent dies of it (PR_SET_PDEATHSIG). Raised again as
    KeyboardInterrupt, the second one cut the child's clean-up short (its op-profile folder stayed) or,
    once cleaned up, printed a KeyboardInterrupt traceback from the interpreter's shutdown on the user's
    terminal. Both moments are produced here exactly, by the child signalling itself."""
    import subprocess
    import textwrap

    marker = tmp_path / "cleaned"
    second = (
        "os.kill(os.getpid(), signal.SIGTERM)"
        if when == "during its clean-up"
        else "atexit.register(os.kill, os.getpid(), signal.SIGTERM)"
    )
    code = textwrap.dedent(
        f"""
        import atexit, os, signal, time
        import runtime.profile

        def measure_model(**kwargs):
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # the kill
                time.sleep(60)
            finally:  # the clean-up (the op profile's temporary folder)
                {second}  # the parent's death
                sum(range(10_000))
                open({str(marker)!r}, "w").close()

        runtime.profile.measure_model = measure_model
        runtime.profile._child_main()
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", code], input="{}", env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (143, "", "")
    assert marker.is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc mutex stands for the native call")
@pytest.mark.parametrize(("signum", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_measuring_child_inside_a_long_native_call_ends_when_stopped(signum: str, status: int) -> None:
    """``gtc profile --sizes 100000`` stopped by ``timeout`` or Ctrl-C: its child was inside scipy's LU
    factorisation of the LapPE (one native call, minutes long), where Python runs no signal handler, and
    it went on measuring, orphaned, after its parent had exited. Here the native call never returns (a
    mutex locked twice, the GIL released as scipy's is): the stop must end the child all the same."""
    import signal
    import subprocess
    import textwrap

    code = textwrap.dedent(
        """
        import ctypes, sys, threading, time
        import runtime.profile

        def measure_model(**kwargs):
            libc = ctypes.CDLL(None)
            mutex = ctypes.create_string_buffer(64)  # zeroed: glibc's PTHREAD_MUTEX_INITIALIZER
            libc.pthread_mutex_lock(mutex)
            main, word = threading.get_native_id(), ctypes.addressof(mutex)

            def tell():  # once this thread waits in the kernel on the mutex (futex, 202), not before
                while open(f"/proc/self/task/{main}/syscall").read().split()[:2] != ["202", hex(word)]:
                    time.sleep(0.01)
                print("stuck", file=sys.stderr, flush=True)

            threading.Thread(target=tell, daemon=True).start()
            libc.pthread_mutex_lock(mutex)  # a normal mutex locked again: waits for good, deaf to signals

        runtime.profile.measure_model = measure_model
        runtime.profile.STOP_GRACE_S = 0.2
        runtime.profile._child_main()
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
        proc.stdin.write("{}")
        proc.stdin.close()
        assert proc.stderr.readline() == "stuck\n"
        proc.send_signal(getattr(signal, signum))
        assert (proc.wait(timeout=60), proc.stderr.read()) == (status, "")
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_stop_watch_leaves_a_windows_child_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows' Python 3.11 (the oldest supported) has no ``os.set_blocking`` for a pipe: arming the
    wake-up fd there raised AttributeError in every measuring child of ``gtc profile``, which then died
    before measuring. Off POSIX it arms nothing: no wake-up fd, no watching thread."""
    import signal
    import threading

    from runtime.children import exit_if_stop_is_not_heard

    before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before)
    threads = threading.active_count()
    with monkeypatch.context() as m:  # Windows' os module as 3.11 has it, for this call only
        m.setattr(os, "name", "nt")
        m.delattr(os, "set_blocking")
        exit_if_stop_is_not_heard(0.0)
    assert signal.set_wakeup_fd(before) == before
    assert threading.active_count() == threads


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and SIGKILL: Linux here")
def test_the_op_profile_folder_of_a_killed_child_is_removed_by_the_next_op_profile(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A measuring child ended without its clean-up (SIGKILL, the OOM killer, or the stop grace of
    ``exit_if_stop_is_not_heard``, which exits at once) left its ``gtc-ortprof-*`` folder in the temp
    directory for good. Killed here inside the profiled runs, at the moment it says so."""
    import signal
    import subprocess
    import tempfile
    import textwrap

    from runtime.profile_ops import OP_PROFILE_PREFIX, op_profile
    from runtime.session import GraphSession

    path, spec = str(exported["node"].path), GraphSession(exported["node"].path).spec
    code = textwrap.dedent(
        f"""
        import sys
        from runtime.profile_ops import op_profile
        from runtime.session import GraphSession

        def held(self, inputs):
            print("inside", flush=True)
            sys.stdin.read()  # until killed

        GraphSession.run_inputs = held
        sess = GraphSession({path!r})
        op_profile({path!r}, 1, None, sess.spec, (8, 1), 2, 4.0, 0)
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "inside\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    assert child.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(f"{OP_PROFILE_PREFIX}*"))
    assert len(left) == 1 and left[0].is_dir()

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    ops = op_profile(path, 1, None, spec, (8, 1), 2, 4.0, 0)
    assert ops["available"] is True
    assert list(tmp_path.glob(f"{OP_PROFILE_PREFIX}*")) == []  # the dead child's, and this one's own


def test_a_measuring_process_that_refuses_the_model_says_why_in_the_users_words(tmp_path: Path) -> None:
    """The child's own refusal reaches the user as its message (no ``SessionError:`` class prefix) and
    the thread count reads in English; an unexpected exception still names its type."""
    from runtime.errors import SessionError
    from runtime.profile import _run_isolated

    missing = tmp_path / "m.onnx"
    kwargs = dict(path=str(missing), threads=1, configs=[(8, 1)], iterations=2, warmup=0, avg_degree=2.0, seed=0,
                  providers=None, op_config=None, op_iterations=1)  # fmt: skip
    with pytest.raises(SessionError) as err:
        _run_isolated(kwargs, lambda event: None)
    assert str(err.value) == f"profiling {missing} with 1 thread: model file does not exist: {missing}"
