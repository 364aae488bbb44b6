"""NVIDIA Triton Inference Server model repository for an exported model.

Layout: ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/model.onnx`` (platform
``onnxruntime_onnx``) or ``1/model.plan`` (``tensorrt_plan``). Every dimension that depends on
the graph is ``-1`` and ``max_batch_size`` is 0: graphs are batched as one disjoint union by the
client or by our server (Triton's own batching stacks along dim 0, which a graph batch is not).
The input spec travels as a model parameter so clients can build inputs from the repository alone.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from gtcompress.errors import ConfigError
from gtcompress.io import atomic_path
from gtcompress.preprocess.inputs import layout_input_base
from gtcompress.preprocess.spec import InputSpec

PLATFORMS = {
    ".onnx": ("onnxruntime_onnx", "model.onnx", "KIND_CPU"),
    ".plan": ("tensorrt_plan", "model.plan", "KIND_GPU"),
}
_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL",
}


def input_dims(spec: InputSpec) -> dict[str, tuple[str, list[int]]]:
    """``{input: (numpy dtype, dims with -1 for graph-dependent sizes)}`` of an input spec."""
    table: dict[str, tuple[str, list[int]]] = {
        "x": (spec.x.dtype, [-1, spec.x.dim]),
        "edge_index": ("int64", [2, -1]),
        "batch": ("int64", [-1]),
        "node_counts": ("int64", [-1]),
        "node_slot": ("int64", [-1]),
        "pad_mask": ("bool", [-1, -1]),
        "nbr_src": ("int64", [-1, -1]),
        "nbr_edge": ("int64", [-1, -1]),
        "nbr_mask": ("bool", [-1, -1]),
        "nbr_node": ("int64", [-1]),
        "nbr_inv": ("int64", [-1]),
        "rowptr": ("int64", [-1]),
        "col": ("int64", [-1]),
        "perm": ("int64", [-1]),
    }
    if spec.edge_attr is not None:
        table["edge_attr"] = (spec.edge_attr.dtype, [-1, spec.edge_attr.dim])
    for kind, k in spec.pe.items():
        table[f"pe_{kind}"] = ("float32", [-1, k])
    return {name: table[layout_input_base(name)] for name in spec.inputs}


def config_pbtxt(name: str, spec: InputSpec, platform: str, kind: str) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``)."""

    def tensor(n: str, dtype: str, dims: list[int]) -> str:
        shape = ", ".join(map(str, dims))
        return f'  {{\n    name: "{n}"\n    data_type: {_TRITON_TYPES[dtype]}\n    dims: [ {shape} ]\n  }}'

    inputs = ",\n".join(tensor(n, d, dims) for n, (d, dims) in input_dims(spec).items())
    output = tensor(spec.output.name, "float32", [-1, spec.output.dim])
    spec_json = json.dumps(spec.to_json()).replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: 0\n'
        f"input [\n{inputs}\n]\noutput [\n{output}\n]\n"
        f"instance_group [\n  {{\n    kind: {kind}\n    count: 1\n  }}\n]\n"
        f'parameters {{\n  key: "gtcompress_input_spec"\n  value {{\n    string_value: "{spec_json}"\n  }}\n}}\n'
    )


def write_model_repository(
    repo: str | Path, name: str, model_file: str | Path, spec: InputSpec, version: int = 1
) -> Path:
    """Copy ``model_file`` (.onnx or .plan) into ``repo/name/version/`` and write ``config.pbtxt``."""
    model_file = Path(model_file)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"model name {name!r}: use letters, digits, '_', '-' and '.' only")
    if model_file.suffix not in PLATFORMS:
        raise ConfigError(f"{model_file}: expected a .onnx or .plan file")
    platform, filename, kind = PLATFORMS[model_file.suffix]
    root = Path(repo) / name
    with atomic_path(root / str(version) / filename) as tmp:
        shutil.copyfile(model_file, tmp)
    with atomic_path(root / "config.pbtxt") as tmp:
        tmp.write_text(config_pbtxt(name, spec, platform, kind))
    return root
