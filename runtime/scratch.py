"""A scratch folder under the system temp directory that a later process can tell abandoned.

``tempfile.TemporaryDirectory`` removes its folder when its owner ends normally; an owner killed
outright (SIGKILL, the OOM killer) leaves it behind, one per kill, and nothing ever removes it. The
owner of an :class:`OwnedScratch` holds an exclusive ``flock`` on a file inside its folder for as
long as the folder is in use. The kernel drops the lock when the owner dies, however it dies, so
:func:`remove_abandoned` (called before every new folder is made) removes exactly the folders whose
lock it can take. A lock rather than the PID in the name: PIDs are reused, and processes in other PID
namespaces (containers sharing ``/tmp``) look dead from here while their lock still holds.

A folder without the lock file is left alone: its owner may be between making it and locking it, or
be an earlier version that named no owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

LOCK_NAME = ".owner.lock"
#: Where ``fcntl.flock`` exists; elsewhere folders are neither locked nor removed by others.
_FLOCK = sys.platform.startswith("linux") or sys.platform == "darwin"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None when another owner holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_abandoned(prefix: str, root: str | Path | None = None) -> list[Path]:
    """Remove the ``prefix*`` folders in ``root`` (the temp directory) whose owner no longer runs.

    Returns what was removed. Folders of other users, and any that cannot be read, are skipped."""
    if not _FLOCK:
        return []
    base = Path(root if root is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = sorted(p for p in base.glob(f"{prefix}*") if p.is_dir() and not p.is_symlink())
    except OSError:
        return removed
    for folder in candidates:
        lock = folder / LOCK_NAME
        try:
            if folder.stat().st_uid != os.getuid() or not lock.is_file():
                continue
            fd = _try_lock(lock)
        except OSError:
            continue
        if fd is None:  # its owner still runs
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
        if not folder.exists():
            removed.append(folder)
    return removed


class OwnedScratch:
    """A fresh ``prefix*`` folder in the temp directory, locked by this process until :meth:`cleanup`.

    Making one first removes the folders that killed owners left (:func:`remove_abandoned`)."""

    def __init__(self, prefix: str) -> None:
        remove_abandoned(prefix)
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self._fd: int | None = None
        if _FLOCK:
            # Locked under another name, then renamed: a lock file another launch can see is already held
            # (created and locked under its name, it was unlocked for a moment, and removed as abandoned).
            pending = self.path / f"{LOCK_NAME}.new"
            self._fd = _try_lock(pending)
            if self._fd is not None:
                os.rename(pending, self.path / LOCK_NAME)

    def cleanup(self) -> None:
        """Remove the folder, then let go of its lock (in that order, so that no other process can
        take the lock of a folder that is still being removed)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
