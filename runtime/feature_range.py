"""A request's float inputs, and the refusal of those beyond what an older model file is trusted with.

A file exported before two float32 fixes (:mod:`gtcompress.preprocess.legacy_range`: LayerNorm of
rows too large to square, attention masks of -1e30) answers some large finite features with a finite
wrong value, which no check of its answer could catch: such a request is refused before it runs.
Kept apart from :mod:`runtime.served`, which calls it for every request of such a file.
"""

from __future__ import annotations

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph
from gtcompress.preprocess.legacy_range import LegacyRange, largest_float
from runtime.errors import FeatureRangeError


def float_inputs(g: NumpyGraph) -> dict[str, np.ndarray | None]:
    """A graph's float inputs under their request names."""
    return {"x": g.x, "edge_attr": g.edge_attr, **{f"pe_{k}": v for k, v in g.pe.items()}}


def check_legacy_range(g: NumpyGraph, model_name: str, legacy: LegacyRange) -> None:
    """Refuse float features beyond ``legacy.bound``, naming the input, its largest magnitude and why."""
    top = largest_float(float_inputs(g))
    if top is not None and top[1] > legacy.bound:
        raise FeatureRangeError(
            top[0],
            f"its largest magnitude, {top[1]:.3g}, is above {legacy.bound:.0e}, the most model '{model_name}' is "
            f"trusted with: {legacy.reason()}; export the model again, or send features on the scale it was "
            "trained on",
        )
