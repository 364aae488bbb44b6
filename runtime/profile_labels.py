"""The names ``gtc profile`` gives its models when ``--names`` does not: short, and distinct.

Its own module: the rules (a Triton model directory, a version folder, the folder above) are about
paths, not about measuring, and the report's every table and plot is keyed by these names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def model_labels(paths: Sequence[str]) -> list[str]:
    """Default model names: the file's stem, or the directory's name; ``model.onnx``/``model.plan``
    are named by the folder that tells them apart — the model directory of a Triton repository
    (``repo/gt/1/model.onnx`` is ``gt``), else the folder holding the file (``dense/model.onnx`` is
    ``dense``: named by its grandparent, ``runs/dense/model.onnx`` and ``runs/scatter/model.onnx``
    were both ``runs``, told apart only as ``runs.onnx#0``/``runs.onnx#1``, and a bare ``model.onnx``
    was named ``""``). Names that still clash get their version folder (``gt/1/model.onnx``,
    ``gt/2/model.onnx``: two versions of one Triton model were ``gt.onnx#0``/``gt.onnx#1``, which said
    neither version), then the folder above (``a/gt.onnx``, ``b/gt.onnx``), then ``#i``."""
    from runtime.served import directory_name
    from runtime.session import is_version_name

    def naming_dir(p: Path) -> Path:  # what names a model.onnx/model.plan: its Triton model dir, or its folder
        parent = Path(os.path.abspath(p)).parent  # not resolved: a symlinked folder keeps the name given
        return parent.parent if is_version_name(parent.name) and parent.parent.name else parent

    def stem(p: Path) -> str:
        if p.name in ("model.onnx", "model.plan"):
            return naming_dir(p).name
        return directory_name(p) if p.is_dir() else p.stem  # a checkpoint directory: gt-keep0.5, "." its name

    def full(p: Path) -> str:  # what tells gt.onnx from gt.plan and from the checkpoint gt/
        if p.name in ("model.onnx", "model.plan"):
            return f"{naming_dir(p).name}{p.suffix}"
        return f"{directory_name(p)}/" if p.is_dir() else p.name

    def versioned(p: Path) -> str:  # gt/1/model.onnx and gt/2/model.onnx: the version folder tells them apart
        named = naming_dir(p) if p.name in ("model.onnx", "model.plan") else None
        if named is None or named == Path(os.path.abspath(p)).parent:
            return full(p)
        return f"{named.name}/{p.parent.name}/{p.name}"

    def qualified(p: Path) -> str:  # a/gt.onnx and b/gt.onnx: the folder above tells them apart
        named = naming_dir(p) if p.name in ("model.onnx", "model.plan") else Path(os.path.abspath(p))
        return f"{named.parent.name}/{full(p)}"

    for label in (stem, full, versioned, qualified):
        labels = [label(Path(p)) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    labels = [full(Path(p)) for p in paths]
    return [f"{s}#{i}" if labels.count(s) > 1 else s for i, s in enumerate(labels)]  # only the ones that clash


def model_entry(label: str, path: str) -> dict[str, Any]:
    """The report's entry of an exported model (its rows are added as they are measured)."""
    from runtime.session import PLAN_SUFFIXES
    from runtime.spec import QUANT_KEY, metadata_json, model_spec, onnx_metadata, plan_metadata

    p = Path(path)
    meta = plan_metadata(p) if p.suffix in PLAN_SUFFIXES else onnx_metadata(p)
    m = model_spec(meta, path)
    return {
        "name": label,
        "path": path,
        "bytes": p.stat().st_size,
        "format": "tensorrt" if p.suffix in PLAN_SUFFIXES else "onnx",
        "backend": "tensorrt" if p.suffix in PLAN_SUFFIXES else "onnxruntime",
        "arch": m.spec.arch,
        "task_level": m.spec.task_level,
        "lowering": str(m.spec.lowering),
        "quantization": metadata_json(meta, QUANT_KEY, path),  # None: float32 throughout
        "pe": dict(m.spec.pe),
        "teddy": None if m.teddy is None else m.teddy.to_dict(),
        "providers": None,
        "results": [],
    }
