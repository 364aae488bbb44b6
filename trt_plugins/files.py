"""Atomic file writes for the PTX, manifests, engines and timing caches this package makes.

``trt_plugins`` imports nothing of gtcompress's, so it keeps this small writer of its own. A temp
file next to the target, ``.NAME.PID-RANDOM.tmp`` (the names ``gtcompress.io`` uses), is renamed over
it once complete, with the umask's permissions (``mkstemp`` makes 0600, and a Triton server running
as another user could not read the engine). A process killed mid-write (an engine is hundreds of
megabytes) cannot remove its temp, so every write first removes the temps of its target whose writer
is dead, by the rule of ``gtcompress.io.remove_stale_temps``. A write that fails removes the folders
it made for its target (:func:`dirs_made`, as ``gtcompress.io.dirs_made``)."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

#: A temp without a PID in its name (``.NAME.XXXXXXXX.tmp``, from before the PID was put there) goes
#: once untouched for this long: nothing tells whether its writer still runs, and no write takes a day.
LEGACY_TEMP_MAX_AGE_S = 24 * 3600

#: When this process started, near enough: a temp modified after it is no leftover of a writer that
#: died before it (a reused PID, or a writer on another machine sharing the directory).
_PROCESS_START = time.time()


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists; ``True`` when that cannot be told, so a live write is never hit."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temps that killed writes to ``path`` left beside it; return what was removed."""
    name = re.escape(path.name)
    with_pid = re.compile(rf"\.{name}\.(\d+)-[0-9a-z_]+\.tmp")
    legacy = re.compile(rf"\.{name}\.[0-9a-z_]{{8}}\.tmp")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # unreadable: the write itself will say so
        return removed
    now = time.time()
    for entry in entries:
        m = with_pid.fullmatch(entry.name)
        if m is None and legacy.fullmatch(entry.name) is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:  # gone meanwhile (its writer finished)
            continue
        if m is not None:
            stale = mtime < _PROCESS_START and not _pid_running(int(m.group(1)))
        else:
            stale = now - mtime > LEGACY_TEMP_MAX_AGE_S
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed


@contextmanager
def dirs_made(path: Path) -> Iterator[None]:
    """Make the directory ``path`` and its missing parents for the block; if the block raises, remove
    again those this call made that are still empty, deepest first (a folder that existed, or that
    another writer has put a file in meanwhile, stays)."""
    missing = []
    here = path
    while not (here.exists() or here.is_symlink()) and here.parent != here:
        missing.append(here)
        here = here.parent
    made: list[Path] = []
    try:
        if not missing:
            here.mkdir(exist_ok=True)  # a file there: FileExistsError, as ``mkdir -p`` says
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # made meanwhile by another writer: not ours to remove
                if not d.is_dir():
                    raise
                continue
            made.append(d)
        yield
    except BaseException:
        for d in reversed(made):
            with suppress(OSError):  # not empty (or gone): left as it is
                d.rmdir()
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` by temp file, fsync and rename."""
    with dirs_made(path.parent):
        remove_stale_temps(path)
        fd, tmp = _create_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _create_temp(path: Path) -> tuple[int, str]:
    """A new temp beside ``path``, opened for writing, with mode 0666 less the umask: the kernel applies
    the umask at creation, so it is never read (setting and restoring it raced with other threads)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temp name for {path.name}")
