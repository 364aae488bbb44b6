"""Starting and stopping a real NVIDIA Triton Inference Server (the nvidia-pytriton wheel's binary):
a model that cannot load, a config that does not parse, signals, a killed owner, a port in use, an
interrupted export's leftover. Each test starts its own server (``test_tritonserver.py`` shares one
to serve through)."""

from __future__ import annotations

import pytest

from exporters.triton_repo import write_model_repository
from runtime.tritonserver import TritonServer, which_tritonserver

pytestmark = pytest.mark.skipif(
    which_tritonserver() is None, reason="nvidia-pytriton is not installed (pip install 'gtcompress[triton]')"
)


def test_a_model_that_cannot_load_stops_the_server_with_its_log(exported, tmp_path) -> None:
    repo = tmp_path / "repo"
    root = write_model_repository(repo, "broken", exported["node"].path, exported["node"].spec, backend="python")
    (root / "1" / "model.onnx").unlink()
    from runtime.errors import SessionError

    with pytest.raises(SessionError, match="exited") as err, TritonServer(repo, startup_timeout=60):
        pass
    assert "model 'broken' version 1: SessionError: " in str(err.value) and "holds no model.onnx" in str(err.value)


def test_a_config_that_does_not_parse_is_named_not_buried_under_the_shutdown_tables(exported, tmp_path) -> None:
    """A config.pbtxt Triton cannot read (a user's edit of its parameters gone wrong) is logged as
    "Poll failed for model directory", not as a failed load: the error was the log's last 30 lines,
    5 KB of Triton's option tables without the cause."""
    from runtime.errors import SessionError

    repo = tmp_path / "repo"
    root = write_model_repository(repo, "m", exported["graph"].path, exported["graph"].spec, backend="python")
    with open(root / "config.pbtxt", "a") as f:
        f.write('parameters { key: "gtcompress_max_nodes"\n')  # unclosed
    with pytest.raises(SessionError) as err, TritonServer(repo, startup_timeout=60):
        pass
    message = str(err.value)
    assert message.startswith("tritonserver exited (code 1) before it was ready: model directory 'm': ")
    assert f"failed to read text proto from {root / 'config.pbtxt'}" in message
    assert "server_version" not in message and len(message) < 500


def test_a_failed_start_reports_this_runs_errors_only(exported, tmp_path) -> None:
    """With --log appended across runs, a failed start reported every model that ever failed to load
    into that file, other repositories' included."""
    from runtime.errors import SessionError

    log = tmp_path / "triton.log"
    log.write_text("E1204 failed to load 'old_broken' version 1: Internal: SessionError: gone\"\n")
    repo = tmp_path / "repo"
    root = write_model_repository(repo, "broken", exported["node"].path, exported["node"].spec, backend="python")
    (root / "1" / "model.onnx").unlink()
    with pytest.raises(SessionError) as err, TritonServer(repo, log=log, startup_timeout=60):
        pass
    assert "model 'broken' version 1" in str(err.value) and "old_broken" not in str(err.value)
    assert log.read_text().startswith("E1204 failed to load 'old_broken'")  # appended to, not replaced


def test_gtc_tritonserver_stops_its_server_on_sighup(exported, tmp_path) -> None:
    """The server runs in its own session; SIGHUP (the terminal closed) killed gtc outright and left
    tritonserver serving under PID 1, its temporary backend folder behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    repo = tmp_path / "repo"
    write_model_repository(repo, "m", exported["graph"].path, exported["graph"].spec, backend="python")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "tritonserver", str(repo), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    server: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        seen = ""
        while "Triton serving" not in seen:
            line = proc.stdout.readline()
            assert line, f"gtc tritonserver ended before serving: {seen}"
            seen += line
        server = [c for c in psutil.Process(proc.pid).children(recursive=True) if "tritonserver" in c.name()]
        assert len(server) == 1
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 30
        while server[0].is_running() and server[0].status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server[0].is_running() or server[0].status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in server:  # a server left running is this test's to stop
            if c.is_running():
                c.kill()


def test_gtc_tritonserver_stopped_while_its_server_starts_exits_0_and_stops_it(exported, tmp_path) -> None:
    """A SIGTERM while the models load stops the server and exits 0; the line said "tritonserver
    stopped (exit code None)", the start having stopped it already. The process sends the signal to
    itself once the server is launched, so the moment is exact rather than raced."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    repo = tmp_path / "repo"
    write_model_repository(repo, "m", exported["graph"].path, exported["graph"].spec, backend="python")
    pid_file = tmp_path / "server.pid"
    code = (
        "import os, signal, sys\n"
        "from runtime.tritonserver import TritonServer\n"
        "real = TritonServer.wait_ready\n"
        "def starting(self):\n"
        f"    open({str(pid_file)!r}, 'w').write(str(self.pid))\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    real(self)\n"
        "TritonServer.wait_ready = starting\n"
        "from cli.main import app\n"
        f"app(['tritonserver', {str(repo)!r}, '--port', '0'], prog_name='gtc')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, env=os.environ
    )
    assert (proc.returncode, proc.stdout.splitlines()[-1:], proc.stderr) == (
        0,
        ["tritonserver stopped before it was ready"],
        "",
    )
    server = int(pid_file.read_text())

    def running() -> bool:
        try:
            return psutil.Process(server).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    if running():  # a server left running is this test's to stop
        psutil.Process(server).kill()
        raise AssertionError("tritonserver still running after gtc tritonserver stopped")


def test_a_killed_owner_does_not_leave_its_server_running(exported, tmp_path) -> None:
    """An owner killed outright (SIGKILL, the OOM killer) cannot stop its server: tritonserver ran on
    under PID 1, holding its port, until someone found it. It now gets SIGTERM when its owner dies."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from runtime.scratch import remove_abandoned
    from runtime.tritonserver import SCRATCH_PREFIX

    repo = tmp_path / "repo"
    write_model_repository(repo, "m", exported["graph"].path, exported["graph"].spec, backend="python")
    owner = (
        "import sys, time\n"
        "from runtime.tritonserver import TritonServer\n"
        f"srv = TritonServer({str(repo)!r}).start()\n"
        "print('pid', srv.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    scratch = tmp_path / "tmp"  # the owner's temp directory, where its server's backend folder goes
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.Popen([sys.executable, "-c", owner], stdout=subprocess.PIPE, text=True, env=env)
    server = None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("pid "), f"the owner ended before its server was ready: {line!r}"
        server = psutil.Process(int(line.split()[1]))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
        # the killed owner could not remove its folder (backend links, log); the next launch does
        (left,) = scratch.glob(f"{SCRATCH_PREFIX}*")
        assert (left / "backends").is_dir()
        assert remove_abandoned(SCRATCH_PREFIX, scratch) == [left]
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None and server.is_running():  # a server left running is this test's to stop
            server.kill()


def test_a_port_in_use_or_a_folder_without_models_is_refused_before_starting(exported, tmp_path) -> None:
    """Triton binds its port only after loading the models, and the readiness poll was answered by
    whatever server held the port: "Triton serving ... " then a 5 KB error. A checkpoint folder
    given as the repository served nothing and kept running."""
    import socket

    from runtime.errors import AddressError, SessionError

    repo = tmp_path / "repo"
    write_model_repository(repo, "m", exported["graph"].path, exported["graph"].spec, backend="python")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        srv = TritonServer(repo, http_port=port)
        with pytest.raises(AddressError) as err:
            srv.start()
        assert str(err.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
        assert srv.process is None
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    with pytest.raises(SessionError, match=r"not a Triton model repository \(no NAME/config.pbtxt or NAME/1/"):
        TritonServer(tmp_path / "ckpt")


def test_an_interrupted_exports_leftover_is_named_before_starting(exported, tmp_path) -> None:
    """A gtc export --triton-repo killed part-way (SIGTERM) leaves ``.NAME.tmp-PID-RANDOM`` in the
    repository; Triton took it for a model and failed to start with "model '.m.tmp-...' version 1:
    unable to find backend library for backend 'onnxruntime'"."""
    import shutil

    from runtime.errors import SessionError

    repo = tmp_path / "repo"
    root = write_model_repository(repo, "m", exported["graph"].path, exported["graph"].spec, backend="python")
    leftover = repo / ".m.tmp-999999-0123abcd"
    shutil.copytree(root / "1", leftover / "1")  # the new version, its config.pbtxt not written yet
    with pytest.raises(SessionError) as err:
        TritonServer(repo)
    assert str(err.value) == (
        f"{leftover}: left by an interrupted write of model 'm' (gtc export --triton-repo stopped part-way, or one "
        "writing now); Triton would take it for a model and fail to start: remove it (the next gtc export of 'm' "
        "does)"
    )
    shutil.rmtree(leftover)
    aside = repo / ".m.old-999999"  # the old model set aside, the new one not yet renamed in
    root.rename(aside)
    with pytest.raises(SessionError, match=r"it holds model 'm' as it was before that write: rename it back to m$"):
        TritonServer(repo)
    aside.rename(root)
    TritonServer(repo)  # accepted now (not started)


def test_a_host_tritonserver_cannot_serve_on_is_one_error(exported, tmp_path) -> None:
    """--port 0 picked its port on an IPv4-only socket: a host name that does not resolve was a
    socket.gaierror traceback (a fixed port got AddressError). An IPv6 address Triton bound as
    255.255.255.255, never answered the readiness poll, and the start failed after the timeout."""
    from runtime.errors import AddressError, SessionError

    repo = tmp_path / "repo"
    write_model_repository(repo, "m", exported["graph"].path, exported["graph"].spec, backend="python")
    with pytest.raises(AddressError, match=r"^cannot listen on nosuchhost\.invalid:0: the host does not resolve \("):
        TritonServer(repo, host="nosuchhost.invalid", http_port=0)
    with pytest.raises(SessionError) as err:
        TritonServer(repo, host="::1")
    assert str(err.value) == (
        "--host ::1: tritonserver's HTTP endpoint takes an IPv4 address or a host name, not an IPv6 address; use "
        "127.0.0.1 (loopback) or 0.0.0.0 (every interface)"
    )
