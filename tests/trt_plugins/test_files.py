"""trt_plugins' atomic writer: PTX, manifests and engines get the umask's permissions (mkstemp's 0600
made a TensorRT plan unreadable to a Triton server running as another user), and a failed write
leaves neither a target nor a temp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trt_plugins.files import write_atomic


def test_written_with_the_umasks_permissions(tmp_path: Path) -> None:
    before = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a" / "m.plan", b"engine")
        write_atomic(tmp_path / "k.ptx", "// ptx é")
    finally:
        os.umask(before)
    assert (tmp_path / "a" / "m.plan").read_bytes() == b"engine"
    assert (tmp_path / "k.ptx").read_text(encoding="utf-8") == "// ptx é"
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "a" / "m.plan", tmp_path / "k.ptx")} == {0o640}


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "m.plan", 3)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_removes_the_folders_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at the flush left the folders made for the target (an engine's --out new/dir/m.plan);
    a folder that existed stays."""
    import errno

    import trt_plugins.files

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trt_plugins.files.os, "fsync", full)
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError, match="No space left on device"):
        write_atomic(tmp_path / "kept" / "new" / "dir" / "m.plan", b"engine")
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [Path("kept")]


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_write_removes_the_temps_of_killed_writers_only(tmp_path: Path) -> None:
    """An engine write killed mid-way (kill -9, OOM) left ``.m.plan.XXXXXXXX.tmp``, hundreds of MB,
    that no later write removed. Now a temp names its writer's PID, and the next write to the same
    target removes those of dead writers; a live writer's temp and other files stay."""
    import time

    old = time.time() - 3600
    dead = tmp_path / f".m.plan.{_dead_pid()}-abc123.tmp"
    live = tmp_path / f".m.plan.{os.getppid()}-abc123.tmp"
    legacy_old, legacy_new = tmp_path / ".m.plan.abcdefgh.tmp", tmp_path / ".m.plan.ijklmnop.tmp"
    other = tmp_path / f".k.ptx.{_dead_pid()}-abc123.tmp"
    for p in (dead, live, legacy_old, legacy_new, other):
        p.write_bytes(b"partial engine")
        os.utime(p, (old, old))
    os.utime(legacy_old, (old - 2 * 86400, old - 2 * 86400))
    write_atomic(tmp_path / "m.plan", b"engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, legacy_new, other, tmp_path / "m.plan")
    )
    assert (tmp_path / "m.plan").read_bytes() == b"engine"


def test_a_killed_writer_leaves_a_temp_the_next_write_removes(tmp_path: Path) -> None:
    """The same, with a real kill: the writer is stopped while it writes (SIGKILL), its temp stays."""
    import signal
    import subprocess
    import sys

    code = (
        "import sys, os, signal; from pathlib import Path; import trt_plugins.files as f\n"
        "def stop(fd): os.kill(os.getpid(), signal.SIGKILL)\n"
        "f.os.fsync = stop\n"
        "f.write_atomic(Path(sys.argv[1]), b'x' * 4096)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.plan")], env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    (temp,) = tmp_path.iterdir()
    import trt_plugins.files

    old = trt_plugins.files._PROCESS_START - 60  # not now - 60: this process may have started minutes ago
    os.utime(temp, (old, old))  # written before this process started, as a temp of an earlier run is
    write_atomic(tmp_path / "m.plan", b"engine")
    assert [p.name for p in tmp_path.iterdir()] == ["m.plan"]
