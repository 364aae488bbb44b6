"""Client helpers: the same ``tritonclient.http`` code for ``gtc serve`` and NVIDIA Triton.

Three kinds of server, one call::

    import tritonclient.http as http
    from runtime.client import infer_graphs

    client = http.InferenceServerClient("127.0.0.1:8000")
    outs = infer_graphs(client, "gt_cluster", graphs)   # one array per graph

* ``gtc serve`` takes raw graphs or the full pre-processed input set; Triton's Python-backend
  variant (``gtc export --triton-backend python``) takes raw graphs, with their own positional
  encodings if they carry them, each input with a leading batch dimension of 1; Triton's native
  variant (``onnxruntime_onnx``/``tensorrt_plan``) runs the exported file as it is, so it needs the
  full input set — PE, attention layout and TEDDY computed on the client by :func:`make_inputs`
  (the pre-processing :class:`runtime.session.GraphSession` runs).
* :func:`infer_graphs` reads the model's configuration (the ``gtcompress_preprocessing`` and
  ``gtcompress_input_spec`` parameters and ``max_batch_size``) and does what that model needs.

Only :func:`triton_inputs`, :func:`fetch_config`/:func:`fetch_spec` (through the client passed
in) and :func:`infer_graphs` use ``tritonclient``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gtcompress.preprocess.batching import NumpyGraph, split_by_graph, union_graphs
from gtcompress.preprocess.spec import InputSpec
from runtime.errors import ShapeError
from runtime.graphs import UNNAMED_PE, Prepared, as_numpy_graph, fill_partial_pe, prepare, validate_graph
from runtime.protocol import PREPROCESSED_PARAMETER
from runtime.spec import ModelSpec, TeddyConfig, teddy_config

SPEC_PARAMETER = "gtcompress_input_spec"
PREPROCESSING_PARAMETER = "gtcompress_preprocessing"  # who pre-processes: client, server or either


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


def fetch_config(client: Any, model_name: str) -> dict[str, Any]:
    """The model's configuration JSON (``GET /v2/models/<name>/config``; our server and Triton)."""
    cfg = client.get_model_config(model_name)
    return dict(cfg.get("config", cfg))  # Triton's gRPC-style wrapper, if any


def _spec_of(cfg: dict[str, Any], model_name: str) -> InputSpec:
    try:
        raw = json.loads(cfg["parameters"][SPEC_PARAMETER]["string_value"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ValueError(f"model {model_name!r} has no {SPEC_PARAMETER} parameter in its configuration") from None
    return InputSpec.from_json(raw)


def fetch_spec(client: Any, model_name: str) -> InputSpec:
    """The model's input spec from its configuration (works against our server and Triton)."""
    return _spec_of(fetch_config(client, model_name), model_name)


def server_preprocesses(cfg: dict[str, Any]) -> bool:
    """Whether the model takes raw graphs: ``gtc serve`` (``either``) and the Python-backend Triton
    variant (``server``); a native Triton model (``client``, or no parameter) needs the full input set."""
    return _preprocessing(cfg) in ("server", "either")


def _preprocessing(cfg: dict[str, Any]) -> str:
    """Who pre-processes, by the model's configuration: ``client``, ``server`` or ``either``."""
    return ((cfg.get("parameters") or {}).get(PREPROCESSING_PARAMETER) or {}).get("string_value", "client")


def raw_request(
    graphs: Sequence[Any], spec: SpecArg, *, pe: Sequence[str] = ()
) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """A raw-graph request (``x``, ``edge_index``, ``edge_attr``; ``batch`` for several graphs) and the
    node and graph counts of each item, to split the answer back.

    ``pe``: the PE kinds the server takes with a raw graph (the python Triton variant's optional
    ``pe_<kind>`` inputs). A kind some graph carries goes as ``pe_<kind>``, computed here for the
    graphs that lack it (one tensor covers the union; :func:`runtime.graphs.fill_partial_pe`, as
    :meth:`GraphSession.run` does); the others are the server's to compute."""
    typed = InputSpec.from_json(spec)
    if not graphs:
        raise ShapeError("x", "no graphs given")
    # Checked and put in the model's dtypes as the pre-processed path does (float64 features or lists,
    # which GraphSession takes, were refused by the server as FP64 for an FP32 input, or crashed); a
    # graph without nodes is refused: the server would answer fewer rows than sent. A union ending in
    # graphs without nodes is refused by validate_graph.
    raw = [as_numpy_graph(g) for g in graphs]
    items = []
    for i, g in enumerate(raw):
        v = validate_graph(g, typed, f"graph {i}: " if len(raw) > 1 else "")
        items.append(replace(v, pe={k: a for k, a in v.pe.items() if k in pe}, graphs=g.graphs))
    nodes = [g.num_nodes for g in items]
    counts = [g.num_graphs for g in items]
    if len(items) > 1:
        items = fill_partial_pe(items, typed)
    merged = items[0] if len(items) == 1 else union_graphs(items, common_pe=True)
    inputs = {"x": merged.x, "edge_index": merged.edge_index.astype(np.int64, copy=False)}
    if typed.edge_attr is not None:
        if merged.edge_attr is None:
            raise ValueError("the model takes edge_attr and a graph has none")
        inputs["edge_attr"] = merged.edge_attr
    if merged.batch is not None and sum(counts) > 1:
        inputs["batch"] = merged.batch.astype(np.int64, copy=False)
    inputs.update({f"pe_{kind}": merged.pe[kind] for kind in typed.pe if kind in merged.pe})
    return inputs, nodes, counts


class OwnPEIgnoredWarning(UserWarning):
    """A graph's own positional encoding could not be sent: the model computes its own from the edges."""


def _python_variant_pe(cfg: dict[str, Any], model_name: str, items: Sequence[NumpyGraph], spec: InputSpec) -> list[str]:
    """The PE kinds a python-variant Triton model takes with raw graphs (its optional ``pe_<kind>``
    inputs), after warning when a graph carries a kind the model does not take."""
    declared = {i.get("name") for i in cfg.get("input") or []}
    kinds = [kind for kind in spec.pe if f"pe_{kind}" in declared]
    lost = [kind for kind in spec.pe if kind not in kinds and kind in _carried_kinds(items, spec)]
    if lost:
        names = ", ".join(f"pe_{kind}" for kind in lost)
        # A warning, not a refusal: such a repository answered these graphs this way before, and a PyG
        # Data often carries its training transform's encoding unasked; the fix is the server's.
        warnings.warn(
            f"model {model_name!r} does not take a graph's own {names} (its repository was exported before "
            "the python variant took them): it computes its own from the edges, so its answer may differ from "
            "GraphSession.run's and gtc serve's for these graphs; export its Triton repository again "
            "(gtc export --triton-repo) to send them",
            OwnPEIgnoredWarning,
            stacklevel=3,
        )
    return kinds


def _carried_kinds(items: Sequence[NumpyGraph], spec: InputSpec) -> set[str]:
    """The model's PE kinds some graph brings its own value of (one unnamed array: the model's one kind)."""
    out = set()
    for g in items:
        for k, v in g.pe.items():
            if v is not None and k in spec.pe:
                out.add(k)
            elif v is not None and k == UNNAMED_PE and len(spec.pe) == 1:
                out.update(spec.pe)
    return out


def infer_graphs(
    client: Any,
    model_name: str,
    graphs: Any | Sequence[Any],
    spec: SpecArg | None = None,
    *,
    binary: bool = True,
    preprocess: bool | None = None,
) -> list[np.ndarray]:
    """Send ``graphs`` as one request; one output array per graph (node-level ``[n_i, out]``,
    graph-level ``[out]``).

    The same call works against ``gtc serve`` and NVIDIA Triton, whichever variant it serves: it
    reads the model's configuration once, sends raw graphs when the server pre-processes them
    (``preprocess=None``; ``True`` forces pre-processing here, which a Python-backend Triton model
    cannot take), and adds and strips the leading batch dimension of a model with ``max_batch_size > 0``.

    A graph's own positional encoding is used wherever it goes, as :meth:`GraphSession.run` uses it:
    such graphs go pre-processed to ``gtc serve``, and raw with their ``pe_<kind>`` to a Python-backend
    Triton model. A Python-backend repository exported before that model took them computes its own
    from the edges: an :class:`OwnPEIgnoredWarning` says so (Python's default filter shows it once per
    model and calling line)."""
    from tritonclient.http import InferRequestedOutput

    cfg = fetch_config(client, model_name)
    typed = InputSpec.from_json(spec) if spec is not None else _spec_of(cfg, model_name)
    # converted once here (a PyG Data's tensors to arrays), not again by each step below
    items = [as_numpy_graph(g) for g in (graphs if isinstance(graphs, (list, tuple)) else [graphs])]
    if preprocess is None:
        # gtc serve takes either form: a graph carrying its own PE (a PyG Data's random_walk_pe) goes
        # pre-processed, so that the server answers with that PE, as GraphSession.run(data) does; raw,
        # the server computed its own (PyG's RWSE differs from ours on duplicate edges)
        carried = bool(_carried_kinds(items, typed))
        preprocess = not server_preprocesses(cfg) or (_preprocessing(cfg) == "either" and carried)
    if preprocess:
        prepared = prepare_request(items, typed)
        inputs, nodes, counts = prepared.inputs, prepared.nodes, prepared.graphs
    else:
        pe = _python_variant_pe(cfg, model_name, items, typed) if _preprocessing(cfg) == "server" else []
        inputs, nodes, counts = raw_request(items, typed, pe=pe)
    batched = int(cfg.get("max_batch_size") or 0) > 0
    if batched:
        inputs = {k: v[None] for k, v in inputs.items()}
    name = typed.output.name
    # gtc serve ("either") takes raw graphs and full input sets; where a model's inputs cannot tell the two
    # apart (TEDDY on a model whose inputs are all raw ones), the request says which it is
    either = _preprocessing(cfg) == "either"
    result = client.infer(
        model_name,
        triton_inputs(inputs, binary),
        outputs=[InferRequestedOutput(name, binary_data=binary)],
        parameters={PREPROCESSED_PARAMETER: bool(preprocess)} if either else None,
    )
    out = result.as_numpy(name)
    if batched:
        out = out[0]
    node_level = typed.node_level
    outs = split_by_graph(out, nodes if node_level else counts)
    if not node_level:
        outs = [o[0] if g.batch is None else o for o, g in zip(outs, items, strict=True)]
    return outs
