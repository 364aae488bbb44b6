"""Client helpers: the same ``tritonclient.http`` code for our server and NVIDIA Triton.

Triton runs the exported ONNX model as it is, so it needs the full input set — PE, attention
layout and TEDDY sparsification computed on the client. :func:`make_inputs` builds exactly that
(the pre-processing :class:`runtime.session.GraphSession` runs), and our server accepts the same
set (see :mod:`runtime.server`)::

    import tritonclient.http as http
    from runtime.client import fetch_spec, infer_graphs

    client = http.InferenceServerClient("127.0.0.1:8000")
    spec = fetch_spec(client, "gt_cluster")             # from GET /v2/models/<name>/config
    outs = infer_graphs(client, "gt_cluster", graphs, spec)  # one array per graph

Only :func:`triton_inputs`, :func:`fetch_spec` and :func:`infer_graphs` import ``tritonclient``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from gtcompress.preprocess.spec import InputSpec
from runtime.graphs import Prepared, as_numpy_graph, prepare, split_output
from runtime.spec import ModelSpec, TeddyConfig, teddy_config

SPEC_PARAMETER = "gtcompress_input_spec"


SpecArg = InputSpec | dict[str, Any]  # the typed spec, or its JSON form as a configuration holds it


def _model(spec: SpecArg, teddy: TeddyConfig | bool | None) -> ModelSpec:
    typed = InputSpec.from_json(spec)
    if teddy is None or teddy is True:
        return ModelSpec(typed, {}, teddy_config({}, typed))
    return ModelSpec(typed, {}, teddy or None)


def prepare_request(graphs: Any | Sequence[Any], spec: SpecArg, *, teddy: TeddyConfig | bool | None = None) -> Prepared:
    """:func:`make_inputs` plus the per-graph sizes needed to split the output back."""
    items = list(graphs) if isinstance(graphs, (list, tuple)) else [graphs]
    return prepare(items, _model(spec, teddy))


def make_inputs(
    graphs: Any | Sequence[Any], spec: SpecArg, *, teddy: TeddyConfig | bool | None = None
) -> dict[str, np.ndarray]:
    """Every input of the exported model for ``graphs`` as one disjoint union, in model input order.

    ``teddy``: ``None`` applies TEDDY if the spec records it, a :class:`TeddyConfig` forces one,
    ``False`` skips it (graphs already sparsified)."""
    return prepare_request(graphs, spec, teddy=teddy).inputs


def triton_inputs(inputs: dict[str, np.ndarray], binary: bool = True) -> list[Any]:
    """``tritonclient.http.InferInput`` objects for an input dict (binary tensor data by default)."""
    from tritonclient.http import InferInput
    from tritonclient.utils import np_to_triton_dtype

    out = []
    for name, arr in inputs.items():
        arr = np.ascontiguousarray(arr)
        t = InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out


def fetch_spec(client: Any, model_name: str) -> InputSpec:
    """The model's input spec from its configuration (works against our server and Triton)."""
    cfg = client.get_model_config(model_name)
    cfg = cfg.get("config", cfg)  # Triton's gRPC-style wrapper, if any
    try:
        raw = json.loads(cfg["parameters"][SPEC_PARAMETER]["string_value"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ValueError(f"model {model_name!r} has no {SPEC_PARAMETER} parameter in its configuration") from None
    return InputSpec.from_json(raw)


def infer_graphs(
    client: Any,
    model_name: str,
    graphs: Any | Sequence[Any],
    spec: SpecArg | None = None,
    *,
    binary: bool = True,
) -> list[np.ndarray]:
    """Send ``graphs`` as one request; one output array per graph (node-level ``[n_i, out]``,
    graph-level ``[out]``)."""
    from tritonclient.http import InferRequestedOutput

    typed = InputSpec.from_json(spec) if spec is not None else fetch_spec(client, model_name)
    items = list(graphs) if isinstance(graphs, (list, tuple)) else [graphs]
    prepared = prepare_request(items, typed)
    name = typed.output.name
    result = client.infer(
        model_name, triton_inputs(prepared.inputs, binary), outputs=[InferRequestedOutput(name, binary_data=binary)]
    )
    node_level = typed.node_level
    outs = split_output(result.as_numpy(name), prepared, node_level)
    if not node_level:
        outs = [o[0] if as_numpy_graph(g).batch is None else o for o, g in zip(outs, items, strict=True)]
    return outs
