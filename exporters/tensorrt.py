"""TensorRT engine building (``gtc build``): optimisation profiles from graph-size ranges.

The shape arithmetic (which input has which dims for given node/edge/graph counts) is plain
Python and tested here; the TensorRT calls live in :mod:`trt_plugins.engine`, the only module
that imports ``tensorrt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from exporters.onnx_file import load_model_proto
from exporters.triton_repo import input_dims
from gtcompress.errors import ConfigError, ModelFileError
from gtcompress.preprocess.inputs import layout_input_base
from gtcompress.preprocess.spec import InputSpec, Lowering
from runtime.spec import QUANT_KEY, plan_metadata_path


@dataclass(frozen=True)
class GraphSize:
    """Sizes of one graph batch: nodes, edges, graphs, largest graph, largest in-degree."""

    nodes: int
    edges: int
    graphs: int
    max_nodes: int = 0  # 0 → nodes (a single graph may hold every node)
    max_in_degree: int = 0  # 0 → edges

    def resolved(self) -> GraphSize:
        return GraphSize(
            self.nodes, self.edges, self.graphs, self.max_nodes or self.nodes, self.max_in_degree or max(self.edges, 1)
        )


def input_shape(name: str, dims: list[int], size: GraphSize) -> tuple[int, ...]:
    """Concrete shape of input ``name`` at ``size``: its ``-1`` dims (:func:`input_dims`) filled in order."""
    s = size.resolved()
    n, e = s.nodes, s.edges
    symbolic = {
        "edge_index": [e],
        "edge_attr": [e],
        "col": [e],
        "perm": [e],
        "node_counts": [s.graphs],
        "pad_mask": [s.graphs, s.max_nodes],
        "rowptr": [n + 1],
        "nbr_src": [n, s.max_in_degree],
        "nbr_edge": [n, s.max_in_degree],
        "nbr_mask": [n, s.max_in_degree],
    }.get(layout_input_base(name), [n])  # x, batch, node_slot, nbr_node_b, nbr_inv and pe_* lead with the node count
    fill = iter(symbolic)
    return tuple(next(fill) if d == -1 else d for d in dims)


def optimisation_profile(
    spec: InputSpec, lo: GraphSize, opt: GraphSize, hi: GraphSize
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``{input: (min, opt, max) shape}`` for one TensorRT optimisation profile."""
    for field in ("nodes", "edges", "graphs"):
        a, b, c = getattr(lo, field), getattr(opt, field), getattr(hi, field)
        if not 1 <= a <= b <= c:
            raise ConfigError(f"profile {field}: need 1 <= min <= opt <= max, got {a}, {b}, {c}")
    return {
        name: (input_shape(name, dims, lo), input_shape(name, dims, opt), input_shape(name, dims, hi))
        for name, (_, dims) in input_dims(spec).items()
    }


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file that is checked to be a complete model, weights not loaded:
    every way the file can be wrong is one :class:`ModelFileError` naming it
    (:func:`~exporters.onnx_file.load_model_proto`, then ONNX's checker), before TensorRT is even
    imported, so that a bad file is reported as such on every machine."""
    import onnx

    p = Path(path)
    proto = load_model_proto(p)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    try:  # by path when weights live in other files: the checker then looks for those too
        onnx.checker.check_model(str(p) if external else proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise ModelFileError(f"{p}: not a valid ONNX model ({e})") from None
    return {prop.key: prop.value for prop in proto.metadata_props}


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    lo: GraphSize,
    opt: GraphSize,
    hi: GraphSize,
    fp16: bool = False,
    timing_cache: str | Path | None = None,
    workspace_gib: float = 4.0,
) -> Path:
    """Parse the ONNX file, register our plugin, build and write a serialized engine.

    What the user can get wrong is checked first, in this order: the file (:func:`read_onnx_metadata`),
    its gtcompress metadata, the profile ranges; only then is TensorRT imported
    (``TensorRTNotAvailableError``, an ``ImportError``, when it is missing)."""
    meta = read_onnx_metadata(onnx_path)
    if "input_spec" not in meta:
        raise ModelFileError(
            f"{onnx_path}: no gtcompress input_spec in its metadata (export the checkpoint with gtc export)"
        )
    if QUANT_KEY in meta:  # TensorRT's parser would stop at the first DynamicQuantizeLinear, on the GPU machine
        raise ModelFileError(
            f"{onnx_path}: is quantized for ONNX Runtime (int8 with per-call activation ranges), which TensorRT "
            "cannot read; build the float32 export (gtc export without --quantize), with --fp16 for half precision"
        )
    try:
        spec = InputSpec.from_json(json.loads(meta["input_spec"]))
        plugin = spec.lowering is Lowering.PLUGIN
        input_dims(spec)  # every input named, with a known layout
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ModelFileError(f"{onnx_path}: its gtcompress input_spec is malformed ({e!r}); export it again") from None
    shapes = optimisation_profile(spec, lo, opt, hi)
    from gtcompress.io import write_json
    from trt_plugins.engine import EngineBuildError, build_serialized_engine

    try:
        path = build_serialized_engine(
            Path(onnx_path),
            Path(engine_path),
            shapes,
            fp16=fp16,
            timing_cache=timing_cache,
            workspace_bytes=int(workspace_gib * (1 << 30)),
            plugin=plugin,
        )
    except EngineBuildError as e:  # a model TensorRT cannot take is the user's to change: no traceback
        raise ModelFileError(f"{e}; no engine was written (gtc export lists the operators TensorRT lacks)") from None
    # A .plan carries no metadata: the ONNX file's travels next to it (runtime.spec.plan_metadata).
    write_json(plan_metadata_path(path), meta)
    return path
