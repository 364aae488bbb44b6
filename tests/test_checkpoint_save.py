"""Checkpoint saves are atomic: what a replaced, interrupted or concurrent save leaves, and how a
load tells a save in progress from another run's weights."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gtcompress.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from gtcompress.errors import CheckpointError
from gtcompress.models import build_model
from tests.test_checkpoint import _model


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path) -> None:
    save_checkpoint(tmp_path / "ckpt", _model())
    save_checkpoint(tmp_path / "ckpt", _model(), {"round": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert read_checkpoint_meta(tmp_path / "ckpt")["round"] == 2


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped), as a crashed save's would be."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _siblings(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_save_refuses_to_replace_a_file(tmp_path) -> None:
    target = tmp_path / "ckpt"
    target.write_text("precious")
    with pytest.raises(CheckpointError, match=r"ckpt: exists and is a file, not a checkpoint directory"):
        save_checkpoint(target, _model())
    assert target.read_text() == "precious" and _siblings(target) == ["ckpt"]


def test_save_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path) -> None:
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"results: exists and is not a gtcompress checkpoint"):
        save_checkpoint(target, _model())
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and _siblings(target) == ["results"]


def test_save_refuses_a_path_below_a_file(tmp_path) -> None:
    (tmp_path / "runs").write_text("x")
    with pytest.raises(CheckpointError, match=r"runs/ckpt: .*runs is a file, not a directory"):
        save_checkpoint(tmp_path / "runs" / "ckpt", _model())


def test_save_into_an_empty_directory_is_allowed(tmp_path) -> None:
    (tmp_path / "ckpt").mkdir()
    save_checkpoint(tmp_path / "ckpt", _model(), {"round": 1})
    assert read_checkpoint_meta(tmp_path / "ckpt")["round"] == 1 and _siblings(tmp_path / "ckpt") == ["ckpt"]


def test_checkpoint_directory_follows_the_umask(tmp_path) -> None:
    """Not the 0700 of a ``mkdtemp`` directory: a checkpoint is as readable as any file the user writes."""
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ckpt", _model())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755


def test_failed_swap_restores_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    """Without an atomic exchange (a file system that lacks it), the old directory is renamed aside
    before the new one moves in; if that move fails, the old one goes back and neither the aside nor
    the temporary directory is left behind."""
    import gtcompress.checkpoint as ckpt_mod
    import gtcompress.io as io_mod

    monkeypatch.setattr(io_mod, "exchange_paths", lambda a, b: False)

    target = save_checkpoint(tmp_path / "ckpt", _model(), {"round": 1})
    real_replace = ckpt_mod.os.replace

    def replace(src, dst) -> None:
        if Path(dst) == target and ".old-" not in str(src):  # the new directory moving in
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(target, _model(), {"round": 2})
    assert read_checkpoint_meta(target)["round"] == 1 and _siblings(target) == ["ckpt"]


def _later_process(monkeypatch) -> None:
    """Make what the test wrote so far look older than this process, as an earlier run's leftovers are."""
    import time

    import gtcompress.io as io_mod

    monkeypatch.setattr(io_mod, "_PROCESS_START", time.time() + 1)


def test_stale_leftovers_of_a_dead_save_are_cleaned(tmp_path, monkeypatch) -> None:
    """A save killed between its two renames leaves ``.NAME.old-PID`` (and maybe ``.NAME.tmp-PID-…``);
    the next save removes them when that process is gone."""
    target = save_checkpoint(tmp_path / "ckpt", _model(), {"round": 1})
    pid = _dead_pid()
    save_checkpoint(tmp_path / "scratch", _model())
    (tmp_path / "scratch").rename(tmp_path / f".ckpt.old-{pid}")
    (tmp_path / f".ckpt.tmp-{pid}-abcd").mkdir()
    _later_process(monkeypatch)
    save_checkpoint(target, _model(), {"round": 2})
    assert read_checkpoint_meta(target)["round"] == 2 and _siblings(target) == ["ckpt"]


def test_a_dead_saves_aside_is_restored_when_the_checkpoint_is_gone(tmp_path, monkeypatch) -> None:
    """Killed between the renames, the old checkpoint exists only as the aside: the next save puts it
    back first, so that a failure of that save too still leaves the old checkpoint in place."""
    import gtcompress.checkpoint as ckpt_mod

    target = save_checkpoint(tmp_path / "ckpt", _model(), {"round": 1})
    target.rename(tmp_path / f".ckpt.old-{_dead_pid()}")
    _later_process(monkeypatch)

    def full_disk(*a, **k) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(target, _model(), {"round": 2})
    assert read_checkpoint_meta(target)["round"] == 1 and _siblings(target) == ["ckpt"]


def test_a_running_saves_aside_is_left_alone(tmp_path) -> None:
    """Another live process's aside may be the only copy of its checkpoint mid-swap: not ours to delete."""
    import os

    aside = tmp_path / f".ckpt.old-{os.getppid()}"
    aside.mkdir()
    save_checkpoint(tmp_path / "ckpt", _model())
    assert aside.is_dir()


def test_extra_files_are_part_of_the_atomic_save(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "ckpt", _model(), files={"compression_report.json": '{"a": 1}\n'})
    assert json.loads((path / "compression_report.json").read_text()) == {"a": 1}
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "other", _model(), files={"config.json": "{}"})


def test_save_refuses_a_directory_it_cannot_write_to(tmp_path, monkeypatch) -> None:
    """Checked up front (commands call it before training), not found out by the final rename."""
    import gtcompress.checkpoint as ckpt_mod

    monkeypatch.setattr(ckpt_mod.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(CheckpointError, match=r"runs/ckpt: .* is not writable"):
        save_checkpoint(tmp_path / "runs" / "ckpt", _model())
    assert list(tmp_path.iterdir()) == []


def _exchange_supported(tmp_path: Path) -> bool:
    from gtcompress.io import exchange_paths

    (tmp_path / "probe-a").mkdir()
    (tmp_path / "probe-b").mkdir()
    try:
        return exchange_paths(tmp_path / "probe-a", tmp_path / "probe-b")
    finally:
        (tmp_path / "probe-a").rmdir()
        (tmp_path / "probe-b").rmdir()


def test_an_overwrite_never_leaves_the_checkpoint_missing(tmp_path, monkeypatch) -> None:
    """The old checkpoint was renamed aside before the new one moved in: a reader in between (gtc eval
    of the best checkpoint while training saves it) got "checkpoint directory does not exist". Where
    the system can, the two directories now trade names in one step."""
    import gtcompress.io as io_mod

    if not _exchange_supported(tmp_path):
        pytest.skip("this file system cannot exchange two names atomically")
    target = save_checkpoint(tmp_path / "ckpt", _model(), {"round": 1})
    seen: list[bool] = []
    real_replace = io_mod.os.replace

    def replace(src, dst) -> None:
        real_replace(src, dst)
        seen.append(target.is_dir())

    monkeypatch.setattr(io_mod.os, "replace", replace)
    monkeypatch.setattr(io_mod, "remove_path", lambda p: (seen.append(target.is_dir()), shutil.rmtree(p)))
    save_checkpoint(target, _model(), {"round": 2})
    assert seen and all(seen)
    assert read_checkpoint_meta(target)["round"] == 2 and _siblings(target) == ["ckpt"]


def test_a_save_landing_between_the_two_reads_of_a_load_is_not_another_run(tmp_path, monkeypatch) -> None:
    """load_checkpoint reads config.json, then the weights: a save in between (another process) gave
    config.json of one save and weights of the next, reported as "SHA-256 does not match (weights from
    another run?)". The load now reads again when the directory changed under it."""
    import gtcompress.checkpoint as ckpt_mod

    target = save_checkpoint(tmp_path / "ckpt", _model(), {"round": 1})
    torch.manual_seed(5)
    other = build_model(_model().config)
    real_load = ckpt_mod.load_file
    calls: list[str] = []

    def load_file(name: str):
        if not calls:
            save_checkpoint(target, other, {"round": 2})  # the other process's save lands now
        calls.append(name)
        return real_load(name)

    monkeypatch.setattr(ckpt_mod, "load_file", load_file)
    loaded, meta = load_checkpoint(target)
    assert meta["round"] == 2 and len(calls) == 2
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), other.state_dict().values(), strict=True)
    )


def test_weights_from_another_run_are_still_caught_at_once(tmp_path, monkeypatch) -> None:
    """The retry is for a directory that changed during the read, not for a checkpoint that is wrong."""
    import gtcompress.checkpoint as ckpt_mod

    path = save_checkpoint(tmp_path / "ckpt", _model())
    save_file(
        {k: v + 1 for k, v in load_file(str(path / "model.safetensors")).items()}, str(path / "model.safetensors")
    )
    calls: list[str] = []
    real_load = ckpt_mod.load_file
    monkeypatch.setattr(ckpt_mod, "load_file", lambda name: (calls.append(name), real_load(name))[1])
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        load_checkpoint(path)
    assert len(calls) == 1


def test_a_live_save_in_another_pid_namespace_is_not_taken_for_dead(tmp_path, monkeypatch) -> None:
    """A PID means something only in its own PID namespace: a save running in another container on
    the same volume looks dead by its PID, and a save here deleted its temporary directory (its save
    then failed with FileNotFoundError). A leftover that changed since this process started is kept."""
    import time

    import gtcompress.io as io_mod

    target = save_checkpoint(tmp_path / "ckpt", _model(), {"round": 1})
    monkeypatch.setattr(io_mod, "_PROCESS_START", time.time() - 1)
    pid = _dead_pid()  # as another namespace's PID looks from here
    live = tmp_path / f".ckpt.tmp-{pid}-abcd"
    live.mkdir()
    (live / "model.safetensors").write_bytes(b"being written")
    save_checkpoint(target, _model(), {"round": 2})
    assert (live / "model.safetensors").read_bytes() == b"being written"
    assert read_checkpoint_meta(target)["round"] == 2
    _later_process(monkeypatch)  # a later run, after that writer died: now it is a leftover
    save_checkpoint(target, _model(), {"round": 3})
    assert _siblings(target) == ["ckpt"]


def test_checkpoint_files_follow_the_umask(tmp_path) -> None:
    """Every file of a checkpoint, the weights included, gets the umask's permissions: safetensors
    creates ``model.safetensors`` 0600, and another user could read ``config.json`` but not the weights."""
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ckpt", _model(), files={"notes.txt": "x"})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()}
    assert modes == {"model.safetensors": 0o644, "config.json": 0o644, "notes.txt": 0o644}


def test_a_full_disk_while_writing_the_weights_is_a_checkpoint_error(tmp_path, monkeypatch) -> None:
    """safetensors reports a full disk as a ``SafetensorError``, neither an ``OSError`` nor ours, so
    ``gtc train`` onto a full disk ended in a traceback; it is a :class:`CheckpointError` naming the
    checkpoint, and nothing of the failed save is left."""
    from safetensors import SafetensorError

    def full_disk(state, filename, metadata=None):  # type: ignore[no-untyped-def]
        Path(filename).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("gtcompress.checkpoint.save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"ckpt: could not write model.safetensors \(.*No space left on device"):
        save_checkpoint(tmp_path / "ckpt", _model())
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_removes_only_the_folders_it_made(tmp_path, monkeypatch) -> None:
    """A save onto a full disk into ``runs/new/ckpt`` left ``runs/new/`` empty behind its error."""
    import errno

    def full_disk(state, filename, metadata=None):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("gtcompress.checkpoint.save_file", full_disk)
    (tmp_path / "runs").mkdir()
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(tmp_path / "runs" / "new" / "ckpt", _model())
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("name", ["config.json", "compression_report.json"])
def test_a_full_disk_after_the_weights_is_a_checkpoint_error(tmp_path, monkeypatch, name: str) -> None:
    """The weights fit, ``config.json`` or an extra file (``gtc prune``'s ``compression_report.json``)
    does not: ``Path.write_text`` reports that full disk as an ``OSError`` naming no file, which the
    CLI printed as a traceback after the whole run. It is a :class:`CheckpointError` naming the
    checkpoint and the file, and nothing of the failed save is left."""
    import errno

    real = Path.write_text

    def full_disk(self: Path, text: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.name == name:
            real(self, text[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path / "ckpt", _model(), {}, files={"compression_report.json": "{}"})
    assert str(info.value) == f"{tmp_path / 'ckpt'}: could not write {name} (No space left on device)"
    assert list(tmp_path.iterdir()) == []
