"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (everything to rebuild).

``config.json`` holds the model config, the dataset spec it was trained on, training settings,
metrics and (after compression) the compression report, plus the SHA-256 of the weights so a
weights file from another run is caught. The directory is written to a temporary sibling and
renamed into place, so an interrupted save leaves the previous checkpoint (or nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gtcompress import __version__
from gtcompress.errors import CheckpointError
from gtcompress.models.config import ModelConfig
from gtcompress.models.model import GraphModel, build_model

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


def save_checkpoint(path: str | os.PathLike[str], model: GraphModel, meta: dict[str, Any] | None = None) -> Path:
    """Write ``path/{model.safetensors,config.json}`` atomically; ``meta`` is stored alongside."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        # Reserved keys always describe *these* weights, even when ``meta`` was read from a parent.
        doc = {
            **{k: v for k, v in (meta or {}).items() if k not in _RESERVED},
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gtcompress_version": __version__,
            "model": model.config.to_dict(),
            "weights_sha256": _sha256(tmp / WEIGHTS),
        }
        (tmp / CONFIG).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        backup = None
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, backup)
        os.replace(tmp, target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory (validated, weights not loaded)."""
    root = Path(path)
    if root.is_file() and root.name in (CONFIG, WEIGHTS):
        root = root.parent
    cfg_path = root / CONFIG
    if not root.exists():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing (a checkpoint is a directory with {CONFIG} and {WEIGHTS})")
    try:
        doc = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from e
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a gtcompress checkpoint (format={doc.get('format')!r})")
    if "model" not in doc:
        raise CheckpointError(f"{cfg_path}: has no 'model' section")
    doc["_root"] = str(root)
    return doc


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[GraphModel, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load the weights, checking every key and shape.

    Returns ``(model in eval mode, meta)``. Mismatches raise :class:`CheckpointError` listing the
    missing, unexpected and wrongly shaped tensors."""
    doc = read_checkpoint_meta(path)
    root = Path(doc["_root"])
    weights = root / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    if doc.get("weights_sha256") and doc["weights_sha256"] != _sha256(weights):
        raise CheckpointError(f"{weights}: SHA-256 does not match {root / CONFIG} (weights from another run?)")
    try:
        config = ModelConfig.from_dict(doc["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{root / CONFIG}: invalid model config ({e})") from e
    model = build_model(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({e})") from e
    check_state_dict(model, state, str(weights))
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
