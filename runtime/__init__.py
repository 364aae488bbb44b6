"""Deployment runtime: run exported models without torch (numpy + ONNX Runtime, optionally TensorRT).

* :mod:`runtime.session` — :class:`GraphSession` (ONNX Runtime providers or a TensorRT engine),
  validation, TEDDY, batching of many graphs into one disjoint union and splitting back.
* :mod:`runtime.server` — KServe v2 / Open Inference Protocol server with graph-aware dynamic
  batching (``gtc serve``); :mod:`runtime.client` builds the same requests for it and for NVIDIA
  Triton Inference Server.
* :mod:`runtime.profile` — latency/memory profiling with JSON + PNG reports (``gtc profile``).

Names load on first access, so ``import runtime`` costs nothing (and never imports torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GraphSession": "runtime.session",
    "Limits": "runtime.graphs",
    "Prepared": "runtime.graphs",
    "validate_graph": "runtime.graphs",
    "merge_graphs": "runtime.graphs",
    "split_output": "runtime.graphs",
    "TeddyConfig": "runtime.spec",
    "BatchConfig": "runtime.packing",
    "DynamicBatcher": "runtime.batcher",
    "create_app": "runtime.server",
    "serve": "runtime.server",
    "make_inputs": "runtime.client",
    "infer_graphs": "runtime.client",
    "fetch_spec": "runtime.client",
    "profile_models": "runtime.profile",
    "write_report": "runtime.profile",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
