"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (everything to rebuild).

``config.json`` holds the model config, the dataset spec it was trained on, training settings,
metrics and (after compression) the compression report, plus the SHA-256 of the weights so a
weights file from another run is caught.

Saving is atomic: the directory is written to a temporary sibling ``.NAME.tmp-PID-…`` and renamed into
place. An existing checkpoint cannot be renamed over (a non-empty directory): on Linux the two
directories trade names in one step (``NAME`` is never missing for a reader) and the old one is then
removed; elsewhere it is first renamed aside to ``.NAME.old-PID``, removed once the new one is in place
and renamed back if that fails. A process killed between the two renames leaves the aside as the only
copy, so the next save restores it (when the checkpoint is missing) or removes it, once that PID is no
longer running. A load that a save overtook between its reads of the two files reads again. Only a
checkpoint directory (or an empty one) is ever replaced: a file or another directory at the target is
the user's and an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gtcompress import __version__
from gtcompress.checkpoint_data import check_dataset_section, check_teddy_section, json_kind
from gtcompress.errors import CheckpointError, ConfigError, json_limit
from gtcompress.io import (
    WRITE_ERRNOS,
    current_umask,
    dirs_made,
    make_temp_dir,
    recover_dead_dir_swaps,
    swap_dir_into_place,
    unwritable_reason,
)
from gtcompress.models.config import ModelConfig, UnknownFieldError
from gtcompress.models.model import GraphModel, build_model, without_unread_weights
from gtcompress.preprocess.teddy import finite_threshold

FORMAT = "gtcompress-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_RESERVED = ("format", "format_version", "gtcompress_version", "model", "weights_sha256", "_root")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_root(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory ``path`` names: the commands take a checkpoint by its folder or by one of
    its two files (``config.json``, ``model.safetensors``)."""
    root = Path(path)
    return root.parent if root.name in (CONFIG, WEIGHTS) and root.is_file() else root


def is_checkpoint_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory whose ``config.json`` says it is a gtcompress checkpoint."""
    cfg = Path(path) / CONFIG
    try:
        return Path(path).is_dir() and json.loads(cfg.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def check_checkpoint_target(path: str | os.PathLike[str]) -> None:
    """Raise :class:`CheckpointError` unless a checkpoint may be written to ``path``.

    Allowed: a path that does not exist (below directories, existing or not), an empty directory and
    an existing checkpoint (overwritten). Refused, before any work that would be lost: a file, a
    non-empty directory that is not a checkpoint (someone's data), a path below a file. Cheap, so
    commands call it before training and :func:`save_checkpoint` calls it again before writing."""
    target = Path(path)
    if target.is_symlink() and not target.exists():
        raise CheckpointError(f"{target}: is a broken symbolic link; refusing to replace it")
    if target.exists():
        if not target.is_dir():
            raise CheckpointError(f"{target}: exists and is a file, not a checkpoint directory; refusing to replace it")
        if any(target.iterdir()) and not is_checkpoint_dir(target):
            raise CheckpointError(
                f"{target}: exists and is not a gtcompress checkpoint (a non-empty directory with no checkpoint "
                f"{CONFIG}); refusing to replace it"
            )
    # The temporary directory and the renames happen in the parent: the nearest existing ancestor
    # must be a directory we may write to.
    reason = unwritable_reason(target)
    if reason is not None:
        raise CheckpointError(f"{target}: {reason}")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: GraphModel,
    meta: dict[str, Any] | None = None,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``path/{model.safetensors,config.json}`` atomically; ``meta`` is stored alongside.

    ``files`` (name → text) are written into the same directory before it is renamed into place, so
    a report that belongs to the checkpoint is never missing from it. See the module docstring for
    what may be replaced and how a save interrupted at any point is recovered."""
    target = Path(path)
    reserved = sorted(set(files or ()) & {CONFIG, WEIGHTS})
    if reserved or any(Path(name).name != name for name in files or ()):
        raise CheckpointError(f"extra checkpoint files must be plain names other than {CONFIG}, {WEIGHTS} (reserved)")
    check_checkpoint_target(target)
    with dirs_made(target.parent):  # a save that fails leaves no folder it made
        recover_dead_dir_swaps(target)
        tmp = make_temp_dir(target)
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            try:
                save_file(state, str(tmp / WEIGHTS))
            except SafetensorError as e:  # a full disk, a quota: not an OSError, so it was a traceback
                raise CheckpointError(f"{target}: could not write {WEIGHTS} ({e})") from None
            # safetensors creates the file 0600 (it writes through a temp of its own): renamed into place it
            # was unreadable to everyone else (a teammate, a server running as another user), config.json not.
            os.chmod(tmp / WEIGHTS, 0o666 & ~current_umask())
            # Reserved keys always describe *these* weights, even when ``meta`` was read from a parent.
            doc = {
                **{k: v for k, v in (meta or {}).items() if k not in _RESERVED},
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "gtcompress_version": __version__,
                "model": model.config.to_dict(),
                "weights_sha256": _sha256(tmp / WEIGHTS),
            }
            _write_text(tmp, CONFIG, json.dumps(doc, indent=2, default=str) + "\n", target)
            for name, text in (files or {}).items():
                _write_text(tmp, name, text, target)
            check_checkpoint_target(target)  # again: the target may have changed while we wrote
            swap_dir_into_place(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_text(tmp: Path, name: str, text: str, target: Path) -> None:
    """Write ``name`` into the checkpoint's temp directory ``tmp``; a write the disk refused is a
    :class:`CheckpointError` naming the checkpoint, as for the weights.

    ``Path.write_text`` reports a full disk or quota as an ``OSError`` without a file name (the write of
    an open file names none), which ``user_errors`` takes for a bug: ``gtc prune``/``sparsify``/``train``
    whose weights still fit but whose ``config.json`` or ``compression_report.json`` did not ended in a
    traceback after the whole run."""
    try:
        (tmp / name).write_text(text)
    except OSError as e:
        if e.filename is None and e.errno in WRITE_ERRNOS:
            raise CheckpointError(f"{target}: could not write {name} ({e.strerror})") from None
        raise


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory (validated, weights not loaded)."""
    root = checkpoint_root(path)
    cfg_path = root / CONFIG
    if not root.exists():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    if not root.is_dir():
        raise CheckpointError(
            f"{root}: not a checkpoint directory (a checkpoint is a directory with {CONFIG} and {WEIGHTS})"
        )
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing (a checkpoint is a directory with {CONFIG} and {WEIGHTS})")
    try:
        raw = cfg_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{cfg_path}: unreadable ({e.strerror or e})") from e
    # JSON is UTF-8 (RFC 8259); decode explicitly so a binary or mis-encoded file is named, not a
    # UnicodeDecodeError from the locale's codec.
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON (not UTF-8 text: {e})") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from e
    except (RecursionError, ValueError) as e:  # json's limits: deep nesting, an integer of 5000 digits
        raise CheckpointError(f"{cfg_path}: not valid JSON ({json_limit(e)})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{cfg_path}: not a gtcompress checkpoint (expected a JSON object, got {json_kind(doc)})")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a gtcompress checkpoint (format={doc.get('format')!r})")
    _check_format_version(doc, cfg_path)
    if "model" not in doc:
        raise CheckpointError(f"{cfg_path}: has no 'model' section")
    if not isinstance(doc["model"], dict):
        raise CheckpointError(f"{cfg_path}: the 'model' section must be a JSON object, got {json_kind(doc['model'])}")
    metrics = doc.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):  # gtc info tabulates it: an AttributeError
        raise CheckpointError(f"{cfg_path}: the 'metrics' section must be a JSON object, got {json_kind(metrics)}")
    check_dataset_section(doc.get("dataset"), cfg_path)
    check_teddy_section(doc.get("teddy"), cfg_path)
    teddy = doc.get("teddy")
    if teddy is not None and teddy.get("threshold") is not None:
        # -Infinity/Infinity from an older gtcompress: the finite constant of the same rule, so that
        # gtc export writes a JSON number into the model's metadata.
        teddy["threshold"] = finite_threshold(teddy["threshold"])
    doc["_root"] = str(root)
    return doc


def _check_format_version(doc: dict[str, Any], cfg_path: Path) -> None:
    """Refuse a ``config.json`` of a later checkpoint format: read as this one, its fields would mean
    what this version means by them. A file without ``format_version`` (hand-written) reads as format 1."""
    version = doc.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{cfg_path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: checkpoint format_version {version} is newer than this gtcompress ({__version__}) reads "
            f"({FORMAT_VERSION}); it was written by gtcompress {doc.get('gtcompress_version', '(unrecorded)')}: "
            "upgrade gtcompress to load it"
        )


def _written_by_another_version(doc: dict[str, Any]) -> str:
    """``"; it was written by gtcompress X, this is Y"`` where the checkpoint records another version,
    else ``""``: the likely reason for a model field this version does not know."""
    writer = doc.get("gtcompress_version")
    if not isinstance(writer, str) or writer == __version__:
        return ""
    return f"; it was written by gtcompress {writer}, this is {__version__}"


#: Reads of a checkpoint that another process's save replaced meanwhile, before giving up.
_READ_ATTEMPTS = 5


def _dir_identity(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """Which directory ``path`` (a checkpoint, or a file in one) names now; ``None`` if none. A save
    swaps a new directory in, so this changes whenever a save lands."""
    root = checkpoint_root(path)
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[GraphModel, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load the weights, checking every key and shape.

    Returns ``(model in eval mode, meta)``. Mismatches raise :class:`CheckpointError` listing the
    missing, unexpected and wrongly shaped tensors.

    ``config.json`` and the weights are two reads: a save by another process (training writing the
    best checkpoint while it is evaluated) can swap the directory between them, and the two files
    then come from different saves. A failed read is retried when the directory changed during it,
    so it reports the checkpoint's own problem, never "weights from another run" made by the race."""
    for attempt in range(1, _READ_ATTEMPTS + 1):
        before = _dir_identity(path)
        try:
            return _load_checkpoint_once(path)
        except CheckpointError:
            if attempt == _READ_ATTEMPTS or _dir_identity(path) == before:
                raise
            time.sleep(0.01 * attempt)  # a save between its two renames (no atomic exchange here)
    raise AssertionError("unreachable")


def _load_checkpoint_once(path: str | os.PathLike[str]) -> tuple[GraphModel, dict[str, Any]]:
    """One read of :func:`load_checkpoint`."""
    doc = read_checkpoint_meta(path)
    root = Path(doc["_root"])
    weights = root / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    # Read before hashing: a truncated or corrupt file is "unreadable", not "from another run".
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError) as e:  # RuntimeError: torch's mmap of a vanished file
        raise CheckpointError(f"{weights}: unreadable safetensors file ({e})") from e
    if doc.get("weights_sha256") and doc["weights_sha256"] != _sha256(weights):
        raise CheckpointError(f"{weights}: SHA-256 does not match {root / CONFIG} (weights from another run?)")
    try:
        config = ModelConfig.from_dict(doc["model"])
    except UnknownFieldError as e:
        raise CheckpointError(f"{root / CONFIG}: invalid model config ({e}){_written_by_another_version(doc)}") from e
    except (ConfigError, TypeError, ValueError) as e:  # ConfigError: a field out of range
        raise CheckpointError(f"{root / CONFIG}: invalid model config ({e})") from e
    # The shapes are checked on a skeleton on the meta device (no storage) before the model is built:
    # config.json names the sizes, so a hand-edited or mismatched one ("hidden": 100000 beside small
    # weights) made the real build allocate what it claims, gigabytes, or fail with torch's "can't
    # allocate memory" traceback, before any check could say that the weights do not match it.
    try:
        with torch.device("meta"):
            skeleton = build_model(config)
    except RuntimeError as e:  # a size whose element count overflows int64, even without storage
        raise CheckpointError(f"{root / CONFIG}: invalid model config (sizes too large to build: {e})") from e
    state = without_unread_weights(skeleton, state)  # saved before those modules were left out
    check_state_dict(skeleton, state, str(weights))
    model = build_model(config)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, doc


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one error that lists every missing, unexpected and mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(
            f"unexpected {len(unexpected)}: {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}"
        )
    if shapes:
        problems.append(f"shape mismatch {len(shapes)}: {'; '.join(shapes[:8])}{' …' if len(shapes) > 8 else ''}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the model config — " + " | ".join(problems))
