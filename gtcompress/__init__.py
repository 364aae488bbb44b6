"""gtcompress: make a trained graph transformer smaller and faster, then ship it.

Importing the package is cheap and torch-free so that ``gtcompress.preprocess`` can run inside a
deployment image without torch; the torch-side names load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GraphBatch": "gtcompress.graph",
    "collate": "gtcompress.graph",
    "ModelConfig": "gtcompress.models.config",
    "LayerSpec": "gtcompress.models.config",
    "build_model": "gtcompress.models",
    "from_pyg": "gtcompress.models.from_pyg",
    "save_checkpoint": "gtcompress.checkpoint",
    "load_checkpoint": "gtcompress.checkpoint",
    "sparse_attention": "gtcompress.nn.attention",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gtcompress' has no attribute {name!r}")
