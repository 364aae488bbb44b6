"""The feature range an older model file computes right, for files exported before three float32 fixes.

Two fixes let a model answer large finite float features as in float64, a third refuses those it
cannot, and a file exported before any of them answers some of them wrongly, where no check of the
answer can tell:

* LayerNorm computes a variance, and squares overflow float32 past 1.8e19: a Graphormer (or a model
  built with ``norm='layer'``) exported before :class:`gtcompress.nn.blocks.ScaleSafeLayerNorm`
  answers features of 1e20 with a *finite wrong* answer on ONNX Runtime (its LayerNormalization turns
  the infinite variance into a zero row, leaving the bias). Newer files say :data:`NORM_KEY`.
* Attention masks are added to scores (:data:`gtcompress.nn.attention.MASK`). At -1e30, once scores
  pass about 1e30, a non-edge or padding slot outranks real edges: the ``dense`` and ``padded``
  lowerings (every GPS and Graphormer runs ``dense``) give a *finite wrong* answer. The ``plugin``
  lowering's ONNX Runtime function started its running maximum at -1e30, so a node whose scores all
  lay below it got NaN (TensorRT runs the plugins instead, whose maximum starts at -inf). The
  ``scatter`` lowering has no mask. Newer files say :data:`MASK_KEY`.
* A score that overflows float32 to ``-inf`` was weighed 0 by the softmax, though the sum it stood
  for was lost, and padding slots of the neighbour lists added the mask to a gathered real score;
  every lowering (the kernel too) answered some features past about 1e20 finitely and wrongly. Newer
  files give such a node NaN (:func:`gtcompress.nn.attention.overflow_to_nan`) and say
  :data:`OVERFLOW_KEY`; an older one is held to :data:`OVERFLOW_BOUND`, whatever its lowering.

For an older file that would answer finitely and wrongly, a deployment refuses float inputs beyond
:data:`LEGACY_BOUND` (the first two fixes) or :data:`OVERFLOW_BOUND` (the third) instead of answering
them (:func:`legacy_range`). An older ``plugin`` file is not held to :data:`LEGACY_BOUND`: its -1e30
start fails only with NaN, which the deployment's check of every answer already refuses, and below
that failure (features of about 1e15) it answers right; :func:`legacy_nan_reason` says in that refusal
that a new export would compute it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: metadata key (and value) of a model whose LayerNorms scale rows too large to square
NORM_KEY = "layer_norm"
SCALE_SAFE = "scale-safe"
#: metadata key (and value) of a model whose attention masks are half of float32's range, and whose
#: plugin function's running maximum starts at -inf
MASK_KEY = "attention_mask"
HALF_RANGE = "half-range"

#: metadata key (and value) of a model whose attention gives NaN for a score that overflows
OVERFLOW_KEY = "attention_overflow"
OVERFLOW_NAN = "nan"

#: the largest float feature magnitude an older file is trusted with, for the first two fixes.
#: LayerNorm: its norms see the features times the input encoder's gain, and (1e8 x gain)^2 x width
#: stays inside float32 for any gain x sqrt(width) below 1.8e11.
#: Masks: scores grow with the square of the features, so a file with masks of -1e30 departs where
#: its scores reach about 1e30, some 4.3 decades of features below where the same model's scores
#: overflow float32 (3.4e38) and it answers NaN anyway; how far that is from 1 depends on the weights.
#: Measured on files exported with ``MASK`` and the plugin function's start set back to -1e30 (their
#: answers are bit for bit those of files exported at the commit before the fixes), seeded random
#: models, 3 graph batches each, features from 1e6 in steps of 10^0.25, against the float64 model:
#: GT with BatchNorm or LayerNorm, ``dense``/``padded``, with and without edge features, first
#: departed at 1e15 (hidden 32 to 128, 2 to 8 layers), the plugin function (NaN) at 10^15.25, GPS at
#: 10^15.75 (hidden 32, 2 layers), 10^14.75 (64, 4), 10^13.5 (128, 8) and 10^12.25 (256, 12): deeper
#: and wider models depart lower. 1e8 is 4.25 decades below the lowest, and holds for any model that
#: computes features of 2e12 without overflowing float32. (A Graphormer never departed: its pre-LN
#: attention sees normalised rows; it is held all the same, as its edge-feature biases grow with the
#: features.)
LEGACY_BOUND = 1e8

#: the largest float feature magnitude a file exported before the overflow fix is trusted with.
#: Measured on files exported at the commit before the fix, 28 seeded models x 2 seeds (GT with BatchNorm
#: or LayerNorm at hidden/layers 32/2, 64/4, 128/8, with and without edge features, on dense, padded,
#: scatter and plugin; GPS at 32/2 to 256/12), 3 graph batches each, one node's or all features from 1e6
#: in steps of 10^0.25, against float64: a file departs (answers finitely and wrongly) where the model
#: overflows float32, within 0.25 decades of its first NaN. The lowest departure was 1e18 (GPS 128/8 with
#: edge features); overflow comes lower for deeper and wider models (GPS 256/12: from 1e16, where it
#: may depart). 1e12 is 4 decades below that, 6 below the lowest departure seen.
OVERFLOW_BOUND = 1e12

_NORM_BEFORE = "gtcompress's LayerNorm handled rows too large to square in float32"
_MASK_BEFORE = "gtcompress's attention masks outweighed attention scores beyond 1e30"
_PLUGIN_BEFORE = "gtcompress's attention op on ONNX Runtime softmaxed scores below -1e30"
_OVERFLOW_BEFORE = "gtcompress's attention refused scores that overflow float32"


@dataclass(frozen=True)
class LegacyRange:
    """What an older file is trusted with: ``bound``, and why (which fixes it predates), for the
    refusal's message."""

    bound: float
    before: tuple[str, ...]

    def reason(self) -> str:
        before = " and before ".join(self.before)
        return f"the file was exported before {before}, and would answer with a finite wrong value"


def _model_config(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The exported ``model_config``; None for a file without one (not ours: not second-guessed)."""
    try:
        cfg = json.loads(metadata.get("model_config") or "{}")
    except (TypeError, ValueError, RecursionError):
        return None  # read, and refused with its file's name, where the model config is used
    return cfg if isinstance(cfg, dict) and cfg else None


def legacy_range(metadata: Mapping[str, Any], lowering: str) -> LegacyRange | None:
    """The range a model file exported before any of the fixes is trusted with (the lowest of their
    bounds), else None.

    ``lowering`` is the file's input spec's. Which models have LayerNorm is read off the exported
    ``model_config`` (Graphormer always; others with ``norm='layer'``)."""
    cfg = _model_config(metadata)
    if cfg is None:
        return None
    held: list[tuple[str, float]] = []  # (the fix the file predates, the bound that file is held to)
    if metadata.get(NORM_KEY) != SCALE_SAFE and (cfg.get("arch") == "graphormer" or cfg.get("norm") == "layer"):
        held.append((_NORM_BEFORE, LEGACY_BOUND))
    if metadata.get(MASK_KEY) != HALF_RANGE and lowering in ("dense", "padded"):
        held.append((_MASK_BEFORE, LEGACY_BOUND))
    if metadata.get(OVERFLOW_KEY) != OVERFLOW_NAN:
        held.append((_OVERFLOW_BEFORE, OVERFLOW_BOUND))
    if not held:
        return None
    return LegacyRange(min(bound for _, bound in held), tuple(why for why, _ in held))


def legacy_nan_reason(metadata: Mapping[str, Any], lowering: str, *, tensorrt: bool = False) -> str | None:
    """Why an older ``plugin`` file may answer NaN where a new export of it would not, for the refusal
    of a NaN answer; else None. ``tensorrt``: the file runs as a TensorRT engine, whose plugins never
    ran the ONNX Runtime function."""
    if lowering != "plugin" or tensorrt or metadata.get(MASK_KEY) == HALF_RANGE or _model_config(metadata) is None:
        return None
    return f"the file was exported before {_PLUGIN_BEFORE}: exported again, it may compute it"


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
