"""Scratch folders that killed owners leave behind are removed by the next owner, and no live one is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.scratch import LOCK_NAME, OwnedScratch, remove_abandoned

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock-based ownership: Linux here")

PREFIX = "gtc-test-scratch-"


def _owner(tmp: Path) -> subprocess.Popen[str]:
    """A process that makes an OwnedScratch in ``tmp``, prints its path and waits to be killed."""
    code = (
        "import sys, time\n"
        "from runtime.scratch import OwnedScratch\n"
        f"s = OwnedScratch({PREFIX!r})\n"
        "print(s.path, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


def test_a_killed_owners_folder_is_removed_and_a_live_owners_is_kept(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    live, dead = _owner(tmp_path), _owner(tmp_path)
    try:
        assert live.stdout is not None and dead.stdout is not None
        live_dir, dead_dir = Path(live.stdout.readline().strip()), Path(dead.stdout.readline().strip())
        assert live_dir.parent == tmp_path and dead_dir.parent == tmp_path
        (dead_dir / "backends").mkdir()
        (dead_dir / "backends" / "f").write_text("x")
        dead.send_signal(signal.SIGKILL)
        dead.wait(30)
        assert dead_dir.is_dir()  # nothing could remove it at the kill

        mine = OwnedScratch(PREFIX)  # a new owner first removes what the dead one left
        assert not dead_dir.exists()
        assert live_dir.is_dir() and mine.path.is_dir()
        assert remove_abandoned(PREFIX, tmp_path) == []  # ours and the live process's are both held
        mine.cleanup()
        assert not mine.path.exists()
    finally:
        for p in (live, dead):
            if p.poll() is None:
                p.kill()
                p.wait(30)


def test_a_folder_without_a_lock_file_or_of_another_name_is_left_alone(tmp_path) -> None:
    """No lock file: an owner between making its folder and locking it, or an earlier version's folder."""
    unlocked = tmp_path / f"{PREFIX}abc"
    unlocked.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    (other / LOCK_NAME).write_text("")
    assert remove_abandoned(PREFIX, tmp_path) == []
    assert unlocked.is_dir() and other.is_dir()
    (unlocked / LOCK_NAME).write_text("")  # locked by nobody: its owner is gone
    assert remove_abandoned(PREFIX, tmp_path) == [unlocked]
    assert not unlocked.exists() and other.is_dir()


def test_a_new_folder_is_never_seen_unlocked_by_another_launch(tmp_path, monkeypatch) -> None:
    """The owner created its lock file, then locked it: another launch looking in between found a lock
    file nobody held, took it and removed the new folder from under its owner (two ``gtc tritonserver``
    started together). That moment is made exact here: another process cleans up as the owner locks."""
    import fcntl

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    flock = fcntl.flock

    def another_launch_first(fd: int, op: int) -> None:
        code = f"from runtime.scratch import remove_abandoned; print(remove_abandoned({PREFIX!r}, {str(tmp_path)!r}))"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", another_launch_first)
    mine = OwnedScratch(PREFIX)
    monkeypatch.setattr(fcntl, "flock", flock)
    try:
        assert mine.path.is_dir() and (mine.path / LOCK_NAME).is_file()
        assert remove_abandoned(PREFIX, tmp_path) == []  # and it is held
    finally:
        mine.cleanup()
    assert not mine.path.exists()
