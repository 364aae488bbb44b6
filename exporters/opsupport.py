"""Does TensorRT's ONNX parser accept this graph? Checked offline against its operator table.

The table (``data/tensorrt-onnx-ops.tsv``) is onnx-tensorrt's ``docs/operators.md`` at TensorRT 10.1.
Beyond "is the op listed", two parser facts matter for graph models: ScatterND with a ``reduction``
is rejected (so we never emit ``index_add``), and ScatterElements with a reduction goes through a
plugin that needs int64 indices. Our own plugin op counts as supported.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import onnx

_TABLE = Path(__file__).resolve().parent / "data" / "tensorrt-onnx-ops.tsv"


@cache
def tensorrt_ops() -> dict[str, str]:
    """``{op_type: restrictions}`` for every op the parser supports."""
    out: dict[str, str] = {}
    for line in _TABLE.read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("op\t"):
            continue
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].strip() == "Y":
            out[parts[0].strip()] = parts[3].strip() if len(parts) > 3 else ""
    return out


def tensorrt_problems(model: onnx.ModelProto, plugin_ops: set[tuple[str, str]] | frozenset = frozenset()) -> list[str]:
    """Human-readable reasons TensorRT would reject ``model`` (empty list = accepted).

    ``plugin_ops`` are ``(domain, op_type)`` pairs implemented by registered plugins."""
    supported = tensorrt_ops()
    problems: list[str] = []
    for node in model.graph.node:
        if (node.domain, node.op_type) in plugin_ops:
            continue
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node {node.name!r}: custom op {node.domain}::{node.op_type} has no TensorRT plugin")
            continue
        if node.op_type not in supported:
            problems.append(f"node {node.name!r}: op {node.op_type} is not supported by TensorRT's ONNX parser")
        if node.op_type == "ScatterND" and any(
            a.name == "reduction" and a.s not in (b"", b"none") for a in node.attribute
        ):
            problems.append(f"node {node.name!r}: ScatterND with a reduction is rejected by TensorRT (use scatter_add)")
    return problems
