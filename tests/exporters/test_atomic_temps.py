"""Temp files of atomic writes (``gtcompress.io.atomic_path``, which ``export_onnx`` writes through): a
process killed mid-write (``kill -9`` during ``gtc export``) leaves its temp behind, complete but never
verified; the next write of the same target removes it, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gtcompress.io import LEGACY_TEMP_MAX_AGE_S, atomic_path, remove_stale_temps

REPO = Path(__file__).resolve().parents[2]


def _writer(target: Path, then: str) -> subprocess.Popen:
    """A process that opens ``atomic_path(target)``, writes its temp, prints the temp's name and then
    ``then`` ("kill": SIGKILLs itself inside the block, as ``kill -9`` during an export would; "sleep": stays
    alive inside the block)."""
    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from gtcompress.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"complete but unverified")
            print(tmp.name, flush=True)
            if {then!r} == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)
        """
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)


def _age(path: Path, seconds: float = 3600.0) -> None:
    """Date ``path`` back: the killed export ran before the process that cleans up (as with two ``gtc
    export`` runs; here the test process started first)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_next_write_removes_the_temp_of_a_killed_writer(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    proc = _writer(target, "kill")
    name = proc.stdout.readline().strip()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert (tmp_path / name).is_file()  # what the issue reports: the temp survives kill -9
    _age(tmp_path / name)
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_dead_writers_temp_newer_than_this_process_is_kept(tmp_path: Path) -> None:
    """PIDs are per machine: on a shared filesystem a temp written after we started may be another
    machine's live write under a PID that means nothing here, so only older temps are removed."""
    proc = _writer(tmp_path / "model.onnx", "kill")
    name = proc.stdout.readline().strip()
    proc.wait(timeout=30)
    assert remove_stale_temps(tmp_path / "model.onnx") == []
    assert (tmp_path / name).is_file()


def test_live_writers_other_targets_and_other_files_are_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    live = _writer(target, "sleep")
    try:
        live_name = live.stdout.readline().strip()
        dead = _writer(tmp_path / "other.onnx", "kill")  # a dead writer's temp, but of another target
        other_name = dead.stdout.readline().strip()
        dead.wait(timeout=30)
        keep = [live_name, other_name, ".model.onnx.notes", "model.onnx.12-ab.tmp", ".model.onnx.x.12-ab.tmp"]
        for name in keep[2:]:
            (tmp_path / name).write_text("not ours to delete")
        own = tmp_path / f".model.onnx.{os.getpid()}-0a1b2c3d.tmp"  # this process's: a live write in another thread
        own.write_text("")
        for p in [*(tmp_path / name for name in keep), own]:
            _age(p)  # all old enough: what keeps them is who wrote them and their names
        assert remove_stale_temps(target) == []
        assert all((tmp_path / name).exists() for name in keep) and own.exists()
    finally:
        live.kill()
        live.wait(timeout=30)
    assert remove_stale_temps(target) == [tmp_path / live_name]  # once its writer is gone, it is stale


def test_temps_without_a_pid_go_only_when_old(tmp_path: Path) -> None:
    """Names from before the pid was in them (``mkstemp``'s 8 random characters) cannot say whether their
    writer lives: they are removed once untouched for LEGACY_TEMP_MAX_AGE_S."""
    target = tmp_path / "model.onnx"
    old, fresh = tmp_path / ".model.onnx.k3_9x0ab.tmp", tmp_path / ".model.onnx.q7rt2mzz.tmp"
    for p in (old, fresh):
        p.write_text("complete but unverified")
    then = time.time() - LEGACY_TEMP_MAX_AGE_S - 60
    os.utime(old, (then, then))
    assert remove_stale_temps(target) == [old]
    assert fresh.exists() and not old.exists()


def test_temp_names_carry_the_pid(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "m.onnx") as tmp:
        assert tmp.name.startswith(f".m.onnx.{os.getpid()}-") and tmp.name.endswith(".tmp")
        tmp.write_text("x")
    assert (tmp_path / "m.onnx").read_text() == "x"


def test_a_failed_block_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "m.onnx") as tmp:
        tmp.write_text("x")
        raise RuntimeError("check failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_an_atomic_write_gets_the_umasks_permissions(tmp_path: Path, umask: int) -> None:
    """mkstemp makes its temp 0600 and the rename kept it: ONNX files, caches and JSON written
    through atomic_path were unreadable to a server or teammate running as another user."""
    from gtcompress.io import current_umask, write_json

    before = os.umask(umask)
    try:
        assert current_umask() == umask
        write_json(tmp_path / "r.json", {"a": 1})
        with atomic_path(tmp_path / "m.onnx") as tmp:
            tmp.write_bytes(b"model")
    finally:
        os.umask(before)
    for name in ("r.json", "m.onnx"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_full_disk_inside_the_block_names_the_target(tmp_path: Path) -> None:
    """onnx.save and savefig write through a file object, so their ENOSPC names no file, and the CLI's
    ``user_errors`` printed a traceback for it (``gtc export --out`` onto a full disk); the error names
    the target now, and no temp is left."""
    import errno

    target = tmp_path / "model.onnx"
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(target))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_removes_only_the_folders_it_made(tmp_path: Path) -> None:
    """``gtc export --out new/dir/g.onnx`` onto a full disk left ``new/dir/`` behind its error. The folders
    the write made go, deepest first; one that was there before, or that another writer put a file in
    meanwhile, stays."""
    import errno

    (tmp_path / "old").mkdir()
    with pytest.raises(OSError), atomic_path(tmp_path / "old" / "new" / "dir" / "g.onnx") as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and list((tmp_path / "old").iterdir()) == []
    with pytest.raises(OSError), atomic_path(tmp_path / "a" / "b" / "g.onnx"):
        (tmp_path / "a" / "theirs.txt").write_text("another writer's")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["theirs.txt"]


def test_a_path_below_a_file_is_refused_as_mkdir_refuses_it(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError), atomic_path(tmp_path / "f" / "g.onnx"):
        pass
    with pytest.raises(NotADirectoryError), atomic_path(tmp_path / "f" / "sub" / "g.onnx"):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_other_errors_of_the_block_pass_unchanged(tmp_path: Path) -> None:
    """Only a write the disk refused is given the target's name: another OSError (a bug, or one that
    names its own file) is not disguised as a problem with the target."""
    with pytest.raises(OSError) as info, atomic_path(tmp_path / "a.json"):
        raise FileNotFoundError(2, "No such file or directory", "elsewhere.txt")
    assert info.value.filename == "elsewhere.txt"
    with pytest.raises(ConnectionResetError) as reset, atomic_path(tmp_path / "a.json"):
        raise ConnectionResetError(104, "reset")
    assert reset.value.filename is None
