"""Atomic file and directory writes: an interrupted run must never leave a half-written artifact behind.

A write goes to a temp file beside the target, ``.NAME.PID-RANDOM.tmp``, renamed over the target only
when the block succeeds (an export first verifies the file). An exception removes the temp; a process
*killed* inside the block (``kill -9``, OOM killer, power loss) cannot, and leaves a complete but
unchecked file. So every write first removes the stale temps of its own target
(:func:`remove_stale_temps`): the PID in the name says whether the writer still runs.

A directory (a checkpoint, a Triton model repository) is written whole into ``.NAME.tmp-PID-RANDOM``
and swapped in (:func:`swap_dir_into_place`): on Linux by one atomic exchange of the two names, so
that ``NAME`` always names a complete directory, elsewhere by two renames;
:func:`recover_dead_dir_swaps` cleans up after a writer that died, by the same PID rule.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

#: A temp without a PID in its name (written before the PID was put there: ``.NAME.XXXXXXXX.tmp`` from
#: ``mkstemp``) is removed once untouched for this long: nothing can tell whether its writer still runs,
#: and no write keeps a temp open for a day (an export writes it once, then verifies it for seconds to
#: minutes).
LEGACY_TEMP_MAX_AGE_S = 24 * 3600

#: When this process started, near enough (the module is imported before any write): a temp modified
#: after it cannot be a leftover of a process that died before it.
_PROCESS_START = time.time()


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists here; ``True`` when that cannot be told, so a live write is never hit."""
    if pid == os.getpid():
        return True  # our own: another thread's write in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: someone else's live process; others: cannot tell
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temps that dead writes to ``path`` left beside it; return what was removed.

    Only names of this module's own patterns *for this target* are considered, never another file:

    * ``.NAME.PID-RANDOM.tmp``: removed when process PID no longer runs and the file was last modified
      before this process started. The PID decides rather than an age because an export's temp sits
      unmodified while the export verifies it, for as long as that takes, so no age tells a slow live
      writer from a dead one, while a PID does; our own PID and PIDs we may not signal count as
      running. The age condition also keeps a temp whose PID was reused by a newer process, or was
      written by another machine on a shared filesystem after we started (PIDs are per machine).
    * ``.NAME.XXXXXXXX.tmp`` (eight ``mkstemp`` characters, no PID: temps of earlier versions):
      removed once not modified for :data:`LEGACY_TEMP_MAX_AGE_S`.
    """
    target = Path(path)
    name = re.escape(target.name)
    with_pid = re.compile(rf"\.{name}\.(\d+)-[0-9a-z_]+\.tmp")
    legacy = re.compile(rf"\.{name}\.[0-9a-z_]{{8}}\.tmp")
    removed: list[Path] = []
    try:
        candidates = sorted(target.parent.glob(f".{_glob_escape(target.name)}.*.tmp"))
    except OSError:  # the directory is unreadable: the write itself will say so
        return removed
    now = time.time()
    for p in candidates:
        try:
            st = p.lstat()
        except OSError:  # gone meanwhile (its writer finished)
            continue
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        m = with_pid.fullmatch(p.name)
        if m is not None:
            stale = st.st_mtime < _PROCESS_START and not pid_running(int(m.group(1)))
        else:
            stale = legacy.fullmatch(p.name) is not None and now - st.st_mtime > LEGACY_TEMP_MAX_AGE_S
        if stale:
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def _glob_escape(text: str) -> str:
    """``glob.escape`` for one name: ``*``, ``?`` and ``[`` matched literally."""
    return re.sub(r"([*?[])", r"[\1]", text)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def unwritable_reason(target: str | os.PathLike[str], *, inside: bool = False) -> str | None:
    """Why nothing can be created at ``target``, or ``None``: its nearest existing ancestor DIR is a file
    (``"DIR is a file, not a directory"``), a directory without write permission (``"DIR is not
    writable"``), or one that refuses a new folder all the same (``"NAME cannot be created in DIR (the
    system's reason)"``, NAME the first missing part of ``target``). Commands ask before their minutes
    of work, so that a path the final write would refuse is one error line at once rather than after
    the work, naming a temp file the user never gave.

    ``os.access`` alone is not the answer: it says yes to root for every directory, ``/proc`` and
    ``/sys`` included, where no file can be made. So the directory is also asked by making an empty
    directory in it and removing it at once (what the writes do there: a temp file or directory, then
    the directories missing below it); nothing is left behind, and nothing of ``target`` is created.

    ``inside``: ``target`` is a folder the command writes into (a report, a pipeline run), so where it is
    an existing folder it is asked itself, not its parent (a file there is the caller's to name): a run
    folder that exists but takes no file failed at the last write, after the work."""
    path = Path(target)
    for parent in ([path] if inside and path.is_dir() else []) + list(path.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{parent} is not writable"
            try:
                probe = tempfile.mkdtemp(prefix=".gtc-write-probe-", dir=parent)
            except OSError as e:
                # The permission said yes (root; /proc), so "not writable" would contradict the reason the
                # system then gives (/proc: "No such file or directory"): named is what the write creates.
                why = f"the system refused a new folder there: {e.strerror or e}"
                if parent == path:  # an existing folder the command writes into
                    return f"nothing can be created in {parent} ({why})"
                return f"{path.relative_to(parent).parts[0]} cannot be created in {parent} ({why})"
            os.rmdir(probe)
            return None
    return None


@contextmanager
def dirs_made(path: str | os.PathLike[str]) -> Iterator[None]:
    """Make the directory ``path`` and its missing parents (``mkdir -p``) for the block; if the block
    raises, remove again those this call made that are still empty, deepest first. A write that fails
    (a full disk) then leaves no empty folder it made, and only those: a folder that existed, or that
    another writer has put a file in meanwhile, stays."""
    made: list[Path] = []
    try:
        missing = []
        here = Path(path)
        while not (here.exists() or here.is_symlink()) and here.parent != here:
            missing.append(here)
            here = here.parent
        if not missing:
            here.mkdir(exist_ok=True)  # a file or a broken link there: FileExistsError, as ``mkdir -p`` says
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


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    Stale temps of ``path`` from killed writes are removed first (see :func:`remove_stale_temps`); the
    folders made for ``path`` are removed again if the write fails (:func:`dirs_made`)."""
    target = Path(path)
    with dirs_made(target.parent):
        remove_stale_temps(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp", dir=target.parent)
        try:  # mkstemp makes 0600: renamed into place, the file would be unreadable to everyone else
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.replace(tmp_path, target)
        except OSError as e:
            # A writer that writes through a file object (onnx.save, matplotlib's savefig) loses the name.
            if (named := named_write_error(e, target)) is not None:
                raise named from e
            raise
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


#: The errors of a write that the disk refused, named after the target by :func:`atomic_path` (and by
#: ``save_checkpoint`` for the files of a checkpoint) when the writer's own error names no file.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def named_write_error(e: OSError, shown: str | os.PathLike[str]) -> OSError | None:
    """``e`` as an ``OSError`` naming ``shown`` when it is a write the disk refused (:data:`WRITE_ERRNOS`)
    that names no file, else ``None``: ``user_errors`` prints a nameless ``OSError`` as a traceback,
    taking it for a bug, and a full disk is the user's to fix, at the file they will look for."""
    if e.filename is None and e.errno in WRITE_ERRNOS:
        return OSError(e.errno, e.strerror, str(shown))
    return None


def write_text_named(path: str | os.PathLike[str], text: str, shown: str | os.PathLike[str]) -> None:
    """Write ``text`` to ``path`` (a file inside a temp directory that will be swapped into place); a
    write the disk refused raises an ``OSError`` naming ``shown``, the file the user will look for
    (``Path.write_text`` reports a full disk without a file name: :func:`named_write_error`)."""
    try:
        Path(path).write_text(text)
    except OSError as e:
        if (named := named_write_error(e, shown)) is not None:
            raise named from e
        raise


def copy_file_named(src: str | os.PathLike[str], dst: str | os.PathLike[str], shown: str | os.PathLike[str]) -> None:
    """``shutil.copyfile`` into a temp directory that will be swapped into place; a write the disk
    refused names ``shown`` alone, the file the user will look for (``copyfile`` names the source and
    the temp path, ``a.onnx -> repo/.gt.tmp-1234/1/model.onnx``, a folder the user never sees)."""
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        if e.errno in WRITE_ERRNOS - {errno.EIO}:  # an I/O error may be the source's: left as it names it
            raise OSError(e.errno, e.strerror, str(shown)) from e
        raise


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""
    return write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n"))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------- directories


def make_temp_dir(target: Path) -> Path:
    """``.NAME.tmp-PID-RANDOM`` next to ``target``, with the umask's permissions (``mkdtemp`` would
    give 0700, and the renamed directory would be unreadable to everyone else); the PID lets a later
    write tell a dead process's leftover from a running one's (:func:`recover_dead_dir_swaps`)."""
    while True:
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


#: ``renameat2`` flag: swap the two names in one step (Linux >= 3.15; ext4, xfs, btrfs, tmpfs, overlayfs).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically (``renameat2(RENAME_EXCHANGE)``); ``False`` where the
    system or file system cannot (nothing changed then). Both must exist: ``FileNotFoundError`` else."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False  # an old kernel or a file system without the flag (NFS, FUSE...): two renames instead
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2``, or ``None`` (not Linux, or a libc without it: glibc < 2.28); looked up once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return None
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        fn.restype = ctypes.c_int
    return fn


def swap_dir_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``. An existing ``target`` is exchanged with ``tmp`` in one step where
    the system can (a reader, or another writer, never finds ``target`` missing), then removed; else it
    goes aside first and comes back on failure."""
    aside = None
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        target.rmdir()  # an empty directory holds nothing to restore
    elif target.exists() or target.is_symlink():
        try:
            exchanged = exchange_paths(tmp, target)
        except FileNotFoundError:  # moved away this instant by another writer's renames: nothing to set aside
            exchanged = None
        if exchanged:
            remove_path(tmp)  # the old one now; a kill before this leaves a temp that recovery removes
            return
        if exchanged is not None:
            aside = target.with_name(f".{target.name}.old-{os.getpid()}")
            remove_path(aside)
            os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except BaseException:
        if aside is not None:
            os.replace(aside, target)
        raise
    if aside is not None:
        remove_path(aside)


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree, if there is one."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def recover_dead_dir_swaps(target: Path) -> None:
    """Clean up after directory writes to ``target`` whose process died: temporary directories are
    removed; an aside is renamed back when ``target`` is missing (it is the last complete one), else
    removed.

    Dead means, as for :func:`remove_stale_temps`, that its PID does not run *and* nothing in it
    changed since this process started (:func:`_last_change`): a PID is only meaningful on this
    machine and in this PID namespace, so a live writer in another container sharing the directory
    (or on another machine) looks dead by its PID alone, and its half-written directory was deleted
    under it."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(old|tmp)-(\d+)(-[0-9a-f]+)?")
    for leftover in sorted(target.parent.iterdir()):
        m = pattern.fullmatch(leftover.name)
        if m is None or pid_running(int(m.group(2))) or _last_change(leftover) >= _PROCESS_START:
            continue
        kind, suffix = m.group(1), m.group(3)
        if kind == "old" and suffix is None:
            if target.exists() or target.is_symlink():
                remove_path(leftover)
            else:
                os.replace(leftover, target)
        elif kind == "tmp" and suffix is not None:
            remove_path(leftover)


def _last_change(path: Path) -> float:
    """The latest ``st_ctime`` in the tree ``path`` (symbolic links not followed): a file being written,
    an entry created or removed and a rename all change one, so a live writer's directory has a recent
    one. ``inf`` when the tree cannot be read, so that it counts as live."""
    try:
        latest = path.lstat().st_ctime
        if path.is_dir() and not path.is_symlink():
            for parent, dirs, files in os.walk(path, onerror=_raise):
                for name in (*dirs, *files):
                    latest = max(latest, os.lstat(os.path.join(parent, name)).st_ctime)
    except OSError:  # removed meanwhile (by its writer, or a recovery beside us), or unreadable
        return float("inf")
    return latest


def _raise(err: OSError) -> None:
    raise err


def remove_dir(target: Path) -> None:
    """Remove the directory ``target`` so that no half-deleted one is ever seen under its name: it
    is renamed to a temporary name first (one :func:`recover_dead_dir_swaps` removes if this process
    dies during the deletion)."""
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink() or not target.is_dir():
        target.unlink()
        return
    aside = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    os.replace(target, aside)
    remove_path(aside)
