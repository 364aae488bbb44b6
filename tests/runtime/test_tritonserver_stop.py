"""``TritonServer.stop`` and a failed ``start`` leave neither a server nor its scratch folder behind.

No tritonserver is needed: the server is a stand-in process, and the start fails before launching."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import runtime.tritonserver as ts
from runtime.scratch import OwnedScratch
from runtime.tritonserver import SCRATCH_PREFIX, TritonServer, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and flock: Linux here")


def _server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TritonServer:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    srv = TritonServer.__new__(TritonServer)
    srv.host, srv.http_port, srv.log_path, srv.stop_timeout = "127.0.0.1", free_port("127.0.0.1"), None, 10.0
    srv.process, srv._tmp, srv._log_start = None, None, 0
    return srv


def test_a_stop_interrupted_while_it_waits_keeps_the_server_for_the_next_stop(tmp_path, monkeypatch) -> None:
    """A second Ctrl-C during the wait for the server left ``process`` already cleared: the caller's
    next stop() neither waited for nor killed it, and removed its scratch folder under it."""
    srv = _server(tmp_path, monkeypatch)
    srv.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    srv._tmp = OwnedScratch(SCRATCH_PREFIX)
    proc, folder = srv.process, srv._tmp.path
    wait = proc.wait
    calls: list[float | None] = []

    def interrupted_once(timeout: float | None = None) -> int:
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C again while the first stop waits
        return wait(timeout)

    monkeypatch.setattr(proc, "wait", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        srv.stop()
    assert srv.process is proc and folder.is_dir()
    assert srv.stop() == -15  # SIGTERM again, waited for
    assert srv.process is None and not folder.exists() and proc.poll() == -15


def test_a_start_that_fails_before_the_server_runs_removes_its_scratch_folder(tmp_path, monkeypatch) -> None:
    srv = _server(tmp_path, monkeypatch)
    srv.install = None  # type: ignore[assignment]

    def no_backend(install: object, where: Path) -> Path:
        raise OSError(f"{where}: No space left on device")

    monkeypatch.setattr(ts, "python_backend_dir", no_backend)
    with pytest.raises(OSError, match="No space left on device"):
        srv.start()
    assert list(tmp_path.glob(f"{SCRATCH_PREFIX}*")) == [] and srv.process is None


def _no_backend_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts, "python_backend_dir", lambda install, where: where)


def test_a_log_name_the_file_system_refuses_leaves_no_folder_made_for_it(tmp_path, monkeypatch) -> None:
    """``--log new/sub/NAME`` with a name too long for the file system: the start failed, and ``new/sub``,
    made for the log, stayed."""
    srv = _server(tmp_path, monkeypatch)
    srv.install = None  # type: ignore[assignment]
    _no_backend_links(monkeypatch)
    srv.log_path = tmp_path / "new" / "sub" / ("x" * 300 + ".log")
    with pytest.raises(OSError, match="File name too long"):
        srv.start()
    assert not (tmp_path / "new").exists() and srv.process is None


def test_a_server_that_cannot_be_executed_leaves_neither_its_log_nor_its_folders(tmp_path, monkeypatch) -> None:
    """The log file is made before the server starts: an exec that fails left it empty, in folders made for it.
    A log that existed stays (an appended --log holds earlier runs)."""
    srv = _server(tmp_path, monkeypatch)
    binary = tmp_path / "inst" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text("not executable")
    srv.install = ts.TritonInstall(tmp_path / "inst", tmp_path / "libs")
    srv.repository, srv.extra_args = tmp_path, ()
    _no_backend_links(monkeypatch)
    srv.log_path = tmp_path / "logs" / "new" / "triton.log"
    with pytest.raises(PermissionError):
        srv.start()
    assert not (tmp_path / "logs").exists() and srv.process is None

    kept = tmp_path / "kept.log"
    kept.write_text("an earlier run\n")
    srv.log_path = kept
    with pytest.raises(PermissionError):
        srv.start()
    assert kept.read_text() == "an earlier run\n"
