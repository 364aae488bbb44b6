"""The feature range a model file with LayerNorm computes right, for files exported before it was scale-safe.

LayerNorm computes a variance, and squares overflow float32 past 1.8e19: a Graphormer (or a model
built with ``norm='layer'``) exported before :class:`gtcompress.nn.blocks.ScaleSafeLayerNorm` answers
finite features of 1e20 with a *finite wrong* answer on ONNX Runtime (its LayerNormalization turns the
infinite variance into a zero row, leaving the bias), which no check of the answer can tell from the
model's own. Newer exports normalise such rows exactly and say so in their metadata
(:data:`NORM_KEY`); for an older file, a deployment refuses float inputs beyond
:data:`LEGACY_BOUND` instead of answering them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

#: metadata key (and value) of a model whose LayerNorms scale rows too large to square
NORM_KEY = "layer_norm"
SCALE_SAFE = "scale-safe"

#: the largest float feature magnitude an older LayerNorm model file is trusted with: its norms see
#: the features times the input encoder's gain, and (1e12 x gain)^2 x width stays inside float32 for
#: any gain x sqrt(width) below 1.8e7
LEGACY_BOUND = 1e12


def legacy_norm_bound(metadata: Mapping[str, Any]) -> float | None:
    """:data:`LEGACY_BOUND` for a model file with LayerNorm that predates the scale-safe one, else None.

    Which models have LayerNorm is read off the exported ``model_config`` (Graphormer always; others
    with ``norm='layer'``); a file without one (not ours) is not second-guessed."""
    if metadata.get(NORM_KEY) == SCALE_SAFE:
        return None
    try:
        cfg = json.loads(metadata.get("model_config") or "{}")
    except (TypeError, ValueError, RecursionError):
        return None  # read, and refused with its file's name, where the model config is used
    if not isinstance(cfg, dict):
        return None
    return LEGACY_BOUND if cfg.get("arch") == "graphormer" or cfg.get("norm") == "layer" else None


def largest_float(tensors: Mapping[str, np.ndarray | None]) -> tuple[str, float] | None:
    """The float tensor of largest magnitude among ``tensors`` and that magnitude (None without one)."""
    peaks = [
        (float(np.abs(a).max()), name)
        for name, a in tensors.items()
        if a is not None and a.dtype.kind == "f" and a.size
    ]
    if not peaks:
        return None
    peak, name = max(peaks)
    return name, peak
